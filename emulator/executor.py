"""The FPGA's playback executor: one program (u64 instruction words) in, one trace out.

Everything runs in whole-program passes, never per word or event in Python. With numba,
compiled passes (emulator/exec_kernels.py) do the work: one scan checks every word, one pass over
the executed instructions runs the playback timer and lists every event with its episode, and
one builds the trace (records merged in time order, each CADC head followed by its samples).
Their numpy twins here do the same with whole-array operations (the timer as a running maximum
of WAIT_UNTIL targets per TIMER_RESET segment, one lexsort of the records); tests compare the
two. Register accesses are bulk numpy operations, and all episodes between two register writes
go to the analog core as one EpisodeBatch. Python loops run only over sync points (episode
groups split by writes, runs of writes vs reads, barriers that wait on barriers).

Semantics (what a firmware must reproduce; docs/protocol.md):
- Time: instructions take no time; WAIT_UNTIL t waits until timer t (earlier than now: ERROR
  TIME_IN_PAST, skipped). The timer persists between programs; TIMER_RESET zeroes it and emits
  TIME_SYNC(0). Scheduled ADC samples run in the background; BARRIER waits until the last one has
  been taken (one tick after its time), HALT does too. A TIME_SYNC(epoch << 42) precedes the first
  timed record of each new 42-bit epoch.
- Registers: accesses happen in program order at once. READ_DATA records count up from 0 in each
  program; a refused access gives an ERROR record (unmapped reads also a READ_DATA of 0).
- Episodes: EPISODE_START begins an episode (EPISODE record). Events before the first one (if
  any spike or ADC request comes before it) form an implicit episode from the first timed
  instruction, with no EPISODE record. An event issued by an instruction belongs to that
  instruction's episode; a scheduled sample to the episode running at its time. Register writes
  (and spike-counter reads, CHIP_RESET, CLEAR_SPIKE_COUNTERS) between two EPISODE_STARTs split the
  episodes into groups run one after the other: the analog core sees writes from the next
  EPISODE_START on, and spike counters include every episode started before a read. Writes of
  the readout registers (CADC_OFFSET, MADC_CONFIG) do not split: each episode carries the
  values in force at its EPISODE_START into the batch (same results, one core run).
- Errors never raise. The first malformed word (unknown opcode, reserved bits, zero count, stray
  or missing DATA) stops execution there with BAD_INSTRUCTION / TRUNCATED_PROGRAM; words after HALT
  are reported, not run. The trace always ends with HALT: status 0 ok, 1 error records, 2 aborted,
  0x3FFF emulator failure.
- Records are in time order; records of one instant in program order, background events (spikes
  out of the chip, scheduled samples) after the instructions of that instant.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from emulator import exec_kernels
from emulator.registers import MADC_VALID_MASK, RegisterFile
from protocol.addressmap import BLOCK_SHIFT, Block, address
from protocol.wire import (
    CADC_CHANNELS,
    CADC_DATA_WORDS,
    CADC_SAMPLES_PER_WORD,
    LABEL_MASK,
    OPCODE_SHIFT,
    TIMESTAMP_BITS,
    TIMESTAMP_MASK,
    ErrorCode,
    Instr,
    Rec,
    SystemOp,
)

M32 = 0xFFFFFFFF
M56 = (1 << 56) - 1
COUNT24 = 0xFFFFFF
MADC_CONFIG_ADDR = address(Block.MADC_CONFIG, 0)
MADC_MIN_PERIOD = 4
HALT_OK = 0
HALT_ERRORS = 1  # the program ran to its HALT, but the trace holds ERROR records
HALT_ABORTED = 2  # execution stopped at a bad or truncated instruction (or no HALT)
HALT_INTERNAL = 0x3FFF  # the emulator itself failed (see its stderr); nothing else is reliable

_KNOWN = np.zeros(256, bool)
_KNOWN[[int(i) for i in Instr if i is not Instr.FLASH]] = True
_SPIKE_N = np.zeros(256, np.int64)
for _n, _op in enumerate((Instr.SPIKE1, Instr.SPIKE2, Instr.SPIKE3, Instr.SPIKE4), start=1):
    _SPIKE_N[int(_op)] = _n
_TIMED = np.zeros(256, bool)
_TIMED[[int(Instr.TIMER_RESET), int(Instr.WAIT_UNTIL), int(Instr.SPIKE1), int(Instr.SPIKE2),
        int(Instr.SPIKE3), int(Instr.SPIKE4), int(Instr.CADC_TRIGGER), int(Instr.CADC_SCHEDULE),
        int(Instr.MADC_RECORD), int(Instr.BARRIER)]] = True
_SYSTEM_OPS = {int(o) for o in SystemOp}
_SYSTEM_OK = np.zeros(256, bool)
_SYSTEM_OK[list(_SYSTEM_OPS)] = True
_M14 = LABEL_MASK
# payload bits each opcode may use (wire.py layouts); any other bit set is a BAD_INSTRUCTION
_FIELDS = {
    Instr.TIMER_RESET: 0,
    Instr.WAIT_UNTIL: M56,
    Instr.WRITE: M32,
    Instr.DATA: M32,
    Instr.WRITE_BLOCK: M56,
    Instr.READ: M56,
    Instr.SPIKE1: _M14 << 42,
    Instr.SPIKE2: _M14 << 42 | _M14 << 28,
    Instr.SPIKE3: _M14 << 42 | _M14 << 28 | _M14 << 14,
    Instr.SPIKE4: M56,
    Instr.CADC_TRIGGER: 0,
    Instr.CADC_SCHEDULE: M56,
    Instr.MADC_RECORD: COUNT24 << 32,
    Instr.EPISODE_START: _M14 << 42,
    Instr.BARRIER: 0,
    Instr.HALT: 0,
    Instr.SYSTEM: 0xFF,
}
_RESERVED = np.zeros(256, np.uint64)
for _k, _m in _FIELDS.items():
    _RESERVED[int(_k)] = M56 & ~_m
# opcodes whose words get the rarer checks of _scan (counts, ranges, system ops)
_RARE = np.zeros(256, bool)
_RARE[[int(Instr.WRITE_BLOCK), int(Instr.READ), int(Instr.MADC_RECORD), int(Instr.CADC_SCHEDULE),
       int(Instr.SYSTEM)]] = True
_SPLITTING_SYSTEM_OPS = {int(SystemOp.CHIP_RESET), int(SystemOp.CLEAR_SPIKE_COUNTERS)}
_READOUT_BLOCKS = [int(Block.CADC_OFFSET), int(Block.MADC_CONFIG)]
_CADC_BLOCK = 1 + CADC_DATA_WORDS
_U64 = np.uint64
_LAST = np.iinfo(np.int64).max  # sort position of HALT (and the stop error before it)
_FILL_LAYOUT = sys.byteorder == "little" and CADC_SAMPLES_PER_WORD == 7 and CADC_CHANNELS == 512


def _rec(kind: Rec) -> int:
    return int(kind) << OPCODE_SHIFT


@dataclass
class _Records:
    """Trace records under construction: one row per record, put in (elapsed, seq, sub) order
    by _trace_layout or exec_kernels.trace_layout."""

    elapsed: list[np.ndarray] = field(default_factory=list)  # i64 monotone program clock
    seq: list[np.ndarray] = field(default_factory=list)  # i64 program position (x2, see below)
    sub: list[np.ndarray] = field(default_factory=list)  # i64 tie-break
    word: list[np.ndarray] = field(default_factory=list)  # u64 record word, time bits still 0
    timed: list[np.ndarray] = field(default_factory=list)  # bool: low 42 bits carry the time
    cadc_row: list[np.ndarray] = field(default_factory=list)  # i64 row in cadc samples, or -1

    def add(self, elapsed, seq, sub, word, *, timed: bool, cadc_row=None) -> None:
        """Rows of one kind; scalars stand for every row (one row where all are scalars)."""
        n = max((np.size(x) for x in (elapsed, seq, sub, word) if np.ndim(x)), default=1)
        if n == 0:
            return
        for col, x, dtype in ((self.elapsed, elapsed, np.int64), (self.seq, seq, np.int64),
                              (self.sub, sub, np.int64), (self.word, word, _U64)):
            col.append(np.full(n, x, dtype) if np.ndim(x) == 0 else np.asarray(x, dtype))
        self.timed.append(np.full(n, timed))
        self.cadc_row.append(np.full(n, -1, np.int64) if cadc_row is None
                             else np.asarray(cadc_row, np.int64))


@dataclass
class ExecStats:
    """What the last program did (for logs and tests)."""

    words: int = 0
    episodes: int = 0
    core_runs: int = 0
    errors: int = 0
    status: int = HALT_OK
    trace_words: int = 0


class Executor:
    """Runs playback programs against a RegisterFile and an analog core.

    core: an object with `run(EpisodeBatch) -> EpisodeResult` (emulator.analog.AnalogCore); built
    lazily from `regs.serial` on the first program that needs it when not given.
    """

    def __init__(self, regs: RegisterFile, core: object | None = None) -> None:
        self.regs = regs
        self._core = core
        self.timer = 0  # playback timer after the last program, in ticks
        self.stats = ExecStats()
        self._noise = np.random.default_rng([int(regs.serial) & M32, int(regs.serial) >> 32, 0x7E])

    @property
    def core(self) -> object:
        if self._core is None:
            from emulator.analog import AnalogCore

            self._core = AnalogCore(self.regs.serial, self.regs)
        return self._core

    # ------------------------------------------------------------------ entry points
    def run(self, program: bytes) -> bytes:
        """Execute one program message; returns the trace message (little-endian u64 words)."""
        return self.run_view(program).tobytes()

    def run_view(self, program: bytes) -> memoryview:
        """run() without the final copy: the trace as a read-only byte view of its array
        (the board sends megabytes of CADC samples; each copy of them costs ~1 ms)."""
        data = bytes(program)
        n = len(data) // 8
        # (read-only view of the message on a little-endian host: the words are only read)
        words = np.frombuffer(data, "<u8", count=n).astype(_U64, copy=False)
        out = self.run_words(words, truncated_bytes=len(data) % 8)
        if sys.byteorder != "little":
            out = out.astype("<u8")
        out.flags.writeable = False
        return memoryview(out).cast("B")

    def run_words(self, words: np.ndarray, *, truncated_bytes: int = 0) -> np.ndarray:
        return _Run(self, np.asarray(words, _U64).reshape(-1), truncated_bytes).execute()


class _Run:
    """State of one program execution (split out so Executor stays small and re-entrant)."""

    def __init__(self, ex: Executor, words: np.ndarray, truncated_bytes: int) -> None:
        self.ex = ex
        self.regs = ex.regs
        self.words = words
        self.truncated_bytes = truncated_bytes
        self.rec = _Records()
        self.n_errors = 0
        self._cadc_wait = None  # the core's CADC codes still being written (run_deferred)

    # ------------------------------------------------------------------ structure
    def _validate(self) -> tuple[int, int, tuple[int, int, int] | None]:
        """(end, status, stop error): words[:end] execute; error = (code, info16, info32).

        The first malformed word stops execution there (a streaming FPGA has executed what came
        before it): unknown opcode, reserved bits set, a count of 0, an address range past
        2^32, an unknown system op, a DATA word no WRITE asked for (BAD_INSTRUCTION), or a
        WRITE/WRITE_BLOCK whose DATA words are missing (TRUNCATED_PROGRAM at the missing one).
        """
        w = self.words
        n = w.size
        if exec_kernels.use() and OPCODE_SHIFT == 56:  # every check in one pass
            op = np.empty(n, np.uint8)
            self.hist = np.zeros(256, np.int64)
            bad, halt, self.bounds = exec_kernels.program_scan(
                w, _KNOWN, _RESERVED, _SYSTEM_OK, _SPIKE_N, op, self.hist)
            h = self.hist
            if h[Instr.DATA] or h[Instr.WRITE] or h[Instr.WRITE_BLOCK]:
                nd, ndop, ndw = np.empty(n, np.int64), np.empty(n, np.uint8), np.empty(n, _U64)
                k, short, missing, stray = exec_kernels.compact(w, op, nd, ndop, ndw)
                self.nd, self.ndop, self.ndw = nd[:k], ndop[:k], ndw[:k]
            else:  # no DATA words, none needed: every word is an instruction
                short = missing = stray = -1
                self.nd, self.ndop, self.ndw = np.arange(n), op, w
        else:
            bad, short, missing, stray, halt = self._scan()
        # candidate errors: (detected at, stop index, code, info16, info32). The one a streaming
        # decoder meets first wins (a WRITE_BLOCK whose DATA words run short is detected at the
        # missing word, after a malformed DATA word inside it); execution stops at `stop`.
        cands: list[tuple[int, int, int, int, int]] = []
        if n and int(w[0] >> _U64(OPCODE_SHIFT)) == Instr.DATA:
            cands.append((0, 0, ErrorCode.BAD_INSTRUCTION, int(Instr.DATA), 0))
        if bad >= 0:
            cands.append((bad, bad, ErrorCode.BAD_INSTRUCTION, int(w[bad] >> _U64(OPCODE_SHIFT)),
                          bad))
        if short >= 0:
            cands.append((missing, int(self.nd[short]), ErrorCode.TRUNCATED_PROGRAM,
                          int(self.ndop[short]), missing))
        if stray >= 0:
            cands.append((stray, stray, ErrorCode.BAD_INSTRUCTION, int(Instr.DATA), stray))
        halt_at = halt if halt >= 0 else n
        if self.truncated_bytes:  # a partial last word: the program was cut off
            cands.append((n, n, ErrorCode.TRUNCATED_PROGRAM, 0, n))
        cands = [c for c in cands if c[1] < halt_at or (halt < 0 and c[1] == n)]
        if cands:
            _, stop, code, info16, info32 = min(cands)
            return stop, HALT_ABORTED, (int(code), info16, info32)
        if halt < 0:
            return n, HALT_ABORTED, (int(ErrorCode.TRUNCATED_PROGRAM), 0, n)
        if halt_at + 1 < n:  # words after HALT are not executed: say so
            after = halt_at + 1
            return halt_at, HALT_ERRORS, (int(ErrorCode.BAD_INSTRUCTION),
                                          int(w[after] >> _U64(OPCODE_SHIFT)), after)
        return halt_at, HALT_OK, None

    def _scan(self) -> tuple[int, int, int, int, int]:
        """exec_kernels.program_scan and compact's numpy twin: sets nd, ndop, ndw (the words
        that are not DATA) and hist (words per opcode); returns (first bad word, first
        short write (index into nd), the word it misses, first stray DATA word, first good
        HALT), -1: none."""
        w = self.words
        n = w.size
        op = (w >> _U64(OPCODE_SHIFT)).view(np.int64)  # < 256: the bits are the value
        nd = np.flatnonzero(op != Instr.DATA)
        bad = ~_KNOWN[op] | ((w & _RESERVED[op]) != 0)  # (reserved masks lie below bit 56)
        ndop = op[nd]
        run = np.append(nd[1:], n) - nd - 1  # DATA words following each non-DATA word
        rare = np.flatnonzero(_RARE[op])
        self.nd, self.ndop, self.ndw = nd, ndop, w[nd]
        self.hist = np.bincount(op, minlength=256)
        # the rarer checks on the few words they concern
        rop = op[rare]
        cnt_at = rare[(rop == Instr.WRITE_BLOCK) | (rop == Instr.READ)
                      | (rop == Instr.MADC_RECORD)]
        count_c = ((w[cnt_at] >> _U64(32)) & _U64(COUNT24)).view(np.int64)
        bad[cnt_at] |= count_c == 0
        ranged = op[cnt_at] != Instr.MADC_RECORD
        bad[cnt_at[ranged]] |= (w[cnt_at[ranged]] & _U64(M32)).view(np.int64) + count_c[
            ranged] - 1 > M32
        at = rare[rop == Instr.CADC_SCHEDULE]
        bad[at] |= ((w[at] & _U64(M56)) >> _U64(42)) == 0
        at = rare[rop == Instr.SYSTEM]
        bad[at] |= ~_SYSTEM_OK[(w[at] & _U64(0xFF)).view(np.int64)]
        need = (ndop == Instr.WRITE).astype(np.int64)
        blk = np.flatnonzero(ndop == Instr.WRITE_BLOCK)
        need[blk] = ((w[nd[blk]] >> _U64(32)) & _U64(COUNT24)).view(np.int64)
        first_bad = short = missing = stray = halt = -1
        hit = np.flatnonzero(bad)
        if hit.size:
            first_bad = int(hit[0])
        hit = np.flatnonzero(run < need)
        if hit.size:
            short = int(hit[0])
            missing = int(nd[short] + 1 + run[short])
        hit = np.flatnonzero(run > need)
        if hit.size:
            stray = int(nd[hit[0]] + 1 + need[hit[0]])
        halts = np.flatnonzero(ndop == Instr.HALT)
        halts = halts[~bad[nd[halts]]]
        if halts.size:
            halt = int(nd[halts[0]])
        return first_bad, short, missing, stray, halt

    # ------------------------------------------------------------------ timing
    def _events(self) -> None:
        """The timeline and the events of the executed instructions: _times, _stimuli and
        _episodes, or exec_kernels.events (their compiled twin) in one pass."""
        if not exec_kernels.use():
            self._times()
            self._stimuli()
            self._episodes()
            return
        op = self.op_i
        period = cfg = np.zeros(0, np.int64)
        bounds = self.bounds.copy()
        # the scan counted ADC samples over every word; only executed words sample, and an
        # MADC_RECORD with too short a period none (a 24-bit count after HALT must not size
        # the buffers: a few such words would ask for gigabytes)
        if self.hist[Instr.MADC_RECORD]:
            is_madc = op == Instr.MADC_RECORD
            period, cfg = self._madc_config_at(self.I[is_madc])
            count = ((self.w_i[is_madc] >> _U64(32)) & _U64(COUNT24)).astype(np.int64)
            bounds[2] = int(count[period >= MADC_MIN_PERIOD].sum())
        if self.hist[Instr.CADC_SCHEDULE] or self.hist[Instr.CADC_TRIGGER]:
            sched = self.w_i[op == Instr.CADC_SCHEDULE]
            bounds[1] = int((((sched >> _U64(42)) & _U64(0x3FFF)).astype(np.int64)).sum()
                            + np.count_nonzero(op == Instr.CADC_TRIGGER))
        ((self.e, now, off, pend), ep, spk, cadc, madc,
         (self.past_at, self.reset_at, self.bad_madc_at, self.bad_madc_cfg)) = exec_kernels.events(
            self.I, self.end, op, self.w_i, self.ex.timer, period, cfg, MADC_MIN_PERIOD,
            _SPIKE_N, _TIMED, bounds)
        self.e_halt = max(now, pend)
        self.off_halt = off
        (self.ep_start, self.ep_pos, self.ep_index, self.ep_explicit, self.ep_end,
         self.ep_next_pos) = ep
        self.spk_label, self.spk_ep, self.spk_rel = spk
        self.cadc_time, self.cadc_ep, self.cadc_rel, *self.cadc_after = cadc
        self.madc_time, self.madc_ep, self.madc_rel, self.madc_source = madc
        self.n_episodes = self.ep_start.size

    def _times(self) -> None:
        """Elapsed time (i64 ticks, monotone, ignores TIMER_RESET) at which each instruction
        executes, segment offsets of TIMER_RESETs, ADC sample schedules and TIME_IN_PAST errors."""
        I = self.I
        op = self.op_i
        w = self.w_i
        n = I.size
        is_wait = op == Instr.WAIT_UNTIL
        is_reset = op == Instr.TIMER_RESET
        # ADC durations (ticks from issue to last sample, +1: a sample completes after its tick)
        is_cs = op == Instr.CADC_SCHEDULE
        is_ct = op == Instr.CADC_TRIGGER
        is_madc = op == Instr.MADC_RECORD
        madc_period, madc_cfg = self._madc_config_at(I[is_madc])
        period = np.zeros(n, np.int64)
        period[is_madc] = madc_period
        # fields only where their instruction is (0 elsewhere): most words are spikes / waits
        t = _field(w, is_wait, 0, M56)
        cs_count = _field(w, is_cs, 42, LABEL_MASK)
        cs_interval = _field(w, is_cs, 0, TIMESTAMP_MASK)
        madc_n = _field(w, is_madc, 32, COUNT24)
        bad_madc = is_madc & (period < MADC_MIN_PERIOD) & (madc_n > 0)
        n_adc = cs_count + is_ct + np.where(bad_madc, 0, madc_n)
        step = cs_interval + period
        dur = np.where(n_adc > 0, (n_adc - 1) * step + 1, 0)
        has_adc = n_adc > 0
        barriers = np.flatnonzero(op == Instr.BARRIER)
        e0 = self.ex.timer
        e, seg_off, past, pend = _timeline_fixed_point(e0, t, is_wait, is_reset, barriers, dur,
                                                       has_adc)
        if e is None:  # barriers waiting on barriers, deeper than the fixed point goes
            e, seg_off, past, pend = _timeline_sequential(e0, t, is_wait, is_reset, barriers,
                                                          dur, has_adc, op)
        now = int(e[-1]) if n else e0
        off = int(seg_off[-1]) if n else 0
        self.e = e
        self.e_halt = max(now, pend)
        self.off_halt = off
        self.past_at = np.flatnonzero(past)
        self.reset_at = np.flatnonzero(is_reset)
        self.is_cs, self.is_ct, self.is_madc = is_cs, is_ct, is_madc
        self.cs_count, self.cs_interval = cs_count, cs_interval
        self.madc_n, self.period, self.bad_madc = madc_n, period, bad_madc
        self.madc_cfg = np.zeros(n, np.int64)
        self.madc_cfg[is_madc] = madc_cfg
        self.bad_madc_at = np.flatnonzero(bad_madc)
        self.bad_madc_cfg = self.madc_cfg[self.bad_madc_at]

    def _madc_config_at(self, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MADC period and config word in force at word indices `at` (earlier writes applied)."""
        cur = int(self.regs.madc_config)
        if at.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pos, val = self._writes_to(MADC_CONFIG_ADDR)
        ok = (val & ~MADC_VALID_MASK) == 0
        pos, val = pos[ok], val[ok]
        resets = self.I[(self.op_i == Instr.SYSTEM)
                        & ((self.w_i & _U64(0xFF)) == SystemOp.CHIP_RESET)]
        pos = np.concatenate([pos, resets])
        val = np.concatenate([val, np.zeros(resets.size, np.int64)])
        order = np.argsort(pos, kind="stable")
        pos, val = pos[order], val[order]
        k = np.searchsorted(pos, at) - 1
        cfg = np.where(k >= 0, val[np.maximum(k, 0)] if val.size else cur, cur)
        return cfg >> 16, cfg

    def _writes_to(self, addr: int) -> tuple[np.ndarray, np.ndarray]:
        """Word index of each write (WRITE/WRITE_BLOCK) of `addr` in the executed range, value."""
        I = self.I
        op = self.op_i
        w = self.w_i
        base = (w & _U64(M32)).astype(np.int64)
        cnt = np.where(op == Instr.WRITE, 1, ((w >> _U64(32)) & _U64(COUNT24)).astype(np.int64))
        hit = ((op == Instr.WRITE) | (op == Instr.WRITE_BLOCK)) & (base <= addr) & (
            addr < base + cnt
        )
        at = I[hit]
        data_idx = at + 1 + (addr - base[hit])
        return at, (self.words[data_idx] & _U64(M32)).astype(np.int64)

    # ------------------------------------------------------------------ register access
    def _elements(self) -> None:
        """Expand WRITE/WRITE_BLOCK/READ into per-word accesses in program order."""
        I = self.I
        op = self.op_i
        w = self.w_i
        self.el_applied = self.sys_applied = 0
        if self.hist[Instr.DATA] or self.hist[Instr.READ]:
            self._accesses()
        else:  # (a program of spikes and waits: none)
            self.el_owner = self.el_addr = self.el_val = np.zeros(0, np.int64)
            self.el_read = np.zeros(0, bool)
            self.el_code = np.zeros(0, np.uint8)
        sys_at = (np.flatnonzero(op == Instr.SYSTEM) if self.hist[Instr.SYSTEM]
                  else np.zeros(0, np.int64))
        self.sys_pos = I[sys_at]
        self.sys_code = (w[sys_at] & _U64(0xFF)).astype(np.int64)

    def _accesses(self) -> None:
        """The register accesses (el_*: owning word, address, value, is a read) of the
        executed writes and reads, in program order."""
        I = self.I
        op = self.op_i
        w = self.w_i
        end = self.end
        # writes: every DATA word in the executed range belongs to the instruction before it
        data_idx = np.flatnonzero((self.words[:end] >> _U64(OPCODE_SHIFT)) == Instr.DATA)
        owner_pos = np.searchsorted(I, data_idx) - 1
        w_owner = I[owner_pos]
        w_addr = (w[owner_pos] & _U64(M32)).astype(np.int64) + (data_idx - w_owner - 1)
        w_val = (self.words[data_idx] & _U64(M32)).astype(np.int64)
        # reads
        is_read = op == Instr.READ
        r_instr = I[is_read]
        r_cnt = ((w[is_read] >> _U64(32)) & _U64(COUNT24)).astype(np.int64)
        r_base = (w[is_read] & _U64(M32)).astype(np.int64)
        tot = int(r_cnt.sum())
        starts = np.cumsum(r_cnt) - r_cnt
        r_off = np.arange(tot, dtype=np.int64) - np.repeat(starts, r_cnt)
        r_owner = np.repeat(r_instr, r_cnt)
        r_addr = np.repeat(r_base, r_cnt) + r_off
        owner = np.concatenate([w_owner, r_owner])
        sub = np.concatenate([data_idx - w_owner - 1, r_off])
        order = np.lexsort((sub, owner))
        self.el_owner = owner[order]
        self.el_addr = np.concatenate([w_addr, r_addr])[order]
        self.el_val = np.concatenate([w_val, np.zeros(tot, np.int64)])[order]
        self.el_read = np.concatenate([np.zeros(w_addr.size, bool), np.ones(tot, bool)])[order]
        self.el_code = np.zeros(owner.size, np.uint8)

    def _split_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Word indices of accesses after which a new episode group must start, and of the
        readout-register writes (CADC offsets, MADC config), which only change what the
        following episodes' ADC samples read: those ride along in the batch instead."""
        if not (self.el_owner.size or self.sys_pos.size):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        blk = self.el_addr >> BLOCK_SHIFT
        readout = ~self.el_read & np.isin(blk, _READOUT_BLOCKS)
        splitting = np.where(self.el_read, blk == Block.SPIKE_COUNTER,
                             (blk != Block.SYSTEM) & ~readout)
        sys_split = np.isin(self.sys_code, list(_SPLITTING_SYSTEM_OPS))
        return (np.union1d(self.el_owner[splitting], self.sys_pos[sys_split]),
                np.unique(self.el_owner[readout]))

    def _apply_until(self, pos: int) -> None:
        """Apply register accesses and system ops of words before index `pos`, in order."""
        if self.el_applied == self.el_owner.size and self.sys_applied == self.sys_pos.size:
            return  # (all done, or none at all)
        el_hi = int(np.searchsorted(self.el_owner, pos))
        sys_hi = int(np.searchsorted(self.sys_pos, pos))
        el_lo, sys_lo = self.el_applied, self.sys_applied
        if el_hi == el_lo and sys_hi == sys_lo:
            return
        # runs of equal kind, cut at system ops
        cuts = {el_lo, el_hi}
        rd = self.el_read[el_lo:el_hi]
        cuts.update((np.flatnonzero(rd[1:] != rd[:-1]) + 1 + el_lo).tolist())
        sys_at = np.searchsorted(self.el_owner[el_lo:el_hi], self.sys_pos[sys_lo:sys_hi]) + el_lo
        cuts.update(sys_at.tolist())
        points = sorted(cuts)
        si = sys_lo
        for a, b in zip(points[:-1], points[1:], strict=True):
            if b > a:
                si = self._apply_sys(si, sys_hi, int(self.el_owner[a]))
                self._apply_elements(a, b)
        self._apply_sys(si, sys_hi, pos)
        self.el_applied, self.sys_applied = el_hi, sys_hi

    def _apply_sys(self, si: int, sys_hi: int, limit: int) -> int:
        """Run the system ops at word indices below `limit`; returns the next one."""
        while si < sys_hi and self.sys_pos[si] < limit:
            code = self.sys_code[si]
            if code == SystemOp.CHIP_RESET:
                self.regs.chip_reset()
            elif code == SystemOp.CLEAR_SPIKE_COUNTERS:
                self.regs.clear_spike_counters()
            si += 1
        return si

    def _apply_elements(self, a: int, b: int) -> None:
        addr = self.el_addr[a:b]
        if self.el_read[a]:
            vals, codes = self.regs.read_array(addr.astype(_U64))
            self.el_val[a:b] = vals
        else:
            codes = self.regs.write_array(addr.astype(_U64), self.el_val[a:b].astype(_U64))
        self.el_code[a:b] = codes

    # ------------------------------------------------------------------ episodes
    def _stimuli(self) -> None:
        """Injected spikes and requested ADC samples: elapsed time, issuing instruction."""
        op = self.op_i
        w = self.w_i
        nspk = _SPIKE_N[op]
        si = np.flatnonzero(nspk)
        cnt = nspk[si]
        rep = np.repeat(si, cnt)
        k = np.arange(rep.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        shift = (42 - 14 * k).astype(np.uint64)
        self.spk_label = ((w[rep] >> shift) & _U64(LABEL_MASK)).astype(np.uint16)
        self.spk_from = rep  # position in I of the issuing instruction
        self.spk_time = self.e[rep]
        ci = np.flatnonzero(self.is_cs | self.is_ct)  # (few: no pass over counts of all)
        cc = np.where(self.is_cs[ci], self.cs_count[ci], 0) + self.is_ct[ci]
        ci, cc = ci[cc > 0], cc[cc > 0]
        j = np.arange(int(cc.sum())) - np.repeat(np.cumsum(cc) - cc, cc)
        self.cadc_from = np.repeat(ci, cc)
        self.cadc_time = self.e[self.cadc_from] + j * self.cs_interval[self.cadc_from]
        mi = np.flatnonzero(self.is_madc)
        mc = np.where(self.bad_madc[mi], 0, self.madc_n[mi])
        mi, mc = mi[mc > 0], mc[mc > 0]
        j = np.arange(int(mc.sum())) - np.repeat(np.cumsum(mc) - mc, mc)
        self.madc_from = np.repeat(mi, mc)
        self.madc_time = self.e[self.madc_from] + j * self.period[self.madc_from]
        self.madc_source = (self.madc_cfg[self.madc_from] >> 9) & 0x7

    def _assign(self, times: np.ndarray, frm: np.ndarray) -> np.ndarray:
        """Episode row of each event. An event happening when its instruction executes belongs
        to the episode that instruction is in (program order); a later scheduled sample to the
        last episode started at or before its time."""
        by_pos = _rank_sorted(self.ep_pos, self.I[frm]) - 1
        now = times == self.e[frm]
        if now.all():  # (injected spikes always are)
            return by_pos
        by_time = _rank_sorted(self.ep_start, times) - 1
        return np.where(now, by_pos, by_time)

    def _episodes(self) -> None:
        """Episode starts (elapsed) and program positions; an implicit first episode starts at
        the first timed instruction when events happen before any EPISODE_START."""
        I = self.I
        op = self.op_i
        es = np.flatnonzero(op == Instr.EPISODE_START)
        self.ep_start = self.e[es]
        self.ep_pos = I[es]
        self.ep_index = ((self.words[self.ep_pos] >> _U64(42)) & _U64(LABEL_MASK)).astype(np.int64)
        self.ep_explicit = np.ones(es.size, bool)
        events = ((self.spk_time, self.spk_from), (self.cadc_time, self.cadc_from),
                  (self.madc_time, self.madc_from))
        assigned = [self._assign(t, f) for t, f in events]
        early = any(bool((a < 0).any()) for a in assigned if a.size)
        if early:
            t0 = int(np.flatnonzero(_TIMED[op])[0])  # exists: some event was issued
            e_before = int(self.e[t0 - 1]) if t0 > 0 else self.ex.timer
            self.ep_start = np.concatenate([[e_before], self.ep_start]).astype(np.int64)
            self.ep_pos = np.concatenate([[int(I[t0])], self.ep_pos]).astype(np.int64)
            self.ep_index = np.concatenate([[-1], self.ep_index])
            self.ep_explicit = np.concatenate([[False], self.ep_explicit])
            assigned = [self._assign(t, f) for t, f in events]
        self.spk_ep, self.cadc_ep, self.madc_ep = assigned
        # episode ends: the next start, or HALT; never before the last event in the episode
        n_ep = self.ep_start.size
        end = np.append(self.ep_start[1:], self.e_halt).astype(np.int64)
        for t, ep in ((self.spk_time, self.spk_ep), (self.cadc_time, self.cadc_ep),
                      (self.madc_time, self.madc_ep)):
            if t.size:
                _max_into(end, ep, t + 1)
        self.ep_end = end
        self.ep_next_pos = np.append(self.ep_pos[1:], exec_kernels.NO_NEXT_EPISODE)
        self.n_episodes = n_ep
        # event times within their episodes (what the core gets)
        self.spk_rel = self.spk_time - self.ep_start[self.spk_ep]
        self.cadc_rel = self.cadc_time - self.ep_start[self.cadc_ep]
        self.madc_rel = self.madc_time - self.ep_start[self.madc_ep]

    def _simulate(self) -> None:
        """Run every episode group through the analog core, applying register ops in between."""
        n_ep = self.n_episodes
        # groups: a register write (or spike-counter read) between two episode starts splits
        splits, readout = self._split_positions()
        if splits.size:
            k = np.searchsorted(self.ep_pos, splits, side="right")
            new_group = np.zeros(n_ep, bool)
            if n_ep:
                new_group[0] = True
                new_group[k[(k > 0) & (k < n_ep)]] = True
            bounds = [*np.flatnonzero(new_group).tolist(), n_ep]
        else:  # (no accesses between the episodes: one group)
            bounds = [0, n_ep] if n_ep else [0]
        # episodes whose readout registers differ from the previous episode's
        self.readout_change = np.zeros(n_ep, bool)
        if readout.size:
            k = np.searchsorted(self.ep_pos, readout, side="right")
            self.readout_change[k[(k > 0) & (k < n_ep)]] = True
        self.out_spk: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.cadc_samples: np.ndarray | None = None  # allocated by the first group
        self.madc_values = np.zeros(self.madc_time.size, np.uint16)
        for g0, g1 in zip(bounds[:-1], bounds[1:], strict=True):
            self._apply_until(int(self.ep_pos[g0]))
            self._run_group(g0, g1)
        self._apply_until(self.end)
        if self.cadc_samples is None:
            self.cadc_samples = np.zeros((self.cadc_time.size, CADC_CHANNELS), np.uint8)

    def _run_group(self, g0: int, g1: int) -> None:
        from emulator.analog import EpisodeBatch

        ex = self.ex
        start = self.ep_start[g0:g1]
        cadc_offset = madc_config = None
        change = np.flatnonzero(self.readout_change[g0 + 1:g1]) + g0 + 1
        if change.size:  # readout registers per episode, in force at each EPISODE_START
            cadc_offset = np.empty((g1 - g0, CADC_CHANNELS), np.uint32)
            madc_config = np.empty(g1 - g0, np.int64)
            for a, b in zip([g0, *change.tolist()], [*change.tolist(), g1], strict=True):
                self._apply_until(int(self.ep_pos[a]))
                cadc_offset[a - g0:b - g0] = self.regs.cadc_offset
                madc_config[a - g0:b - g0] = int(self.regs.madc_config)
        whole = g0 == 0 and g1 == self.n_episodes  # (usual: no selection, no copies)
        sel_s, sel_c, sel_m = (slice(None) if whole else np.flatnonzero((ep >= g0) & (ep < g1))
                               for ep in (self.spk_ep, self.cadc_ep, self.madc_ep))
        batch = EpisodeBatch(
            n_episodes=g1 - g0,
            duration=(self.ep_end[g0:g1] - start).astype(np.uint64),
            # (times within their episodes are >= 0: the u64 view holds the same values)
            spike_episode=_local(self.spk_ep[sel_s], g0),
            spike_time=self.spk_rel[sel_s].view(np.uint64),
            spike_label=self.spk_label[sel_s],
            cadc_episode=_local(self.cadc_ep[sel_c], g0),
            cadc_time=self.cadc_rel[sel_c].view(np.uint64),
            madc_episode=_local(self.madc_ep[sel_m], g0),
            madc_time=self.madc_rel[sel_m].view(np.uint64),
            noise_key=int(ex._noise.integers(0, 1 << 63)),
            cadc_offset=cadc_offset,
            madc_config=madc_config,
        )
        all_c = whole or sel_c.size == self.cadc_time.size  # one group holds every sample
        deferred = getattr(ex.core, "run_deferred", None)
        if deferred is not None and all_c:
            # one group holds every sample: the core's workers may still write the codes
            # while the trace records are put together (_cadc_wait before they are packed)
            result = deferred(batch)
            self._cadc_wait = getattr(result, "wait", None)
        else:
            result = ex.core.run(batch)
        self.core_runs += 1
        out_ep = np.asarray(result.spike_episode, np.int64) + g0
        out_t = self.ep_start[out_ep] + np.asarray(result.spike_time, np.int64)
        self.out_spk.append((out_t, np.asarray(result.spike_label, np.int64), out_ep))
        samples = np.asarray(result.cadc_samples, np.uint8).reshape(-1, CADC_CHANNELS)
        if all_c:  # no copy
            self.cadc_samples = samples
        else:
            if self.cadc_samples is None:
                self.cadc_samples = np.zeros((self.cadc_time.size, CADC_CHANNELS), np.uint8)
            self.cadc_samples[sel_c] = samples
        self.madc_values[sel_m] = np.asarray(result.madc_values, np.uint16)
        self.regs.add_spike_counts(np.asarray(result.spike_counts))

    # ------------------------------------------------------------------ trace
    def _cadc_ready(self) -> None:
        """Wait for CADC codes the core's worker still writes (run_deferred)."""
        wait, self._cadc_wait = self._cadc_wait, None
        if wait is not None:
            wait()

    def _async_seq(self, times: np.ndarray, ep: np.ndarray) -> np.ndarray:
        """Sort position of an event at elapsed `times` in episode row `ep`: after every
        instruction executed at or before it, but inside its episode (odd: never ties with an
        instruction's own records, which sort at 2 * word index)."""
        if exec_kernels.use():  # a walk along the instructions (events come in time order)
            out = np.empty(times.size, np.int64)
            exec_kernels.event_seq(self.e, self.I, self.end, times, ep, self.ep_pos,
                                   self.ep_next_pos, out)
            return out
        pos = np.append(self.I, self.end)[np.searchsorted(self.e, times, side="right")]
        return np.clip(2 * pos - 1, 2 * self.ep_pos[ep] + 1, 2 * self.ep_next_pos[ep] - 1)

    def _error(self, code: int, info16, info32, elapsed, seq, sub=0) -> None:
        info16 = np.asarray(info16, np.int64) & 0xFFFF
        info32 = np.asarray(info32, np.int64) & M32
        word = (_rec(Rec.ERROR) | (int(code) << 48) | (info16 << 32) | info32).astype(_U64)
        self.rec.add(elapsed, seq, sub, word, timed=False)
        self.n_errors += word.size

    def _access_records(self) -> None:
        """READ_DATA for every register read, ERROR for every refused access."""
        pos_e = np.zeros(self.words.size + 1, np.int64)  # elapsed time at each access's word
        pos_e[self.I] = self.e
        el_e = pos_e[self.el_owner]
        el_seq = 2 * self.el_owner
        sub = 2 * np.arange(self.el_owner.size, dtype=np.int64)
        rd = np.flatnonzero(self.el_read)
        idx = np.arange(rd.size, dtype=np.int64) & COUNT24
        word = (_rec(Rec.READ_DATA) | (idx << 32) | self.el_val[rd]).astype(_U64)
        self.rec.add(el_e[rd], el_seq[rd], sub[rd], word, timed=False)
        bad = np.flatnonzero(self.el_code)
        codes = self.el_code[bad].astype(np.int64)
        info16 = np.where(codes == ErrorCode.VALUE_OUT_OF_RANGE, self.el_val[bad] & 0xFFFF, 0)
        for code in np.unique(codes).tolist():
            m = codes == code
            self._error(code, info16[m], self.el_addr[bad][m], el_e[bad][m], el_seq[bad][m],
                        sub[bad][m] + 1)

    @staticmethod
    def _compiled_trace() -> bool:
        """Whether exec_kernels.trace_words / trace_fill build the trace (their CADC packing
        needs 512 channels, 7 a word, on a little-endian host)."""
        return exec_kernels.use() and _FILL_LAYOUT

    def _collect(self) -> None:
        """Trace records of everything but HALT: TIME_SYNC at TIMER_RESETs, EPISODE markers,
        errors of instructions and register accesses, READ_DATA, and the events of the core
        runs (SPIKE, CADC_HEAD, MADC). With the kernels, the EPISODE, SPIKE and CADC_HEAD
        records are left to exec_kernels.trace_words (_assemble): their arrays go there."""
        rec = self.rec
        I = self.I
        e = self.e
        compiled = self._compiled_trace()
        # TIME_SYNC(0) at each TIMER_RESET
        r = self.reset_at
        self.reset_e, self.reset_seq = e[r], 2 * I[r]
        if r.size:
            rec.add(self.reset_e, self.reset_seq, 0, _rec(Rec.TIME_SYNC), timed=False)
        if not compiled:  # EPISODE markers
            ex = self.ep_explicit
            word = _rec(Rec.EPISODE) | (self.ep_index[ex].astype(_U64) << _U64(42))
            rec.add(self.ep_start[ex], 2 * self.ep_pos[ex], 0, word, timed=True)
        if self.past_at.size:  # TIME_IN_PAST
            p = self.past_at
            self._error(ErrorCode.TIME_IN_PAST, 0, I[p], e[p], 2 * I[p])
        if self.bad_madc_at.size:  # MADC without a usable period
            b = self.bad_madc_at
            self._error(ErrorCode.VALUE_OUT_OF_RANGE, self.bad_madc_cfg, MADC_CONFIG_ADDR, e[b],
                        2 * I[b])
        if self.el_owner.size:
            self._access_records()
        # spikes that reached FPGA_RECORD
        self.spk_out = tuple(x[0] if len(self.out_spk) == 1 else np.concatenate(x)
                             for x in zip(*self.out_spk, strict=True)) if self.out_spk else (
            np.zeros(0, np.int64),) * 3
        t, lab, ep = self.spk_out
        if t.size and not compiled:
            word = _rec(Rec.SPIKE) | ((lab & LABEL_MASK).astype(_U64) << _U64(42))
            rec.add(t, self._async_seq(t, ep), np.arange(t.size), word, timed=True)
        # CADC samples: index within episode = rank among the episode's samples, in time order
        self.cadc_rank = rank = np.empty(self.cadc_time.size, np.int64)
        if rank.size and not (compiled and exec_kernels.cadc_rank(self.cadc_ep, self.cadc_time,
                                                                  rank)):
            order = np.lexsort((np.arange(rank.size), self.cadc_time, self.cadc_ep))
            ep_sorted = self.cadc_ep[order]
            new_ep = np.flatnonzero(np.concatenate(([True], ep_sorted[1:] != ep_sorted[:-1])))
            first = np.repeat(new_ep, np.diff(new_ep, append=ep_sorted.size))
            rank[order] = np.arange(order.size) - first
        if rank.size and not compiled:
            word = _rec(Rec.CADC_HEAD) | ((rank & LABEL_MASK).astype(_U64) << _U64(42))
            seq = self._async_seq(self.cadc_time, self.cadc_ep)
            rows = np.arange(rank.size)
            rec.add(self.cadc_time, seq, 1 << 40 | rows, word, timed=True, cadc_row=rows)
        if self.madc_time.size:
            word = (_rec(Rec.MADC) | (self.madc_source.astype(_U64) << _U64(52))
                    | ((self.madc_values.astype(_U64) & _U64(0x3FF)) << _U64(42)))
            seq = self._async_seq(self.madc_time, self.madc_ep)
            rec.add(self.madc_time, seq, 2 << 40 | np.arange(self.madc_time.size), word,
                    timed=True)

    def _assemble(self, status: int) -> np.ndarray:
        """The trace: every record and HALT in time order, with the playback timer, TIME_SYNCs
        where the 42-bit epoch changes, and the CADC samples after their heads."""
        rec = self.rec
        rec.add(self.e_halt, _LAST, 0, _rec(Rec.HALT) | (status << 42), timed=True)
        cols = [np.concatenate(c) for c in (rec.elapsed, rec.seq, rec.sub, rec.word, rec.timed,
                                            rec.cadc_row)]
        # (a core that ran on several workers just now found a second core free)
        split = int(getattr(self.ex._core, "workers_used", 1)) > 1
        if self._compiled_trace():  # with the episode and event records; sort, timer, layout
            size, layout, mid = exec_kernels.trace_words(
                tuple(cols[:5]),
                (self.ep_start, self.ep_pos, self.ep_index, self.ep_explicit, self.ep_next_pos),
                self.spk_out, (self.cadc_time, self.cadc_ep, self.cadc_rank, *self.cadc_after),
                (self.e, self.I, self.end, self.reset_e, self.reset_seq), CADC_DATA_WORDS)
            out = np.empty(size, _U64)  # every word is written by _put_trace
            self._cadc_ready()
            _put_trace(out, layout, mid, self.cadc_samples, split)
        else:
            out, blocks, rows = _trace_layout(*cols, self.reset_e, self.reset_seq)
            self._cadc_ready()
            _put_cadc(out, blocks, self.cadc_samples, rows)
        ex = self.ex
        ex.timer = int(self.e_halt - self.off_halt)
        return out

    # ------------------------------------------------------------------ driver
    def execute(self) -> np.ndarray:
        ex = self.ex
        self.core_runs = 0
        self.end, status, stop_err = self._validate()
        # position, opcode and word of each executed instruction, read by every pass
        k = int(np.searchsorted(self.nd, self.end))
        self.I, self.op_i, self.w_i = self.nd[:k], self.ndop[:k], self.ndw[:k]
        self._events()
        self._elements()
        self._simulate()
        self._collect()
        if stop_err is not None:
            code, info16, info32 = stop_err
            self._error(code, info16, info32, self.e_halt, _LAST - 1)
        if status == HALT_OK and self.n_errors:
            status = HALT_ERRORS
        out = self._assemble(status)
        ex.stats = ExecStats(words=self.words.size, episodes=int(self.ep_explicit.sum()),
                             core_runs=self.core_runs, errors=self.n_errors, status=status,
                             trace_words=out.size)
        return out


def _local(ep: np.ndarray, g0: int) -> np.ndarray:
    """Episode rows of a group starting at row g0, as the core takes them (i32)."""
    return (ep - g0 if g0 else ep).astype(np.int32, copy=False)


_NONE = -(1 << 62)  # "no candidate" in elapsed-time maxima
FIXED_POINT_PASSES = 8


def _timeline(e0: int, t: np.ndarray, is_wait: np.ndarray, is_reset: np.ndarray,
              bar: np.ndarray, bar_floor: np.ndarray):
    """Elapsed time of every instruction given fixed barrier floors (elapsed ticks).

    e is the running maximum of each instruction's candidate time: a WAIT_UNTIL's target plus
    its TIMER_RESET segment's offset, a barrier's floor. Segment offsets (elapsed time at each
    TIMER_RESET) follow the max-plus recurrence x[s+1] = max(x[s] + M[s], BM[s]) (M: largest
    wait target of the segment, BM: largest barrier floor), solved with a cumsum and a cummax.
    Returns (e, offset per instruction, past-WAIT mask).
    """
    seg = np.cumsum(is_reset)
    n_seg = int(seg[-1]) + 1
    tw = np.where(is_wait, t, 0)
    m = np.zeros(n_seg, np.int64)
    np.maximum.at(m, seg, tw)
    bm = np.full(n_seg, _NONE, np.int64)
    if bar.size:
        np.maximum.at(bm, seg[bar], bar_floor)
    x = np.zeros(n_seg, np.int64)  # segment 0 keeps offset 0 (timer = elapsed), floor e0
    if n_seg > 1:
        x1 = max(e0, int(m[0]), int(bm[0]))
        p = np.concatenate([[0], np.cumsum(m[1:-1])])  # sum of M[1..s-1] for s = 1..
        y = np.maximum(x1, np.maximum.accumulate(np.concatenate([[_NONE], bm[1:-1] - p[1:]])))
        x[1:] = y + p
    off = x[seg]
    cand = np.where(is_wait, off + tw, off)
    if bar.size:
        cand[bar] = np.maximum(cand[bar], bar_floor)
    e = np.maximum.accumulate(np.maximum(cand, e0))
    before = np.concatenate([[e0], e[:-1]])
    return e, off, is_wait & (off + tw < before)


def _pending(e: np.ndarray, dur: np.ndarray, has_adc: np.ndarray, e0: int) -> np.ndarray:
    """End of the latest ADC schedule issued before each instruction (exclusive), >= e0."""
    ends = np.where(has_adc, e + dur, e0)
    return np.concatenate([[e0], np.maximum.accumulate(ends)[:-1]])


def _timeline_fixed_point(e0, t, is_wait, is_reset, bar, dur, has_adc):
    """Barrier floors by iteration: each pass raises the floors to the ADC work pending at the
    barriers; floors only grow, so a consistent result is the exact one. Programs whose
    barriers wait on each other deeper than FIXED_POINT_PASSES return None (use the loop)."""
    n = t.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool), e0
    floor = np.full(bar.size, _NONE, np.int64)
    for _ in range(FIXED_POINT_PASSES if has_adc.any() and bar.size else 1):
        e, off, past = _timeline(e0, t, is_wait, is_reset, bar, floor)
        if not (has_adc.any() and bar.size):
            break
        need = _pending(e, dur, has_adc, e0)[bar]
        if np.all(need <= e[bar]):
            break
        floor = np.maximum(floor, need)
    else:
        return None, None, None, None
    pend = int((e[has_adc] + dur[has_adc]).max()) if has_adc.any() else e0
    return e, off, past, pend


