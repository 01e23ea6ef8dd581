"""Compiled executor passes (emulator/exec_kernels.py) against their numpy twins in executor.py.

Whole programs run twice, once with the kernels and once with the twins (exec_kernels.ENABLED
off); traces, what the core was handed and the executor's stats must be the same. The sort and
search kernels are also checked against the numpy calls they stand for.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_executor import FakeCore

from emulator import exec_kernels
from emulator.executor import Executor
from emulator.registers import RegisterFile
from protocol import instructions as ins
from protocol.addressmap import Block, CrossbarInput, CrossbarOutput, SystemReg, address
from protocol.records import decode_trace
from protocol.wire import LABEL_MASK, Instr, Rec, SystemOp

pytestmark = pytest.mark.skipif(not exec_kernels.AVAILABLE, reason="numba is not installed")

SCRATCH = address(Block.SYSTEM, SystemReg.SCRATCH0)
LOOP_NODE = address(Block.CROSSBAR, CrossbarInput.FPGA << 4 | CrossbarOutput.FPGA_RECORD)
MADC = address(Block.MADC_CONFIG, 0)
COUNTER0 = address(Block.SPIKE_COUNTER, 0)


def _batch(b) -> tuple:
    return (b.n_episodes, b.duration.tolist(), b.spike_episode.tolist(), b.spike_time.tolist(),
            b.spike_label.tolist(), b.cadc_episode.tolist(), b.cadc_time.tolist(),
            b.madc_episode.tolist(), b.madc_time.tolist(),
            None if b.madc_config is None else b.madc_config.tolist())


def _both(data: bytes, *, loop: bool = False, timer: int = 0) -> list[tuple]:
    """(trace, batches, stats, timer after) with the kernels and with the twins."""
    runs = []
    for enabled in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(exec_kernels, "ENABLED", enabled)
            regs = RegisterFile(1)
            if loop:
                regs.write(LOOP_NODE, 1 << 31)
            ex = Executor(regs, FakeCore(regs))
            ex.timer = timer
            trace = ex.run(data)
            runs.append((trace, [_batch(b) for b in ex.core.batches], ex.stats, ex.timer))
    return runs


_part = st.one_of(
    st.tuples(st.just("episode"), st.integers(0, LABEL_MASK), st.just(0)),
    st.tuples(st.just("wait"), st.integers(0, 24).map(lambda k: 25 * k), st.just(0)),
    st.tuples(st.just("spikes"), st.integers(0, 300), st.integers(1, 9)),
    st.tuples(st.just("cadc"), st.integers(1, 6), st.integers(0, 10).map(lambda k: 25 * k)),
    st.tuples(st.just("trigger"), st.just(0), st.just(0)),
    st.tuples(st.just("madc"), st.integers(1, 5), st.integers(0, 12)),
    st.tuples(st.just("reset"), st.just(0), st.just(0)),
    st.tuples(st.just("barrier"), st.just(0), st.just(0)),
    st.tuples(st.just("write"), st.integers(0, 3), st.integers(0, 1 << 20)),
    st.tuples(st.just("read"), st.integers(1, 3), st.just(0)),
    st.tuples(st.just("system"), st.sampled_from([int(o) for o in SystemOp]), st.just(0)),
)


def _program(parts: list[tuple], *, base: int = 0) -> bytes:
    """Words of `parts`; times count on from `base` (waits go back too: TIME_IN_PAST)."""
    words, t = [], base
    for kind, a, b in parts:
        if kind == "episode":
            words.append(ins.episode_start(a))
        elif kind == "wait":
            t = max(t + a - 100, 0)
            words.append(ins.wait_until(t))
        elif kind == "spikes":
            t += a
            words.append(ins.spikes(np.full(b, t), (np.arange(b) * 977 + a) & LABEL_MASK))
        elif kind == "cadc":
            words.append(ins.cadc_schedule(b, a))
        elif kind == "trigger":
            words.append(ins.cadc_trigger())
        elif kind == "madc":
            words.append(ins.madc_record(a))
        elif kind == "reset":
            words.append(ins.timer_reset())
        elif kind == "barrier":
            words.append(ins.barrier())
        elif kind == "write":  # MADC periods 0..15 (below 4: VALUE_OUT_OF_RANGE), or scratch
            words.append(ins.write(MADC, (b & 0xF) << 16 | 1 << 12 | (b >> 4 & 7) << 9 | a)
                         if a < 3 else ins.write(SCRATCH, b))
        elif kind == "read":
            words.append(ins.read(COUNTER0 if a == 1 else SCRATCH, a))
        else:
            words.append(ins.system(a))
    return ins.program_bytes(ins.program(*words, ins.halt()))


@settings(max_examples=150, deadline=None)
@given(st.lists(_part, max_size=30), st.booleans(), st.sampled_from([0, 7, (1 << 42) - 300]))
def test_event_programs_run_alike_with_kernels_and_twins(parts, loop, timer) -> None:
    """Episodes, spikes, CADC / MADC schedules reaching into later episodes, events before the
    first EPISODE_START, resets, barriers, past waits, register writes that split the batch,
    timers near a 2^42 epoch (TIME_SYNC records): identical traces and core batches."""
    data = _program(parts, base=timer % 1000)
    kern, twin = _both(data, loop=loop, timer=timer)
    assert kern == twin
    decode_trace(kern[0])  # a well-formed trace


def test_samples_past_the_next_episode_start_and_early_events() -> None:
    """A schedule begun before the first EPISODE_START runs into episodes 0 and 1 (a sample
    exactly at episode 1's start is episode 1's); a trigger inside another schedule leaves the
    CADC samples out of (episode, time) order."""
    parts = [ins.timer_reset(), ins.wait_until(10), ins.spikes([20], [5]),
             ins.cadc_schedule(100, 5), ins.wait_until(150), ins.episode_start(0),
             ins.wait_until(320), ins.episode_start(1), ins.cadc_schedule(50, 4),
             ins.cadc_trigger(), ins.wait_until(360), ins.cadc_trigger(), ins.wait_until(600),
             ins.episode_start(2), ins.madc_record(3)]
    data = ins.program_bytes(ins.program(*parts, ins.halt()))
    kern, twin = _both(data, loop=True)
    assert kern == twin
    (n_ep, duration, _, _, _, cadc_ep, cadc_t, _, _, _), = kern[1]
    assert kern[2].episodes == 3 and n_ep == 4  # the implicit episode from t = 0, and 3 more
    # the first schedule's samples at 20, 120 (implicit), 220 (episode 0 from 150), 320, 420
    # (episode 1 from 320); the second schedule and both triggers in episode 1
    assert cadc_ep == [0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2]
    assert cadc_t == [20, 120, 70, 0, 100, 0, 50, 100, 150, 0, 40]
    assert duration == [150, 170, 280, 0]
    words = np.frombuffer(kern[0], "<u8")
    heads = words[(words >> np.uint64(56)) == Rec.CADC_HEAD]
    # index within its episode in time order (trace order: time, then request order)
    assert ((heads >> np.uint64(42)) & np.uint64(LABEL_MASK)).tolist() == [0, 1, 0, 0, 1, 2,
                                                                          3, 4, 5, 6, 7]
    assert [int(e["code"]) for e in decode_trace(kern[0]).errors] == [3]  # MADC period 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1 << 34), st.integers(0, 3))))
def test_fuzzed_words_run_alike_with_kernels_and_twins(words) -> None:
    """Malformed words (unknown opcodes, stray / missing DATA, reserved bits) mixed in."""
    ops = [0x00, int(Instr.DATA), int(Instr.WRITE), int(Instr.WRITE_BLOCK), int(Instr.READ),
           int(Instr.SPIKE2), int(Instr.CADC_SCHEDULE), int(Instr.MADC_RECORD),
           int(Instr.EPISODE_START), int(Instr.HALT)]
    ws = [ops[(a >> 8) % len(ops)] << 56 | (b << 42 if b else 0) | (a & 0xFF) << 32 | SCRATCH
          for a, b in words]
    data = np.array(ws + [int(Instr.HALT) << 56], "<u8").tobytes()
    kern, twin = _both(data)
    assert kern == twin


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, 3)),
                max_size=60), st.integers(1, 5))
def test_sort_order_is_a_stable_lexsort(rows, runs) -> None:
    keys = np.array(rows, np.int64).reshape(-1, 3)
    # a few presorted runs, as the records arrive, and unsorted leftovers
    cut = np.array_split(np.arange(keys.shape[0]), runs)
    for part in cut[:-1]:
        keys[part] = keys[part][np.lexsort(keys[part].T[::-1])]
    a, b, c = keys.T.copy()
    np.testing.assert_array_equal(exec_kernels.sort_order(a, b, c), np.lexsort((c, b, a)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=30),
       st.lists(st.integers(-3, 45), max_size=30), st.booleans())
def test_event_seq_walk_equals_searchsorted(e, times, sort) -> None:
    e_a = np.sort(np.asarray(e, np.int64))
    t = np.asarray(sorted(times) if sort else times, np.int64)
    pos_end = np.arange(e_a.size + 1, dtype=np.int64) * 3
    ep = np.zeros(t.size, np.int64)
    lo, hi = np.array([2], np.int64), np.array([e_a.size * 2], np.int64)
    out = np.empty(t.size, np.int64)
    exec_kernels.event_seq(e_a, pos_end[:-1], int(pos_end[-1]), t, ep, lo, hi, out)
    want = np.clip(2 * pos_end[np.searchsorted(e_a, t, side="right")] - 1, 5, 4 * e_a.size - 1)
    np.testing.assert_array_equal(out, want)


def test_cadc_rank_declines_unsorted_samples() -> None:
    rank = np.empty(4, np.int64)
    ok = exec_kernels.cadc_rank(np.array([0, 0, 1, 1]), np.array([5, 9, 2, 2]), rank)
    assert ok and rank.tolist() == [0, 1, 0, 1]
    assert not exec_kernels.cadc_rank(np.array([0, 0, 1]), np.array([5, 4, 9]), rank)
    assert not exec_kernels.cadc_rank(np.array([1, 0]), np.array([5, 9]), rank)


def test_trace_layout_puts_syncs_and_blocks() -> None:
    """Records across a 2^42 wrap: TIME_SYNC before the first of the new epoch, a block after
    the CADC head, resets shifting the timer; the numpy twin writes the same words."""
    from emulator import executor as mod

    big = 1 << 42
    elapsed = np.array([big + 5, 3, big - 1, big + 5, 7], np.int64)
    seq = np.array([9, 2, 4, 11, 6], np.int64)
    sub = np.zeros(5, np.int64)
    word = np.array([int(Rec.CADC_HEAD) << 56, int(Rec.TIME_SYNC) << 56,
                     int(Rec.SPIKE) << 56, int(Rec.HALT) << 56, int(Rec.EPISODE) << 56],
                    np.uint64)
    timed = np.array([True, False, True, True, True])
    row = np.array([0, -1, -1, -1, -1], np.int64)
    reset_e, reset_seq = np.array([3], np.int64), np.array([2], np.int64)
    samples = np.arange(512, dtype=np.int64).astype(np.uint8)[None, :]
    size, layout, mid = exec_kernels.trace_layout(elapsed, seq, sub, word, timed, row, reset_e,
                                                  reset_seq, 74)
    got = np.empty(size, np.uint64)
    mod._put_trace(got, layout, mid, samples)
    want, blocks, rows = mod._trace_layout(elapsed, seq, sub, word, timed, row, reset_e,
                                           reset_seq)
    mod._put_cadc(want, blocks, samples, rows)
    np.testing.assert_array_equal(got, want)
    kinds = (got >> np.uint64(56)).tolist()
    # sync(reset), EPISODE at timer 4, SPIKE at big - 4, then epoch 1: SYNC, CADC_HEAD, HALT
    assert kinds == [Rec.TIME_SYNC, Rec.EPISODE, Rec.SPIKE, Rec.TIME_SYNC, Rec.CADC_HEAD,
                     *[Rec.CADC_DATA] * 74, Rec.HALT]
    assert mid == 0  # half of one block is none: the second half starts at once


def test_cadc_blocks_of_unaligned_samples() -> None:
    """Samples at an odd byte offset (a view into a message) pack like aligned ones."""
    from emulator import executor as mod

    rng = np.random.default_rng(8)
    raw = rng.integers(0, 256, 3 + 5 * 512, dtype=np.uint8).tobytes()
    samples = np.frombuffer(raw, np.uint8, count=5 * 512, offset=3).reshape(5, 512)
    rows = np.array([4, 0, 2])
    at = np.array([1, 80, 160])
    layout = (at - 1, np.zeros(3, np.uint64), np.full(3, 9, np.uint64), rows)
    got, want = np.zeros(240, np.uint64), np.zeros(240, np.uint64)
    mod._put_trace(got, layout, 1, samples)
    mod._put_cadc(want, at, samples, rows)
    want[at - 1] = 9
    np.testing.assert_array_equal(got, want)
    assert int(got[1 + 73]) == (int(Rec.CADC_DATA) << 56 | int(samples[4, 511]))


def test_sample_counts_of_words_that_never_sample_do_not_size_the_buffers(monkeypatch) -> None:
    """Words after HALT do not run and an MADC_RECORD with too short a period samples nothing:
    their 24-bit (MADC) and 14-bit (CADC) counts must not size the events pass' buffers (a
    1.6 KB program would ask for gigabytes); the trace is the twin's."""
    seen = []
    events = exec_kernels.events

    def spy(*args):  # noqa: ANN002, ANN202
        seen.append(np.array(args[-1]))
        return events(*args)

    monkeypatch.setattr(exec_kernels, "events", spy)
    never = [ins.madc_record(0xFFFFFF), ins.cadc_schedule(25, 0x3FFF)] * 100
    # MADC_CONFIG of 0 (the reset value) has period 0: the executed record is refused
    runs = _both(ins.program(ins.madc_record(0xFFFFFF), ins.cadc_schedule(25, 3),
                             ins.cadc_trigger(), ins.halt(), *never).astype("<u8").tobytes())
    assert runs[0] == runs[1]
    assert seen and int(seen[0][1]) == 4 and int(seen[0][2]) == 0
    trace = decode_trace(runs[0][0])
    assert trace.cadc_samples.shape[0] == 4
    assert any(code == 4 for code, *_ in trace.errors)  # BAD_INSTRUCTION: words after HALT


def test_a_core_that_returns_too_few_samples_is_refused_not_read_past() -> None:
    """trace_fill reads the sample rows unchecked: a core returning fewer rows than samples
    were requested is an emulator fault, named, never a read past the array."""

    class ShortCore(FakeCore):
        def run(self, b):  # noqa: ANN001, ANN202
            res = super().run(b)
            res.cadc_samples = res.cadc_samples[:-1]
            return res

    regs = RegisterFile(1)
    data = ins.program(ins.episode_start(0), ins.cadc_schedule(25, 4),
                       ins.halt()).astype("<u8").tobytes()
    with pytest.raises(ValueError, match="returned 3 rows"):
        Executor(regs, ShortCore(regs)).run(data)
