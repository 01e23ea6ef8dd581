"""EpisodeData's shortcut for CADC rows in the usual order gives what the general path gives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostdriver import traces
from hostdriver.program import EpisodeTicket
from hostdriver.traces import EpisodeData
from protocol.errors import BoardError
from protocol.records import CADC_DTYPE, EPISODE_DTYPE, Trace


def _trace(indices, starts, s, order, rng, *, extra_episode=None):
    """A Trace of one block: EPISODE records, then s CADC rows per episode (rows permuted by
    `order`, each row's samples travelling with it)."""
    n = len(indices)
    tr = Trace.empty()
    eps = np.zeros(n, EPISODE_DTYPE)
    eps["index"], eps["time"] = indices, starts
    rows = np.zeros(n * s, CADC_DTYPE)
    rows["episode"] = np.repeat(indices, s)
    rows["time"] = np.repeat(starts, s) + np.tile(np.arange(s) * 10, n)
    rows["index"] = np.tile(np.arange(s), n)
    samples = rng.integers(0, 256, (n * s, 512), dtype=np.uint8)
    if extra_episode is not None:
        rows["episode"][0] = extra_episode
    tr.episodes, tr.cadc, tr.cadc_samples = eps, rows[order], samples[order]
    return tr


def _equal(a: EpisodeData, b: EpisodeData) -> None:
    for name in ("samples", "time", "rel_time"):
        x, y = getattr(a.cadc, name), getattr(b.cadc, name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
        assert x.flags.c_contiguous == y.flags.c_contiguous


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_in_order_rows_give_what_the_sorting_path_gives(n, s, seed):
    rng = np.random.default_rng(seed)
    indices = rng.choice(1 << 14, n, replace=False)
    starts = np.arange(n) * 1000 + 5
    tk = EpisodeTicket(indices, 900, 0, (0, 10, s), None, None)
    ordered = _trace(indices, starts, s, np.arange(n * s), np.random.default_rng(seed))
    shuffled = _trace(indices, starts, s, rng.permutation(n * s), np.random.default_rng(seed))
    assert traces._cadc_in_order(ordered, tk.indices, s, starts) is not None
    fast = EpisodeData.from_trace(ordered, tk)
    general = EpisodeData.from_trace(shuffled, tk)
    _equal(fast, general)
    assert not np.shares_memory(fast.cadc.samples, ordered.cadc_samples)


def test_rows_out_of_time_order_or_of_another_episode_take_the_general_path():
    rng = np.random.default_rng(0)
    idx, starts = np.array([4, 9]), np.array([100, 2000])
    swapped = _trace(idx, starts, 3, np.array([1, 0, 2, 3, 4, 5]), rng)
    assert traces._cadc_in_order(swapped, idx, 3, starts) is None
    tk = EpisodeTicket(idx, 900, 0, (0, 10, 3), None, None)
    data = EpisodeData.from_trace(swapped, tk)
    assert data.cadc.time.tolist() == [[100, 110, 120], [2000, 2010, 2020]]
    np.testing.assert_array_equal(data.cadc.samples.reshape(6, 512)[:2],
                                  swapped.cadc_samples[[1, 0]])
    foreign = _trace(idx, starts, 3, np.arange(6), rng, extra_episode=5)
    assert traces._cadc_in_order(foreign, idx, 3, starts) is None
    with pytest.raises(BoardError, match="2 CADC samples for episode 0, expected 3"):
        EpisodeData.from_trace(foreign, tk)


def test_duplicate_episode_records_are_still_refused():
    rng = np.random.default_rng(1)
    tr = _trace(np.array([4, 4]), np.array([100, 200]), 1, np.arange(2), rng)
    with pytest.raises(BoardError, match="EPISODE records"):
        EpisodeData.from_trace(tr, EpisodeTicket(np.array([4, 5]), 50, 0, (0, 1, 1), None, None))
