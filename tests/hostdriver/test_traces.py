"""Traces as arrays and tensors: synthetic traces from protocol's trace encoder (independent of the
emulator), golden binning and interpolation, and refusal of incomplete traces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hostdriver.program import EpisodeTicket
from hostdriver.traces import EpisodeData, TimeGrid, label_lookup
from protocol.errors import BoardError, ConfigError
from protocol.records import decode_trace, encode_trace


def make_trace(*, episodes, spikes=(), cadc=(), cadc_samples=None, madc=()):
    """decode_trace(encode_trace(...)) of records given as lists of tuples."""
    ep_time, ep_index = zip(*episodes, strict=True) if episodes else ((), ())
    kw = {"episodes": {"time": np.array(ep_time, np.int64), "index": np.array(ep_index)}}
    if spikes:
        t, lab = zip(*spikes, strict=True)
        kw["spikes"] = {"time": np.array(t), "label": np.array(lab)}
    if cadc:
        t, idx = zip(*cadc, strict=True)
        kw["cadc"] = {"time": np.array(t), "index": np.array(idx)}
        kw["cadc_samples"] = np.asarray(cadc_samples, np.uint8)
    if madc:
        t, v = zip(*madc, strict=True)
        kw["madc"] = {"time": np.array(t), "value": np.array(v), "source": np.zeros(len(t), int)}
    t_end = max([e[0] for e in episodes] + [s[0] for s in spikes] + [0]) + 1000
    kw["halt"] = {"time": [t_end], "status": [0]}
    return decode_trace(encode_trace(**kw))


def ticket(indices, duration, *, cadc=None, madc=None, label_map=None):
    return EpisodeTicket(np.array(indices), duration, 0, cadc, madc, label_map)


LABELS = {100: 0, 101: 1, 102: 2}


def test_spikes_are_split_by_episode_with_relative_times_and_neurons():
    tr = make_trace(
        episodes=[(1000, 7), (2000, 8)],
        spikes=[(500, 100), (1000, 101), (1124, 102), (2125, 100), (2374, 999), (2375, 101)],
    )
    data = ticket([7, 8], 1000, label_map=label_lookup(LABELS)).resolve(tr)
    s = data.spikes
    assert data.start.tolist() == [1000, 2000]
    # the spike at 500 precedes every episode of the block: not part of it
    assert s.episode.tolist() == [0, 0, 1, 1, 1]
    assert s.rel_time.tolist() == [0, 124, 125, 374, 375]
    assert s.label.tolist() == [101, 102, 100, 999, 101]
    assert s.neuron.tolist() == [1, 2, 0, -1, 1]
    assert np.allclose(s.rel_time_us, [0, 0.992, 1.0, 2.992, 3.0])
    assert s.counts(2, 3).tolist() == [[0, 1, 1], [1, 1, 0]]
    assert len(s) == 5

    grid = TimeGrid(dt=1.0, steps=3)  # 125-tick bins: [0,125) [125,250) [250,375)
    dense = data.spike_array(grid, 3)
    assert dense.shape == (3, 2, 3)
    expect = np.zeros((3, 2, 3), np.float32)
    expect[0, 0, 1] = expect[0, 0, 2] = 1  # rel 0 and 124
    expect[1, 1, 0] = 1  # rel 125
    # rel 374 has label 999 (unmapped), rel 375 lies past the grid
    assert np.array_equal(dense, expect)
    by_label = data.spike_array(grid, 1000, by="label")
    assert by_label[2, 1, 999] == 1 and by_label.sum() == 4
    t = data.spike_tensor(grid, 3, dtype=torch.float64)
    assert t.dtype == torch.float64 and torch.equal(t, torch.from_numpy(expect).double())
    other = data.spike_array(grid, 3, label_map={101: 2})
    assert other[0, 0, 2] == 1 and other.sum() == 1


def test_binary_and_count_binning():
    tr = make_trace(episodes=[(0, 0)], spikes=[(10, 5), (20, 5), (30, 5)])
    data = ticket([0], 1000).resolve(tr, label_map={5: 0})
    grid = TimeGrid(dt=100, steps=2, unit="ticks")
    assert data.spike_array(grid, 1)[0, 0, 0] == 3
    assert data.spike_array(grid, 1, binary=True)[0, 0, 0] == 1
    assert TimeGrid(dt=100, steps=2, start=-50, unit="ticks").bin(np.array([-51, -50, 49, 50, 149,
                                                                             150])).tolist() == [
        -1, 0, 0, 1, 1, -1]


def test_spike_array_by_neuron_needs_a_label_map():
    tr = make_trace(episodes=[(0, 0)], spikes=[(10, 5)])
    data = ticket([0], 100).resolve(tr)
    with pytest.raises(ConfigError, match="needs a label map"):
        data.spike_array(TimeGrid(1, 1))
    with pytest.raises(ConfigError, match="by must be"):
        data.spike_array(TimeGrid(1, 1), by="circuit")


def cadc_rows(values_ch0):
    rows = np.zeros((len(values_ch0), 512), np.uint8)
    rows[:, 0] = values_ch0
    rows[:, 1] = 7
    return rows


def test_cadc_samples_and_grid_alignment_golden():
    # episode 0 samples at rel 0/100/200 = 0/50/100; episode 1 at rel 10/110/210 = 10/60/110
    tr = make_trace(
        episodes=[(1000, 3), (2000, 4)],
        cadc=[(1000, 0), (1100, 1), (1200, 2), (2010, 0), (2110, 1), (2210, 2)],
        cadc_samples=cadc_rows([0, 50, 100, 10, 60, 110]),
    )
    data = ticket([3, 4], 1000, cadc=(0, 100, 3)).resolve(tr)
    assert data.cadc.samples.shape == (2, 3, 512)
    assert data.cadc.rel_time.tolist() == [[0, 100, 200], [10, 110, 210]]
    assert data.cadc.time[1].tolist() == [2010, 2110, 2210]
    grid = TimeGrid(dt=100, steps=4, start=-50, unit="ticks")  # -50, 50, 150, 250
    lin = data.cadc_array(grid, channels=[0, 1])
    assert lin.shape == (4, 2, 2)
    assert lin[:, 0, 0].tolist() == [0, 25, 75, 100]
    assert lin[:, 1, 0].tolist() == [10, 30, 80, 110]
    assert (lin[:, :, 1] == 7).all()
    prev = data.cadc_array(grid, channels=[0], method="previous")
    assert prev[:, 0, 0].tolist() == [0, 0, 50, 100]
    assert prev[:, 1, 0].tolist() == [10, 10, 60, 110]
    near = data.cadc_array(TimeGrid(dt=40, steps=3, start=40, unit="ticks"), channels=[0],
                           method="nearest")  # 40, 80, 120
    assert near[:, 0, 0].tolist() == [0, 50, 50]
    assert near[:, 1, 0].tolist() == [10, 60, 60]
    t = data.cadc_tensor(grid)
    assert t.shape == (4, 2, 512) and t.dtype == torch.float32
    with pytest.raises(ConfigError, match="method"):
        data.cadc_array(grid, method="cubic")


def test_incomplete_traces_raise_board_errors():
    tr = make_trace(episodes=[(1000, 3), (2000, 4)],
                    cadc=[(1000, 0), (1100, 1), (2010, 0)],
                    cadc_samples=cadc_rows([0, 1, 2]))
    with pytest.raises(BoardError, match="1 CADC samples for episode 1, expected 2"):
        ticket([3, 4], 1000, cadc=(0, 100, 2)).resolve(tr)
    with pytest.raises(BoardError, match="1 EPISODE records of this block's 2"):
        ticket([3, 5], 1000).resolve(tr)
    empty = make_trace(episodes=[(0, 0)])
    with pytest.raises(BoardError, match="no MADC samples"):
        ticket([0], 100, madc=(0, 4)).resolve(empty)
    data = ticket([0], 100).resolve(empty)
    assert data.cadc is None and data.madc is None and len(data.spikes) == 0
    with pytest.raises(ConfigError, match="no CADC samples"):
        data.cadc_array(TimeGrid(1, 2))


def test_madc_samples():
    tr = make_trace(episodes=[(100, 0), (200, 1)],
                    madc=[(100, 5), (104, 6), (200, 7), (204, 8)])
    data = ticket([0, 1], 100, madc=(0, 2)).resolve(tr)
    assert data.madc.values.tolist() == [[5, 6], [7, 8]]
    assert data.madc.rel_time.tolist() == [[0, 4], [0, 4]]
    assert np.allclose(data.madc.rel_time_us, [[0, 0.032], [0, 0.032]])


def test_label_lookup_and_grid_validation():
    assert label_lookup(None) is None
    lk = label_lookup({3: 1, 16383: 2})
    assert lk.shape == (16384,) and lk[3] == 1 and lk[16383] == 2 and lk[0] == -1
    with pytest.raises(ConfigError, match="label map keys"):
        label_lookup({16384: 0})
    with pytest.raises(ConfigError, match="shape"):
        label_lookup(np.zeros(10, int))
    with pytest.raises(ConfigError, match="dt > 0"):
        TimeGrid(dt=0, steps=3)
    with pytest.raises(ConfigError, match="unit"):
        TimeGrid(dt=1, steps=3, unit="ms")
    g = TimeGrid(dt=1.7, steps=20)
    assert np.allclose(g.us, np.arange(20) * 1.7) and np.allclose(g.ticks, np.arange(20) * 212.5)


def test_episode_data_is_what_the_ticket_resolves_to():
    tr = make_trace(episodes=[(0, 0)])
    assert isinstance(ticket([0], 10).resolve(tr), EpisodeData)


def test_cadc_samples_of_interleaved_blocks_land_in_their_episodes():
    # a foreign episode's sample sits between this block's: rows are not one run (scatter
    # path); the foreign block alone is one run that starts mid-trace (copy path)
    tr = make_trace(
        episodes=[(1000, 3), (1500, 9), (2000, 4)],
        cadc=[(1000, 0), (1100, 1), (1200, 2), (1500, 0), (2010, 0), (2110, 1), (2210, 2)],
        cadc_samples=cadc_rows([0, 50, 100, 77, 10, 60, 110]),
    )
    data = ticket([3, 4], 1000, cadc=(0, 100, 3)).resolve(tr)
    assert data.cadc.samples[:, :, 0].tolist() == [[0, 50, 100], [10, 60, 110]]
    other = ticket([9], 400, cadc=(0, 100, 1)).resolve(tr)
    assert other.cadc.samples[:, :, 0].tolist() == [[77]]
    assert (other.cadc.samples[:, :, 1] == 7).all()
    other.cadc.samples[0, 0, 0] = 1  # its own array, not a view of the trace
    assert tr.cadc_samples[3, 0] == 77
