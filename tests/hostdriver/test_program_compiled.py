"""episodes() with its compiled spike merge against the numpy twin: the very same words."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostdriver import program
from hostdriver.program import (
    CADCSchedule,
    EpisodeWrites,
    MADCSchedule,
    Program,
    SpikeInput,
)
from protocol.errors import ConfigError
from protocol.instructions import decode_program
from protocol.wire import Instr


def _words(compiled: bool, monkeypatch: pytest.MonkeyPatch, n: int, dur: float,
           **kw) -> np.ndarray:
    kw.setdefault("unit", "ticks")
    with monkeypatch.context() as m:
        m.setattr(program, "COMPILED", compiled)
        p = Program()
        p.episodes(n, dur, **kw)
        return p.to_words()


def _both(monkeypatch: pytest.MonkeyPatch, n: int, dur: float, **kw) -> np.ndarray:
    got = _words(True, monkeypatch, n, dur, **kw)
    want = _words(False, monkeypatch, n, dur, **kw)
    np.testing.assert_array_equal(got, want)
    return got


def test_the_compiled_layout_is_in_use():
    assert program.COMPILED  # numba is a declared dependency


def test_pnas_shaped_block_matches_the_numpy_layout(monkeypatch):
    rng = np.random.default_rng(0)
    on = rng.random((64, 256)) < 0.5
    ep, i = np.nonzero(on)
    t = rng.integers(0, 1000, ep.size)
    o = np.lexsort((t, ep))  # the usual input: by episode and time, labels in any order
    words = _both(monkeypatch, 64, 4250, spikes=SpikeInput(ep[o], t[o], i[o] + 100),
                  cadc=CADCSchedule(212, 20, 0))
    assert (decode_program(words.astype("<u8").tobytes())["op"] == Instr.SPIKE1).any()


def test_crowded_times_pack_sorted_labels_four_at_a_time(monkeypatch):
    # 11 spikes at one time (the np.sort branch), 3 at another (insertion sort), labels unsorted
    t = np.array([5] * 11 + [9] * 3)
    lab = np.array([40, 3, 17, 3, 99, 1, 0, 16383, 8, 2, 7, 30, 10, 20])
    words = _both(monkeypatch, 1, 20, spikes=SpikeInput(np.zeros(14, int), t, lab), lead=0)
    dec = decode_program(words.astype("<u8").tobytes())
    packs = dec["op"][(dec["op"] >= Instr.SPIKE1) & (dec["op"] <= Instr.SPIKE4)].tolist()
    assert packs == [Instr.SPIKE4, Instr.SPIKE4, Instr.SPIKE3, Instr.SPIKE3]
    first = int(np.flatnonzero(dec["op"] == Instr.SPIKE4)[0])
    w = int(words[first])
    assert [(w >> s) & 0x3FFF for s in (42, 28, 14, 0)] == [0, 1, 2, 3]


def test_spikes_out_of_time_order_take_the_sorting_path(monkeypatch):
    rng = np.random.default_rng(1)
    ep, t, lab = rng.integers(0, 8, 500), rng.integers(0, 30, 500), rng.integers(0, 6, 500)
    _both(monkeypatch, 8, 30, spikes=SpikeInput(ep, t, lab), gap=2,
          cadc=CADCSchedule(3, 4, 1), madc=MADCSchedule(5, 0),
          writes=EpisodeWrites([7, 0, 0], [0x100, 0x101, 0x300], [1, 2, 3]))


def test_spike_input_is_not_modified(monkeypatch):
    lab = np.array([5, 4, 3], np.int64)
    _both(monkeypatch, 1, 10, spikes=SpikeInput(np.zeros(3, int), np.array([2, 2, 2]), lab))
    assert lab.tolist() == [5, 4, 3]


_I = np.int64


@pytest.mark.parametrize(("spikes", "unit"), [
    (SpikeInput(_I([0, 1]), _I([3, 10]), _I([1, 2])), "ticks"),  # time past the episode
    (SpikeInput(_I([0, 1]), _I([3, -1]), _I([1, 2])), "ticks"),
    (SpikeInput(_I([0, 1]), _I([3, 4]), _I([1, 1 << 14])), "ticks"),  # label out of range
    (SpikeInput(_I([0, 1]), _I([3, 4]), _I([-1, 2])), "ticks"),
    (SpikeInput(_I([0, 2]), _I([3, 4]), _I([1, 2])), "ticks"),  # no such episode
    (SpikeInput(_I([-1, 0]), _I([3, 4]), _I([1, 2])), "ticks"),
    (SpikeInput(_I([2, 0]), np.array([3.5, 4.0]), _I([1, 2])), "ticks"),  # both wrong
    (SpikeInput(_I([0, 1]), _I([3, 4]), _I([1])), "ticks"),  # sizes differ
    (SpikeInput(_I([0, 1]), np.array([0.0, 0.08]), _I([1, 2])), "us"),  # 10 ticks: past it
    (SpikeInput(_I([0, 1]), np.array([0.0, np.nan]), _I([1, 2])), "us"),
    (SpikeInput(_I([0, 1]), _I([3, 4]), np.array([1.0, 2.0])), "ticks"),  # float labels
])
def test_refusals_are_the_same_on_both_paths(monkeypatch, spikes, unit):
    dur = 10 if unit == "ticks" else 0.08
    errors = []
    for compiled in (True, False):
        with pytest.raises(ConfigError) as exc:
            _words(compiled, monkeypatch, 2, dur, spikes=spikes, unit=unit)
        errors.append(str(exc.value))
    assert errors[0] == errors[1]


def test_other_dtypes_and_microseconds_give_the_same_words(monkeypatch):
    e, t, lab = np.array([1, 0, 1], np.int32), np.array([5, 2, 2], np.uint16), [7, 9, 8]
    a = _both(monkeypatch, 2, 10, lead=0, spikes=SpikeInput(e, t, lab))
    b = _both(monkeypatch, 2, 10, lead=0, spikes=SpikeInput(e.astype(_I), t.astype(_I), _I(lab)))
    np.testing.assert_array_equal(a, b)
    us = _both(monkeypatch, 2, 0.08, unit="us", lead=0, spikes=SpikeInput(
        e.astype(_I), t.astype(float) / 125, _I(lab)))
    np.testing.assert_array_equal(us, b)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 5), st.integers(1, 40), st.integers(0, 4), st.booleans(),
       st.lists(st.tuples(st.integers(0, 4), st.integers(0, 39), st.integers(0, 16383)),
                max_size=60),
       st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), max_size=5))
def test_random_blocks_give_the_numpy_words(n, dur, gap, in_order, spikes, writes):
    mp = pytest.MonkeyPatch()
    try:
        spikes = [(e % n, t % dur, lab) for e, t, lab in spikes]
        if in_order:
            spikes.sort(key=lambda s: (s[0], s[1]))
        e, t, lab = (np.array(x, np.int64) for x in zip(*spikes, strict=True)) if spikes else (
            np.zeros(0, np.int64),) * 3
        we = [w[0] % n for w in writes]
        kw = {"writes": EpisodeWrites(we, [0x100 + w[1] for w in writes], [1] * len(writes))}
        _both(mp, n, dur, gap=gap, lead=1, spikes=SpikeInput(e, t, lab),
              cadc=CADCSchedule(1, 1), madc=MADCSchedule(2, min(dur + gap - 1, 3)), **kw)
    finally:
        mp.undo()


def test_int64_spikes_are_checked_by_the_compiled_pass():
    s = SpikeInput(_I([1, 0, 1]), _I([5, 2, 9]), _I([7, 9, 8]))
    t, lab, ordered = program._checked_spikes(s, "ticks", 2, 10, _I([100, 200]))
    assert t.tolist() == [205, 102, 209] and lab.tolist() == [7, 9, 8] and not ordered
    assert lab is not s.label and not np.shares_memory(lab, s.label)
    s = SpikeInput(_I([0, 0, 1]), _I([2, 2, 0]), _I([7, 9, 8]))
    assert program._checked_spikes(s, "ticks", 2, 10, _I([100, 200]))[2]
    bad = SpikeInput(_I([1, 0, 1]), _I([5, 2, 10]), _I([7, 9, 8]))
    assert program._checked_spikes(bad, "ticks", 2, 10, _I([100, 200])) == (None, None, False)
