"""Program builder: golden instruction layout, vectorised write runs, read tickets, episode blocks
run through the real executor over the wire (with a stub analog core whose outputs are simple
functions of its inputs), belief tracking, and refusals."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.endpoint import BoardEndpoint
from hostdriver.board import Board
from hostdriver.chip import ChipConfig, CrossbarNode, CrossbarNodeCoord, believed
from hostdriver.link_driver import LinkDriver
from hostdriver.program import (
    CADCSchedule,
    EpisodeWrites,
    MADCSchedule,
    Program,
    SpikeInput,
    to_ticks,
    write_words,
)
from hostdriver.traces import TimeGrid
from hostdriver.transports.inprocess import InProcessTransport
from protocol import instructions as ins
from protocol.addressmap import Block, CrossbarInput, CrossbarOutput, address
from protocol.errors import ConfigError
from protocol.instructions import decode_program
from protocol.wire import Instr, SystemOp

DELAY = 5  # ticks the stub core delays each looped-back spike


class StubCore:
    """Loops every injected spike back DELAY ticks later (label unchanged); CADC sample of channel
    c at episode time t = (t // 32 + c % 64 + episode) % 256; MADC value = (t + episode) % 1024."""

    def __init__(self) -> None:
        self.batches: list = []

    def run(self, b):
        self.batches.append(b)
        ep = np.asarray(b.spike_episode, np.int64)
        t = np.asarray(b.spike_time, np.int64) + DELAY
        lab = np.asarray(b.spike_label, np.int64)
        order = np.lexsort((lab, t, ep))
        ct = np.asarray(b.cadc_time, np.int64)
        ce = np.asarray(b.cadc_episode, np.int64)
        samples = (ct[:, None] // 32 + np.arange(512)[None, :] % 64 + ce[:, None]) % 256
        return SimpleNamespace(
            spike_episode=ep[order].astype(np.int32),
            spike_time=t[order].astype(np.uint64),
            spike_label=lab[order].astype(np.uint16),
            cadc_samples=samples.astype(np.uint8),
            madc_values=((np.asarray(b.madc_time, np.int64) + np.asarray(b.madc_episode))
                         % 1024).astype(np.uint16),
            spike_counts=np.zeros(512, np.uint32),
        )


@pytest.fixture
def stub():
    core = StubCore()
    endpoint = BoardEndpoint(7, core=core)
    board = Board(LinkDriver(InProcessTransport(endpoint, url="emu://stub"), timeout=5.0),
                  "emu://stub")
    yield board, core
    board.close()


def ops(words):
    return [Instr(int(o)).name for o in decode_program(words.astype("<u8").tobytes())["op"]]


def test_golden_episode_layout():
    p = Program()
    t = p.episodes(
        2, 10, unit="ticks", gap=2, lead=5,
        spikes=SpikeInput([1, 0, 1], [3, 0, 3], [7, 5, 6]),
        cadc=CADCSchedule(interval=4, count=2, start=1),
        madc=MADCSchedule(count=3, start=2),
    )
    expect = ins.program(
        ins.timer_reset(), ins.barrier(), ins.timer_reset(),
        ins.wait_until(5), ins.episode_start(0), ins.spikes([5], [5])[1:],
        ins.wait_until(6), ins.cadc_schedule(4, 2),
        ins.wait_until(7), ins.madc_record(3),
        ins.wait_until(17), ins.episode_start(1),
        ins.wait_until(18), ins.cadc_schedule(4, 2),
        ins.wait_until(19), ins.madc_record(3),
        ins.spikes([20, 20], [6, 7]),
        ins.wait_until(27),
        ins.halt(),
    )
    assert np.array_equal(p.to_words(), expect), ops(p.to_words())
    assert len(p) == expect.size
    assert t.indices.tolist() == [0, 1] and t.duration == 10 and t.gap == 2
    assert t.cadc == (1, 4, 2) and t.madc == (2, 3)
    # the next block numbers its episodes on
    assert p.episodes(1, 1.0).indices.tolist() == [2]


def test_episode_writes_go_before_their_episode_start():
    p = Program()
    p.episodes(3, 10, unit="ticks", lead=0,
               writes=EpisodeWrites([2, 0], [0x0A00_0000, 0x0A00_0000], [5 << 16, 4 << 16]))
    assert ops(p.to_words()) == [
        "TIMER_RESET", "BARRIER", "TIMER_RESET",
        "WAIT_UNTIL", "WRITE", "DATA", "EPISODE_START",
        "WAIT_UNTIL", "EPISODE_START",
        "WAIT_UNTIL", "WRITE", "DATA", "EPISODE_START",
        "WAIT_UNTIL", "HALT",
    ]
    assert p.words_written == 2


def test_write_words_golden_runs():
    words = write_words([10, 11, 12, 20, 30, 31], [1, 2, 3, 4, 5, 6])
    expect = ins.program(ins.write_block(10, [1, 2, 3]), ins.write(20, 4),
                         ins.write_block(30, [5, 6]))
    assert np.array_equal(words, expect)
    assert write_words([], []).size == 0
    with pytest.raises(ConfigError, match="3 addresses but 2 values"):
        write_words([1, 2, 3], [1, 2])
    with pytest.raises(ConfigError, match="out of range"):
        write_words([1 << 32], [0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2**32 - 1)), max_size=60))
