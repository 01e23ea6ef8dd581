"""Playback instructions (host -> FPGA): vectorised builders and a strict vectorised decoder.

Each builder returns a uint64 array of instruction words; programs are their concatenation
(`program(...)`). Layouts: protocol/wire.py comments and docs/protocol.md, "Playback
instructions". Builders refuse out-of-range values with ConfigError (field, range, value);
`decode_program` refuses malformed words with DecodeError (word offset, expected, got).
"""

from __future__ import annotations

import numpy as np

from protocol.codec import FirstError, as_words, hex_word, words_to_bytes
from protocol.errors import ConfigError
from protocol.wire import LABEL_MASK, OPCODE_SHIFT, Instr, SystemOp

U64 = np.uint64
_OPS = np.uint64(OPCODE_SHIFT)
_M56 = (1 << 56) - 1
_M42 = (1 << 42) - 1
_M32 = (1 << 32) - 1
_M24 = (1 << 24) - 1
_M14 = (1 << 14) - 1


def _op(instr: int) -> int:
    return int(instr) << OPCODE_SHIFT


def _word(instr: int, payload: int = 0) -> np.ndarray:
    return np.array([_op(instr) | payload], dtype=U64)


def _ints(name: str, values, lo: int, hi: int) -> np.ndarray:
    """values as a 1-d uint64 array, every element in lo..hi, else ConfigError naming it."""
    a = np.asarray(values)
    if a.dtype.kind not in "iub":
        if a.size == 0:
            a = a.astype(np.int64)
        else:
            raise ConfigError(f"{name} must be integers, got dtype {a.dtype}")
    a = np.atleast_1d(a).ravel()
    if a.size:
        amin, amax = int(a.min()), int(a.max())
        if amin < lo or amax > hi:
            bad = amin if amin < lo else amax
            raise ConfigError(f"{name} out of range: valid {lo}..{hi}, got {bad}")
    return a.astype(U64)


def _scalar(name: str, value, lo: int, hi: int) -> int:
    a = np.asarray(value)
    if a.ndim != 0:
        raise ConfigError(f"{name} must be a single integer, got shape {a.shape}")
    return int(_ints(name, a, lo, hi)[0])


# ---------------------------------------------------------------- builders
def timer_reset() -> np.ndarray:
    """Playback timer := 0; the FPGA answers TIME_SYNC(0)."""
    return _word(Instr.TIMER_RESET)


def wait_until(t) -> np.ndarray:
    """Wait until absolute playback time t (ticks); an array of times gives one word each."""
    ts = _ints("wait_until time", t, 0, _M56)
    return ts | U64(_op(Instr.WAIT_UNTIL))


def write(addrs, values) -> np.ndarray:
    """Register writes: WRITE(addr), DATA(value) pairs; scalars broadcast against arrays."""
    a, v = np.broadcast_arrays(np.asarray(addrs), np.asarray(values))
    a = _ints("write address", a, 0, _M32)
    v = _ints("write value", v, 0, _M32)
    out = np.empty(2 * a.size, dtype=U64)
    out[0::2] = a | U64(_op(Instr.WRITE))
    out[1::2] = v | U64(_op(Instr.DATA))
    return out


def write_block(start, values) -> np.ndarray:
    """Write consecutive addresses start, start+1, ...: one WRITE_BLOCK then N DATA words."""
    v = _ints("write_block value", values, 0, _M32)
    n = v.size
    if not 1 <= n <= _M24:
        raise ConfigError(f"write_block count out of range: valid 1..{_M24}, got {n}")
    s = _scalar("write_block start address", start, 0, _M32 - n + 1)
    out = np.empty(n + 1, dtype=U64)
    out[0] = _op(Instr.WRITE_BLOCK) | n << 32 | s
    out[1:] = v | U64(_op(Instr.DATA))
    return out


def read(start, count: int = 1) -> np.ndarray:
    """Read `count` consecutive registers from `start`; answered by `count` READ_DATA records."""
    n = _scalar("read count", count, 1, _M24)
    s = _scalar("read start address", start, 0, _M32 - n + 1)
    return _word(Instr.READ, n << 32 | s)


