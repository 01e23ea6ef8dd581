"""Compiled (numba) loops of the playback executor: scans that numpy can only express as many
whole-array passes (a running maximum with resets and barrier floors; CADC blocks written
straight into the trace). Each has a numpy twin in executor.py that runs where numba is not
installed; tests run both and compare.
"""

from __future__ import annotations

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a declared dependency
    AVAILABLE = False
else:
    AVAILABLE = True


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
def cadc_blocks(out8, at, samples, rows, head):  # noqa: ANN001, ANN201
    """Bytes out8[8 * (at[r] + k):][:8] = the k-th CADC_DATA word of samples[rows[r]] (little
    endian): channel 7k + j in byte j, unused bytes zero, `head` (opcode) in byte 7
    (executor._pack_cadc for 7 samples per word, written straight into the trace instead of
    packed, then scattered). Unrolled byte copies: assembling each word with shifts, or a loop
    with a bounds test per byte, costs several times more."""
    n_ch = samples.shape[1]
    full = n_ch // 7
    for r in range(rows.shape[0]):
        s = samples[rows[r]]
        base = 8 * at[r]
        for k in range(full):
            o = base + 8 * k
            c = 7 * k
            out8[o] = s[c]
            out8[o + 1] = s[c + 1]
            out8[o + 2] = s[c + 2]
            out8[o + 3] = s[c + 3]
            out8[o + 4] = s[c + 4]
            out8[o + 5] = s[c + 5]
            out8[o + 6] = s[c + 6]
            out8[o + 7] = head
        if 7 * full < n_ch:
            o = base + 8 * full
            for j in range(7):
                out8[o + j] = s[7 * full + j] if 7 * full + j < n_ch else 0
            out8[o + 7] = head


def use() -> bool:
    """Whether the executor takes these kernels (tests switch them off to run the twins)."""
    return AVAILABLE and ENABLED


ENABLED = True