def test_write_words_decode_to_the_same_writes_in_order(pairs):
    a = np.array([p[0] for p in pairs], np.int64)
    v = np.array([p[1] for p in pairs], np.int64)
    dec = decode_program(write_words(a, v).astype("<u8").tobytes())
    data = dec[dec["op"] == Instr.DATA]
    assert data["addr"].tolist() == a.tolist() and data["data"].tolist() == v.tolist()
    assert dec.size == a.size + int(np.sum(np.diff(a) != 1)) + (1 if a.size else 0)


def test_read_tickets_and_config_reads_in_one_program(stub):
    board, _ = stub
    cfg = ChipConfig()
    cfg.cadc.offsets[:4] = [-1, 2, -3, 4]
    cfg.write(board)
    p = Program()
    scattered = p.read([0x0800_0003, 0x0800_0000, 0x0800_0001, 0x0000_0010])
    p.write([0x0800_0001], [0x7F])
    whole = p.read_config()
    again = p.read([0x0800_0001])
    res = p.run(board)
    assert res[scattered].tolist() == [4, 0xFF, 2, 0]
    assert res[again].tolist() == [0x7F]
    back = res[whole]  # read after the write: sees it
    assert back.cadc.offsets[:4].tolist() == [-1, 127, -3, 4]
    assert res[whole] is back  # resolved once
    expect = cfg.copy()
    expect.cadc.offsets[1] = 127
    assert back == expect and believed(board) == expect
    with pytest.raises(TypeError):
        res["not a ticket"]
    with pytest.raises(ConfigError, match="no addresses"):
        p.read([])


def test_belief_follows_resets_and_raw_writes(stub):
    board, _ = stub
    cfg = ChipConfig()
    cfg.synapses.weights[:] = 3
    p = Program()
    assert p.write_config(cfg, None) == 79850
    p.system(SystemOp.CHIP_RESET)
    p.write([0x0100_0000, 0x0000_0010], [17, 99])  # a CapMem cell and a scratch register
    p.run(board)
    expect = ChipConfig()
    expect.neuron_capmem.codes[0, 0] = 17
    assert believed(board) == expect == ChipConfig.read(board)


def loop_config():
    """FPGA spikes loop back to the trace: node FPGA -> FPGA_RECORD passing every label."""
    cfg = ChipConfig()
    cfg.crossbar[CrossbarNodeCoord(CrossbarInput.FPGA, CrossbarOutput.FPGA_RECORD)] = CrossbarNode(
        enable=True)
    cfg.neurons.spike_output[:] = True
    cfg.neurons.output_label[:] = np.arange(512) + 1000
    return cfg


