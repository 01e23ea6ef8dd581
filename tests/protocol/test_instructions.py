"""Playback instruction builders and the strict vectorised program decoder."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import instructions as I
from protocol.errors import ConfigError, DecodeError
from protocol.wire import Instr, SystemOp


def _decode(*parts):
    return I.decode_program(I.program_bytes(I.program(*parts)))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**56 - 1), st.integers(0, 2**14 - 1)), max_size=60),
       st.integers(1, 6))
def test_spikes_roundtrip(pairs, spread):
    # few distinct times so that groups of several labels form
    pairs = sorted((t % spread * 1000 + t // 2**50, lab) for t, lab in pairs)
    times = np.array([p[0] for p in pairs], dtype=np.uint64)
    labels = np.array([p[1] for p in pairs], dtype=np.int64)
    d = I.decode_program(I.program_bytes(I.spikes(times, labels)))
    now = None
    got = []
    for row in d:
        if row["op"] == Instr.WAIT_UNTIL:
            assert row["time"] != now  # one WAIT_UNTIL per distinct time
            now = int(row["time"])
        else:
            assert Instr.SPIKE1 <= row["op"] <= Instr.SPIKE4
            n = int(row["count"])
            assert n == row["op"] - Instr.SPIKE1 + 1
            got += [(now, int(x)) for x in row["labels"][:n]]
            assert not row["labels"][n:].any()
    assert got == [(int(t), int(lab)) for t, lab in zip(times, labels, strict=True)]
    # packs are full except the last one of each time
    n_words = sum(1 + -(-c // 4) for c in np.unique(times, return_counts=True)[1]) if pairs else 0
    assert len(d) == n_words


def test_spikes_rejects_bad_input():
    with pytest.raises(ConfigError, match="sorted"):
        I.spikes([5, 3], [1, 2])
    with pytest.raises(ConfigError, match="label"):
        I.spikes([1], [2**14])
    with pytest.raises(ConfigError, match="2 times but 1 labels"):
        I.spikes([1, 2], [1])
    with pytest.raises(ConfigError, match="integers"):
        I.spikes([1.5], [1])
    assert I.spikes([], []).size == 0


def test_builders_range_checks():
    with pytest.raises(ConfigError, match="write address"):
        I.write(2**32, 0)
    with pytest.raises(ConfigError, match="write value"):
        I.write(0, -1)
    with pytest.raises(ConfigError, match="wait_until"):
        I.wait_until(2**56)
    with pytest.raises(ConfigError, match="read count"):
        I.read(0, 0)
    with pytest.raises(ConfigError, match="read start"):
        I.read(2**32 - 1, 2)
    with pytest.raises(ConfigError, match="write_block count"):
        I.write_block(0, [])
    with pytest.raises(ConfigError, match="episode"):
        I.episode_start(2**14)
    with pytest.raises(ConfigError, match="system op"):
        I.system(77)
    with pytest.raises(ConfigError, match="cadc_schedule count"):
        I.cadc_schedule(10, 0)
    with pytest.raises(ConfigError, match="madc_record"):
        I.madc_record(2**24)


def test_decoded_fields():
    d = _decode(
        I.timer_reset(), I.write([0x01000020, 5], [7, 8]), I.write_block(0x100, [1, 2, 3]),
        I.read(0x200, 4), I.read(0x10), I.cadc_schedule(212, 20), I.madc_record(9),
        I.episode_start(77), I.system(SystemOp.CLEAR_SPIKE_COUNTERS), I.barrier(), I.halt(),
    )
    ops = [Instr(o) for o in d["op"]]
    assert ops[:5] == [Instr.TIMER_RESET, Instr.WRITE, Instr.DATA, Instr.WRITE, Instr.DATA]
    assert d["addr"][1] == 0x01000020 and d["data"][1] == 7
    assert d["addr"][2] == 0x01000020 and d["data"][2] == 7
    assert list(d["addr"][6:9]) == [0x100, 0x101, 0x102] and list(d["data"][6:9]) == [1, 2, 3]
    assert d["count"][5] == 3
    assert d["count"][9] == 4 and d["addr"][9] == 0x200 and d["index"][9] == 0
    assert d["index"][10] == 4 and d["count"][10] == 1  # second READ answers from index 4
    assert d["time"][11] == 212 and d["count"][11] == 20
    assert d["count"][12] == 9
    assert d["index"][13] == 77
    assert d["data"][14] == SystemOp.CLEAR_SPIKE_COUNTERS
    assert d["addr"][0] == 0 and d["addr"][14] == 0


def _raw(*words: int) -> bytes:
    return np.array(words, dtype="<u8").tobytes()


@pytest.mark.parametrize(
    ("data", "offset", "match"),
    [
        (_raw(0x8F << 56, 0x7F << 56), 1, "unknown"),
        (_raw(0x91 << 56), 0, "unknown or reserved"),  # FLASH is reserved
        (_raw(0x80 << 56 | 1), 0, "reserved instruction bits"),
        (_raw(0x86 << 56 | 1), 0, "reserved instruction bits"),  # SPIKE1 with low bits
        (_raw(0x82 << 56 | 5), 1, "missing DATA"),  # WRITE at the end
        (_raw(0x82 << 56 | 5, 0x8F << 56), 1, "missing DATA"),
        (_raw(0x84 << 56 | 3 << 32, 0x83 << 56, 0x83 << 56, 0x8F << 56), 3, "missing DATA"),
        (_raw(0x83 << 56), 0, "without WRITE"),
        (_raw(0x8F << 56, 0x82 << 56, 0x83 << 56, 0x83 << 56), 3, "without WRITE"),
        (_raw(0x85 << 56 | 7), 0, "count 0"),
        (_raw(0x85 << 56 | 2 << 32 | 0xFFFFFFFF), 0, "past 0xFFFFFFFF"),
        (_raw(0x90 << 56 | 9), 0, "system op"),
        (_raw(0x8C << 56), 0, "MADC_RECORD with 0"),
        (_raw(0x8B << 56 | 5), 0, "CADC_SCHEDULE with count 0"),
    ],
)
def test_decode_program_errors(data, offset, match):
    with pytest.raises(DecodeError, match=match) as e:
        I.decode_program(data)
    assert e.value.offset == offset and e.value.unit == "word"


def test_decode_program_first_error_wins_and_length():
    data = _raw(0x8F << 56, 0x83 << 56, 0x7F << 56)  # stray DATA at 1 before bad opcode at 2
    with pytest.raises(DecodeError, match="without WRITE") as e:
        I.decode_program(data)
    assert e.value.offset == 1
    with pytest.raises(DecodeError, match="whole number") as e:
        I.decode_program(b"\x00" * 12)
    assert e.value.offset == 1
    assert I.decode_program(b"").size == 0


def test_program_bytes_little_endian():
    assert I.program_bytes(I.halt()) == bytes.fromhex("000000000000008f")
    assert I.program().size == 0
