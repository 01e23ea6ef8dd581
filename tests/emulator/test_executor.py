"""Playback executor: timing, register access, errors, episodes, trace order (fake analog core).

The fake core below stands in for emulator.analog.AnalogCore with rules simple enough to state
in a line each, so these tests pin the executor's bookkeeping; test_endpoint.py runs the real
core through the whole path.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.executor import HALT_ABORTED, HALT_ERRORS, HALT_OK, Executor
from emulator.registers import RegisterFile
from protocol import instructions as ins
from protocol.addressmap import Block, CrossbarInput, CrossbarOutput, SystemReg, address
from protocol.errors import DecodeError
from protocol.records import decode_trace
from protocol.wire import LABEL_MASK, ErrorCode, Instr, Rec, SystemOp

SCRATCH = address(Block.SYSTEM, SystemReg.SCRATCH0)
LOOP_NODE = address(Block.CROSSBAR, CrossbarInput.FPGA << 4 | CrossbarOutput.FPGA_RECORD)
MADC = address(Block.MADC_CONFIG, 0)


class FakeCore:
    """Loops injected spikes back when crossbar node FPGA -> FPGA_RECORD passes them
    ((label & mask) == target); CADC sample = (time & 0xFF) in every channel, channel 1 = episode;
    MADC value = time & 0x3FF; neuron `label % 512` counts one spike per injected spike."""

    def __init__(self, regs: RegisterFile) -> None:
        self.regs = regs
        self.batches: list = []
        self.node_at_run: list[int] = []

    def run(self, b):
        self.batches.append(b)
        node = int(self.regs.crossbar[CrossbarInput.FPGA, CrossbarOutput.FPGA_RECORD])
        self.node_at_run.append(node)
        lab = np.asarray(b.spike_label, np.int64)
        ep = np.asarray(b.spike_episode, np.int64)
        t = np.asarray(b.spike_time, np.int64)
        keep = np.zeros(lab.size, bool)
        if node >> 31:
            keep = (lab & (node >> 14 & 0x3FFF)) == (node & 0x3FFF)
        order = np.lexsort((lab[keep], t[keep], ep[keep]))
        ct = np.asarray(b.cadc_time, np.int64)
        samples = np.repeat((ct & 0xFF).astype(np.uint8)[:, None], 512, axis=1)
        samples[:, 1] = np.asarray(b.cadc_episode)
        return SimpleNamespace(
            spike_episode=ep[keep][order].astype(np.int32),
            spike_time=t[keep][order].astype(np.uint64),
            spike_label=lab[keep][order].astype(np.uint16),
            cadc_samples=samples,
            madc_values=(np.asarray(b.madc_time, np.int64) & 0x3FF).astype(np.uint16),
            spike_counts=np.bincount(lab % 512, minlength=512).astype(np.uint32),
        )


@pytest.fixture
def regs() -> RegisterFile:
    return RegisterFile(3)


@pytest.fixture
def ex(regs: RegisterFile) -> Executor:
    return Executor(regs, FakeCore(regs))


def run(ex: Executor, *parts) -> tuple[np.ndarray, object]:
    raw = ex.run(ins.program_bytes(ins.program(*parts)))
    words = np.frombuffer(raw, "<u8")
    return words, decode_trace(raw)


def errors(trace) -> list[tuple[int, int, int]]:
    return [(int(e["code"]), int(e["info16"]), int(e["info32"])) for e in trace.errors]


# ---------------------------------------------------------------- golden vectors
def test_golden_write_read_wait_halt(ex: Executor) -> None:
    program = bytes.fromhex(
        "0000000000000080"  # TIMER_RESET
        "1000000000000082"  # WRITE 0x00000010 (SCRATCH0)
        "efbeadde00000083"  # DATA 0xDEADBEEF
        "1000000001000085"  # READ count 1 from 0x00000010
        "e803000000000081"  # WAIT_UNTIL 1000
        "000000000000008f"  # HALT
    )
    trace = ex.run(program)
    assert trace == bytes.fromhex(
        "0000000000000001"  # TIME_SYNC 0
        "efbeadde00000006"  # READ_DATA index 0, data 0xDEADBEEF
        "e803000000000008"  # HALT status 0, time 1000
    )


def test_golden_errors(ex: Executor) -> None:
    program = bytes.fromhex(
        "0000000000000080"  # TIMER_RESET
        "0000000002000085"  # READ count 2 from 0x00000000 (SERIAL_LO, SERIAL_HI)
        "0500000001000085"  # READ count 1 from 0x00000005: unmapped
        "0000000000000082"  # WRITE SERIAL_LO: read-only
        "0100000000000083"  # DATA 1
        "000000000000008f"  # HALT
    )
    trace = ex.run(program)
    assert trace.hex() == (
        "0000000000000001"  # TIME_SYNC 0
        "0300000000000006"  # READ_DATA 0: serial lo = 3
        "0000000001000006"  # READ_DATA 1: serial hi = 0
        "0000000002000006"  # READ_DATA 2: 0 (unmapped)
        "0500000000000109"  # ERROR UNMAPPED_ADDRESS, info32 = 5
        "0000000000000209"  # ERROR READ_ONLY_ADDRESS, info32 = 0
        "0000000000040008"  # HALT status 1 (errors), time 0
    )


# ---------------------------------------------------------------- registers
def test_reads_return_writes_and_read_indices_count_on(ex: Executor, regs: RegisterFile) -> None:
    values = np.arange(16, dtype=np.uint64) * 0x01010101
    _, tr = run(ex, ins.write_block(SCRATCH, values), ins.read(SCRATCH, 8),
                ins.write(SCRATCH + 3, 7), ins.read(SCRATCH + 2, 3), ins.halt())
    assert tr.reads["index"].tolist() == list(range(11))
    assert tr.reads["data"].tolist() == values[:8].tolist() + [int(values[2]), 7, int(values[4])]
    assert tr.halt["status"][0] == HALT_OK and ex.stats.status == HALT_OK


def test_refused_writes_report_value_and_address(ex: Executor, regs: RegisterFile) -> None:
    capmem = address(Block.CAPMEM_NEURON, 5 << 5 | 1)
    _, tr = run(ex, ins.write([capmem, capmem, address(Block.CAPMEM_NEURON, 30)], [1023, 7, 1]),
                ins.write(address(Block.SPIKE_COUNTER, 0), 1), ins.halt())
    assert errors(tr) == [
        (ErrorCode.VALUE_OUT_OF_RANGE, 1023, capmem),
        (ErrorCode.UNMAPPED_ADDRESS, 0, address(Block.CAPMEM_NEURON, 30)),
        (ErrorCode.READ_ONLY_ADDRESS, 0, address(Block.SPIKE_COUNTER, 0)),
    ]
    assert regs.capmem_neuron[5, 1] == 7
    assert tr.halt["status"][0] == HALT_ERRORS


def test_synapse_matrix_upload_is_one_block(ex: Executor, regs: RegisterFile) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 1 << 32, 1 << 16, dtype=np.uint64) & 0x3F3F3F3F
    start = address(Block.SYNAPSE, 0)
    _, tr = run(ex, ins.write_block(start, values), ins.read(start, 1 << 16), ins.halt())
    assert np.array_equal(regs.synapse.reshape(-1), values)
    assert np.array_equal(tr.reads["data"], values)
    assert regs.version == 1


def test_system_ops(ex: Executor, regs: RegisterFile) -> None:
    regs.add_spike_counts(np.full(512, 3))
    cap = address(Block.CAPMEM_NEURON, 1)
    _, tr = run(ex, ins.write(cap, 9), ins.write(SCRATCH, 5), ins.read(cap),
                ins.system(SystemOp.CHIP_RESET), ins.read(cap), ins.read(SCRATCH),
                ins.write(cap, 4), ins.system(SystemOp.NOP),
                ins.read(address(Block.SPIKE_COUNTER, 0)), ins.halt())
    assert tr.reads["data"].tolist() == [9, 0, 5, 0]
    assert regs.capmem_neuron[0, 1] == 4
    regs.add_spike_counts(np.full(512, 3))
    _, tr = run(ex, ins.read(address(Block.SPIKE_COUNTER, 7)),
                ins.system(SystemOp.CLEAR_SPIKE_COUNTERS),
                ins.read(address(Block.SPIKE_COUNTER, 7)), ins.halt())
    assert tr.reads["data"].tolist() == [3, 0]


# ---------------------------------------------------------------- malformed programs
def _raw(*words: int) -> bytes:
    return np.array(words, "<u8").tobytes()


OP = {i: int(i) << 56 for i in Instr}


@pytest.mark.parametrize(
    ("words", "error", "applied"),
    [
        # unknown opcode 0x77 at word 2: the write before it happened, the one after did not
        ([OP[Instr.WRITE] | SCRATCH, OP[Instr.DATA] | 1, 0x77 << 56, OP[Instr.WRITE] | SCRATCH,
          OP[Instr.DATA] | 2, OP[Instr.HALT]], (ErrorCode.BAD_INSTRUCTION, 0x77, 2), 1),
        # reserved FLASH opcode
        ([OP[Instr.FLASH], OP[Instr.HALT]], (ErrorCode.BAD_INSTRUCTION, 0x91, 0), 0),
        # reserved bits of TIMER_RESET set
        ([OP[Instr.TIMER_RESET] | 1, OP[Instr.HALT]], (ErrorCode.BAD_INSTRUCTION, 0x80, 0), 0),
        # DATA with no WRITE before it
        ([OP[Instr.DATA] | 5, OP[Instr.HALT]], (ErrorCode.BAD_INSTRUCTION, 0x83, 0), 0),
        # WRITE followed by two DATA words: the second is stray
        ([OP[Instr.WRITE] | SCRATCH, OP[Instr.DATA] | 1, OP[Instr.DATA] | 2, OP[Instr.HALT]],
         (ErrorCode.BAD_INSTRUCTION, 0x83, 2), 1),
        # WRITE_BLOCK of 3 with 2 DATA words: the block is not executed
        ([OP[Instr.WRITE_BLOCK] | 3 << 32 | SCRATCH, OP[Instr.DATA] | 1, OP[Instr.DATA] | 2,
          OP[Instr.HALT]], (ErrorCode.TRUNCATED_PROGRAM, 0x84, 3), 0),
        # READ of count 0, unknown system op, MADC_RECORD 0, CADC_SCHEDULE count 0
        ([OP[Instr.READ] | SCRATCH, OP[Instr.HALT]], (ErrorCode.BAD_INSTRUCTION, 0x85, 0), 0),
        ([OP[Instr.SYSTEM] | 9, OP[Instr.HALT]], (ErrorCode.BAD_INSTRUCTION, 0x90, 0), 0),
        ([OP[Instr.MADC_RECORD], OP[Instr.HALT]], (ErrorCode.BAD_INSTRUCTION, 0x8C, 0), 0),
        ([OP[Instr.CADC_SCHEDULE] | 5, OP[Instr.HALT]], (ErrorCode.BAD_INSTRUCTION, 0x8B, 0), 0),
        # address range past 2^32
        ([OP[Instr.READ] | 2 << 32 | 0xFFFFFFFF, OP[Instr.HALT]],
         (ErrorCode.BAD_INSTRUCTION, 0x85, 0), 0),
        # no HALT
        ([OP[Instr.WRITE] | SCRATCH, OP[Instr.DATA] | 1], (ErrorCode.TRUNCATED_PROGRAM, 0, 2), 1),
    ],
)
def test_malformed_programs_stop_with_an_error(ex, regs, words, error, applied) -> None:
    tr = decode_trace(ex.run(_raw(*words)))
    assert errors(tr) == [error]
    assert tr.halt["status"][0] == HALT_ABORTED
    assert regs.scratch[0] == applied


def test_words_after_halt_are_reported_not_run(ex: Executor, regs: RegisterFile) -> None:
    tr = decode_trace(ex.run(_raw(OP[Instr.HALT], OP[Instr.WRITE] | SCRATCH, OP[Instr.DATA] | 1)))
    assert errors(tr) == [(ErrorCode.BAD_INSTRUCTION, 0x82, 1)]
    assert regs.scratch[0] == 0 and tr.halt["status"][0] == HALT_ERRORS


def test_partial_last_word(ex: Executor) -> None:
    tr = decode_trace(ex.run(_raw(OP[Instr.TIMER_RESET]) + b"\x8f\x00"))
    assert errors(tr) == [(ErrorCode.TRUNCATED_PROGRAM, 0, 1)]
    assert tr.halt["status"][0] == HALT_ABORTED


def test_empty_program(ex: Executor) -> None:
    tr = decode_trace(ex.run(b""))
    assert errors(tr) == [(ErrorCode.TRUNCATED_PROGRAM, 0, 0)]


# ---------------------------------------------------------------- time
def test_time_in_past_is_skipped(ex: Executor) -> None:
    _, tr = run(ex, ins.timer_reset(), ins.wait_until(200), ins.wait_until(100),
                ins.wait_until(300), ins.halt())
    assert errors(tr) == [(ErrorCode.TIME_IN_PAST, 0, 2)]
    assert tr.halt["time"][0] == 300


def test_timer_persists_between_programs(ex: Executor) -> None:
    run(ex, ins.timer_reset(), ins.wait_until(5000), ins.halt())
    assert ex.timer == 5000
    words, tr = run(ex, ins.halt())
    assert tr.halt["time"][0] == 5000 and tr.syncs.size == 0
    _, tr = run(ex, ins.wait_until(4000), ins.halt())
    assert errors(tr) == [(ErrorCode.TIME_IN_PAST, 0, 0)]
    _, tr = run(ex, ins.timer_reset(), ins.wait_until(4000), ins.halt())
    assert errors(tr) == [] and tr.halt["time"][0] == 4000 and tr.syncs.tolist() == [0]


def test_timer_reset_mid_program(ex: Executor, regs: RegisterFile) -> None:
    regs.write(LOOP_NODE, 1 << 31)
    words, tr = run(ex, ins.timer_reset(), ins.spikes([100], [1]), ins.wait_until(900),
                    ins.timer_reset(), ins.spikes([50], [2]), ins.halt())
    assert tr.syncs.tolist() == [0, 0]
    ops = (words >> 56).tolist()
    assert ops == [Rec.TIME_SYNC, Rec.SPIKE, Rec.TIME_SYNC, Rec.SPIKE, Rec.HALT]
    assert tr.spikes["time"].tolist() == [100, 50]
    assert tr.halt["time"][0] == 50
    # one implicit episode spans the reset: the second spike is 850 ticks after its start
    (b,) = ex.core.batches
    assert b.spike_time.tolist() == [100, 950] and b.duration.tolist() == [951]


def test_timestamp_wrap_emits_time_sync(ex: Executor, regs: RegisterFile) -> None:
    regs.write(LOOP_NODE, 1 << 31)
    t = (1 << 42) - 2
    words, tr = run(ex, ins.timer_reset(), ins.spikes([t, t + 5, (2 << 42) + 1], [1, 2, 3]),
                    ins.halt())
    assert tr.syncs.tolist() == [0, 1 << 42, 2 << 42]
    assert tr.spikes["time"].tolist() == [t, t + 5, (2 << 42) + 1]
    assert int(words[1]) & ((1 << 42) - 1) == t  # low 42 bits on the wire
    assert tr.halt["time"][0] == (2 << 42) + 1
    assert ex.timer == (2 << 42) + 1
    # records without a timestamp do not tell the host the epoch: the spike after a read
    # still needs its TIME_SYNC
    _, tr = run(ex, ins.timer_reset(), ins.wait_until((1 << 42) + 9), ins.read(SCRATCH),
                ins.spikes([(1 << 42) + 9], [4]), ins.halt())
    assert tr.spikes["time"].tolist() == [(1 << 42) + 9]
    assert tr.syncs.tolist() == [0, 1 << 42]


# ---------------------------------------------------------------- spikes and episodes
def test_spike_loopback_through_crossbar(ex: Executor) -> None:
    times = np.array([10, 10, 10, 10, 10, 37, 99], np.uint64)
    labels = np.array([1, 2, 3, 4, 5, 6, 0x3FFF], np.uint16)
    _, tr = run(ex, ins.write(LOOP_NODE, 1 << 31), ins.timer_reset(), ins.spikes(times, labels),
                ins.halt())
    assert tr.spikes["time"].tolist() == times.tolist()
    assert tr.spikes["label"].tolist() == labels.tolist()
    assert tr.spikes["episode"].tolist() == [-1] * 7  # implicit episode: no EPISODE record
    # a node with mask 0x3 / target 0x2 passes labels ending in binary 10 only
    node = 1 << 31 | 0x3 << 14 | 0x2
    _, tr = run(ex, ins.write(LOOP_NODE, node), ins.timer_reset(), ins.spikes(times, labels),
                ins.halt())
    assert tr.spikes["label"].tolist() == [2, 6]
    # node disabled: nothing comes back
    _, tr = run(ex, ins.write(LOOP_NODE, 0), ins.timer_reset(), ins.spikes(times, labels),
                ins.halt())
    assert tr.spikes.size == 0


def test_episodes_run_as_one_batch(ex: Executor, regs: RegisterFile) -> None:
    regs.write(LOOP_NODE, 1 << 31)
    parts = [ins.timer_reset()]
    for e in range(5):
        t0 = 1000 * e + 100
        spikes = ins.spikes([t0 + 7, t0 + 7 + e], [e, 9])
        parts += [ins.wait_until(t0), ins.episode_start(e), spikes]
    _, tr = run(ex, *parts, ins.wait_until(6000), ins.halt())
    assert ex.stats.core_runs == 1 and ex.stats.episodes == 5
    (b,) = ex.core.batches
    assert b.n_episodes == 5
    assert b.duration.tolist() == [1000, 1000, 1000, 1000, 1900]
    assert b.spike_episode.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert b.spike_time.tolist() == [7, 7, 7, 8, 7, 9, 7, 10, 7, 11]
    assert tr.episodes["index"].tolist() == [0, 1, 2, 3, 4]
    assert tr.episodes["time"].tolist() == [100, 1100, 2100, 3100, 4100]
    assert tr.spikes["episode"].tolist() == b.spike_episode.tolist()
    assert tr.spikes["time"].tolist() == (np.array(b.spike_time, np.int64)
                                          + 1000 * np.array(b.spike_episode) + 100).tolist()


def test_writes_take_effect_from_the_next_episode(ex: Executor, regs: RegisterFile) -> None:
    parts = [ins.write(LOOP_NODE, 1 << 31), ins.timer_reset(),
             ins.episode_start(0), ins.spikes([10], [1]), ins.wait_until(100),
             ins.episode_start(1), ins.spikes([110], [2]),
             ins.write(LOOP_NODE, 0),  # mid-episode: in force from episode 2 on
             ins.wait_until(200), ins.episode_start(2), ins.spikes([210], [3]),
             ins.wait_until(300), ins.episode_start(3), ins.spikes([310], [4]), ins.halt()]
    _, tr = run(ex, *parts)
    assert ex.core.node_at_run == [1 << 31, 0]
    assert [b.n_episodes for b in ex.core.batches] == [2, 2]
    assert tr.spikes["label"].tolist() == [1, 2]
    assert tr.spikes["episode"].tolist() == [0, 1]


def test_spike_counters_seen_by_later_reads(ex: Executor) -> None:
    counter = address(Block.SPIKE_COUNTER, 5)
    _, tr = run(ex, ins.timer_reset(), ins.episode_start(0), ins.spikes([10, 11], [5, 5]),
                ins.read(counter), ins.wait_until(50), ins.episode_start(1),
                ins.spikes([60], [5]), ins.read(counter), ins.halt())
    assert tr.reads["data"].tolist() == [2, 3]
    assert [b.n_episodes for b in ex.core.batches] == [1, 1]


def test_spike_at_next_episode_start_stays_in_its_episode(ex: Executor, regs) -> None:
    regs.write(LOOP_NODE, 1 << 31)
    _, tr = run(ex, ins.timer_reset(), ins.episode_start(0), ins.spikes([100], [1]),
                ins.episode_start(1), ins.spikes([100], [2]), ins.halt())
    (b,) = ex.core.batches
    assert b.spike_episode.tolist() == [0, 1] and b.spike_time.tolist() == [100, 0]
    assert b.duration.tolist() == [101, 1]  # episode 0 extends to cover its last event
    assert tr.spikes["episode"].tolist() == [0, 1]


# ---------------------------------------------------------------- ADC
def test_cadc_schedule_and_trigger(ex: Executor) -> None:
    _, tr = run(ex, ins.timer_reset(), ins.episode_start(0), ins.wait_until(10),
                ins.cadc_schedule(100, 3), ins.wait_until(150), ins.cadc_trigger(),
                ins.wait_until(400), ins.episode_start(1), ins.cadc_trigger(), ins.halt())
    assert tr.cadc["time"].tolist() == [10, 110, 150, 210, 400]
    assert tr.cadc["index"].tolist() == [0, 1, 2, 3, 0]
    assert tr.cadc["episode"].tolist() == [0, 0, 0, 0, 1]
    assert tr.cadc_samples[:, 0].tolist() == [10, 110, 150, 210, 0]  # episode-relative
    assert tr.cadc_samples[:, 1].tolist() == [0, 0, 0, 0, 1]  # episode the core saw
    (b,) = ex.core.batches
    assert b.cadc_time.tolist() == [10, 110, 210, 150, 0]  # in the order they were requested


def test_scheduled_sample_after_next_episode_start_belongs_to_it(ex: Executor) -> None:
    _, tr = run(ex, ins.timer_reset(), ins.episode_start(0), ins.cadc_schedule(60, 3),
                ins.wait_until(100), ins.episode_start(1), ins.halt())
    assert tr.cadc["time"].tolist() == [0, 60, 120]
    assert tr.cadc["episode"].tolist() == [0, 0, 1]
    assert tr.cadc["index"].tolist() == [0, 1, 0]
    (b,) = ex.core.batches
    assert b.cadc_episode.tolist() == [0, 0, 1] and b.cadc_time.tolist() == [0, 60, 20]
    assert tr.halt["time"][0] == 121  # HALT waits for the last sample


def test_barrier_waits_for_adc(ex: Executor) -> None:
    _, tr = run(ex, ins.timer_reset(), ins.cadc_schedule(100, 5), ins.barrier(),
                ins.wait_until(300), ins.halt())
    assert errors(tr) == [(ErrorCode.TIME_IN_PAST, 0, 3)]
    assert tr.halt["time"][0] == 401
    _, tr = run(ex, ins.timer_reset(), ins.cadc_schedule(100, 5), ins.wait_until(300),
                ins.halt())
    assert errors(tr) == []


def test_madc_uses_period_written_in_same_program(ex: Executor) -> None:
    cfg = 20 << 16 | 1 << 12 | 2 << 9 | 7
    _, tr = run(ex, ins.timer_reset(), ins.write(MADC, cfg), ins.wait_until(1000),
                ins.madc_record(4), ins.halt())
    assert tr.madc["time"].tolist() == [1000, 1020, 1040, 1060]
    assert tr.madc["source"].tolist() == [2] * 4
    assert tr.madc["value"].tolist() == [t & 0x3FF for t in (1000, 1020, 1040, 1060)]
    _, tr = run(ex, ins.timer_reset(), ins.write(MADC, 3 << 16 | 1 << 12), ins.madc_record(2),
                ins.halt())
    assert errors(tr) == [(ErrorCode.VALUE_OUT_OF_RANGE, (3 << 16 | 1 << 12) & 0xFFFF, MADC)]
    assert tr.madc.size == 0


def test_trace_is_in_time_order(ex: Executor, regs: RegisterFile) -> None:
    regs.write(LOOP_NODE, 1 << 31)
    regs.write(MADC, 8 << 16 | 1 << 12)
    rng = np.random.default_rng(5)
    parts = [ins.timer_reset()]
    for e in range(20):
        t0 = 500 * e
        sp = np.sort(rng.integers(t0, t0 + 400, 30))
        parts += [ins.wait_until(t0), ins.episode_start(e), ins.cadc_schedule(37, 9),
                  ins.madc_record(13), ins.spikes(sp, rng.integers(0, 1 << 14, 30))]
    words, tr = run(ex, *parts, ins.halt())
    ops = words >> 56
    timed = np.isin(ops, [Rec.SPIKE, Rec.CADC_HEAD, Rec.MADC, Rec.EPISODE, Rec.HALT])
    t = words[timed] & ((1 << 42) - 1)
    assert np.all(np.diff(t.astype(np.int64)) >= 0)
    assert tr.spikes.size == 600 and tr.cadc.size == 180 and tr.madc.size == 260
    assert ex.stats.core_runs == 1
    # every event is attributed to the episode whose window holds it
    for rec in (tr.spikes, tr.cadc, tr.madc):
        assert np.array_equal(rec["episode"], rec["time"].astype(np.int64) // 500)


# ---------------------------------------------------------------- fuzzing
_ops = st.sampled_from([int(i) for i in Instr] + [0x00, 0x7F, 0xFF])


@st.composite
def programs(draw):
    n = draw(st.integers(0, 30))
    words = []
    for _ in range(n):
        op = draw(_ops)
        if draw(st.booleans()):
            payload = draw(st.integers(0, (1 << 56) - 1))
        else:  # small fields: mostly valid instructions
            payload = draw(st.integers(0, 3)) << 42 | draw(st.integers(0, 4)) << 32 | draw(
                st.sampled_from([SCRATCH, LOOP_NODE, MADC, 0, 0x10, 5]))
        if op == Instr.SYSTEM:
            payload &= draw(st.sampled_from([0x3, 0xFF]))
        if op in (Instr.WRITE_BLOCK, Instr.READ, Instr.MADC_RECORD):
            payload &= ~(0xFFFF << 40)  # counts below 256: small traces
        words.append(op << 56 | payload)
    if draw(st.booleans()):
        words.append(int(Instr.HALT) << 56)
    return words


@settings(max_examples=300, deadline=None)
@given(programs())
def test_fuzz_never_raises_and_agrees_with_decoder(words) -> None:
    regs = RegisterFile(9)
    ex = Executor(regs, FakeCore(regs))
    data = _raw(*words) if words else b""
    raw = ex.run(data)
    tr = decode_trace(raw)  # a well-formed trace, always
    assert tr.halt.size == 1 and (np.frombuffer(raw, "<u8")[-1] >> 56) == Rec.HALT
    structural = [e for e in errors(tr) if e[0] in (ErrorCode.BAD_INSTRUCTION,
                                                    ErrorCode.TRUNCATED_PROGRAM)]
    halt = next((i for i, w in enumerate(words) if w == int(Instr.HALT) << 56), None)
    if halt is None:
        assert structural and structural[-1][0] in (ErrorCode.TRUNCATED_PROGRAM,
                                                    ErrorCode.BAD_INSTRUCTION)
        return
    try:
        decode_program(_raw(*words[: halt + 1]))
    except DecodeError as exc:
        assert structural[0][2] == exc.offset
        assert tr.halt["status"][0] == HALT_ABORTED
    else:
        if halt + 1 == len(words):
            assert structural == []
        else:
            assert structural == [(ErrorCode.BAD_INSTRUCTION, words[halt + 1] >> 56, halt + 1)]


decode_program = ins.decode_program


# ---------------------------------------------------------------- timing against a reference
def _reference_timing(prog: list[tuple]) -> tuple[list[int], list[int], int]:
    """Sequential model of the timer: (CADC sample elapsed times in request order,
    word indices of TIME_IN_PAST waits, HALT timer value). Word 0 is EPISODE_START."""
    elapsed, off, pend = 0, 0, 0
    samples, past = [], []
    for i, (kind, a, b) in enumerate(prog, start=1):
        if kind == "reset":
            off = elapsed
        elif kind == "wait":
            if off + a < elapsed:
                past.append(i)
            else:
                elapsed = off + a
        elif kind == "cadc":
            samples += [elapsed + k * b for k in range(a)]
            pend = max(pend, elapsed + (a - 1) * b + 1)
        elif kind == "barrier":
            elapsed = max(elapsed, pend)
    return samples, past, max(elapsed, pend) - off


def _encode_timing(prog: list[tuple]) -> np.ndarray:
    parts = [ins.episode_start(0)]
    for kind, a, b in prog:
        parts.append({"reset": ins.timer_reset, "barrier": ins.barrier}[kind]() if kind in (
            "reset", "barrier") else ins.wait_until(a) if kind == "wait" else
            ins.cadc_schedule(b, a))
    return ins.program(*parts, ins.halt())


_timing_ops = st.one_of(
    st.tuples(st.just("reset"), st.just(0), st.just(0)),
    st.tuples(st.just("wait"), st.integers(0, 3000), st.just(0)),
    st.tuples(st.just("cadc"), st.integers(1, 5), st.integers(0, 400)),
    st.tuples(st.just("barrier"), st.just(0), st.just(0)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_timing_ops, max_size=40))
def test_timing_matches_sequential_reference(prog) -> None:
    regs = RegisterFile(1)
    ex = Executor(regs, FakeCore(regs))
    tr = decode_trace(ex.run(ins.program_bytes(_encode_timing(prog))))
    samples, past, halt = _reference_timing(prog)
    assert [e[2] for e in errors(tr) if e[0] == ErrorCode.TIME_IN_PAST] == past
    assert int(tr.halt["time"][0]) == halt
    assert ex.core.batches[0].cadc_time.tolist() == samples


def test_deep_barrier_chain_uses_the_sequential_path(ex: Executor) -> None:
    from emulator import executor as mod

    prog = [("cadc", 3, 100), ("barrier", 0, 0)] * (mod.FIXED_POINT_PASSES + 4)
    prog += [("reset", 0, 0), ("wait", 10, 0), ("cadc", 2, 50), ("barrier", 0, 0)]
    words = _encode_timing(prog)
    op = (words[1:-1] >> np.uint64(56)).astype(np.int64)
    t = np.where(op == Instr.WAIT_UNTIL, (words[1:-1] & np.uint64((1 << 56) - 1)), 0)
    dur = np.where(op == Instr.CADC_SCHEDULE, 201, 0)
    dur[-2] = 51
    got = mod._timeline_fixed_point(0, t.astype(np.int64), op == Instr.WAIT_UNTIL,
                                    op == Instr.TIMER_RESET, np.flatnonzero(op == Instr.BARRIER),
                                    dur, dur > 0)
    assert got[0] is None  # too deep for the fixed point
    tr = decode_trace(ex.run(ins.program_bytes(words)))
    samples, past, halt = _reference_timing(prog)
    assert ex.core.batches[0].cadc_time.tolist() == samples
    assert int(tr.halt["time"][0]) == halt == 61


def test_malformed_data_inside_a_short_write_block_is_reported_where_a_decoder_meets_it() -> None:
    # WRITE_BLOCK of 2 whose first DATA word has reserved bits, and whose second is missing:
    # a streaming decoder meets the reserved bits (word 1) before the missing word (word 2)
    words = [0x8400000200000010, 0x8300000100000010, 0x8000000000000010,
             0x8000000000000010, 0x8000000000000010, int(Instr.HALT) << 56]
    regs = RegisterFile(9)
    tr = decode_trace(Executor(regs, FakeCore(regs)).run(_raw(*words)))
    with pytest.raises(DecodeError) as exc:
        decode_program(_raw(*words))
    assert exc.value.offset == 1
    assert errors(tr)[0] == (ErrorCode.BAD_INSTRUCTION, int(Instr.DATA), 1)
    assert tr.halt["status"][0] == HALT_ABORTED
    assert regs.scratch[0] == 0  # nothing of the malformed block was written


def _kernel_and_twin(data: bytes, observe) -> list:
    """observe(executor, trace) of one run with the compiled executor passes, one with their
    numpy twins: the two must agree."""
    from emulator import exec_kernels

    out = []
    for enabled in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(exec_kernels, "ENABLED", enabled)
            regs = RegisterFile(1)
            ex = Executor(regs, FakeCore(regs))
            out.append(observe(ex, ex.run(data)))
    return out


@settings(max_examples=100, deadline=None)
@given(st.lists(_timing_ops, max_size=40))
def test_timing_kernel_and_numpy_twin_agree(prog) -> None:
    from emulator import exec_kernels

    words = ins.program_bytes(_encode_timing(prog))
    traces = _kernel_and_twin(
        words, lambda ex, trace: (trace, [b.cadc_time.tolist() for b in ex.core.batches]))
    assert traces[0] == traces[1]
    assert exec_kernels.AVAILABLE


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.lists(st.integers(0, LABEL_MASK), min_size=1,
                                                          max_size=11)), max_size=20))
def test_spike_kernel_and_numpy_twin_agree(groups) -> None:
    from emulator import exec_kernels

    parts = [ins.episode_start(0)]
    t = 0
    for dt, labels in groups:
        t += dt
        parts.append(ins.spikes(np.full(len(labels), t), np.array(labels)))
    words = ins.program_bytes(ins.program(*parts, ins.halt()))
    runs = []
    for enabled in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(exec_kernels, "ENABLED", enabled)
            regs = RegisterFile(1)
            ex = Executor(regs, FakeCore(regs))
            trace = ex.run(words)
            b = ex.core.batches[0] if ex.core.batches else None
            runs.append((trace, None if b is None else (b.spike_time.tolist(),
                                                          b.spike_label.tolist())))
    assert runs[0] == runs[1]
    if runs[0][1] is not None:
        assert runs[0][1][1] == [lab for _, labels in groups for lab in labels]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["madc", "config", "trigger", "cadc", "wait"]),
                          st.integers(0, 40), st.integers(0, 300)), max_size=25))
def test_adc_field_kernel_and_numpy_twin_agree(prog) -> None:
    # MADC periods below the minimum (VALUE_OUT_OF_RANGE), triggers and schedules mixed

    parts, t = [ins.episode_start(0)], 0
    for kind, a, b in prog:
        if kind == "madc":
            parts.append(ins.madc_record(a + 1))
        elif kind == "config":
            parts.append(ins.write(MADC, (a % 8) << 16))
        elif kind == "trigger":
            parts.append(ins.cadc_trigger())
        elif kind == "cadc":
            parts.append(ins.cadc_schedule(b, a % 5 + 1))
        else:
            t += b
            parts.append(ins.wait_until(t))
    words = ins.program_bytes(ins.program(*parts, ins.halt()))
    runs = _kernel_and_twin(words, lambda ex, trace: (
        trace, [(b.cadc_time.tolist(), b.madc_time.tolist()) for b in ex.core.batches]))
    assert runs[0] == runs[1]


def test_cadc_blocks_kernel_equals_numpy_packing() -> None:
    from emulator import exec_kernels
    from emulator import executor as mod

    rng = np.random.default_rng(4)
    samples = rng.integers(0, 256, (9, 512), dtype=np.uint8)
    rows = rng.permutation(9)[:6]
    at = np.sort(rng.choice(np.arange(0, 2000, 80), 6, replace=False)) + rng.integers(0, 5)
    # the same blocks as a trace layout: a CADC_HEAD word before each block
    layout = (at - 1, np.zeros(6, np.uint64), np.full(6, int(Rec.CADC_HEAD) << 56, np.uint64),
              rows.astype(np.int64))
    want = np.full(2100, 7, np.uint64)
    mod._put_cadc(want, at, samples, rows)
    want[at - 1] = int(Rec.CADC_HEAD) << 56
    for split in (False, True):
        out = np.full(2100, 7, np.uint64)
        with pytest.MonkeyPatch.context() as mp:
            # split: the records in two halves on two threads (a long trace on a free host)
            mp.setattr(mod, "PARALLEL_CADC_BLOCKS", 2)
            mod._put_trace(out, layout, 3, samples, split)
        np.testing.assert_array_equal(out, want)
    assert exec_kernels.AVAILABLE
    first = want[at[0]:at[0] + 74]
    assert int(first[0]) >> 56 == int(Rec.CADC_DATA)
    assert [(int(first[0]) >> (8 * j)) & 0xFF for j in range(7)] == samples[rows[0], :7].tolist()
    assert int(first[73]) & ((1 << 56) - 1) == samples[rows[0], 511]


CADC_OFF0 = address(Block.CADC_OFFSET, 0)


def test_readout_register_writes_between_episodes_ride_along_without_splitting(
        ex: Executor, regs: RegisterFile) -> None:
    """CADC_OFFSET / MADC_CONFIG written before each EPISODE_START: one core run, each episode
    carrying the values in force at its start; any other write still splits."""
    parts = [ins.timer_reset()]
    for e, off in enumerate([0, 5, 0xF9, 20]):
        parts += [ins.write_block(CADC_OFF0, np.full(512, off)),
                  ins.write(MADC, (8 + e) << 16 | 1 << 12 | e), ins.wait_until(1000 * e),
                  ins.episode_start(e), ins.cadc_trigger(), ins.madc_record(2)]
    _, tr = run(ex, *parts, ins.halt())
    assert ex.stats.core_runs == 1 and ex.stats.episodes == 4
    b = ex.core.batches[0]
    assert b.cadc_offset[:, 0].tolist() == [0, 5, 0xF9, 20]
    assert (b.cadc_offset == b.cadc_offset[:, :1]).all()
    assert [c & 0x1FF for c in b.madc_config.tolist()] == [0, 1, 2, 3]
    assert tr.madc["time"].tolist() == [0, 8, 1000, 1009, 2000, 2010, 3000, 3011]  # periods
    assert int(regs.cadc_offset[7]) == 20 and int(regs.madc_config) & 0x1FF == 3
    # a write to a compiled register between episodes still splits the batch
    parts = [ins.timer_reset(), ins.episode_start(0), ins.cadc_trigger(),
             ins.write(address(Block.CAPMEM_NEURON, 0), 300), ins.wait_until(1000),
             ins.episode_start(1), ins.cadc_trigger()]
    run(ex, *parts, ins.halt())
    assert ex.stats.core_runs == 2
    assert ex.core.batches[-1].cadc_offset is None  # nothing changed inside either group


def test_per_episode_cadc_offsets_read_like_separate_runs() -> None:
    """With the real (ideal) core: each episode's CADC codes move by its own offset register,
    and the model is compiled once."""
    from emulator.analog import AnalogCore, MismatchConfig
    from protocol.addressmap import NeuronCell

    regs = RegisterFile(2)
    regs.capmem_neuron[:, NeuronCell.V_LEAK] = 600  # membrane at ~ 600 mV: codes ~100
    regs.capmem_neuron[:, NeuronCell.I_BIAS_LEAK] = 420
    core = AnalogCore(2, regs, MismatchConfig.ideal())
    ex = Executor(regs, core)
    offs = [0, 12, 0xF4, 3]
    parts = [ins.timer_reset()]
    for e, off in enumerate(offs):
        parts += [ins.write_block(CADC_OFF0, np.full(512, off)), ins.wait_until(1000 * e),
                  ins.episode_start(e), ins.wait_until(1000 * e + 300), ins.cadc_trigger()]
    _, tr = run(ex, *parts, ins.halt())
    model = core._model
    assert ex.stats.core_runs == 1
    codes = tr.cadc_samples.astype(np.int64)
    signed = np.array([o - 256 if o > 127 else o for o in offs])
    base = codes[0]
    assert 10 < base.mean() < 245  # not clipped: the shifts show exactly
    np.testing.assert_array_equal(codes - base, np.repeat(signed[:, None], 512, 1))
    run(ex, ins.timer_reset(), ins.write_block(CADC_OFF0, np.full(512, 9)), ins.episode_start(0),
        ins.cadc_trigger(), ins.halt())
    assert core._model is model  # readout registers never recompile the chip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=8), st.lists(st.integers(-5, 70), max_size=40),
       st.booleans())
def test_rank_sorted_equals_searchsorted(ref, keys, sort_keys) -> None:
    """Episode of each event (_assign): the repeat over sorted keys is searchsorted's answer,
    for unsorted keys too (its fallback)."""
    from emulator.executor import _rank_sorted

    ref_a = np.sort(np.asarray(ref, np.int64))
    keys_a = np.asarray(sorted(keys) if sort_keys else keys, np.int64)
    got = _rank_sorted(ref_a, keys_a)
    np.testing.assert_array_equal(got, np.searchsorted(ref_a, keys_a, side="right"))


_WORD_OPS = [int(i) for i in Instr] + [0x00, 0x7F, 0xFE]  # every instruction and unknown ones


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_WORD_OPS), st.integers(0, (1 << 56) - 1),
                          st.sampled_from([0, 0xFF, (1 << 32) - 1, (1 << 56) - 1])),
                max_size=30),
       st.booleans(), st.integers(0, 7))
def test_word_check_kernel_and_numpy_twin_agree(words, halt, cut) -> None:
    """Malformed programs (unknown opcodes, reserved bits, stray or missing DATA, zero counts,
    bad system ops, words after HALT, a partial last word): kernel and numpy twin stop at the
    same word with the same error."""

    ws = [op << 56 | (payload & mask) for op, payload, mask in words]
    if halt:
        ws.append(int(Instr.HALT) << 56)
    data = np.array(ws, "<u8").tobytes() + b"\x01" * cut
    runs = _kernel_and_twin(data, lambda ex, trace: (trace, ex.stats))
    assert runs[0] == runs[1]
