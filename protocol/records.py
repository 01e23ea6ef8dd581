"""Trace records (FPGA -> host): the Trace container, vectorised encode and strict decode.

Layouts: protocol/wire.py comments and docs/protocol.md, "Trace records". Records carry the low
42 bits of the playback time; TIME_SYNC records carry all 56 bits and are emitted at TIMER_RESET
and whenever bits 55..42 change, so the full time of a record is the epoch (bits 55..42) of the
latest preceding TIME_SYNC joined with the record's low 42 bits (0 before any TIME_SYNC).
No Python loop over records in either direction: encode is whole-array numpy; decode is two
compiled (numba) passes over the words, with a whole-array numpy twin that reports the first
bad word of a malformed trace (and decodes where numba is missing).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from protocol.codec import NUMBA, FirstError, LazyJit, as_bytes_array, hex_word, numba_works
from protocol.errors import ConfigError
from protocol.wire import (
    CADC_CHANNELS,
    CADC_DATA_WORDS,
    OPCODE_SHIFT,
    TIMESTAMP_BITS,
    Rec,
)

U64 = np.uint64
_M42 = (1 << TIMESTAMP_BITS) - 1
_M56 = (1 << 56) - 1
_M32 = (1 << 32) - 1
_M24 = (1 << 24) - 1
_M14 = (1 << 14) - 1
_BLOCK = 1 + CADC_DATA_WORDS  # words of one CADC block (head + data)
_CHUNK = 2048  # CADC blocks per step of the bulk copies: temporaries stay in cache

# The timed kinds share one 16-byte layout (time u64 @0, 14-bit field u16 @8, source u8 @10,
# episode i32 @12), so the decoder fills it once for all records and views each kind's rows
# with its own field names (listed in the order of docs/interfaces.md).
_OFFSETS = {"time": (np.uint64, 0), "field": (np.uint16, 8), "label": (np.uint16, 8),
            "index": (np.uint16, 8), "value": (np.uint16, 8), "status": (np.uint16, 8),
            "source": (np.uint8, 10), "episode": (np.int32, 12)}


def _timed(*names: str) -> np.dtype:
    return np.dtype({"names": list(names), "formats": [_OFFSETS[n][0] for n in names],
                     "offsets": [_OFFSETS[n][1] for n in names], "itemsize": 16})


_TIMED_DTYPE = _timed("time", "field", "episode")
SPIKE_DTYPE = _timed("time", "label", "episode")
CADC_DTYPE = _timed("time", "episode", "index")  # index: sample within the episode
MADC_DTYPE = _timed("time", "value", "source", "episode")
EPISODE_DTYPE = _timed("index", "time")
HALT_DTYPE = _timed("status", "time")
READ_DTYPE = np.dtype([("index", np.uint32), ("data", np.uint32)], align=True)
ERROR_DTYPE = np.dtype([("code", np.uint8), ("info16", np.uint16), ("info32", np.uint32)],
                       align=True)


@dataclass(eq=False)
class Trace:
    """A decoded trace. Times are full playback ticks (8 ns); episode -1 = before any EPISODE."""

    spikes: np.ndarray  # SPIKE_DTYPE
    cadc: np.ndarray  # CADC_DTYPE, row i described by cadc_samples[i]
    cadc_samples: np.ndarray  # uint8 [n, 512] (numpy decoder: a view with 520-byte rows)
    madc: np.ndarray  # MADC_DTYPE
    reads: np.ndarray  # READ_DTYPE, in the order of the program's reads
    episodes: np.ndarray  # EPISODE_DTYPE
    halt: np.ndarray  # HALT_DTYPE, 0 rows (not halted yet) or 1
    errors: np.ndarray  # ERROR_DTYPE
    syncs: np.ndarray  # uint64: the TIME_SYNC times, in order

    @classmethod
    def empty(cls) -> Trace:
        return cls(
            spikes=np.zeros(0, SPIKE_DTYPE),
            cadc=np.zeros(0, CADC_DTYPE),
            cadc_samples=np.zeros((0, CADC_CHANNELS), np.uint8),
            madc=np.zeros(0, MADC_DTYPE),
            reads=np.zeros(0, READ_DTYPE),
            episodes=np.zeros(0, EPISODE_DTYPE),
            halt=np.zeros(0, HALT_DTYPE),
            errors=np.zeros(0, ERROR_DTYPE),
            syncs=np.zeros(0, np.uint64),
        )

    @property
    def halted(self) -> bool:
        return self.halt.size > 0

    def equals(self, other: Trace) -> bool:
        """Field-by-field equality of all arrays (dtype, shape and values)."""
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
                return False
        return True


# ---------------------------------------------------------------- encode
# order of records with equal times; TIME_SYNC first, HALT last
_PRIO = {"sync": 0, "episodes": 1, "reads": 2, "spikes": 3, "cadc": 4, "madc": 5, "errors": 6,
         "halt": 7}
_PRIO_BITS = 3


def _col(src: Any, kind: str, name: str, hi: int) -> np.ndarray:
    try:
        a = np.asarray(src[name])
    except (KeyError, ValueError, IndexError) as e:
        raise ConfigError(f"encode_trace: {kind} needs a field {name!r}") from e
    a = np.atleast_1d(a).ravel()
    if a.size and a.dtype.kind not in "iub":
        raise ConfigError(f"encode_trace: {kind}.{name} must be integers, got {a.dtype}")
    if a.size:
        lo = 0 if a.dtype.kind in "ub" else int(a.min())  # unsigned: no pass for the minimum
        top = int(a.max())
        if lo < 0 or top > hi:
            bad = lo if lo < 0 else top
            raise ConfigError(f"encode_trace: {kind}.{name} out of range 0..{hi}, got {bad}")
    return a.astype(U64, copy=False)


def _rec(op: int) -> U64:
    return U64(int(op) << OPCODE_SHIFT)


def encode_trace(
    *,
    spikes: Mapping | np.ndarray | None = None,
    cadc: Mapping | np.ndarray | None = None,
    cadc_samples: np.ndarray | None = None,
    madc: Mapping | np.ndarray | None = None,
    reads: Mapping | np.ndarray | None = None,
    episodes: Mapping | np.ndarray | None = None,
    errors: Mapping | np.ndarray | None = None,
    halt: Mapping | np.ndarray | None = None,
    sync: int | None = 0,
) -> np.ndarray:
    """Trace words (uint64) of one timer segment, merged into time order.

    Each argument is a structured array or a mapping of field -> array, with full 56-bit
    `time` fields (ticks since the segment's TIMER_RESET):
      spikes: time, label          cadc: time, index (+ cadc_samples uint8 [n, 512])
      madc: time, value, source    reads: time, index, data      episodes: time, index
      errors: time, code, info16, info32                          halt: time, status
    `time` of reads and errors only orders them (their records carry none). Records of equal
    time come out as TIME_SYNC, EPISODE, READ_DATA, SPIKE, CADC, MADC, ERROR, HALT, and in input
    order within a kind. `sync`: time of the TIMER_RESET that starts the segment (a TIME_SYNC
    record first), or None to start without one (a continuation, epoch 0). A TIME_SYNC is
    inserted before the first record of every new epoch (time >> 42).
    """
    keys: list[np.ndarray] = []
    words: list[np.ndarray] = []
    start_epoch = 0
    if sync is not None:
        s = _col({"time": sync}, "sync", "time", _M56)
        keys.append(s << U64(_PRIO_BITS))
        words.append(s | _rec(Rec.TIME_SYNC))
        start_epoch = int(s[0]) >> TIMESTAMP_BITS

    def add(kind: str, src, op: int, fields_: list[tuple[str, int, int]]) -> np.ndarray | None:
        if src is None:
            return None
        t = _col(src, kind, "time", _M56)
        if op in (Rec.READ_DATA, Rec.ERROR):
            w = np.full(t.size, _rec(op), dtype=U64)
        else:
            w = t & U64(_M42)
            w |= _rec(op)
        for name, hi, shift in fields_:
            c = _col(src, kind, name, hi)
            if c.size != t.size:
                raise ConfigError(f"encode_trace: {kind}.{name} has {c.size} rows, time {t.size}")
            c = c << U64(shift) if shift else c
            w |= c
        key = t << U64(_PRIO_BITS)
        key |= U64(_PRIO[kind])
        keys.append(key)
        words.append(w)
        return t

    add("episodes", episodes, Rec.EPISODE, [("index", _M14, 42)])
    add("reads", reads, Rec.READ_DATA, [("index", _M24, 32), ("data", _M32, 0)])
    add("spikes", spikes, Rec.SPIKE, [("label", _M14, 42)])
    n_single = sum(k.size for k in keys)
    t_cadc = add("cadc", cadc, Rec.CADC_HEAD, [("index", _M14, 42)])
    n_cadc = 0 if t_cadc is None else t_cadc.size
    add("madc", madc, Rec.MADC, [("value", 0x3FF, 42), ("source", 0xF, 52)])
    add("errors", errors, Rec.ERROR, [("code", 0xFF, 48), ("info16", 0xFFFF, 32),
                                      ("info32", _M32, 0)])
    t_halt = add("halt", halt, Rec.HALT, [("status", _M14, 42)])
    if t_halt is not None and t_halt.size > 1:
        raise ConfigError(f"encode_trace: at most one HALT per segment, got {t_halt.size}")
    if n_cadc:
        samples = np.asarray(cadc_samples if cadc_samples is not None else ())
        if samples.shape != (n_cadc, CADC_CHANNELS) or samples.dtype != np.uint8:
            raise ConfigError(
                f"encode_trace: cadc_samples must be uint8 [{n_cadc}, {CADC_CHANNELS}], got "
                f"{samples.dtype} {samples.shape}"
            )
    if sum(k.size for k in keys) == 0:
        return np.zeros(0, dtype=U64)
    key = np.concatenate(keys)
    word = np.concatenate(words)
    if sync is not None and key.size > 1 and int(key[1:].min()) < int(key[0]):
        raise ConfigError("encode_trace: records earlier than the segment's sync time")
    order = np.argsort(key, kind="stable")  # timsort: merges the (usually sorted) kinds
    key = key[order]
    word = word[order]
    is_cadc = (key & U64((1 << _PRIO_BITS) - 1)) == _PRIO["cadc"]
    size = np.where(is_cadc, _BLOCK, 1)
    # a TIME_SYNC before the first record of each new epoch: keys are sorted, so the epochs'
    # first records are found by binary search (a handful), not by a pass over all records
    shift = U64(_PRIO_BITS + TIMESTAMP_BITS)
    last_epoch = int(key[-1] >> shift)
    new_epochs = np.arange(start_epoch + 1, last_epoch + 1, dtype=U64)
    at = np.searchsorted(key, new_epochs << shift)
    keep = np.concatenate((at[1:] > at[:-1], [True])) if at.size else at.astype(bool)
    at, new_epochs = at[keep], new_epochs[keep]  # epochs without records get no sync
    pos = np.cumsum(size) - size  # the record's own first word, before sync insertion
    if at.size:
        pos += np.repeat(np.arange(at.size + 1), np.diff(np.concatenate(([0], at, [key.size]))))
    total = int(pos[-1] + size[-1])
    out = np.empty(total, dtype=U64)
    if at.size:
        out[pos[at] - 1] = (new_epochs << U64(TIMESTAMP_BITS)) | _rec(Rec.TIME_SYNC)
    single = ~is_cadc
    out[pos[single]] = word[single]
    if n_cadc:
        # order[] of the CADC heads tells which sample row each sorted block carries
        blk_sorted = np.flatnonzero(is_cadc)
        rows = order[blk_sorted] - n_single
        in_order = bool(np.all(rows[1:] > rows[:-1]))  # usual case: no gather of samples
        heads, bpos = word[blk_sorted], pos[blk_sorted]
        for a in range(0, n_cadc, _CHUNK):  # cache-sized chunks, not a loop over records
            b = min(a + _CHUNK, n_cadc)
            rows_ab = samples[a:b] if in_order else samples[rows[a:b]]
            _scatter_blocks(out, bpos[a:b], _cadc_blocks(heads[a:b], rows_ab))
    return out


def _cadc_blocks(heads: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """[n, 75] words: head, then 74 CADC_DATA words of samples (7 per word).

    Data word k holds sample bytes 7k..7k+6: copied as an unaligned u64 from byte offset 7k of
    the sample row (stride 7 bytes), then its 8th byte (sample 7k+7) is overwritten with the
    opcode. Word 73 holds only channel 511 (the 6 unused slots are zero).
    """
    n = heads.size
    samples = np.ascontiguousarray(samples)
    out = np.empty((n, _BLOCK), dtype=U64)
    out[:, 0] = heads
    if n == 0:
        return out
    full = CADC_DATA_WORDS - 1  # words 0..72 lie wholly inside the 512-byte row
    v = np.ndarray((n, full), dtype="<u8", buffer=samples, strides=(CADC_CHANNELS, 7))
    np.copyto(out[:, 1 : _BLOCK - 1], v)
    out.view(np.uint8).reshape(n, _BLOCK, 8)[:, 1 : _BLOCK - 1, 7] = int(Rec.CADC_DATA)
    out[:, _BLOCK - 1] = samples[:, CADC_CHANNELS - 1].astype(U64) | _rec(Rec.CADC_DATA)
    return out


def _scatter_blocks(out: np.ndarray, pos: np.ndarray, blocks: np.ndarray) -> None:
    """out[pos[i] : pos[i] + 75] = blocks[i], one 600-byte memcpy per block.

    A view of `out` with one 600-byte item starting at every word (overlapping items) turns
    the block scatter into a single fancy assignment instead of a [n, 75] index array.
    """
    n_items = out.size - _BLOCK + 1
    if pos.size == 0 or n_items <= 0:
        return
    item = np.dtype((np.void, _BLOCK * 8))
    view = np.ndarray((n_items,), dtype=item, buffer=out, strides=(8,))
    view[pos] = np.ascontiguousarray(blocks).view(item).ravel()


# ---------------------------------------------------------------- decode
_KNOWN = np.zeros(256, dtype=bool)
_KNOWN[[int(r) for r in Rec]] = True


def decode_trace(data) -> Trace:
    """Trace of a record stream (bytes or uint64 words); DecodeError at the first bad word.

    Well-formed traces are decoded by two compiled passes (`_decode_compiled`); anything the
    compiled passes do not accept goes to the whole-array numpy decoder, which names the first
    bad word (it is also the decoder where numba is missing).
    """
    raw = as_bytes_array(data, "trace")
    if raw.size == 0:
        return Trace.empty()
    if COMPILED and numba_works():
        trace = _decode_compiled(raw.view("<u8"))
        if trace is not None:
            return trace
    return _decode_numpy(raw)


def _decode_numpy(raw: np.ndarray) -> Trace:
    """decode_trace in whole-array numpy passes; raw: uint8, a whole number of words (>= 1)."""
    w = raw.view("<u8")
    n = w.size
    err = FirstError()
    nd, wn = _scan(raw)  # every word but CADC_DATA (the bulk) and its position
    k = (wn >> U64(OPCODE_SHIFT)).astype(np.uint8)
    if nd.size and (int(k.min()) < min(_KNOWN_OPS) or int(k.max()) > max(_KNOWN_OPS)):
        bad = ~_KNOWN[k]
        err.add(nd[bad], "unknown trace record opcode", [f"0x{int(r):02x}" for r in Rec],
                lambda i: f"0x{int(k[np.searchsorted(nd, i)]):02x}")
    # CADC blocks: every head is followed by exactly 74 CADC_DATA words and no CADC_DATA word
    # stands elsewhere <=> the stream starts with a non-data word, each head's next non-data
    # word is 75 words on, and the data words number 74 per head
    hidx = np.flatnonzero(k == Rec.CADC_HEAD)
    heads = nd[hidx]
    nxt = nd[np.minimum(hidx + 1, nd.size - 1)] if nd.size else nd
    if hidx.size and hidx[-1] == nd.size - 1:
        nxt[-1] = n
    well_formed = (nd.size > 0 and nd[0] == 0 and n - nd.size == CADC_DATA_WORDS * heads.size
                   and bool(np.all(nxt - heads == _BLOCK)))
    samples = None
    if not well_formed:
        _block_errors(err, nd, k, w)
        # complete blocks before (or after) the damage still have their padding checked, so
        # that the first bad word is reported whichever rule it breaks
        whole = heads[nxt - heads == _BLOCK] if heads.size else heads
        last = whole + CADC_DATA_WORDS
        pad_bad = last[(w[last] & U64(_M56 ^ 0xFF)) != 0] if last.size else last
        if pad_bad.size:
            err.add(pad_bad, "CADC padding slots not zero",
                    "bytes 1..6 of the last CADC_DATA word = 0", hex_word(w))
    else:
        samples, pad_bad = _cadc_samples(raw, heads)
        if pad_bad.size:
            err.add(heads[pad_bad] + CADC_DATA_WORDS, "CADC padding slots not zero",
                    "bytes 1..6 of the last CADC_DATA word = 0", hex_word(w))
    err.raise_first()

    # time and episode of every non-CADC_DATA record at once: the epoch of the latest
    # TIME_SYNC and the index of the latest EPISODE are constant between such records, so they
    # are filled in runs (np.repeat), then each kind's rows are gathered as 16-byte structs
    is_sync = k == Rec.TIME_SYNC
    sync_words = wn[is_sync]
    epoch = _runs(is_sync, np.concatenate(([U64(0)], sync_words & U64(_M56 ^ _M42))))
    is_ep = k == Rec.EPISODE
    ep_index = ((wn[is_ep] >> U64(42)) & U64(_M14)).astype(np.int32)
    base = np.empty(k.size, dtype=_TIMED_DTYPE)
    base["time"] = epoch | (wn & U64(_M42))
    base["field"] = ((wn >> U64(42)) & U64(_M14)).astype(np.uint16)
    base["episode"] = _runs(is_ep, np.concatenate(([np.int32(-1)], ep_index)))

    def timed(op: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        sel = np.flatnonzero(k == op)
        return base[sel].view(dtype), sel

    spikes, _ = timed(Rec.SPIKE, SPIKE_DTYPE)
    cadc, _ = timed(Rec.CADC_HEAD, CADC_DTYPE)
    episodes, _ = timed(Rec.EPISODE, EPISODE_DTYPE)
    halt, _ = timed(Rec.HALT, HALT_DTYPE)
    madc, sel = timed(Rec.MADC, MADC_DTYPE)
    madc["value"] = ((wn[sel] >> U64(42)) & U64(0x3FF)).astype(np.uint16)
    madc["source"] = ((wn[sel] >> U64(52)) & U64(0xF)).astype(np.uint8)

    def untimed(op: int, dtype: np.dtype, cols: dict[str, tuple[int, int, type]]) -> np.ndarray:
        """Rows of one record kind; cols: name -> (shift, mask, dtype) of a bit field."""
        ws = wn[k == op]
        out = np.empty(ws.size, dtype=dtype)
        for name, (shift, mask, dt) in cols.items():
            out[name] = ((ws >> U64(shift)) & U64(mask)).astype(dt)
        return out

    reads = untimed(Rec.READ_DATA, READ_DTYPE,
                    {"index": (32, _M24, np.uint32), "data": (0, _M32, np.uint32)})
    errors = untimed(Rec.ERROR, ERROR_DTYPE, {
        "code": (48, 0xFF, np.uint8), "info16": (32, 0xFFFF, np.uint16),
        "info32": (0, _M32, np.uint32)})
    syncs = (sync_words & U64(_M56)).astype(np.uint64)
    if samples is None:
        samples = np.zeros((0, _ROW), np.uint8)
    return Trace(spikes=spikes, cadc=cadc, cadc_samples=samples[:, :CADC_CHANNELS], madc=madc,
                 reads=reads, episodes=episodes, halt=halt, errors=errors, syncs=syncs)


_SCAN_STEP = 1 << 17  # words per step of the opcode scan: the gather finds them still in cache
_KNOWN_OPS = [int(r) for r in Rec]


def _scan(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions and words of every word that is not CADC_DATA, scanning cache-sized steps."""
    w = raw.view("<u8")
    n = w.size
    pos, words = [], []
    for a in range(0, n, _SCAN_STEP):  # steps of 1 MiB, not a loop over records
        b = min(a + _SCAN_STEP, n)
        idx = np.flatnonzero(raw[8 * a + 7 : 8 * b : 8] != Rec.CADC_DATA)
        words.append(w[a:b][idx])
        pos.append(idx + a)
    if not pos:
        return np.zeros(0, np.int64), np.zeros(0, U64)
    return np.concatenate(pos), np.concatenate(words)


def _block_errors(err: FirstError, nd: np.ndarray, k: np.ndarray, w: np.ndarray) -> None:
    """The first misplaced CADC_DATA word / short CADC block (slow path, malformed input only)."""
    n = w.size
    run = np.diff(np.append(nd, n)) - 1  # CADC_DATA words after each other record
    is_head = k == Rec.CADC_HEAD
    wrong = run != np.where(is_head, CADC_DATA_WORDS, 0)
    if wrong.any():
        j = np.flatnonzero(wrong)
        head_short = is_head[j] & (run[j] < CADC_DATA_WORDS)
        at = np.where(head_short, nd[j] + 1 + run[j],
                      nd[j] + 1 + np.where(is_head[j], CADC_DATA_WORDS, 0))
        first = int(np.argmin(at))
        if head_short[first]:
            err.add(at[first : first + 1], "CADC block with too few CADC_DATA words",
                    f"{CADC_DATA_WORDS} CADC_DATA words after CADC_HEAD at word {nd[j[first]]}",
                    lambda i: f"{run[j[first]]}, then " + hex_word(w)(i))
        else:
            err.add(at[first : first + 1], "CADC_DATA word outside a CADC block",
                    "CADC_HEAD before 74 CADC_DATA words", hex_word(w))
    if nd.size == 0 or nd[0] > 0:
        err.add(np.array([0]), "CADC_DATA word outside a CADC block",
                "CADC_HEAD before 74 CADC_DATA words", hex_word(w))


def _runs(starts_run: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values[0] up to the first True of starts_run, values[i] from its i-th True on."""
    pos = np.flatnonzero(starts_run)
    lengths = np.diff(np.concatenate(([0], pos, [starts_run.size])))
    return np.repeat(values, lengths)


_ROW = 520  # bytes per decoded sample row: 518 slots + room for the last unaligned u64 write


def _cadc_samples(raw: np.ndarray, heads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 520] rows (slots 0..517 = samples of the blocks after `heads`), and the block
    numbers whose padding slots are not zero.

    Every CADC_DATA word is written as an unaligned u64 at byte 7k of its row; in increasing k
    each write's 8th byte (the opcode) is overwritten by the next one, so the rows end up packed
    7 bytes per word without a byte-wise loop.
    """
    n = heads.size
    out = np.empty((n, _ROW), dtype=np.uint8)
    bad: list[np.ndarray] = []
    if n:
        # one 592-byte item per block: the 74 data words after each head, memcpy'd at once
        item = np.dtype((np.void, CADC_DATA_WORDS * 8))
        n_items = raw.size // 8 - CADC_DATA_WORDS + 1
        items = np.ndarray((n_items,), dtype=item, buffer=raw, strides=(8,))
        v = np.ndarray((n, CADC_DATA_WORDS), dtype="<u8", buffer=out, strides=(_ROW, 7))
        pad_mask = U64(_M56 ^ 0xFF)  # bytes 1..6 of the last data word
        for a in range(0, n, _CHUNK):  # cache-sized chunks, not a loop over records
            b = min(a + _CHUNK, n)
            blk = items[heads[a:b] + 1]  # (np.take would copy the overlapping view first)
            words = blk.view("<u8").reshape(b - a, CADC_DATA_WORDS)
            v[a:b] = words
            nz = np.flatnonzero(words[:, -1] & pad_mask)
            if nz.size:
                bad.append(nz + a)
    return out, (np.concatenate(bad) if bad else np.zeros(0, np.int64))


# ---------------------------------------------------------------- decode, compiled
# Two sequential passes instead of ~40 whole-array ones: the first hops from record to record
# (a CADC block is one hop of 75 words) counting each kind and checking the block structure,
# the second fills every kind's rows and unpacks the samples. Only well-formed traces are
# decoded here: on anything else the numpy decoder runs and reports the first bad word.
COMPILED = NUMBA and sys.byteorder == "little"  # the passes read the wire's words natively

_OP = U64(OPCODE_SHIFT)
_K56 = U64(_M56)
_K42 = U64(_M42)
_KEPOCH = U64(_M56 ^ _M42)
_K14 = U64(_M14)
_K24 = U64(_M24)
_K32 = U64(_M32)
_KPAD = U64(_M56 ^ 0xFF)  # bytes 1..6 of the last CADC_DATA word
_KEP = U64(0xFFFFFFFF)  # an int32 episode index as the high half of a record's second word
_R_SYNC, _R_SPIKE, _R_HEAD, _R_DATA = (U64(int(r)) for r in (Rec.TIME_SYNC, Rec.SPIKE,
                                                             Rec.CADC_HEAD, Rec.CADC_DATA))
_R_MADC, _R_READ, _R_EPISODE, _R_HALT, _R_ERROR = (
    U64(int(r)) for r in (Rec.MADC, Rec.READ_DATA, Rec.EPISODE, Rec.HALT, Rec.ERROR))
_R_LAST = U64(max(_KNOWN_OPS))
_NDATA = CADC_DATA_WORDS


@LazyJit
def _count_records(w, counts):  # noqa: ANN001, ANN202
    """Records of each opcode into counts[op]; False unless every record is a known non-data
    word and every CADC_HEAD has its 74 words after it (their opcodes are checked in the
    fill pass, which reads them anyway)."""
    n = w.shape[0]
    i = 0
    while i < n:
        op = w[i] >> _OP
        if op == _R_HEAD:
            if i + _NDATA >= n:
                return False
            counts[op] += 1
            i += _NDATA + 1
        elif op == 0 or op == _R_DATA or op > _R_LAST:
            return False
        else:
            counts[op] += 1
            i += 1
    return True


@LazyJit
def _fill_records(w, spikes, cadc, madc, episodes, halt, reads, errors, syncs,  # noqa: ANN001, ANN202, PLR0913
                  samples):
    """Every kind's rows in record order (timed kinds: [n, 2] u64 views of their 16-byte rows,
    READ_DATA / ERROR: u64 views of their 8-byte rows) and each CADC block's 512 samples
    ([n, 64] u64 view of the uint8 [n, 512] rows). False if a CADC block holds a word that is
    not CADC_DATA or non-zero padding."""
    n = w.shape[0]
    epoch = U64(0)
    ep = _KEP  # episode -1 before any EPISODE record
    i_sp = i_cd = i_md = i_ep = i_ht = i_rd = i_er = i_sy = 0
    bad = U64(0)
    i = 0
    while i < n:
        x = w[i]
        op = x >> _OP
        t = epoch | (x & _K42)
        f = (x >> U64(42)) & _K14
        if op == _R_HEAD:
            cadc[i_cd, 0] = t
            cadc[i_cd, 1] = f | (ep << U64(32))
            # 8 data words (56 bytes of samples) fill 7 output words; 9 such groups, then the
            # last two data words give samples 504..511
            row = samples[i_cd]
            b = i + 1
            for g in range(9):
                x0 = w[b]
                x1 = w[b + 1]
                x2 = w[b + 2]
                x3 = w[b + 3]
                x4 = w[b + 4]
                x5 = w[b + 5]
                x6 = w[b + 6]
                x7 = w[b + 7]
                bad |= ((x0 >> _OP) ^ _R_DATA) | ((x1 >> _OP) ^ _R_DATA) | (
                    (x2 >> _OP) ^ _R_DATA) | ((x3 >> _OP) ^ _R_DATA) | (
                    (x4 >> _OP) ^ _R_DATA) | ((x5 >> _OP) ^ _R_DATA) | (
                    (x6 >> _OP) ^ _R_DATA) | ((x7 >> _OP) ^ _R_DATA)
                x0 &= _K56
                x1 &= _K56
                x2 &= _K56
                x3 &= _K56
                x4 &= _K56
                x5 &= _K56
                x6 &= _K56
                x7 &= _K56
                o = 7 * g
                row[o] = x0 | (x1 << U64(56))
                row[o + 1] = (x1 >> U64(8)) | (x2 << U64(48))
                row[o + 2] = (x2 >> U64(16)) | (x3 << U64(40))
                row[o + 3] = (x3 >> U64(24)) | (x4 << U64(32))
                row[o + 4] = (x4 >> U64(32)) | (x5 << U64(24))
                row[o + 5] = (x5 >> U64(40)) | (x6 << U64(16))
                row[o + 6] = (x6 >> U64(48)) | (x7 << U64(8))
                b += 8
            y0 = w[b]
            y1 = w[b + 1]
            bad |= ((y0 >> _OP) ^ _R_DATA) | ((y1 >> _OP) ^ _R_DATA) | (y1 & _KPAD)
            row[63] = (y0 & _K56) | (y1 << U64(56))
            i_cd += 1
            i += _NDATA + 1
            continue
        if op == _R_SPIKE:
            spikes[i_sp, 0] = t
            spikes[i_sp, 1] = f | (ep << U64(32))
            i_sp += 1
        elif op == _R_SYNC:
            epoch = x & _KEPOCH
            syncs[i_sy] = x & _K56
            i_sy += 1
        elif op == _R_EPISODE:
            ep = f
            episodes[i_ep, 0] = t
            episodes[i_ep, 1] = f | (ep << U64(32))
            i_ep += 1
        elif op == _R_MADC:
            madc[i_md, 0] = t
            madc[i_md, 1] = ((x >> U64(42)) & U64(0x3FF)) | (((x >> U64(52)) & U64(0xF))
                                                             << U64(16)) | (ep << U64(32))
            i_md += 1
        elif op == _R_READ:
            reads[i_rd] = ((x >> U64(32)) & _K24) | ((x & _K32) << U64(32))
            i_rd += 1
        elif op == _R_HALT:
            halt[i_ht, 0] = t
            halt[i_ht, 1] = f | (ep << U64(32))
            i_ht += 1
        elif op == _R_ERROR:
            errors[i_er] = ((x >> U64(48)) & U64(0xFF)) | (((x >> U64(32)) & U64(0xFFFF))
                                                           << U64(16)) | ((x & _K32) << U64(32))
            i_er += 1
        i += 1
    return bad == 0


def _rows(n: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """n rows of dtype and their u64 view ([n, 2] for 16-byte rows, [n] for 8-byte rows)."""
    out = np.empty(n, dtype=dtype)
    view = out.view(U64)
    return out, (view.reshape(n, 2) if dtype.itemsize == 16 else view)


def _decode_compiled(w: np.ndarray) -> Trace | None:
    """decode_trace of a well-formed word stream in two compiled passes; None if it is not
    well-formed (the numpy decoder then finds and reports the first bad word)."""
    counts = np.zeros(int(_R_LAST) + 1, np.int64)
    if not _count_records(w, counts):
        return None
    c = counts.tolist()
    spikes, sp = _rows(c[Rec.SPIKE], SPIKE_DTYPE)
    cadc, cd = _rows(c[Rec.CADC_HEAD], CADC_DTYPE)
    madc, md = _rows(c[Rec.MADC], MADC_DTYPE)
    episodes, ep = _rows(c[Rec.EPISODE], EPISODE_DTYPE)
    halt, ht = _rows(c[Rec.HALT], HALT_DTYPE)
    reads, rd = _rows(c[Rec.READ_DATA], READ_DTYPE)
    errors, er = _rows(c[Rec.ERROR], ERROR_DTYPE)
    syncs = np.empty(c[Rec.TIME_SYNC], U64)
    samples = np.empty((c[Rec.CADC_HEAD], CADC_CHANNELS), np.uint8)
    if not _fill_records(w, sp, cd, md, ep, ht, rd, er, syncs,
                         samples.view(U64).reshape(-1, CADC_CHANNELS // 8)):
        return None
    return Trace(spikes=spikes, cadc=cadc, cadc_samples=samples, madc=madc, reads=reads,
                 episodes=episodes, halt=halt, errors=errors, syncs=syncs)
