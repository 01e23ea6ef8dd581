"""Trace encode/decode: round trips against a plain-Python model, time unwrap, strict errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.codec import words_to_bytes
from protocol.errors import ConfigError, DecodeError
from protocol.records import Trace, decode_trace, encode_trace
from protocol.wire import Rec

EPOCH = 1 << 42
PRIO = {"episodes": 1, "reads": 2, "spikes": 3, "cadc": 4, "madc": 5, "errors": 6, "halt": 7}

# times cluster around epoch boundaries so that syncs and wraps are exercised
times_st = st.one_of(
    st.integers(0, 5000),
    st.integers(EPOCH - 3, EPOCH + 3),
    st.integers(3 * EPOCH - 2, 3 * EPOCH + 2),
    st.integers(0, 2**56 - 1),
)


def _tab(draw, n, **cols):
    return {name: np.array([draw(s) for _ in range(n)], dtype=np.int64) if name != "time"
            else np.array([draw(s) for _ in range(n)], dtype=np.uint64)
            for name, s in cols.items()}


@st.composite
def segments(draw):
    sync = draw(st.one_of(st.none(), st.integers(0, 10), st.just(EPOCH + 1)))
    lo = 0 if sync is None else sync
    t = times_st.filter(lambda x: x >= lo)
    n = {k: draw(st.integers(0, 6)) for k in PRIO}
    n["halt"] = min(n["halt"], 1)
    segs = {
        "spikes": _tab(draw, n["spikes"], time=t, label=st.integers(0, 2**14 - 1)),
        "cadc": _tab(draw, n["cadc"], time=t, index=st.integers(0, 2**14 - 1)),
        "madc": _tab(draw, n["madc"], time=t, value=st.integers(0, 1023),
                     source=st.integers(0, 15)),
        "reads": _tab(draw, n["reads"], time=t, index=st.integers(0, 2**24 - 1),
                      data=st.integers(0, 2**32 - 1)),
        "episodes": _tab(draw, n["episodes"], time=t, index=st.integers(0, 2**14 - 1)),
        "errors": _tab(draw, n["errors"], time=t, code=st.integers(0, 255),
                       info16=st.integers(0, 65535), info32=st.integers(0, 2**32 - 1)),
        "halt": _tab(draw, n["halt"], time=t, status=st.integers(0, 2**14 - 1)),
    }
    seed = draw(st.integers(0, 2**32 - 1))
    samples = np.random.default_rng(seed).integers(0, 256, (n["cadc"], 512), dtype=np.uint8)
    return sync, segs, samples


def model(sync, segs, samples):
    """What decode_trace must return, computed record by record in plain Python."""
    items = []
    for kind, tab in segs.items():
        for i in range(len(tab["time"])):
            items.append((int(tab["time"][i]), PRIO[kind], i, kind))
    items.sort()
    ep = -1
    out = {k: [] for k in PRIO}
    rows = []
    syncs = [] if sync is None else [sync]
    epoch = 0 if sync is None else sync >> 42
    for t, _, i, kind in items:
        if t >> 42 != epoch:
            epoch = t >> 42
            syncs.append(epoch << 42)
        tab = segs[kind]
        if kind == "episodes":
            ep = int(tab["index"][i])
            out[kind].append((ep, t))
        elif kind == "spikes":
            out[kind].append((t, int(tab["label"][i]), ep))
        elif kind == "cadc":
            out[kind].append((t, ep, int(tab["index"][i])))
            rows.append(samples[i])
        elif kind == "madc":
            out[kind].append((t, int(tab["value"][i]), int(tab["source"][i]), ep))
        elif kind == "reads":
            out[kind].append((int(tab["index"][i]), int(tab["data"][i])))
        elif kind == "errors":
            out[kind].append(tuple(int(tab[c][i]) for c in ("code", "info16", "info32")))
        elif kind == "halt":
            out[kind].append((int(tab["status"][i]), t))
    return out, rows, syncs


@settings(max_examples=200, deadline=None)
@given(segments())
def test_roundtrip_matches_model(seg):
    sync, segs, samples = seg
    words = encode_trace(cadc_samples=samples, sync=sync, **segs)
    tr = decode_trace(words_to_bytes(words))
    exp, rows, syncs = model(sync, segs, samples)
    assert tr.spikes.tolist() == exp["spikes"]
    assert tr.cadc.tolist() == exp["cadc"]
    assert tr.madc.tolist() == exp["madc"]
    assert tr.reads.tolist() == exp["reads"]
    assert tr.episodes.tolist() == exp["episodes"]
    assert tr.errors.tolist() == exp["errors"]
    assert tr.halt.tolist() == exp["halt"]
    assert tr.syncs.tolist() == syncs
    assert np.array_equal(tr.cadc_samples, np.array(rows, np.uint8).reshape(-1, 512))
    # decoding the words as an array gives the same trace as decoding the bytes
    assert decode_trace(words).equals(tr)


def test_time_unwrap_over_hours():
    t = np.array([0, EPOCH - 1, EPOCH, 5 * EPOCH + 7], dtype=np.uint64)  # up to ~49 h
    words = encode_trace(spikes={"time": t, "label": np.arange(4)})
    ops = (words >> np.uint64(56)).tolist()
    assert ops == [Rec.TIME_SYNC, Rec.SPIKE, Rec.SPIKE, Rec.TIME_SYNC, Rec.SPIKE, Rec.TIME_SYNC,
                   Rec.SPIKE]
    tr = decode_trace(words_to_bytes(words))
    assert tr.spikes["time"].tolist() == t.tolist()
    assert tr.spikes["episode"].tolist() == [-1] * 4


def test_equal_times_order_and_episode_assignment():
    words = encode_trace(
        spikes={"time": [10, 10], "label": [1, 2]},
        episodes={"time": [10], "index": [3]},
        halt={"time": [10], "status": [0]},
        madc={"time": [10], "value": [5], "source": [1]},
    )
    ops = (words >> np.uint64(56)).tolist()
    assert ops == [Rec.TIME_SYNC, Rec.EPISODE, Rec.SPIKE, Rec.SPIKE, Rec.MADC, Rec.HALT]
    tr = decode_trace(words)
    assert tr.spikes["episode"].tolist() == [3, 3] and tr.madc["episode"].tolist() == [3]
    assert tr.halted and tr.halt["time"][0] == 10


def test_empty_trace():
    assert decode_trace(b"").equals(Trace.empty())
    assert encode_trace(sync=None).size == 0
    assert encode_trace().tolist() == [Rec.TIME_SYNC << 56]


def test_encode_validation():
    with pytest.raises(ConfigError, match="label"):
        encode_trace(spikes={"time": [1], "label": [2**14]})
    with pytest.raises(ConfigError, match="needs a field 'label'"):
        encode_trace(spikes={"time": [1]})
    with pytest.raises(ConfigError, match="cadc_samples"):
        encode_trace(cadc={"time": [1], "index": [0]}, cadc_samples=np.zeros((1, 511), np.uint8))
    with pytest.raises(ConfigError, match="earlier than"):
        encode_trace(spikes={"time": [1], "label": [0]}, sync=5)
    with pytest.raises(ConfigError, match="one HALT"):
        encode_trace(halt={"time": [1, 2], "status": [0, 0]})
    with pytest.raises(ConfigError, match="rows"):
        encode_trace(spikes={"time": [1, 2], "label": [0]})


def _block(head_time=1, index=0):
    return encode_trace(cadc={"time": [head_time], "index": [index]},
                        cadc_samples=np.full((1, 512), 7, np.uint8), sync=None)


def test_decode_errors_carry_word_offsets():
    blk = _block()
    with pytest.raises(DecodeError, match="too few") as e:
        decode_trace(blk[:-1])
    assert e.value.offset == 74
    with pytest.raises(DecodeError, match="too few") as e:
        decode_trace(np.concatenate([blk[:41], np.array([Rec.HALT << 56], np.uint64)]))
    assert e.value.offset == 41
    with pytest.raises(DecodeError, match="outside a CADC block") as e:
        decode_trace(blk[1:])
    assert e.value.offset == 0
    with pytest.raises(DecodeError, match="outside a CADC block") as e:
        decode_trace(np.concatenate([blk, blk[1:2]]))
    assert e.value.offset == 75
    bad_pad = blk.copy()
    bad_pad[74] |= np.uint64(1 << 8)
    with pytest.raises(DecodeError, match="padding") as e:
        decode_trace(bad_pad)
    assert e.value.offset == 74
    with pytest.raises(DecodeError, match="unknown") as e:
        decode_trace(np.array([Rec.HALT << 56, 0x42 << 56], dtype=np.uint64))
    assert e.value.offset == 1 and e.value.got == "0x42"
    with pytest.raises(DecodeError, match="whole number"):
        decode_trace(b"\x01" * 9)
