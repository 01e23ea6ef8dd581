"""Compiled (numba) passes of the playback executor: sequential scans that numpy can only
express as many whole-array passes (word checks, the playback timer with resets and barriers,
events and their episodes, trace records merged in time order, CADC blocks written straight
into the trace). Each has a numpy twin in executor.py that runs where numba is not installed
(or exec_kernels.ENABLED is off); tests run both and compare.
"""

from __future__ import annotations

import numpy as np

from protocol.wire import Instr, Rec

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a declared dependency
    AVAILABLE = False
else:
    AVAILABLE = True

_M32 = (1 << 32) - 1
_M42 = np.uint64((1 << 42) - 1)
_M56 = np.uint64((1 << 56) - 1)
_DATA = int(Instr.DATA)
_WRITE = int(Instr.WRITE)
_WRITE_BLOCK = int(Instr.WRITE_BLOCK)
_READ = int(Instr.READ)
_HALT = int(Instr.HALT)
_SYSTEM = int(Instr.SYSTEM)
_TIMER_RESET = int(Instr.TIMER_RESET)
_WAIT_UNTIL = int(Instr.WAIT_UNTIL)
_BARRIER = int(Instr.BARRIER)
_EPISODE_START = int(Instr.EPISODE_START)
_CADC_TRIGGER = int(Instr.CADC_TRIGGER)
_CADC_SCHEDULE = int(Instr.CADC_SCHEDULE)
_MADC_RECORD = int(Instr.MADC_RECORD)
_TIME_SYNC = np.uint64(int(Rec.TIME_SYNC))
NO_NEXT_EPISODE = np.iinfo(np.int64).max // 4  # next-episode position of the last episode
_NEVER = np.iinfo(np.int64).min  # latest event of an episode without any


def _jit(fn):  # noqa: ANN001, ANN202
    return njit(cache=True, nogil=True, boundscheck=False)(fn) if AVAILABLE else fn


@_jit
def _cadc_block(out, b, src, hi):  # noqa: ANN001, ANN202
    """out[b:b + 74] = the CADC_DATA words of one 512-channel sample row (executor._pack_cadc's
    twin, 7 channels a word): channel 7 k + j in byte j of word k, unused bytes zero, hi (the
    opcode) in byte 7. src: the row as 64 little-endian u64 words; every 7 of them hold the 56
    bytes of 8 trace words, cut out with shifts (aligned loads, no byte loop)."""
    for g in range(9):  # trace words 8 g .. 8 g + 7: bytes 56 g .. 56 g + 55
        i = 7 * g
        a0, a1, a2, a3 = src[i], src[i + 1], src[i + 2], src[i + 3]
        a4, a5, a6 = src[i + 4], src[i + 5], src[i + 6]
        o = b + 8 * g
        out[o] = a0 & _M56 | hi
        out[o + 1] = (a0 >> np.uint64(56) | a1 << np.uint64(8)) & _M56 | hi
        out[o + 2] = (a1 >> np.uint64(48) | a2 << np.uint64(16)) & _M56 | hi
        out[o + 3] = (a2 >> np.uint64(40) | a3 << np.uint64(24)) & _M56 | hi
        out[o + 4] = (a3 >> np.uint64(32) | a4 << np.uint64(32)) & _M56 | hi
        out[o + 5] = (a4 >> np.uint64(24) | a5 << np.uint64(40)) & _M56 | hi
        out[o + 6] = (a5 >> np.uint64(16) | a6 << np.uint64(48)) & _M56 | hi
        out[o + 7] = a6 >> np.uint64(8) | hi
    last = src[63]  # bytes 504..511: channels 504..510, then 511 alone
    out[b + 72] = last & _M56 | hi
    out[b + 73] = last >> np.uint64(56) | hi