def _timeline_sequential(e0, t, is_wait, is_reset, bar, dur, has_adc, op):
    """The same timeline, one barrier-free stretch at a time (any barrier depth)."""
    n = t.size
    e = np.empty(n, np.int64)
    seg_off = np.empty(n, np.int64)
    past = np.zeros(n, bool)
    now, off, pend = e0, 0, e0
    bounds = [0, *(bar + 1).tolist(), n]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if hi <= lo:
            continue
        e_c, off_c, past_c = _chunk_times(now, off, t[lo:hi], is_wait[lo:hi], is_reset[lo:hi])
        pend = max(pend, _max_end(e_c, dur[lo:hi], has_adc[lo:hi]))
        if op[hi - 1] == Instr.BARRIER:
            e_c[-1] = max(e_c[-1], pend)
        e[lo:hi], seg_off[lo:hi], past[lo:hi] = e_c, off_c, past_c
        now, off = int(e_c[-1]), int(off_c[-1])
    return e, seg_off, past, pend


def _chunk_times(now: int, off: int, t: np.ndarray, is_wait: np.ndarray, is_reset: np.ndarray):
    """Elapsed time of each instruction of a barrier-free stretch, its segment offset, and
    which WAIT_UNTILs lie in the past. `now`/`off`: elapsed time and segment offset before it."""
    sub = np.cumsum(is_reset)  # sub-segment id; a TIMER_RESET opens a new one
    n_sub = int(sub[-1]) + 1
    tw = np.where(is_wait, t, 0)
    # maximum WAIT target per sub-segment (0 when none; targets are >= 0)
    seg_max = np.zeros(n_sub, np.int64)
    np.maximum.at(seg_max, sub, tw)
    # offsets: sub-segment 0 keeps `off` (floor `now`); each TIMER_RESET sets off := elapsed now
    offs = np.empty(n_sub, np.int64)
    offs[0] = off
    if n_sub > 1:
        end0 = max(now, off + int(seg_max[0]))
        offs[1:] = end0 + np.concatenate([[0], np.cumsum(seg_max[1:-1])])
    seg_off = offs[sub]
    cand = np.where(is_wait, seg_off + tw, np.where(is_reset, seg_off, now))
    e = np.maximum.accumulate(np.maximum(cand, now))
    before = np.concatenate([[now], e[:-1]])
    past = is_wait & (seg_off + tw < before)
    return e, seg_off, past