def test_many_episodes_with_their_own_inputs_round_trip(stub):
    board, core = stub
    cfg = loop_config()
    cfg.madc.enable, cfg.madc.period = True, 4
    cfg.write(board)
    rng = np.random.default_rng(3)
    n, dur = 40, 34.0
    k = 300
    ep = rng.integers(0, n, k)
    t_us = rng.integers(0, int(dur * 125) - DELAY, k) / 125  # exact ticks
    lab = rng.integers(1000, 1512, k)
    p = Program()
    ticket = p.episodes(n, dur, spikes=SpikeInput(ep, t_us, lab),
                        cadc=CADCSchedule(interval=1.7, count=20), madc=MADCSchedule(8, 0.5),
                        gap=0.5, label_map=loop_config().label_map())
    res = p.run(board)
    data = res[ticket]
    assert len(core.batches) == 1 and core.batches[0].n_episodes == n  # one vectorised batch
    assert data.start.tolist() == (125 + np.arange(n) * (4250 + 62)).tolist()

    s = data.spikes
    order = np.lexsort((lab, to_ticks(t_us), ep))
    assert s.episode.tolist() == ep[order].tolist()
    assert s.rel_time.tolist() == (to_ticks(t_us)[order] + DELAY).tolist()
    assert s.label.tolist() == lab[order].tolist()
    assert s.neuron.tolist() == (lab[order] - 1000).tolist()

    c = data.cadc
    assert c.samples.shape == (n, 20, 512)
    assert (c.rel_time == np.arange(20) * 212).all()  # 1.7 us -> 212 ticks (rounded)
    ch = np.arange(512) % 64
    want = (c.rel_time[:, :, None] // 32 + ch + np.arange(n)[:, None, None]) % 256
    assert np.array_equal(c.samples, want)

    m = data.madc
    assert m.values.shape == (n, 8) and (m.rel_time[:, 0] == 62).all()
    assert np.array_equal(m.values, (m.rel_time + np.arange(n)[:, None]) % 1024)

    grid = TimeGrid(dt=1.7, steps=20)
    spikes = data.spike_tensor(grid)
    assert tuple(spikes.shape) == (20, n, 512)
    in_grid = s.rel_time < 20 * 212.5
    assert int(spikes.sum()) == int(in_grid.sum())
    cadc = data.cadc_tensor(grid, method="nearest")
    assert tuple(cadc.shape) == (20, n, 512)
    assert np.array_equal(cadc.numpy(), c.samples.transpose(1, 0, 2).astype(np.float32))


def test_dense_raster_input():
    raster = np.zeros((4, 2, 3))
    raster[1, 0, 2] = raster[3, 1, 0] = 1
    s = SpikeInput.from_dense(raster, [10, 11, 12], dt=2.0, offset=0.5)
    assert list(zip(s.episode.tolist(), s.time.tolist(), s.label.tolist(), strict=True)) == [
        (0, 2.5, 12), (1, 6.5, 10)]
    with pytest.raises(ConfigError, match="3 inputs in the raster but 2 labels"):
        SpikeInput.from_dense(raster, [1, 2], dt=1.0)


def test_per_episode_writes_reach_their_episodes_and_update_belief(stub):
    board, core = stub
    cfg = loop_config()
    cfg.madc.period = 8
    cfg.madc.enable = True
    cfg.write(board)
    neurons = np.array([3, 9, 27])
    madc_words = 8 << 16 | 1 << 12 | neurons
    p = Program()
    t = p.episodes(3, 2.0, madc=MADCSchedule(2),
                   writes=EpisodeWrites(np.arange(3), [0x0A00_0000] * 3, madc_words))
    data = p.run(board)[t]
    # readout registers ride along with each episode: one batch
    assert [b.n_episodes for b in core.batches] == [3]
    assert (np.asarray(core.batches[0].madc_config) & 0x1FF).tolist() == neurons.tolist()
    assert data.madc.values.shape == (3, 2)
    assert believed(board).madc.neuron == 27 and ChipConfig.read(board).madc.neuron == 27
    # a write the chip model is compiled from (a CapMem cell) splits the batch
    core.batches.clear()
    p = Program()
    cell = address(Block.CAPMEM_NEURON, 0)
    p.episodes(3, 2.0, madc=MADCSchedule(2),
               writes=EpisodeWrites(np.arange(3), [cell] * 3, [100, 200, 300]))
    p.run(board)
    assert [b.n_episodes for b in core.batches] == [1, 1, 1]


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"spikes": SpikeInput([0], [10.0], [1])}, r"outside its episode 0\.\.1249"),
        ({"spikes": SpikeInput([2], [1.0], [1])}, r"episode 2 out of range 0\.\.1"),
        ({"spikes": SpikeInput([0], [1.0], [16384])}, "spike labels"),
        ({"spikes": SpikeInput([0, 1], [1.0], [1])}, "2 episodes, 1 times, 1 labels"),
        ({"cadc": CADCSchedule(1.0, 11)}, "must fit in the episode"),
        ({"madc": MADCSchedule(1, 20.0)}, "MADC schedule start"),
        ({"unit": "ms"}, "time unit"),
        ({"gap": -1}, "gap >= 0"),
    ],
)
def test_bad_episode_blocks_are_refused(kwargs, text):
    with pytest.raises(ConfigError, match=text):
        Program().episodes(2, 10.0, **kwargs)


