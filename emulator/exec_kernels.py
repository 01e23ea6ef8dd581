"""Compiled (numba) loops of the playback executor: scans that numpy can only express as many
whole-array passes (a running maximum with resets and barrier floors; CADC blocks written
straight into the trace). Each has a numpy twin in executor.py that runs where numba is not
installed; tests run both and compare.
"""

from __future__ import annotations

import numpy as np

from protocol.wire import Instr

try:
    from llvmlite import ir as _ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - numba is a declared dependency
    AVAILABLE = False
else:
    AVAILABLE = True

_LOW56 = np.uint64((1 << 56) - 1)

if AVAILABLE:
    @intrinsic
    def _load_u64(typingctx, arr, idx):  # noqa: ANN001, ANN202, ARG001
        """The 8 bytes arr[idx:idx + 8] of a uint8 array as one little-endian u64 (an unaligned
        load; the caller keeps idx + 8 within the array)."""
        if not (isinstance(arr, types.Array) and arr.dtype == types.uint8):
            return None

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]],
                                           wraparound=False)
            i64p = _ir.IntType(64).as_pointer()
            val = builder.load(builder.bitcast(ptr, i64p), align=1)
            return val

        return types.uint64(arr, idx), codegen
else:  # pragma: no cover
    def _load_u64(arr, idx):  # noqa: ANN001, ANN202
        return np.frombuffer(arr[idx:idx + 8].tobytes(), "<u8")[0]


def _jit(fn):  # noqa: ANN001, ANN202
    return njit(cache=True, nogil=True, boundscheck=False)(fn) if AVAILABLE else fn


@_jit
def timeline(e0, t, is_wait, is_reset, is_bar, dur, has_adc, e, seg_off, past):  # noqa: ANN001, ANN201, PLR0913
    """Elapsed time e of every instruction, its TIMER_RESET segment's offset and the WAIT_UNTILs
    in the past, in one pass (executor._timeline_sequential): a TIMER_RESET opens a segment at
    the elapsed time now, a WAIT_UNTIL waits for offset + t, a BARRIER for the end of every ADC
    schedule issued before it. Returns the end of the last ADC schedule (e0 if none)."""
    now = e0
    off = 0
    pend = e0
    for i in range(t.shape[0]):
        if is_reset[i]:
            off = now
        past[i] = False
        if is_wait[i]:
            tgt = off + t[i]
            if tgt < now:
                past[i] = True
            elif tgt > now:
                now = tgt
        if is_bar[i] and pend > now:
            now = pend
        e[i] = now
        seg_off[i] = off
        if has_adc[i] and now + dur[i] > pend:
            pend = now + dur[i]
    return pend


@_jit
def word_checks(w, known, reserved, data_op, rare_op, op, bad, nd, ndop, run, rare):  # noqa: ANN001, ANN201
    """Per program word: opcode op, bad (unknown opcode or a reserved payload bit set); the
    positions nd of the words that are not DATA, their opcodes ndop and the DATA words
    following each (run); the positions `rare` of the words whose opcode rare_op marks.
    Returns (len(nd), len(rare)): executor._validate's whole-array passes in one (its numpy
    twin)."""
    k = 0
    m = 0
    n = w.shape[0]
    for i in range(n):
        x = w[i]
        o = np.int64(x >> np.uint64(56))
        op[i] = o
        bad[i] = (not known[o]) or (x & reserved[o]) != 0
        if o != data_op:
            if k:
                run[k - 1] = i - nd[k - 1] - 1
            nd[k] = i
            ndop[k] = o
            k += 1
        if rare_op[o]:
            rare[m] = i
            m += 1
    if k:
        run[k - 1] = n - nd[k - 1] - 1
    return k, m


