"""The fast numpy codecs agree bit for bit with the construct declarations of protocol/spec.py."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import instructions as I
from protocol import spec
from protocol.codec import words_to_bytes
from protocol.records import decode_trace, encode_trace
from protocol.wire import Instr, Rec, SystemOp

u = st.integers
LAB = u(0, 2**14 - 1)

# every instruction: (op, construct fields) -> fast builder call
INSTR_CASES = {
    Instr.TIMER_RESET: (st.fixed_dictionaries({}), lambda f: I.timer_reset()),
    Instr.WAIT_UNTIL: (st.fixed_dictionaries({"time": u(0, 2**56 - 1)}),
                       lambda f: I.wait_until(f["time"])),
    Instr.READ: (st.fixed_dictionaries({"count": u(1, 2**24 - 1), "addr": u(0, 2**32 - 2**24)}),
                 lambda f: I.read(f["addr"], f["count"])),
    Instr.SPIKE1: (st.fixed_dictionaries({"label0": LAB}),
                   lambda f: I.spikes([0], [f["label0"]])[1:]),
    Instr.SPIKE2: (st.fixed_dictionaries({"label0": LAB, "label1": LAB}),
                   lambda f: I.spikes([0, 0], [f["label0"], f["label1"]])[1:]),
    Instr.SPIKE3: (st.fixed_dictionaries({"label0": LAB, "label1": LAB, "label2": LAB}),
                   lambda f: I.spikes([0] * 3, [f[f"label{i}"] for i in range(3)])[1:]),
    Instr.SPIKE4: (st.fixed_dictionaries({f"label{i}": LAB for i in range(4)}),
                   lambda f: I.spikes([0] * 4, [f[f"label{i}"] for i in range(4)])[1:]),
    Instr.CADC_TRIGGER: (st.fixed_dictionaries({}), lambda f: I.cadc_trigger()),
    Instr.CADC_SCHEDULE: (st.fixed_dictionaries({"count": u(1, 2**14 - 1),
                                                 "interval": u(0, 2**42 - 1)}),
                          lambda f: I.cadc_schedule(f["interval"], f["count"])),
    Instr.MADC_RECORD: (st.fixed_dictionaries({"samples": u(1, 2**24 - 1)}),
                        lambda f: I.madc_record(f["samples"])),
    Instr.EPISODE_START: (st.fixed_dictionaries({"index": LAB}),
                          lambda f: I.episode_start(f["index"])),
    Instr.BARRIER: (st.fixed_dictionaries({}), lambda f: I.barrier()),
    Instr.HALT: (st.fixed_dictionaries({}), lambda f: I.halt()),
    Instr.SYSTEM: (st.fixed_dictionaries({"sysop": st.sampled_from([int(o) for o in SystemOp])}),
                   lambda f: I.system(f["sysop"])),
}


@st.composite
def instr_case(draw):
    op = draw(st.sampled_from(sorted(INSTR_CASES)))
    fields_st, build = INSTR_CASES[op]
    return op, draw(fields_st), build


@settings(max_examples=300, deadline=None)
@given(instr_case())
def test_single_word_instructions_match_construct(case):
    op, fields, build = case
    ref = spec.build_instruction(op, **fields)
    fast = I.program_bytes(build(fields))
    assert fast == ref
    assert spec.parse_instructions(fast) == [(op, fields)]
    row = I.decode_program(ref)[0]
    assert row["op"] == op
    # the decoder's generic columns carry the construct fields
    col = {"time": "time", "interval": "time", "addr": "addr", "count": "count",
           "samples": "count", "index": "index", "sysop": "data"}
    for name, value in fields.items():
        if name.startswith("label"):
            assert row["labels"][int(name[-1])] == value
        else:
            assert row[col[name]] == value


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(u(0, 2**32 - 1), u(0, 2**32 - 1)), min_size=1, max_size=8),
       u(0, 2**32 - 9), st.lists(u(0, 2**32 - 1), min_size=1, max_size=8))
def test_write_and_block_match_construct(pairs, start, block):
    addrs, values = zip(*pairs, strict=True)
    fast = I.program_bytes(I.program(I.write(list(addrs), list(values)),
                                     I.write_block(start, block)))
    ref = b"".join(
        [spec.build_instruction(Instr.WRITE, addr=a) + spec.build_instruction(Instr.DATA, data=v)
         for a, v in pairs]
        + [spec.build_instruction(Instr.WRITE_BLOCK, count=len(block), addr=start)]
        + [spec.build_instruction(Instr.DATA, data=v) for v in block]
    )
    assert fast == ref
    d = I.decode_program(ref)
    assert d["addr"][-len(block):].tolist() == [start + i for i in range(len(block))]


RECORD_FIELDS = {
    Rec.TIME_SYNC: {"time": u(0, 2**56 - 1)},
    Rec.SPIKE: {"label": LAB, "time": u(0, 2**42 - 1)},
    Rec.MADC: {"source": u(0, 15), "value": u(0, 1023), "time": u(0, 2**42 - 1)},
    Rec.READ_DATA: {"index": u(0, 2**24 - 1), "data": u(0, 2**32 - 1)},
    Rec.EPISODE: {"index": LAB, "time": u(0, 2**42 - 1)},
    Rec.HALT: {"status": LAB, "time": u(0, 2**42 - 1)},
    Rec.ERROR: {"code": u(0, 255), "info16": u(0, 65535), "info32": u(0, 2**32 - 1)},
}


@st.composite
def record_stream(draw):
    """A valid record stream in (op, fields) form, CADC blocks included."""
    out = []
    for _ in range(draw(u(0, 12))):
        op = draw(st.sampled_from([*RECORD_FIELDS, Rec.CADC_HEAD]))
        if op == Rec.CADC_HEAD:
            seed = draw(u(0, 2**32 - 1))
            row = np.random.default_rng(seed).integers(0, 256, 512)
            out += spec.cadc_block_records(draw(LAB), draw(u(0, 2**42 - 1)), row)
        else:
            out.append((op, draw(st.fixed_dictionaries(RECORD_FIELDS[op]))))
    return out


@settings(max_examples=80, deadline=None)
@given(record_stream())
def test_fast_decode_equals_construct_oracle(records):
    data = spec.oracle_encode_records(records)
    assert spec.parse_records(data) == [(op, f) for op, f in records]
    assert decode_trace(data).equals(spec.oracle_decode_trace(data))


@settings(max_examples=40, deadline=None)
@given(u(0, 2**56 - 1), st.lists(u(0, 2**44), max_size=10), st.integers(0, 3))
def test_fast_encode_parses_with_construct(base, offsets, n_cadc):
    t = np.array(sorted(base + o for o in offsets if base + o < 2**56), dtype=np.uint64)
    rng = np.random.default_rng(len(t))
    ct = np.sort(rng.integers(base, min(base + 2**44, 2**56), n_cadc, dtype=np.uint64))
    samples = rng.integers(0, 256, (n_cadc, 512), dtype=np.uint8)
    words = encode_trace(spikes={"time": t, "label": np.arange(len(t)) % 2**14},
                         cadc={"time": ct, "index": np.arange(n_cadc)}, cadc_samples=samples,
                         sync=base)
    data = words_to_bytes(words)
    parsed = spec.parse_records(data)  # every word is valid per the declarations
    assert parsed[0] == (Rec.TIME_SYNC, {"time": base})
    oracle = spec.oracle_decode_trace(data)
    assert oracle.spikes["time"].tolist() == t.tolist()
    assert oracle.cadc["time"].tolist() == ct.tolist()
    assert np.array_equal(oracle.cadc_samples, samples)
    assert decode_trace(data).equals(oracle)