def test_episode_count_limit():
    p = Program()
    p.episodes(16000, 0.1)
    with pytest.raises(ConfigError, match="at most 16384 episodes"):
        p.episodes(385, 0.1)
    with pytest.raises(ConfigError, match="n must be >= 1"):
        Program().episodes(0, 1.0)


def test_to_ticks():
    assert to_ticks(1.7) == 212 and to_ticks(34.0) == 4250
    assert to_ticks([1, 2], "ticks").tolist() == [1, 2]
    with pytest.raises(ConfigError, match="integers"):
        to_ticks(1.5, "ticks")


def replay(words):
    """(episode, ticks from its start, label) of every spike a program injects, read back from
    its decoded words by following WAIT_UNTIL / EPISODE_START (an independent interpreter)."""
    dec = decode_program(words.astype("<u8").tobytes())
    now, ep, ep_start, out, last_wait = 0, -1, 0, [], -1
    for row in dec:
        op = Instr(int(row["op"]))
        if op == Instr.WAIT_UNTIL:
            assert int(row["time"]) > last_wait, "WAIT_UNTIL targets must increase"
            now = last_wait = int(row["time"])
        elif op == Instr.TIMER_RESET:
            now, last_wait = 0, -1
        elif op == Instr.EPISODE_START:
            ep, ep_start = int(row["index"]), now
        elif Instr.SPIKE1 <= op <= Instr.SPIKE4:
            out += [(ep, now - ep_start, int(x)) for x in row["labels"][: int(row["count"])]]
    return sorted(out)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 50), st.integers(0, 5),
       st.lists(st.tuples(st.integers(0, 5), st.integers(0, 49), st.integers(0, 16383)),
                max_size=40))
def test_episode_layout_replays_to_the_requested_spikes(n, dur, gap, spikes):
    spikes = [(e % n, t % dur, lab) for e, t, lab in spikes]
    p = Program()
    e, t, lab = (np.array(x, np.int64) for x in zip(*spikes, strict=True)) if spikes else (
        np.zeros(0, np.int64),) * 3
    p.episodes(n, dur, unit="ticks", gap=gap, lead=3, spikes=SpikeInput(e, t, lab),
               cadc=CADCSchedule(1, 1))
    assert replay(p.to_words()) == sorted(spikes)
    dec = decode_program(p.to_words().astype("<u8").tobytes())
    assert (dec["op"] == Instr.EPISODE_START).sum() == n
    assert (dec["op"] == Instr.CADC_SCHEDULE).sum() == n


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 16383)), max_size=60))
def test_spike_packs_are_instructions_spikes_without_waits(pairs):
    from hostdriver.program import spike_packs

    pairs.sort(key=lambda p: p[0])
    t = np.array([p[0] for p in pairs], np.int64)
    lab = np.array([p[1] for p in pairs], np.int64)
    times, words = spike_packs(t, lab)
    stream = ins.spikes(t, lab)
    is_wait = (stream >> np.uint64(56)) == int(Instr.WAIT_UNTIL)
    owner = np.maximum.accumulate(np.where(is_wait, np.arange(stream.size), 0))
    np.testing.assert_array_equal(words, stream[~is_wait])
    np.testing.assert_array_equal(times, (stream[owner] & np.uint64((1 << 56) - 1))[~is_wait])