_SPIKE_SHIFTS = np.array([42, 28, 14, 0], dtype=U64)


def spikes(times, labels) -> np.ndarray:
    """Timed spike injection: a WAIT_UNTIL before each distinct time, then SPIKE1..4 packs.

    times must be sorted (ticks, absolute playback time); labels are 14-bit.
    """
    t = _ints("spike time", times, 0, _M56)
    lab = _ints("spike label", labels, 0, LABEL_MASK)
    if t.size != lab.size:
        raise ConfigError(f"spikes: {t.size} times but {lab.size} labels")
    n = t.size
    if n == 0:
        return np.empty(0, dtype=U64)
    if n > 1 and np.any(t[1:] < t[:-1]):
        i = int(np.flatnonzero(t[1:] < t[:-1])[0]) + 1
        raise ConfigError(f"spike times must be sorted: time[{i}]={t[i]} < time[{i - 1}]")
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(t[1:], t[:-1], out=new[1:])
    starts = np.flatnonzero(new)  # first spike of each time group
    counts = np.diff(np.append(starts, n))
    group = np.cumsum(new) - 1
    rank = np.arange(n) - starts[group]  # position within its time group
    nwords = (counts + 3) // 4
    wait_pos = np.concatenate(([0], np.cumsum(1 + nwords)[:-1]))
    total = int(nwords.sum() + starts.size)
    out = np.empty(total, dtype=U64)
    out[wait_pos] = t[starts] | U64(_op(Instr.WAIT_UNTIL))
    # spike words: ordinal of the pack each spike lands in, and its slot 0..3 in the pack
    first_in_pack = rank % 4 == 0
    pack = np.cumsum(first_in_pack) - 1
    slot = rank % 4
    pack_pos = (wait_pos[group] + 1 + rank // 4)[first_in_pack]
    filled = np.bincount(pack, minlength=pack_pos.size)
    words = np.zeros(pack_pos.size, dtype=U64)
    np.bitwise_or.at(words, pack, lab << _SPIKE_SHIFTS[slot])
    words |= (filled.astype(U64) + U64(int(Instr.SPIKE1) - 1)) << _OPS
    out[pack_pos] = words
    return out


def cadc_trigger() -> np.ndarray:
    """One CADC sample of all 512 channels now."""
    return _word(Instr.CADC_TRIGGER)


def cadc_schedule(interval, count) -> np.ndarray:
    """`count` CADC samples `interval` ticks apart, the first one now."""
    n = _scalar("cadc_schedule count", count, 1, _M14)
    dt = _scalar("cadc_schedule interval", interval, 0, _M42)
    return _word(Instr.CADC_SCHEDULE, n << 42 | dt)


def madc_record(n) -> np.ndarray:
    """Record n MADC samples at the configured MADC period, from now."""
    return _word(Instr.MADC_RECORD, _scalar("madc_record samples", n, 1, _M24) << 32)


def episode_start(index) -> np.ndarray:
    """Global neuron reset and episode marker; the trace gets an EPISODE(index) record."""
    return _word(Instr.EPISODE_START, _scalar("episode index", index, 0, _M14) << 42)


def barrier() -> np.ndarray:
    """Wait until all preceding operations completed."""
    return _word(Instr.BARRIER)


def halt() -> np.ndarray:
    """End of program: the FPGA emits HALT and flushes the trace."""
    return _word(Instr.HALT)


def system(op) -> np.ndarray:
    """System operation (SystemOp: NOP, CHIP_RESET, CLEAR_SPIKE_COUNTERS)."""
    v = _scalar("system op", op, 0, 255)
    if v not in {int(o) for o in SystemOp}:
        raise ConfigError(f"unknown system op {v}; valid {[o.name for o in SystemOp]}")
    return _word(Instr.SYSTEM, v)


def program(*parts) -> np.ndarray:
    """Concatenate builder outputs (and raw uint64 arrays) into one program."""
    if not parts:
        return np.empty(0, dtype=U64)
    return np.concatenate([np.asarray(p, dtype=U64).ravel() for p in parts])


def program_bytes(words) -> bytes:
    """Wire bytes of a program: little-endian u64 words."""
    return words_to_bytes(words)


# ---------------------------------------------------------------- decoder
PROGRAM_DTYPE = np.dtype(
    [
        ("op", np.uint8),  # Instr opcode
        ("word", np.uint64),  # the raw word
        ("time", np.uint64),  # WAIT_UNTIL: target time; CADC_SCHEDULE: interval
        ("addr", np.uint32),  # WRITE/WRITE_BLOCK/READ: (first) address; DATA: its target address
        ("data", np.uint32),  # DATA: value; WRITE: value of its DATA word; SYSTEM: op
        ("count", np.uint32),  # WRITE_BLOCK/READ/MADC_RECORD/CADC_SCHEDULE: N; SPIKEn: n
        ("labels", np.uint16, (4,)),  # SPIKEn: labels[:n], rest 0
        ("index", np.uint32),  # EPISODE_START: episode; READ: index of its first READ_DATA
    ]
)

# valid payload bits per opcode; anything else set is a DecodeError (reserved bits must be 0)
_PAYLOAD_MASK = {
    Instr.TIMER_RESET: 0,
    Instr.WAIT_UNTIL: _M56,
    Instr.WRITE: _M32,
    Instr.DATA: _M32,
    Instr.WRITE_BLOCK: _M56,
    Instr.READ: _M56,
    Instr.SPIKE1: _M14 << 42,
    Instr.SPIKE2: _M14 << 42 | _M14 << 28,
    Instr.SPIKE3: _M14 << 42 | _M14 << 28 | _M14 << 14,
    Instr.SPIKE4: _M56,
    Instr.CADC_TRIGGER: 0,
    Instr.CADC_SCHEDULE: _M56,
    Instr.MADC_RECORD: _M24 << 32,
    Instr.EPISODE_START: _M14 << 42,
    Instr.BARRIER: 0,
    Instr.HALT: 0,
    Instr.SYSTEM: 0xFF,
}
_MASK_TABLE = np.zeros(256, dtype=U64)
_KNOWN = np.zeros(256, dtype=bool)
for _k, _m in _PAYLOAD_MASK.items():
    _MASK_TABLE[int(_k)] = ~np.uint64(_m) & U64(_M56)  # bits that must be zero
    _KNOWN[int(_k)] = True
_SYSOPS = np.zeros(256, dtype=bool)
_SYSOPS[[int(o) for o in SystemOp]] = True


def decode_program(data: bytes) -> np.ndarray:
    """Structured array (PROGRAM_DTYPE), one row per word; DecodeError at the first bad word."""
    w = as_words(data, "program")
    n = w.size
    op = (w >> _OPS).astype(np.uint8)
    payload = w & U64(_M56)
    err = FirstError()
    err.add(~_KNOWN[op], "unknown or reserved instruction opcode",
            [f"0x{int(k):02x}" for k in _PAYLOAD_MASK], lambda i: f"0x{int(op[i]):02x}")
    err.add((payload & _MASK_TABLE[op]) != 0, "reserved instruction bits set",
            "0 outside the fields of the opcode", hex_word(w))

    is_data = op == Instr.DATA
    nd = np.flatnonzero(~is_data)  # positions of non-DATA words
    run = np.diff(np.append(nd, n)) - 1  # DATA words after each non-DATA word
    nd_op = op[nd]
    cnt32 = ((payload >> U64(32)) & U64(_M24)).astype(np.int64)
    need = np.zeros(nd.size, dtype=np.int64)
    need[nd_op == Instr.WRITE] = 1
    blk = nd_op == Instr.WRITE_BLOCK
    need[blk] = cnt32[nd[blk]]
    if n and (nd.size == 0 or nd[0] > 0):
        err.add(np.array([0]), "DATA word without WRITE", "WRITE or WRITE_BLOCK before DATA",
                hex_word(w))
    short = run < need
    err.add(nd[short] + 1 + run[short], "missing DATA word of WRITE / WRITE_BLOCK",
            "DATA (0x83)", lambda i: "end of program" if i >= n else f"0x{int(op[i]):02x}")
    extra = run > need
    err.add(nd[extra] + 1 + need[extra], "DATA word without WRITE",
            "no more DATA words", lambda i: "DATA (0x83)")
    cnt_ops = (nd_op == Instr.WRITE_BLOCK) | (nd_op == Instr.READ)
    zero_cnt = cnt_ops & (cnt32[nd] == 0)
    err.add(nd[zero_cnt], "WRITE_BLOCK / READ with count 0", "count 1..2^24-1", lambda i: 0)
    addr = (w & U64(_M32)).astype(np.int64)
    overflow = cnt_ops & (addr[nd] + cnt32[nd] - 1 > _M32)
    err.add(nd[overflow], "address range runs past 0xFFFFFFFF", "start + count <= 2^32",
            hex_word(w))
    err.add((op == Instr.SYSTEM) & ~_SYSOPS[(w & U64(0xFF)).astype(np.uint8)],
            "unknown system op", [o.name for o in SystemOp], lambda i: int(w[i] & U64(0xFF)))
    err.add((op == Instr.MADC_RECORD) & (cnt32 == 0), "MADC_RECORD with 0 samples",
            "1..2^24-1", lambda i: 0)
    err.add((op == Instr.CADC_SCHEDULE) & ((payload >> U64(42)) == 0),
            "CADC_SCHEDULE with count 0", "1..2^14-1", lambda i: 0)
    err.raise_first()

    out = np.zeros(n, dtype=PROGRAM_DTYPE)
    out["op"] = op
    out["word"] = w
    if n == 0:
        return out
    time = np.zeros(n, dtype=U64)
    sel = (op == Instr.WAIT_UNTIL) | (op == Instr.CADC_SCHEDULE)
    time[sel] = np.where(op[sel] == Instr.WAIT_UNTIL, payload[sel], payload[sel] & U64(_M42))
    out["time"] = time
    # DATA rows: target address = header address + position within the run
    owner = nd[np.searchsorted(nd, np.arange(n), side="right") - 1] if nd.size else None
    a = addr.copy()
    if owner is not None:
        d = np.flatnonzero(is_data)
        a[d] = addr[owner[d]] + (d - owner[d] - 1)
    has_addr = is_data | (op == Instr.WRITE) | (op == Instr.WRITE_BLOCK) | (op == Instr.READ)
    out["addr"] = np.where(has_addr, a, 0).astype(np.uint32)
    data_col = np.where(is_data | (op == Instr.SYSTEM), w & U64(_M32), U64(0))
    wr = np.flatnonzero(op == Instr.WRITE)
    data_col[wr] = w[wr + 1] & U64(_M32)
    out["data"] = data_col.astype(np.uint32)
    has_cnt = (op == Instr.WRITE_BLOCK) | (op == Instr.READ) | (op == Instr.MADC_RECORD)
    count = np.where(has_cnt, cnt32, 0)
    count = np.where(op == Instr.CADC_SCHEDULE, (payload >> U64(42)).astype(np.int64), count)
    is_spike = (op >= Instr.SPIKE1) & (op <= Instr.SPIKE4)
    count = np.where(is_spike, op.astype(np.int64) - int(Instr.SPIKE1) + 1, count)
    out["count"] = count.astype(np.uint32)
    sp = np.flatnonzero(is_spike)
    if sp.size:
        labs = ((w[sp, None] >> _SPIKE_SHIFTS[None, :]) & U64(LABEL_MASK)).astype(np.uint16)
        out["labels"][sp] = labs
    index = np.where(op == Instr.EPISODE_START, (payload >> U64(42)).astype(np.int64), 0)
    rd = op == Instr.READ
    if rd.any():
        rcount = np.where(rd, cnt32, 0)
        first = (np.cumsum(rcount) - rcount) & _M24
        index = np.where(rd, first, index)
    out["index"] = index.astype(np.uint32)
    return out