@_jit
def trace_fill(out, layout, s64, r0, r1, head):  # noqa: ANN001, ANN201
    """The words of records r0 .. r1 - 1 of a trace_layout (first word at, TIME_SYNC word
    before it or 0, record word, sample row or -1) in out: the TIME_SYNC, the record and,
    after a CADC_HEAD, the CADC_DATA words of its sample row (s64: the [C, 512] u8 samples
    viewed as [C, 64] little-endian u64; head: the CADC_DATA opcode). One sequential pass."""
    at, syncw, recw, rows = layout
    hi = np.uint64(head) << np.uint64(56)
    for r in range(r0, r1):
        q = at[r]
        if syncw[r]:
            out[q] = syncw[r]
            q += 1
        out[q] = recw[r]
        if rows[r] >= 0:
            _cadc_block(out, q + 1, s64[rows[r]], hi)


@_jit
def program_scan(w, known, reserved, sys_ok, spike_n, op, hist):  # noqa: ANN001, ANN201
    """One pass over the program words: opcode op of each, words per opcode hist, and (first
    bad word, first good HALT), -1 where there is none, and the events' bounds for events():
    at least as many (spikes, CADC samples, MADC samples, EPISODE_STARTs, WAIT_UNTILs,
    TIMER_RESETs) as the program has (spike_n: spikes a word of each opcode carries).
    executor._scan's twin with compact(). A word is bad with an unknown opcode, a reserved
    payload bit set, a count of 0, an address range past 2^32, a CADC_SCHEDULE of 0 samples or
    an unknown system op."""
    first_bad = halt = -1
    n_cadc = n_madc = 0
    for i in range(w.shape[0]):
        x = w[i]
        o = np.int64(x >> np.uint64(56))
        op[i] = o
        hist[o] += 1
        bad = (x & reserved[o]) != 0 or not known[o]
        if o >= _WRITE_BLOCK:  # the rarer checks (opcodes below it need none)
            if o == _WRITE_BLOCK or o == _READ or o == _MADC_RECORD:
                c = np.int64((x >> np.uint64(32)) & np.uint64(0xFFFFFF))
                bad = bad or c == 0 or (o != _MADC_RECORD
                                        and np.int64(x & np.uint64(_M32)) + c - 1 > _M32)
                if o == _MADC_RECORD:
                    n_madc += c
            elif o == _CADC_SCHEDULE:
                c = np.int64((x >> np.uint64(42)) & np.uint64(0x3FFF))
                bad = bad or c == 0
                n_cadc += c
            elif o == _CADC_TRIGGER:
                n_cadc += 1
            elif o == _SYSTEM:
                bad = bad or not sys_ok[np.int64(x & np.uint64(0xFF))]
            elif o == _HALT and halt < 0 and not bad:
                halt = i
        if bad and first_bad < 0:
            first_bad = i
    bounds = np.zeros(6, np.int64)
    for o in range(256):
        bounds[0] += spike_n[o] * hist[o]
    bounds[1] = n_cadc
    bounds[2] = n_madc
    bounds[3] = hist[_EPISODE_START]
    bounds[4] = hist[_WAIT_UNTIL]
    bounds[5] = hist[_TIMER_RESET]
    return first_bad, halt, bounds


@_jit
def compact(w, op, nd, ndop, ndw):  # noqa: ANN001, ANN201
    """The words that are not DATA (positions nd, opcodes ndop, words ndw) and the checks of
    the DATA words between them: returns (len(nd), first write whose DATA words run short (index
    into nd), the word it misses, first stray DATA word), -1 where there is none. A WRITE
    takes one DATA word, a WRITE_BLOCK its count, any other instruction none."""
    n = w.shape[0]
    k = 0
    short = missing = stray = -1
    for i in range(n + 1):
        if i < n and op[i] == _DATA:
            continue
        if k:  # the previous instruction's DATA words end here
            j = k - 1
            r = i - nd[j] - 1
            need = 0
            if ndop[j] == _WRITE:
                need = 1
            elif ndop[j] == _WRITE_BLOCK:
                need = np.int64((ndw[j] >> np.uint64(32)) & np.uint64(0xFFFFFF))
            if r < need and short < 0:
                short = j
                missing = nd[j] + 1 + r
            if r > need and stray < 0:
                stray = nd[j] + 1 + need
        if i < n:
            nd[k] = i
            ndop[k] = op[i]
            ndw[k] = w[i]
            k += 1
    return k, short, missing, stray