@_jit
def cadc_blocks(out, at, samples, rows, head):  # noqa: ANN001, ANN201
    """out[at[r] + k] = the k-th CADC_DATA word of samples[rows[r]] (out: u64 words, little
    endian host): channel 7k + j in byte j, unused bytes zero, `head` (opcode) in byte 7
    (executor._pack_cadc for 7 samples per word, written straight into the trace instead of
    packed, then scattered). Each full word is one unaligned 8-byte load of its 7 samples (and
    the next one's, masked off) or'ed with the opcode: one load and one store per word."""
    n_ch = samples.shape[1]
    full = n_ch // 7
    # the last full word's load may reach past the row by up to one byte: done bytewise
    safe = full if 7 * full + 1 <= n_ch else full - 1
    hi = np.uint64(head) << np.uint64(56)
    for r in range(rows.shape[0]):
        s = samples[rows[r]]
        base = at[r]
        for k in range(safe):
            out[base + k] = (_load_u64(s, 7 * k) & _LOW56) | hi
        for k in range(safe, (n_ch + 6) // 7):
            w = hi
            for j in range(7):
                if 7 * k + j < n_ch:
                    w |= np.uint64(s[7 * k + j]) << np.uint64(8 * j)
            out[base + k] = w


_WAIT_UNTIL = int(Instr.WAIT_UNTIL)
_CADC_TRIGGER = int(Instr.CADC_TRIGGER)
_CADC_SCHEDULE = int(Instr.CADC_SCHEDULE)
_MADC_RECORD = int(Instr.MADC_RECORD)


@_jit
def adc_fields(op, w, period, min_period, t, cs_count, cs_interval, madc_n, dur, has_adc,  # noqa: ANN001, ANN201, PLR0913
               bad_madc):
    """Per executed word (opcode op, word w, MADC period in force): WAIT_UNTIL target t,
    CADC_SCHEDULE count and interval, MADC_RECORD count (0 where the word is another
    instruction), the MADC records without a usable period, and the span of the word's ADC
    samples dur ((count - 1) * interval + 1, 0 without samples) (executor._times' twin)."""
    m56 = np.uint64((1 << 56) - 1)
    for i in range(op.shape[0]):
        o = op[i]
        x = w[i]
        t[i] = np.int64(x & m56) if o == _WAIT_UNTIL else 0
        cc = np.int64((x >> np.uint64(42)) & np.uint64(0x3FFF)) if o == _CADC_SCHEDULE else 0
        ci = np.int64(x & np.uint64((1 << 42) - 1)) if o == _CADC_SCHEDULE else 0
        mn = np.int64((x >> np.uint64(32)) & np.uint64(0xFFFFFF)) if o == _MADC_RECORD else 0
        bad = o == _MADC_RECORD and period[i] < min_period and mn > 0
        n_adc = cc + (1 if o == _CADC_TRIGGER else 0) + (0 if bad else mn)
        cs_count[i] = cc
        cs_interval[i] = ci
        madc_n[i] = mn
        bad_madc[i] = bad
        has_adc[i] = n_adc > 0
        dur[i] = (n_adc - 1) * (ci + period[i]) + 1 if n_adc > 0 else 0


@_jit
def spikes(op, w, n_of):  # noqa: ANN001, ANN201
    """The spikes of SPIKE1..4 words: (position of the issuing word, 14-bit label) of each, in
    program order, label k of a word at bits 42 - 14 k (executor._stimuli's numpy twin).
    n_of[opcode]: spikes a word of that opcode carries (0: none)."""
    total = 0
    for i in range(op.shape[0]):
        total += n_of[op[i]]
    frm = np.empty(total, np.int64)
    lab = np.empty(total, np.uint16)
    m = 0
    for i in range(op.shape[0]):
        c = n_of[op[i]]
        for k in range(c):
            frm[m] = i
            lab[m] = np.uint16((w[i] >> np.uint64(42 - 14 * k)) & np.uint64(0x3FFF))
            m += 1
    return frm, lab


def use() -> bool:
    """Whether the executor takes these kernels (tests switch them off to run the twins)."""
    return AVAILABLE and ENABLED


ENABLED = True
