"""Program builder: config writes, reads with tickets, and batches of timed episodes.

A Program is an ordered list of playback instruction words (protocol/instructions.py) with the
bookkeeping a user needs afterwards: every read gets a *ticket* that resolves to its values in the
trace, every episode block a ticket that resolves to its spikes / CADC / MADC data as arrays
(hostdriver/traces.py). `Program.run(board)` runs it and keeps the host's belief of the chip
config (hostdriver/chip/state.py) in step with the writes the program made.

Time: the program starts with TIMER_RESET (playback time 0). Low-level timed methods
(`wait_until`, `spikes`, ...) take absolute ticks (8 ns) in the current timer segment. `episodes()`
opens its own segment (BARRIER, TIMER_RESET) so it never depends on how long earlier writes
took, and lays its episodes out back to back: episode k starts at lead + k * (duration + gap)
with EPISODE_START (global neuron reset), its input spikes, CADC schedule and MADC recording at
times relative to its start. Everything for all episodes is built with whole-array numpy,
except the input spikes: one compiled (numba) pass checks and places them, another packs them
and merges them into the block (the numpy twin of both gives the same words).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hostdriver.chip import state
from hostdriver.chip.config import ChipConfig
from hostdriver.chip.values import config_error
from protocol import instructions as ins
from protocol.codec import NUMBA, LazyJit, numba_works
from protocol.errors import BoardError
from protocol.wire import LABEL_MASK, OPCODE_SHIFT, TICKS_PER_US, Instr, SystemOp

__all__ = [
    "CADCSchedule",
    "ConfigTicket",
    "EpisodeTicket",
    "EpisodeWrites",
    "MADCSchedule",
    "Program",
    "ReadTicket",
    "RunResult",
    "SpikeInput",
    "to_ticks",
]

_M24 = (1 << 24) - 1
_M32 = (1 << 32) - 1
_M56 = (1 << 56) - 1
MAX_EPISODES = 1 << 14  # EPISODE_START carries a 14-bit index; one program numbers them uniquely


def to_ticks(value: object, unit: str = "us") -> np.ndarray | int:
    """Times in `unit` ("us" or "ticks") as int64 ticks of 8 ns (rounded to the nearest tick)."""
    a = np.asarray(value, np.float64 if unit == "us" else None)
    if unit == "us":
        out = np.rint(a * TICKS_PER_US).astype(np.int64)
    elif unit == "ticks":
        if a.dtype.kind == "f" and not np.all(a == np.round(a)):
            raise config_error(f"times in ticks must be integers, got {a!r}")
        out = a.astype(np.int64)
    else:
        raise config_error(f"time unit must be 'us' or 'ticks', got {unit!r}")
    return int(out) if out.ndim == 0 else out


# ============================================================================ episode inputs
@dataclass(frozen=True)
class SpikeInput:
    """Input spikes of an episode block: parallel arrays, time relative to the episode start."""

    episode: Any  # [S] int, 0..n_episodes-1
    time: Any  # [S] time since the episode start (unit of the episodes() call)
    label: Any  # [S] 14-bit event label

    @classmethod
    def empty(cls) -> SpikeInput:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))

    @classmethod
    def from_dense(
        cls, raster: Any, labels: Any, dt: float, *, offset: float = 0.0
    ) -> SpikeInput:
        """From a [time step, episode, input] raster of 0/1 (numpy or torch): a spike of input i
        in step s goes out at offset + s * dt with labels[i]."""
        r = raster.detach().cpu().numpy() if hasattr(raster, "detach") else np.asarray(raster)
        if r.ndim != 3:
            raise config_error(f"spike raster must be [time, episode, input], got shape {r.shape}")
        lab = np.asarray(labels, np.int64).reshape(-1)
        if lab.size != r.shape[2]:
            raise config_error(f"{r.shape[2]} inputs in the raster but {lab.size} labels")
        s, e, i = np.nonzero(r)
        return cls(e, offset + s * float(dt), lab[i])


@dataclass(frozen=True)
class CADCSchedule:
    """count CADC samples of all 512 channels, `interval` apart, the first at `start` (relative to
    each episode's start, in the unit of the episodes() call)."""

    interval: float
    count: int
    start: float = 0.0


@dataclass(frozen=True)
class MADCSchedule:
    """count MADC samples at the configured MADC period from `start` (relative to each episode)."""

    count: int
    start: float = 0.0


@dataclass(frozen=True)
class EpisodeWrites:
    """Register writes made right before an episode's EPISODE_START (e.g. which neuron the MADC
    records): parallel arrays episode, address, value."""

    episode: Any
    addrs: Any
    values: Any


# ============================================================================ tickets
@dataclass(frozen=True, eq=False)
class ReadTicket:
    """Resolves to the uint32 values of `addrs` read at this point of the program."""

    first: int  # index of the first READ_DATA answer within the program
    addrs: np.ndarray

    def resolve(self, trace: Any) -> np.ndarray:
        reads = trace.reads
        n = self.addrs.size
        if reads.size < self.first + n:
            raise BoardError(
                f"trace holds {reads.size} READ_DATA records, a read ticket needs "
                f"{self.first}..{self.first + n - 1}"
            )
        got = reads[self.first : self.first + n]
        want = (self.first + np.arange(n)) & _M24
        if not np.array_equal(got["index"].astype(np.int64), want):
            bad = int(np.flatnonzero(got["index"].astype(np.int64) != want)[0])
            raise BoardError(
                f"READ_DATA out of order: record {self.first + bad} has index "
                f"{int(got['index'][bad])}, expected {int(want[bad])}"
            )
        return got["data"].astype(np.uint32)


@dataclass(frozen=True, eq=False)
class ConfigTicket:
    """Resolves to the ChipConfig read back at this point of the program."""

    read: ReadTicket

    def resolve(self, trace: Any) -> ChipConfig:
        return ChipConfig.from_words(self.read.addrs, self.read.resolve(trace))


@dataclass(frozen=True, eq=False)
class EpisodeTicket:
    """Resolves to the EpisodeData (hostdriver/traces.py) of one episodes() block."""

    indices: np.ndarray  # EPISODE_START index of each episode
    duration: int  # ticks
    gap: int  # ticks
    cadc: tuple[int, int, int] | None  # (start, interval, count) in ticks
    madc: tuple[int, int] | None  # (start, count) in ticks
    label_map: np.ndarray | None

    @property
    def n_episodes(self) -> int:
        return int(self.indices.size)

    def resolve(self, trace: Any, label_map: Any = None) -> Any:
        from hostdriver.traces import EpisodeData

        lm = self.label_map if label_map is None else label_map
        return EpisodeData.from_trace(trace, self, label_map=lm)


# ============================================================================ result
class RunResult:
    """A run's trace plus ticket resolution: ``result[ticket]``."""

    def __init__(self, trace: Any, program: Program) -> None:
        self.trace = trace
        self._program = program
        self._cache: dict[int, Any] = {}

    def __getitem__(self, ticket: Any) -> Any:
        if not isinstance(ticket, ReadTicket | ConfigTicket | EpisodeTicket):
            raise TypeError(f"not a ticket: {ticket!r}")
        key = id(ticket)
        if key not in self._cache:
            self._cache[key] = ticket.resolve(self.trace)
        return self._cache[key]

    def episodes(self, ticket: EpisodeTicket, *, label_map: Any = None) -> Any:
        """EpisodeData of ticket, with label_map overriding the one given to episodes()."""
        return ticket.resolve(self.trace, label_map) if label_map is not None else self[ticket]


# ============================================================================ the builder
def _runs(addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start positions and lengths of runs of consecutive addresses (in the given order)."""
    if addrs.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    brk = np.flatnonzero(np.diff(addrs) != 1) + 1
    starts = np.concatenate([[0], brk])
    return starts, np.diff(np.append(starts, addrs.size))


def _check_u32(name: str, a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype.kind not in "iub":
        raise config_error(f"{name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64).reshape(-1)
    if arr.min() < 0 or arr.max() > _M32:
        bad = int(arr[(arr < 0) | (arr > _M32)][0])
        raise config_error(f"{name} {bad} out of range 0..0x{_M32:X}")
    return arr


def write_words(addrs: Any, values: Any) -> np.ndarray:
    """Instruction words writing values to addrs, in order, vectorised: each run of consecutive
    addresses becomes one WRITE_BLOCK (N + 1 words), a lone address one WRITE + DATA."""
    a = _check_u32("write address", addrs)
    v = _check_u32("write value", values)
    if a.shape != v.shape:
        raise config_error(f"write: {a.size} addresses but {v.size} values")
    starts, lengths = _runs(a)
    if a.size and lengths.max() > _M24:  # split runs longer than WRITE_BLOCK's 24-bit count
        piece = np.arange(a.size) - np.repeat(starts, lengths)
        cut = np.zeros(a.size, bool)
        cut[starts] = True
        cut |= piece % _M24 == 0
        starts = np.flatnonzero(cut)
        lengths = np.diff(np.append(starts, a.size))
    n_runs = starts.size
    out = np.empty(a.size + n_runs, np.uint64)
    head_pos = starts + np.arange(n_runs)
    is_data = np.ones(out.size, bool)
    is_data[head_pos] = False
    single = lengths == 1
    op = np.where(single, int(Instr.WRITE), int(Instr.WRITE_BLOCK)).astype(np.uint64)
    count = np.where(single, 0, lengths).astype(np.uint64)
    out[head_pos] = (op << np.uint64(OPCODE_SHIFT)) | (count << np.uint64(32)) | a[starts].astype(
        np.uint64
    )
    out[is_data] = v.astype(np.uint64) | np.uint64(int(Instr.DATA) << OPCODE_SHIFT)
    return out


class Program:
    """Builder of one playback program. Methods append in program order; `run(board)` executes.

    >>> p = Program()
    >>> p.write_config(cfg, previous)            # minimal diff, counted in words
    >>> t = p.episodes(100, 34.0, spikes=SpikeInput(ep, t_us, labels),
    ...                cadc=CADCSchedule(interval=1.7, count=20))
    >>> data = p.run(board)[t]                   # EpisodeData: spikes, CADC [E, 20, 512], ...
    """

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = [ins.timer_reset()]
        self._n_reads = 0
        self._n_episodes = 0
        self._effects: list[tuple[Any, ...]] = []
        self.words_written = 0  # register words this program writes (WRITE/WRITE_BLOCK data)

    # ---------------------------------------------------------------- untimed
    def write(self, addrs: Any, values: Any) -> int:
        """Register writes in order (runs of consecutive addresses as WRITE_BLOCK). Returns the
        number of words. Writes to config registers update the host's belief after run()."""
        a = _check_u32("write address", addrs)
        v = _check_u32("write value", values)
        self._parts.append(write_words(a, v))
        self._effects.append(("raw", a, v))
        self.words_written += a.size
        return int(a.size)

    def write_config(self, config: ChipConfig, previous: ChipConfig | None) -> int:
        """Write the words in which config differs from previous (None: every word).
        Returns the number of register words written."""
        addrs, values = config.diff(previous)
        if addrs.size:
            self._parts.append(write_words(addrs, values))
            self.words_written += addrs.size
        self._effects.append(("config", addrs, values, previous, config.copy()))
        return int(addrs.size)

    def read(self, addrs: Any) -> ReadTicket:
        """Read registers here; the ticket resolves to their values (uint32, in order)."""
        a = _check_u32("read address", addrs)
        if a.size == 0:
            raise config_error("read: no addresses")
        starts, lengths = _runs(a)
        heads = (
            np.uint64(int(Instr.READ) << OPCODE_SHIFT)
            | (lengths.astype(np.uint64) << np.uint64(32))
            | a[starts].astype(np.uint64)
        )
        if lengths.max() > _M24:
            raise config_error(f"read: a run of {int(lengths.max())} consecutive addresses "
                               f"exceeds READ's count limit {_M24}")
        self._parts.append(heads)
        ticket = ReadTicket(self._n_reads, a.astype(np.uint32))
        self._n_reads += a.size
        return ticket

    def read_config(self) -> ConfigTicket:
        """Read every configuration register (one READ per contiguous run); the ticket resolves
        to a ChipConfig, which also becomes the host's belief of the board after run()."""
        addrs = ChipConfig.register_addresses()
        ticket = ConfigTicket(self.read(addrs))
        self._effects.append(("read_config", ticket))
        return ticket

    def system(self, op: SystemOp | int) -> None:
        """SYSTEM instruction; CHIP_RESET makes the host's belief the reset config."""
        self._parts.append(ins.system(op))
        if int(op) == SystemOp.CHIP_RESET:
            self._effects.append(("reset",))

    def barrier(self) -> None:
        self._parts.append(ins.barrier())

    # ---------------------------------------------------------------- timed, low level (ticks)
    def timer_reset(self) -> None:
        """Start a new timer segment at playback time 0."""
        self._parts.append(ins.timer_reset())

    def wait_until(self, ticks: int) -> None:
        self._parts.append(ins.wait_until(ticks))

    def spikes(self, ticks: Any, labels: Any) -> None:
        """Inject spikes at absolute (sorted) times in ticks of the current segment."""
        self._parts.append(ins.spikes(ticks, labels))

    def cadc_trigger(self) -> None:
        self._parts.append(ins.cadc_trigger())

    def cadc_schedule(self, interval_ticks: int, count: int) -> None:
        self._parts.append(ins.cadc_schedule(interval_ticks, count))

    def madc_record(self, count: int) -> None:
        self._parts.append(ins.madc_record(count))

    def episode_start(self) -> int:
        """EPISODE_START with the next unique index (returned)."""
        idx = self._next_episodes(1)[0]
        self._parts.append(ins.episode_start(idx))
        return int(idx)

    def _next_episodes(self, n: int) -> np.ndarray:
        if self._n_episodes + n > MAX_EPISODES:
            raise config_error(
                f"a program holds at most {MAX_EPISODES} episodes (14-bit EPISODE index); "
                f"this one would hold {self._n_episodes + n}: split it into several programs"
            )
        idx = np.arange(self._n_episodes, self._n_episodes + n, dtype=np.int64)
        self._n_episodes += n
        return idx

    # ---------------------------------------------------------------- episodes
    def episodes(
        self,
        n: int,
        duration: float,
        *,
        spikes: SpikeInput | tuple[Any, Any, Any] | None = None,
        cadc: CADCSchedule | None = None,
        madc: MADCSchedule | None = None,
        writes: EpisodeWrites | None = None,
        gap: float = 0.0,
        lead: float = 1.0,
        unit: str = "us",
        label_map: Any = None,
    ) -> EpisodeTicket:
        """n independent episodes laid out back to back in a new timer segment.

        duration, gap, lead, spike times and schedule times are in `unit` ("us" or "ticks").
        Episode k starts at lead + k * (duration + gap) with EPISODE_START (all neurons reset);
        its spikes go out at start + time (0 <= time < duration); the CADC schedule and MADC
        recording start at start + their start; `writes` happen right before its EPISODE_START
        (the emulator simulates episodes separated by writes one group at a time). The segment
        ends with a WAIT_UNTIL at the end of the last episode. label_map ([16384] label ->
        neuron index, e.g. ChipConfig.label_map()) is used when the ticket is resolved.
        """
        n = int(n)
        if n < 1:
            raise config_error(f"episodes: n must be >= 1, got {n}")
        dur = to_ticks(duration, unit)
        g = to_ticks(gap, unit)
        ld = to_ticks(lead, unit)
        if dur < 1 or g < 0 or ld < 0:
            raise config_error(
                f"episodes: need duration >= 1 tick, gap >= 0, lead >= 0 (got {dur}, {g}, {ld} "
                "ticks)"
            )
        period = dur + g
        idx = self._next_episodes(n)
        start = ld + np.arange(n, dtype=np.int64) * period
        end = int(start[-1]) + dur
        if end > _M56:
            raise config_error(f"episodes: block of {end} ticks exceeds the 56-bit timer")

        # units of (time, priority, words): priority orders equal times
        times: list[np.ndarray] = []
        prios: list[np.ndarray] = []
        words: list[np.ndarray] = []

        def add(t: np.ndarray, w: np.ndarray, prio: int = 3) -> None:
            times.append(np.asarray(t, np.int64))
            prios.append(np.full(np.size(t), prio, np.int64))
            words.append(np.asarray(w, np.uint64))

        if writes is not None:
            we = _episode_index("writes", writes.episode, n)
            wa = _check_u32("episode write address", writes.addrs)
            wv = _check_u32("episode write value", writes.values)
            if not (we.size == wa.size == wv.size):
                raise config_error(
                    f"episode writes: {we.size} episodes, {wa.size} addresses, {wv.size} values"
                )
            order = np.argsort(we, kind="stable")
            we, wa, wv = we[order], wa[order], wv[order]
            pair = ins.write(wa, wv).reshape(-1, 2)
            add(np.repeat(start[we], 2), pair.reshape(-1), 0)
            self._effects.append(("raw", wa, wv))
            self.words_written += wa.size
        add(start, ins.episode_start(0)[0] | (idx.astype(np.uint64) << np.uint64(42)), 1)
        cadc_ticks = None
        if cadc is not None:
            c_start, c_int = to_ticks(cadc.start, unit), to_ticks(cadc.interval, unit)
            c_n = int(cadc.count)
            last = c_start + (c_n - 1) * c_int
            if c_start < 0 or c_n < 1 or c_int < 0 or (c_n > 1 and c_int < 1) or last >= period:
                raise config_error(
                    f"CADC schedule start {c_start}, interval {c_int}, count {c_n} (ticks): the "
                    f"samples must fit in the episode (last at {last}, episode + gap {period})"
                )
            add(start + c_start, np.repeat(ins.cadc_schedule(c_int, c_n), n), 2)
            cadc_ticks = (c_start, c_int, c_n)
        madc_ticks = None
        if madc is not None:
            m_start, m_n = to_ticks(madc.start, unit), int(madc.count)
            if not 0 <= m_start < period or m_n < 1:
                raise config_error(
                    f"MADC schedule start {m_start} ticks, count {m_n}: need 0 <= start < "
                    f"{period} and count >= 1"
                )
            add(start + m_start, np.repeat(ins.madc_record(m_n), n), 2)
            madc_ticks = (m_start, m_n)
        spike_t = spike_lab = None  # absolute times and labels of the block's input spikes
        ordered = False  # whether spike_t never decreases
        if spikes is not None:
            s = spikes if isinstance(spikes, SpikeInput) else SpikeInput(*spikes)
            spike_t, spike_lab, ordered = _checked_spikes(s, unit, n, dur, start)
        if spikes is not None and spike_t is None:  # the numpy checks: they name what is wrong
            se = _episode_index("spikes", s.episode, n)
            st = np.asarray(to_ticks(s.time, unit), np.int64).reshape(-1)
            sl = np.asarray(s.label).reshape(-1)
            if not (se.size == st.size == sl.size):
                raise config_error(
                    f"spikes: {se.size} episodes, {st.size} times, {sl.size} labels"
                )
            if st.size:
                if st.min() < 0 or st.max() >= dur:
                    bad = int(np.flatnonzero((st < 0) | (st >= dur))[0])
                    raise config_error(
                        f"spike {bad} (episode {int(se[bad])}) at {int(st[bad])} ticks lies "
                        f"outside its episode 0..{dur - 1}"
                    )
                if sl.dtype.kind not in "iu" or sl.min() < 0 or sl.max() > LABEL_MASK:
                    raise config_error(f"spike labels must be integers 0..{LABEL_MASK}")
                spike_t, spike_lab = start[se] + st, sl.astype(np.int64)

        if spike_t is not None and COMPILED and numba_works():
            out = _layout_compiled(times, prios, words, spike_t, spike_lab, ordered, end)
        else:
            if spike_t is not None:
                order = _order_by(spike_t, spike_lab, LABEL_MASK + 1)
                add(*spike_packs(spike_t[order], spike_lab[order]))
            out = _layout(times, prios, words, end)
        self._parts.append(ins.barrier())
        self._parts.append(ins.timer_reset())
        self._parts.append(out)
        lm = None if label_map is None else np.asarray(label_map)
        return EpisodeTicket(idx, int(dur), int(g), cadc_ticks, madc_ticks, lm)

    # ---------------------------------------------------------------- output and run
    def to_words(self) -> np.ndarray:
        """The program's instruction words (uint64), ending with HALT."""
        return ins.program(*self._parts, ins.halt())

    def __len__(self) -> int:
        return sum(p.size for p in self._parts) + 1

    def run(self, board: Any, *, timeout: float | None = None) -> RunResult:
        """Run on board; returns RunResult (trace + tickets). Updates the host's belief of the
        board's config from this program's writes / resets / config reads; on failure the
        belief is dropped (BoardError and LinkError propagate)."""
        before = state.believed(board) if self._effects else None
        try:
            trace = board.run(self.to_words(), timeout=timeout)
        except BaseException:
            state.forget(board)
            raise
        result = RunResult(trace, self)
        if not self._effects:  # no config writes / reads / resets: the belief stands
            return result
        after = self._belief_after(before, result)
        if after is None:
            state.forget(board)
        else:
            state.remember(board, after)
        return result

    def _belief_after(self, belief: ChipConfig | None, result: RunResult) -> ChipConfig | None:
        for effect in self._effects:
            kind = effect[0]
            if kind == "reset":
                belief = ChipConfig()
            elif kind == "read_config":
                belief = result[effect[1]]
            elif kind == "config":
                _, addrs, values, previous, target = effect
                if belief is None:
                    # trust the caller's `previous` (None: every word was written)
                    belief = target if previous is None else previous
                    belief = ChipConfig.from_words(addrs, values, base=belief)
                elif addrs.size:
                    belief = ChipConfig.from_words(addrs, values, base=belief)
            elif kind == "raw" and belief is not None:
                a, v = effect[1], effect[2]
                mine = ChipConfig.is_config_address(a)
                if mine.any():
                    belief = ChipConfig.from_words(a[mine], v[mine], base=belief)
        return belief


_SPIKE_SHIFTS = np.array([42, 28, 14, 0], np.uint64)


def spike_packs(t: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(time, word) of the SPIKE1..4 packs of spikes sorted by time: the words
    instructions.spikes emits, without its WAIT_UNTILs (episodes() places its own). Times and
    labels are checked by the caller."""
    n = t.size
    if n == 0:
        return t[:0], np.zeros(0, np.uint64)
    new = np.empty(n, bool)
    new[0] = True
    np.not_equal(t[1:], t[:-1], out=new[1:])
    first = np.flatnonzero(new)  # a pack per time, unless more than 4 spikes share it
    size = np.diff(np.append(first, n))
    if int(size.max()) > 4:
        rank = np.arange(n) - np.repeat(first, size)  # position in its time group
        first = np.flatnonzero((rank & 3) == 0)
    filled = np.diff(np.append(first, n)).astype(np.uint64)
    lab = labels.astype(np.uint64)
    words = (lab[first] << _SPIKE_SHIFTS[0]) | (
        (filled + np.uint64(int(Instr.SPIKE1) - 1)) << np.uint64(OPCODE_SHIFT))
    for k in (1, 2, 3):  # the few packs with more than one spike
        more = np.flatnonzero(filled > k)
        if more.size == 0:
            break
        words[more] |= lab[first[more] + k] << _SPIKE_SHIFTS[k]
    return t[first], words


def _order_by(major: np.ndarray, minor: np.ndarray, n_minor: int) -> np.ndarray:
    """Stable order by (major, minor) for non-negative int64 arrays, minor < n_minor: one
    argsort of a combined key (timsort: fast on the sorted runs episodes() concatenates)
    where it fits in 63 bits, else lexsort."""
    if major.size and int(major.max()) >= (1 << 62) // n_minor:
        return np.lexsort((minor, major))
    return np.argsort(major * n_minor + minor, kind="stable")


_WAIT_OP = np.uint64(int(Instr.WAIT_UNTIL) << OPCODE_SHIFT)


_NO_SPIKES = (None, None, False)


def _checked_spikes(s: SpikeInput, unit: str, n: int, dur: int,
                    start: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, bool]:
    """(start[episode] + time, label, whether those times never decrease) of int64 spike
    arrays (our own copies), checked in one compiled pass, where every spike lies in its episode
    and every label in range; (None, None, False) otherwise, or for other dtypes or no spikes:
    episodes() then checks them with numpy and names the first bad one."""
    if not (COMPILED and numba_works()):
        return _NO_SPIKES
    e, t, lab = (np.asarray(x).reshape(-1) for x in (s.episode, s.time, s.label))
    if not (e.dtype == lab.dtype == np.int64 and e.size == t.size == lab.size and e.size):
        return _NO_SPIKES
    if unit == "us" and t.dtype.kind in "iuf":
        t = np.asarray(to_ticks(t, unit), np.int64)  # (cannot fail for these dtypes)
    elif unit != "ticks" or t.dtype != np.int64:
        return _NO_SPIKES
    spike_t = np.empty(t.size, np.int64)
    spike_lab = np.empty(t.size, np.int64)
    status = _spike_times(e, t, lab, start, n, dur, LABEL_MASK, spike_t, spike_lab)
    if status == 0:
        return _NO_SPIKES
    return spike_t, spike_lab, status == 2


def _layout(times: list[np.ndarray], prios: list[np.ndarray], words: list[np.ndarray],
            end: int) -> np.ndarray:
    """The words of an episode block in order of (time, priority), program order within, a
    WAIT_UNTIL before each new time and one until `end` last (times checked by the caller:
    0 <= t <= end < 2^56)."""
    t = np.concatenate(times)
    pr = np.concatenate(prios)
    w = np.concatenate(words)
    order = _order_by(t, pr, 4)  # stable: program order within (time, priority)
    t, w = t[order], w[order]
    new_t = np.ones(t.size, bool)
    new_t[1:] = t[1:] != t[:-1]
    out = np.empty(t.size + int(new_t.sum()) + 1, np.uint64)
    pos = np.arange(t.size) + np.cumsum(new_t)
    out[pos] = w
    out[pos[new_t] - 1] = t[new_t].astype(np.uint64) | _WAIT_OP
    out[-1] = np.uint64(end) | _WAIT_OP
    return out


def _layout_compiled(times: list[np.ndarray], prios: list[np.ndarray], words: list[np.ndarray],
                     spike_t: np.ndarray, spike_lab: np.ndarray, ordered: bool,
                     end: int) -> np.ndarray:
    """_layout with the block's input spikes (absolute times, labels: not yet sorted or packed;
    spike_lab is sorted in place) merged in by a compiled pass, which packs them as spike_packs
    does: the words of `_layout(times + packs, ...)`. ordered: spike_t never decreases (else
    the spikes are sorted first). The other words (a few per episode) are ordered by numpy."""
    t = np.concatenate(times)
    w = np.concatenate(words)
    order = _order_by(t, np.concatenate(prios), 4)
    t, w = t[order], w[order]
    lab = spike_lab  # (the caller's own array)
    if not ordered:  # not in time order: the rare caller
        order = _order_by(spike_t, lab, LABEL_MASK + 1)
        spike_t, lab = spike_t[order], lab[order]
    out = np.empty(2 * (t.size + spike_t.size) + 1, np.uint64)
    return out[: _merge_spikes(t, w, spike_t, lab, end, out)]


COMPILED = NUMBA  # the spike passes below run compiled (numba loads at their first call)

@LazyJit
def _spike_times(e, t, lab, start, n, dur, label_max, t_abs, lab_out):  # noqa: ANN001, ANN202, PLR0913
    """t_abs = start[e] + t and lab_out = lab if every episode is in 0..n-1, every time in
    0..dur-1 and every label in 0..label_max: returns 2 where t_abs never decreases, else 1;
    0 at the first value out of range."""
    ordered = True
    for i in range(e.shape[0]):
        ei = e[i]
        ti = t[i]
        li = lab[i]
        if ei < 0 or ei >= n or ti < 0 or ti >= dur or li < 0 or li > label_max:
            return 0
        ta = start[ei] + ti
        if i and ta < t_abs[i - 1]:
            ordered = False
        t_abs[i] = ta
        lab_out[i] = li
    return 2 if ordered else 1


_SPIKE0 = np.uint64(int(Instr.SPIKE1) - 1)


@LazyJit
def _merge_spikes(t, w, st, lab, end, out):  # noqa: ANN001, ANN202, PLR0913
    """out = words w (sorted by time t) merged with the SPIKE1..4 packs of spikes (st: never
    decreasing; lab is sorted in place within each run of equal times) after the words of their
    time, a WAIT_UNTIL before each new time and one until `end`; returns the number of words.
    Packs as spike_packs: up to 4 spikes of one time each, labels ascending at bits 42, 28, 14,
    0. Spikes of equal time and label are alike, so no order among them matters."""
    n_w = t.shape[0]
    n_s = st.shape[0]
    i = 0
    j = 0
    m = 0
    run_end = 0  # end of the run of equal spike times that j is in
    last = -1
    while i < n_w or j < n_s:
        if j >= n_s or (i < n_w and t[i] <= st[j]):
            now = t[i]
            word = w[i]
            i += 1
        else:
            now = st[j]
            if j == run_end:  # a new time: sort the labels of its run
                r = j + 1
                while r < n_s and st[r] == now:
                    r += 1
                if r - j > 8:
                    lab[j:r] = np.sort(lab[j:r])
                else:
                    for a in range(j + 1, r):  # insertion sort: runs are a spike or two
                        x = lab[a]
                        b = a - 1
                        while b >= j and lab[b] > x:
                            lab[b + 1] = lab[b]
                            b -= 1
                        lab[b + 1] = x
                run_end = r
            k = min(4, run_end - j)
            word = ((np.uint64(k) + _SPIKE0) << np.uint64(OPCODE_SHIFT)) | (
                np.uint64(lab[j]) << np.uint64(42))
            for q in range(1, k):
                word |= np.uint64(lab[j + q]) << np.uint64(42 - 14 * q)
            j += k
        if now != last:
            out[m] = np.uint64(now) | _WAIT_OP
            m += 1
            last = now
        out[m] = word
        m += 1
    out[m] = np.uint64(end) | _WAIT_OP
    return m + 1


def _episode_index(what: str, episode: Any, n: int) -> np.ndarray:
    e = np.asarray(episode).reshape(-1)
    if e.size == 0:
        return np.zeros(0, np.int64)
    if e.dtype.kind not in "iu":
        raise config_error(f"{what}: episode numbers must be integers, got dtype {e.dtype}")
    e = e.astype(np.int64)
    if e.min() < 0 or e.max() >= n:
        bad = int(e[(e < 0) | (e >= n)][0])
        raise config_error(f"{what}: episode {bad} out of range 0..{n - 1}")
    return e