def _field(w: np.ndarray, where: np.ndarray, shift: int, mask: int) -> np.ndarray:
    """(w >> shift) & mask as int64 at the words `where` selects, 0 elsewhere."""
    out = np.zeros(w.size, np.int64)
    at = np.flatnonzero(where)
    out[at] = ((w[at] >> _U64(shift)) & _U64(mask)).view(np.int64)
    return out


def _rank_sorted(ref: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """np.searchsorted(ref, keys, side="right") for sorted ref: where keys are sorted too (events
    are issued in program order), from the few refs' positions among the keys (one short
    searchsorted and a repeat instead of a binary search per key: ~10x faster for 32 k spikes)."""
    if keys.size < 2 or not bool((keys[1:] >= keys[:-1]).all()):
        return np.searchsorted(ref, keys, side="right")
    # refs <= key[i] <=> i >= the first key position not below each ref
    cut = np.searchsorted(keys, ref, side="left")
    return np.repeat(np.arange(ref.size + 1, dtype=np.int64),
                     np.diff(cut, prepend=0, append=keys.size))


def _max_into(out: np.ndarray, idx: np.ndarray, vals: np.ndarray) -> None:
    """np.maximum.at(out, idx, vals); one reduceat when idx is sorted (events issued in
    program order), which ufunc.at is many times slower than."""
    if idx.size > 1 and not bool((idx[1:] >= idx[:-1]).all()):
        np.maximum.at(out, idx, vals)
        return
    first = np.flatnonzero(np.concatenate([[True], idx[1:] != idx[:-1]]))
    keys = idx[first]
    out[keys] = np.maximum(out[keys], np.maximum.reduceat(vals, first))


def _max_end(e: np.ndarray, dur: np.ndarray, has: np.ndarray) -> int:
    if not has.any():
        return 0
    return int((e[has] + dur[has]).max())


def _trace_layout(elapsed: np.ndarray, seq: np.ndarray, sub: np.ndarray, word: np.ndarray,
                  timed: np.ndarray, cadc_row: np.ndarray, reset_e: np.ndarray,
                  reset_seq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """exec_kernels.trace_layout's numpy twin: the trace words of records sorted by (elapsed,
    seq, sub), CADC blocks left out; (words, position of each block, its sample row)."""
    order = np.lexsort((sub, seq, elapsed))
    elapsed, seq, word, timed, cadc_row = (
        elapsed[order], seq[order], word[order], timed[order], cadc_row[order])
    # playback timer of each record: elapsed minus the offset of its TIMER_RESET segment
    offs = np.concatenate([[0], reset_e])
    seg = _count_le(reset_e, reset_seq, elapsed, seq)
    timer = elapsed - offs[seg]
    is_sync = (word >> _U64(OPCODE_SHIFT)) == Rec.TIME_SYNC
    # the host knows the epoch (time >> 42) of the last TIME_SYNC or timed record it saw;
    # a timed record of another epoch needs a TIME_SYNC first (a reset's sync is epoch 0)
    epoch = np.where(is_sync, 0, timer >> TIMESTAMP_BITS)
    marked = np.where(timed | is_sync, np.arange(timed.size), -1)
    last = np.concatenate([[-1], np.maximum.accumulate(marked)[:-1]])
    known = np.where(last >= 0, epoch[np.maximum(last, 0)], 0)
    need_sync = timed & ~is_sync & (epoch != known)
    word = np.where(timed, word | (timer.astype(_U64) & _U64(TIMESTAMP_MASK)), word)
    size = np.where(cadc_row >= 0, _CADC_BLOCK, 1) + need_sync
    out = np.empty(int(size.sum()), _U64)  # every word is written here or by _put_cadc
    at = np.cumsum(size) - size
    sync_t = (timer[need_sync] >> TIMESTAMP_BITS) << TIMESTAMP_BITS  # the wrap moment
    out[at[need_sync]] = _rec(Rec.TIME_SYNC) | (sync_t.astype(_U64) & _U64(M56))
    head = at + need_sync
    out[head] = word
    rows = np.flatnonzero(cadc_row >= 0)
    return out, head[rows] + 1, cadc_row[rows]


def _count_le(ref_e: np.ndarray, ref_seq: np.ndarray, e: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """For each (e, seq), how many (ref_e, ref_seq) pairs are <= it (refs sorted)."""
    if ref_e.size == 0:
        return np.zeros(e.size, np.int64)
    # refs are TIMER_RESETs in program order: elapsed and seq both non-decreasing
    lo = np.searchsorted(ref_e, e, side="left")
    hi = np.searchsorted(ref_e, e, side="right")
    count = lo.copy()
    tie = np.flatnonzero(hi > lo)
    for_tie = np.searchsorted(ref_seq, seq[tie], side="right")
    count[tie] = np.clip(for_tie, lo[tie], hi[tie])
    return count


# CADC blocks below which _put_trace writes on the calling thread alone (~0.07 us each; a
# hand-off to the second thread costs ~50 us)
PARALLEL_CADC_BLOCKS = 1024
_pack_pool: ThreadPoolExecutor | None = None


def _put_trace(out: np.ndarray, layout: tuple, mid: int, samples: np.ndarray,
               split: bool = False) -> None:
    """Write the records of an exec_kernels.trace_layout into out, each CADC_HEAD followed by
    the CADC_DATA words of its sample row (one sequential pass); split: a second core is free
    (the analog core's last run had workers), a long trace goes in two halves at once (the
    kernel releases the GIL; disjoint words: the same bytes)."""
    s64 = np.ascontiguousarray(samples, np.uint8).reshape(-1, CADC_CHANNELS).view("<u8")
    if not s64.flags.aligned:  # (a view at an odd offset: its aligned copy)
        s64 = s64.copy()
    rows = layout[3]
    if rows.size and int(rows.max()) >= s64.shape[0]:  # (the kernel reads rows unchecked)
        raise ValueError(f"CADC sample row {int(rows.max())} requested, the analog core "
                         f"returned {s64.shape[0]} rows")
    head = np.uint8(Rec.CADC_DATA)
    n = layout[0].size
    blocks = int(np.count_nonzero(layout[3] >= 0)) if split else 0
    if split and blocks >= PARALLEL_CADC_BLOCKS:
        global _pack_pool
        if _pack_pool is None:
            _pack_pool = ThreadPoolExecutor(1, thread_name_prefix="cadc-pack")
        fut = _pack_pool.submit(exec_kernels.trace_fill, out, layout, s64, mid, n, head)
        try:
            exec_kernels.trace_fill(out, layout, s64, 0, mid, head)
        finally:
            fut.result()
        return
    exec_kernels.trace_fill(out, layout, s64, 0, n, head)


def _put_cadc(out: np.ndarray, at: np.ndarray, samples: np.ndarray, rows: np.ndarray) -> None:
    """out[at[r]:at[r] + CADC_DATA_WORDS] = the CADC_DATA words of samples[rows[r]]
    (exec_kernels.trace_fill's numpy twin)."""
    out[at[:, None] + np.arange(CADC_DATA_WORDS)] = _pack_cadc(samples[rows])


def _pack_cadc(samples: np.ndarray) -> np.ndarray:
    """[C, 512] u8 -> [C, 74] u64 CADC_DATA words (channel 7k+j in byte j of word k, opcode in
    byte 7; the 6 unused slots of the last word zero), built as bytes, viewed as LE words."""
    c = samples.shape[0]
    full = CADC_CHANNELS // CADC_SAMPLES_PER_WORD  # 73 full words, then one with 1 sample
    raw = np.empty((c, CADC_DATA_WORDS, 8), np.uint8)
    raw[:, :full, :CADC_SAMPLES_PER_WORD] = samples[:, : full * CADC_SAMPLES_PER_WORD].reshape(
        c, full, CADC_SAMPLES_PER_WORD)
    raw[:, full, :CADC_SAMPLES_PER_WORD] = 0
    raw[:, full, : CADC_CHANNELS - full * CADC_SAMPLES_PER_WORD] = samples[
        :, full * CADC_SAMPLES_PER_WORD :]
    raw[:, :, 7] = int(Rec.CADC_DATA)
    return raw.view("<u8").reshape(c, CADC_DATA_WORDS)