@_jit
def _rank_right(a, lo, hi, x):  # noqa: ANN001, ANN202
    """Number of a[lo:hi] (sorted) that are <= x, plus lo: np.searchsorted(side="right")."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit
def _samples(o, x, p, min_period):  # noqa: ANN001, ANN202
    """(samples, interval) of an ADC instruction (opcode o, word x; p: the MADC period in force
    at an MADC_RECORD, which takes none with a period below min_period); (0, 0) for others."""
    if o == _CADC_SCHEDULE:
        return np.int64((x >> np.uint64(42)) & np.uint64(0x3FFF)), np.int64(x & _M42)
    if o == _CADC_TRIGGER:
        return np.int64(1), np.int64(0)
    if o == _MADC_RECORD:
        mn = np.int64((x >> np.uint64(32)) & np.uint64(0xFFFFFF))
        return (np.int64(0) if p < min_period and mn > 0 else mn), np.int64(p)
    return np.int64(0), np.int64(0)


@_jit
def events(pos, end, op, w, e0, madc_period, madc_cfg, min_period, spike_n, timed_op, bounds):  # noqa: ANN001, ANN201, C901, PLR0912, PLR0913, PLR0915
    """The timeline and every event of the executed instructions (program positions pos,
    opcodes op, words w) in one pass: executor._times, _stimuli and _episodes' twin.

    The playback timer runs from e0: a TIMER_RESET opens a segment at the elapsed time now, a
    WAIT_UNTIL waits for offset + t or lies in the past, a BARRIER waits for the end of every
    ADC schedule issued before it. Events: injected spikes (label k of a SPIKEn word at bits
    42 - 14 k), CADC samples and MADC samples (madc_period / madc_cfg: the MADC config in force
    at each MADC_RECORD, in order; a period below min_period makes it a VALUE_OUT_OF_RANGE
    instead). An event belongs to the episode of its instruction, a later scheduled sample to
    the last episode started at or before its time; events before the first EPISODE_START
    open an implicit episode at the first timed instruction (timed_op). An episode ends at the
    next start (or HALT), never before its last event. bounds: at least as many (spikes, CADC
    samples, MADC samples, EPISODE_STARTs, WAIT_UNTILs, TIMER_RESETs) as there are.

    Returns ((e, now, offset, pending ADC end), episodes (start, pos, index, explicit, end,
    next pos), spikes (label, episode (i32), time in episode), CADC (time, episode, time in
    episode, position of the first instruction executed after it (`end`: none), whether that
    is known: samples issued in time order), MADC (time, episode, time in episode, source),
    (past WAITs, TIMER_RESETs, bad MADC_RECORDs (indices into op), config of each bad one))."""
    n = op.shape[0]
    n_madc_words = madc_period.shape[0]
    e = np.empty(n, np.int64)
    ep_start = np.empty(bounds[3] + 1, np.int64)
    ep_pos = np.empty(bounds[3] + 1, np.int64)
    ep_index = np.empty(bounds[3] + 1, np.int64)
    last = np.full(bounds[3] + 1, _NEVER, np.int64)  # latest event of each episode
    spk_label = np.empty(bounds[0], np.uint16)
    spk_ep = np.empty(bounds[0], np.int32)
    spk_rel = np.empty(bounds[0], np.int64)
    cadc_time = np.empty(bounds[1], np.int64)
    cadc_ep = np.empty(bounds[1], np.int64)
    cadc_rel = np.empty(bounds[1], np.int64)
    cadc_after = np.empty(bounds[1], np.int64)  # position of the first instruction after each
    cq = 0  # samples before cq have theirs
    in_order = True  # samples issued in time order (else cadc_after is no use)
    madc_time = np.empty(bounds[2], np.int64)
    madc_ep = np.empty(bounds[2], np.int64)
    madc_rel = np.empty(bounds[2], np.int64)
    madc_source = np.empty(bounds[2], np.int64)
    past_at = np.empty(bounds[4], np.int64)
    reset_at = np.empty(bounds[5], np.int64)
    bad_at = np.empty(n_madc_words, np.int64)
    bad_cfg = np.empty(n_madc_words, np.int64)
    now = e0
    off = 0
    pend = e0
    t0 = -1  # first timed instruction
    implicit_start = e0
    decided = early = False  # early: events before the first EPISODE_START
    late = False  # a sample after its instruction's time: its episode by time (-1 for now)
    row = -1  # episode of the instructions so far
    start = e0  # its start
    mi = n_s = n_c = n_m = n_p = n_r = n_b = 0
    for i in range(n):
        o = op[i]
        x = w[i]
        if t0 < 0 and timed_op[o]:
            t0 = i
            implicit_start = now
        if o == _WAIT_UNTIL:  # (most words are waits and spikes: their paths first)
            tgt = off + np.int64(x & _M56)
            if tgt < now:
                past_at[n_p] = i
                n_p += 1
            elif tgt > now:
                now = tgt
                while cq < n_c and cadc_time[cq] < now:  # the first instruction after them
                    cadc_after[cq] = pos[i]
                    cq += 1
            e[i] = now
            continue
        e[i] = now
        count = spike_n[o]
        if count:
            if not decided:  # a spike before any EPISODE_START: the implicit episode
                decided = early = True
                row = 0
                start = implicit_start
                ep_start[0] = implicit_start
                ep_pos[0] = pos[t0]
                ep_index[0] = -1
            last[row] = now
            rel = now - start
            for k in range(count):
                spk_label[n_s] = np.uint16((x >> np.uint64(42 - 14 * k)) & np.uint64(0x3FFF))
                spk_ep[n_s] = row
                spk_rel[n_s] = rel
                n_s += 1
            continue
        if o == _TIMER_RESET:
            off = now
            reset_at[n_r] = i
            n_r += 1
        elif o == _BARRIER and pend > now:
            now = pend
            while cq < n_c and cadc_time[cq] < now:
                cadc_after[cq] = pos[i]
                cq += 1
        elif o == _EPISODE_START:
            decided = True
            row += 1
            start = now
            ep_start[row] = now
            ep_pos[row] = pos[i]
            ep_index[row] = np.int64((x >> np.uint64(42)) & np.uint64(0x3FFF))
        e[i] = now
        if o < _CADC_TRIGGER or o > _MADC_RECORD:  # no ADC samples either
            continue
        p = cfg = 0
        if o == _MADC_RECORD:
            p = madc_period[mi]
            cfg = madc_cfg[mi]
            mi += 1
            if p < min_period and ((x >> np.uint64(32)) & np.uint64(0xFFFFFF)) != 0:
                bad_at[n_b] = i
                bad_cfg[n_b] = cfg
                n_b += 1
        count, step = _samples(o, x, p, min_period)
        if count == 0:
            continue
        if not decided:  # a sample before any EPISODE_START: the implicit episode
            decided = early = True
            row = 0
            start = implicit_start
            ep_start[0] = implicit_start
            ep_pos[0] = pos[t0]
            ep_index[0] = -1
        last[row] = now  # (now only grows: the latest event so far)
        if o == _CADC_SCHEDULE or o == _CADC_TRIGGER:
            in_order = in_order and (n_c == 0 or cadc_time[n_c - 1] <= now)
            for j in range(count):
                cadc_time[n_c] = now + j * step
                cadc_ep[n_c] = row if j * step == 0 else -1
                cadc_rel[n_c] = j * step + now - start
                n_c += 1
        elif o == _MADC_RECORD:
            for j in range(count):
                madc_time[n_m] = now + j * step
                madc_ep[n_m] = row if j * step == 0 else -1
                madc_rel[n_m] = j * step + now - start
                madc_source[n_m] = (cfg >> 9) & 0x7
                n_m += 1
        late = late or (count - 1) * step != 0
        pend = max(pend, now + (count - 1) * step + 1)  # ADC work ends after its last sample
    cadc_after[cq:n_c] = end
    n_ep = row + 1
    first = 1 if early else 0  # row of the first explicit episode
    cadc_time, cadc_ep, cadc_rel = cadc_time[:n_c], cadc_ep[:n_c], cadc_rel[:n_c]
    madc_time, madc_ep, madc_rel = madc_time[:n_m], madc_ep[:n_m], madc_rel[:n_m]
    if late:  # the last episode started at or before the sample's time (an explicit one)
        for times, ep, rel in ((cadc_time, cadc_ep, cadc_rel), (madc_time, madc_ep, madc_rel)):
            for j in range(times.shape[0]):
                if ep[j] < 0:
                    k = _rank_right(ep_start, first, n_ep, times[j]) - 1
                    ep[j] = k
                    rel[j] = times[j] - ep_start[k]
                    last[k] = max(last[k], times[j])
    e_halt = max(now, pend)
    ep_end = np.empty(n_ep, np.int64)
    ep_next = np.empty(n_ep, np.int64)
    for k in range(n_ep):
        ep_end[k] = max(ep_start[k + 1] if k + 1 < n_ep else e_halt, last[k] + 1)
        ep_next[k] = ep_pos[k + 1] if k + 1 < n_ep else NO_NEXT_EPISODE
    ep_explicit = np.ones(n_ep, np.bool_)
    ep_explicit[:first] = False
    return ((e, now, off, pend),
            (ep_start[:n_ep], ep_pos[:n_ep], ep_index[:n_ep], ep_explicit, ep_end, ep_next),
            (spk_label[:n_s], spk_ep[:n_s], spk_rel[:n_s]),
            (cadc_time, cadc_ep, cadc_rel, cadc_after[:n_c], in_order),
            (madc_time, madc_ep, madc_rel, madc_source[:n_m]),
            (past_at[:n_p], reset_at[:n_r], bad_at[:n_b], bad_cfg[:n_b]))


@_jit
def event_seq(e, pos, end, times, ep, ep_pos, ep_next, out):  # noqa: ANN001, ANN201
    """out[j]: sort position of an event at elapsed times[j] in episode ep[j] (executor
    _async_seq's twin): 2 * (position of the first instruction executed after it; `end` after
    the last of the instructions at positions pos, times e) - 1, clipped into the episode's odd
    positions. A time not below the previous one walks on from its position, a cache line (8
    times) a step, then one at a time: events come in time order, a few instructions apart,
    and after the analog core ran e is no longer cached: a walk streams it in, where a
    bisection or gallop waits on one load after another. Any other time is bisected."""
    n = e.shape[0]
    p = 0
    for j in range(times.shape[0]):
        t = times[j]
        if j and t >= times[j - 1]:  # e[:p] <= t: the first e above t lies at p or after
            while p + 8 <= n and e[p + 7] <= t:
                p += 8
            while p < n and e[p] <= t:
                p += 1
        else:
            p = _rank_right(e, 0, n, t)
        s = max(2 * (pos[p] if p < n else end) - 1, 2 * ep_pos[ep[j]] + 1)
        out[j] = min(s, 2 * ep_next[ep[j]] - 1)


@_jit
def cadc_rank(ep, time, rank):  # noqa: ANN001, ANN201
    """rank[j]: index of CADC sample j among its episode's samples in time order, where the
    samples come sorted by (episode, time) (returns True); False (rank unfilled) where they do
    not: the caller sorts (executor._collect's twin)."""
    first = 0
    for j in range(ep.shape[0]):
        if j and (ep[j] < ep[j - 1] or (ep[j] == ep[j - 1] and time[j] < time[j - 1])):
            return False
        if j and ep[j] != ep[j - 1]:
            first = j
        rank[j] = j - first
    return True


@_jit
def _less(a, b, c, x, y):  # noqa: ANN001, ANN202
    """(a, b, c)[x] < (a, b, c)[y], lexicographically."""
    if a[x] != a[y]:
        return a[x] < a[y]
    if b[x] != b[y]:
        return b[x] < b[y]
    return c[x] < c[y]


@_jit
def sort_order(a, b, c):  # noqa: ANN001, ANN201
    """np.lexsort((c, b, a)) (stable) by merging the sorted runs the rows arrive in: records
    come as a few streams each already in time order, so this is about one pass per doubling
    of the run length instead of three full sorts."""
    n = a.shape[0]
    order = np.arange(n)
    starts = np.empty(n + 2, np.int64)
    m = 1
    starts[0] = 0
    for i in range(1, n):
        if _less(a, b, c, i, i - 1):
            starts[m] = i
            m += 1
    starts[m] = n
    buf = np.empty(n, np.int64)
    while m > 1:
        k = 0
        for r in range(0, m, 2):
            lo = starts[r]
            mid = starts[r + 1]
            hi = starts[r + 2] if r + 2 <= m else mid
            i, j = lo, mid
            for q in range(lo, hi):
                if j >= hi or (i < mid and not _less(a, b, c, order[j], order[i])):
                    buf[q] = order[i]
                    i += 1
                else:
                    buf[q] = order[j]
                    j += 1
            starts[k] = lo
            k += 1
        starts[k] = n
        m = k
        order, buf = buf, order
    return order


@_jit
def trace_layout(elapsed, seq, sub, word, timed, cadc_row, reset_e, reset_seq, block):  # noqa: ANN001, ANN201, PLR0913
    """Where each record goes in the trace, records sorted by (elapsed, seq, sub)
    (executor._trace_layout's twin): the playback timer of each (elapsed minus its
    TIMER_RESET segment's offset; resets at (reset_e, reset_seq)) in the low 42 bits of timed
    ones, a TIME_SYNC before a timed record of another 2^42 epoch than the host last saw, and
    `block` words after each CADC_HEAD (cadc_row >= 0) for its samples. Returns (trace words,
    (first word of each record, its TIME_SYNC word or 0, its word, its sample row or -1), the
    record that has half the blocks before it), records in trace order (trace_fill writes
    them)."""
    n = elapsed.shape[0]
    order = sort_order(elapsed, seq, sub)
    at = np.empty(n, np.int64)
    syncw = np.zeros(n, np.uint64)
    recw = np.empty(n, np.uint64)
    rows = np.empty(n, np.int64)
    n_reset = reset_e.shape[0]
    ps = 0
    off = 0
    known = 0
    q = 0
    n_blocks = 0
    for r in range(n):
        j = order[r]
        el = elapsed[j]
        while ps < n_reset and (reset_e[ps] < el or (reset_e[ps] == el
                                                     and reset_seq[ps] <= seq[j])):
            off = reset_e[ps]
            ps += 1
        tm = el - off
        at[r] = q
        wd = word[j]
        if (wd >> np.uint64(56)) == _TIME_SYNC:
            known = 0
        elif timed[j]:
            if (tm >> 42) != known:  # the wrap moment's full time
                syncw[r] = _TIME_SYNC << np.uint64(56) | np.uint64((tm >> 42) << 42) & _M56
                q += 1
            known = tm >> 42
        recw[r] = wd | np.uint64(tm) & _M42 if timed[j] else wd
        rows[r] = cadc_row[j]
        q += 1
        if cadc_row[j] >= 0:
            q += block
            n_blocks += 1
    mid = 0
    seen = 0
    while mid < n and seen < n_blocks // 2:
        seen += rows[mid] >= 0
        mid += 1
    return q, (at, syncw, recw, rows), mid


_EPISODE = np.uint64(int(Rec.EPISODE)) << np.uint64(56)
_SPIKE = np.uint64(int(Rec.SPIKE)) << np.uint64(56)
_CADC_HEAD = np.uint64(int(Rec.CADC_HEAD)) << np.uint64(56)


@_jit
def trace_words(rare, episodes, spikes, cadc, timeline, block):  # noqa: ANN001, ANN201
    """trace_layout of every record, the records of episodes and events built here: the
    executor's _collect (EPISODE, SPIKE, CADC_HEAD records, their sort positions) and
    _assemble in one call.

    rare: columns (elapsed, seq, sub, word, timed) of the other records (TIME_SYNC, errors,
    READ_DATA, MADC, HALT); episodes: (start, pos, index, explicit, next pos); spikes: (time,
    label, episode) of the spikes out of the chip; cadc: (time, episode, index within its
    episode, position of the instruction after it, whether those positions are known) of the
    CADC samples; timeline: (e, pos, end, reset_e, reset_seq) of the executed
    instructions (event_seq, trace_layout)."""
    r_el, r_seq, r_sub, r_word, r_timed = rare
    ep_start, ep_pos, ep_index, ep_explicit, ep_next = episodes
    s_t, s_lab, s_ep = spikes
    c_t, c_ep, c_rank, c_after, after_ok = cadc
    e, pos, end, reset_e, reset_seq = timeline
    n_r, n_s, n_c = r_el.shape[0], s_t.shape[0], c_t.shape[0]
    n_e = 0
    for k in range(ep_start.shape[0]):
        n_e += ep_explicit[k]
    n = n_r + n_e + n_s + n_c
    elapsed = np.empty(n, np.int64)
    seq = np.empty(n, np.int64)
    sub = np.zeros(n, np.int64)
    word = np.empty(n, np.uint64)
    timed = np.ones(n, np.bool_)
    row = np.full(n, -1, np.int64)
    elapsed[:n_r] = r_el
    seq[:n_r] = r_seq
    sub[:n_r] = r_sub
    word[:n_r] = r_word
    timed[:n_r] = r_timed
    q = n_r
    for k in range(ep_start.shape[0]):
        if ep_explicit[k]:
            elapsed[q] = ep_start[k]
            seq[q] = 2 * ep_pos[k]
            word[q] = _EPISODE | np.uint64(ep_index[k] & 0x3FFF) << np.uint64(42)
            q += 1
    event_seq(e, pos, end, s_t, s_ep, ep_pos, ep_next, seq[q:q + n_s])
    for j in range(n_s):
        elapsed[q + j] = s_t[j]
        sub[q + j] = j
        word[q + j] = _SPIKE | np.uint64(s_lab[j] & 0x3FFF) << np.uint64(42)
    q += n_s
    if after_ok:  # (the events pass found the instruction after each)
        for j in range(n_c):
            k = c_ep[j]
            seq[q + j] = min(max(2 * c_after[j] - 1, 2 * ep_pos[k] + 1), 2 * ep_next[k] - 1)
    else:
        event_seq(e, pos, end, c_t, c_ep, ep_pos, ep_next, seq[q:q + n_c])
    for j in range(n_c):
        elapsed[q + j] = c_t[j]
        sub[q + j] = 1 << 40 | j
        word[q + j] = _CADC_HEAD | np.uint64(c_rank[j] & 0x3FFF) << np.uint64(42)
        row[q + j] = j
    return trace_layout(elapsed, seq, sub, word, timed, row, reset_e, reset_seq, block)


def use() -> bool:
    """Whether the executor takes these kernels (tests switch them off to run the twins)."""
    return AVAILABLE and ENABLED


ENABLED = True
