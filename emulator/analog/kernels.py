"""Compiled (numba) kernels for the hot loops of the layered path and the CADC readout.

Each kernel does exactly the float32 / float64 operations of its torch reference
(simulate.run_layer, events.dense_jumps, simulate.lif_spikes / follow_spikes,
core._neuron_values / _cadc_codes), in the same order, one rounding per operation (no fused
multiply-add, no reassociation), so the two agree bit for bit (tested). Transcendental functions
stay in torch (numba's libm differs in the last bit): fast.follow_spikes calls the fs_* kernels
around them. What the kernels save is memory traffic and per-op overhead: one episode's state
stays in SIMD registers (integrate: LANES neurons at a time) for all of its steps, each input
event is multiplied out where it lands instead of being expanded into dense per-step jump rows
first, the CADC requests are interpolated while the episode is in cache (no grid at all when
nothing else needs one), and the temporal-noise table's random windows are prefetched.

Compiled once per machine (`cache=True`, next to this file in __pycache__); `AVAILABLE` is False
when numba is not installed, and the core then runs its torch reference path.
"""

from __future__ import annotations

import numpy as np

try:
    from llvmlite import binding as _llvm
    from llvmlite import ir as _ir
    from numba import njit, types, uint64
    from numba.core import cgutils
    from numba.extending import intrinsic, models, register_model
except ImportError:  # pragma: no cover - numba is a declared dependency
    AVAILABLE = False
    uint64 = int
else:
    AVAILABLE = True

_F0 = np.float32(0.0)
PREFETCH_LINE = 16  # float32 per 64-byte cache line

if AVAILABLE:
    # the intrinsic's name mangling follows LLVM's pointer model (opaque from LLVM 15 on)
    _PREFETCH = "llvm.prefetch.p0" if _llvm.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"

    @intrinsic
    def _prefetch(typingctx, arr, idx):  # noqa: ANN001, ANN202, ARG001
        """Hint that arr[idx] will be read soon (the temporal-noise table is read at random
        windows: without this every window is a run of cache misses)."""
        if not isinstance(arr, types.Array):
            return None

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]],
                                           wraparound=False)
            i8p = _ir.IntType(8).as_pointer()
            i32 = _ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, _ir.FunctionType(_ir.VoidType(), [i8p, i32, i32, i32]),
                _PREFETCH)
            # read, high locality, data cache
            builder.call(fn, [builder.bitcast(ptr, i8p), _ir.Constant(i32, 0),
                              _ir.Constant(i32, 3), _ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(arr, idx), codegen
else:  # pragma: no cover
    def _prefetch(arr, idx):  # noqa: ANN001, ANN202
        return None


def _jit(fn):  # noqa: ANN001, ANN202
    # error_model="numpy": IEEE results (inf, nan) for a division by zero, as torch gives
    return njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")(fn) if (
        AVAILABLE) else fn


@_jit
def _lerp(v0, v1, h):  # noqa: ANN001, ANN202
    """Membrane between two grid points (core._neuron_values): (v1 - v0) * h + v0."""
    return (v1 - v0) * h + v0


# ------------------------------------------------------------------ explicit SIMD vectors
# integrate runs LANES neurons at a time as LLVM vectors: per lane the same IEEE operations as
# the scalar code (fmul / fadd without fast-math flags: no FMA contraction, no reassociation),
# but its state and event sums stay in registers across events and steps (numba's loop
# vectoriser would load and store them per event, behind runtime alias checks, with a scalar
# epilogue for N % LANES neurons).



def _lanes() -> int:
    """16 lanes where the host has AVX-512, else 8 (AVX2 splits nothing; narrower hardware
    splits the vectors, still correct). Some hosts cannot report their features: 8."""
    if not AVAILABLE:
        return 8
    try:
        return 16 if "+avx512f" in _llvm.get_host_cpu_features().flatten() else 8
    except RuntimeError:
        return 8


LANES = _lanes()

if AVAILABLE:
    class _VecType(types.Type):
        """LANES float32 in one SIMD register (LLVM <LANES x float>)."""

        def __init__(self) -> None:
            super().__init__(name=f"float32x{LANES}")

    _VEC = _VecType()
    _VT = _ir.VectorType(_ir.FloatType(), LANES)

    @register_model(_VecType)
    class _VecModel(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):  # noqa: ANN001
            super().__init__(dmm, fe_type, _VT)

    def _vptr(context, builder, sig, args):  # noqa: ANN001, ANN202
        """Pointer to element args[1] (flat index into a C-contiguous array) as <LANES x float>*."""
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.bitcast(builder.gep(ary.data, [idx]), _VT.as_pointer())

    def _f32_array(arr) -> bool:  # noqa: ANN001
        """float32 and C-contiguous (the flat index of _vptr): anything else fails to type."""
        return isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.layout == "C"

    @intrinsic
    def _vload(typingctx, arr, idx):  # noqa: ANN001, ANN202, ARG001
        """arr.flat[idx:idx + LANES] (unchecked)."""
        if not (_f32_array(arr) and isinstance(idx, types.Integer)):
            return None

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            return builder.load(_vptr(context, builder, signature, args), align=4)

        return _VEC(arr, idx), codegen

    @intrinsic
    def _vstore(typingctx, arr, idx, val):  # noqa: ANN001, ANN202, ARG001
        """arr.flat[idx:idx + LANES] = val (unchecked)."""
        if not (_f32_array(arr) and isinstance(idx, types.Integer) and val == _VEC):
            return None

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            builder.store(args[2], _vptr(context, builder, signature, args), align=4)
            return context.get_dummy_value()

        return types.void(arr, idx, val), codegen

    def _binary(op):  # noqa: ANN001, ANN202
        @intrinsic
        def fn(typingctx, a, b):  # noqa: ANN001, ANN202, ARG001
            if not (a == _VEC and b == _VEC):
                return None

            def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
                return op(builder, *args)

            return _VEC(a, b), codegen

        return fn

    _vadd = _binary(lambda b, x, y: b.fadd(x, y))
    _vmul = _binary(lambda b, x, y: b.fmul(x, y))
    # numba's max(m, x) for floats: x if x > m (ordered) else m; the same per lane
    _vmax = _binary(lambda b, m, x: b.select(b.fcmp_ordered(">", x, m), x, m))

    @intrinsic
    def _address(typingctx, arr):  # noqa: ANN001, ANN202, ARG001
        """The address of arr's first element."""
        if not isinstance(arr, types.Array):
            return None

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            return builder.ptrtoint(ary.data, _ir.IntType(64))

        return types.uint64(arr), codegen

    @intrinsic
    def _vfill(typingctx, x):  # noqa: ANN001, ANN202, ARG001
        """LANES copies of the float32 x."""
        if x != types.float32:
            return None

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            v = _ir.Constant(_VT, _ir.Undefined)
            for i in range(LANES):
                v = builder.insert_element(v, args[0], _ir.Constant(_ir.IntType(32), i))
            return v

        return _VEC(x), codegen


@_jit
def _zeros(size):  # noqa: ANN001, ANN202
    """float32 zeros [size] from a 64-byte boundary on: a vector of 16 then lies in one cache
    line (numba aligns to 32 bytes only; a load across two lines costs twice)."""
    buf = np.zeros(size + 16, np.float32)
    off = (64 - _address(buf) % 64) % 64 // 4
    return buf[off:off + size]


@_jit
def _stride(n):  # noqa: ANN001, ANN202
    """Row length of integrate's per-episode buffers: a whole number of LANES, and not a
    multiple of 512 bytes (a tile's rows would all fall into the same few L1 cache sets)."""
    p = -(-n // LANES) * LANES
    return p + LANES if p % 128 == 0 else p


@_jit
def _pad(x, npad):  # noqa: ANN001, ANN202
    """x [..., n] as a C-contiguous float32 [..., npad] (zeros beyond n)."""
    n = x.shape[-1]
    m = x.size // n if n > 0 else 0
    out = _zeros(m * npad).reshape(x.shape[:-1] + (npad,))
    if n > 0:
        src = x.reshape(m, n)
        dst = out.reshape(m, npad)
        for i in range(m):
            for j in range(n):
                dst[i, j] = src[i, j]
    return out


@_jit
def tiles(x, n):  # noqa: ANN001, ANN201
    """x [..., n] as [ceil(n / LANES), M, LANES], M = the product of the leading axes, zeros
    beyond n: integrate's layout of the jump rows and sub-step tables (one tile's rows of all
    sources lie together, in distinct cache lines)."""
    nt = -(-n // LANES)
    m = x.size // n if n > 0 else 0
    out = _zeros(nt * m * LANES).reshape(nt, m, LANES)
    if n > 0:
        src = x.reshape(m, n)
        for i in range(m):
            for j in range(n):
                out[j // LANES, i, j % LANES] = src[i, j]
    return out


@_jit
def _prepare(ptr, step, src, q, off, b0s, b1s, e, t_steps, m, ev, bound, touched):  # noqa: ANN001, ANN202, PLR0913
    """Episode e's events of one stream, those that reach a slot block, in the form
    integrate's tile loop reads (from index m on), one word each (one load): first row *
    LANES in bits 0..31, (q * 4 + first block) * LANES in bits 32..55, 4 * blocks + first
    block from bit 56 on. Step k's run from bound[k] to bound[k + 1]; touched[k] = the mask of
    the blocks they reach, plus 16 if the step has any event (its zeroed membrane sum is then
    added even if no event reaches a block). Returns the end of the run."""
    i = ptr[e]
    end = ptr[e + 1]
    for k in range(t_steps):
        bound[k] = m
        first = i
        mask = 0
        while i < end and step[i] == k:
            s = src[i]
            b0 = b0s[s]
            nb = b1s[s] - b0
            if nb > 0:
                ev[m] = off[s] * LANES | (q[i] * 4 + b0) * LANES << 32 | (nb * 4 + b0) << 56
                mask |= ((1 << nb) - 1) << b0
                m += 1
            i += 1
        touched[k] = mask | (16 if i > first else 0)
    bound[t_steps] = m
    return m


@_jit
def integrate(u0, a_mem, a_syn, fi, fv, e_eff, theta,  # noqa: ANN001, ANN201, PLR0913, PLR0912, PLR0915
              x_ptr, x_step, x_src, x_q, x_off, x_b0, x_b1,
              p_ptr, p_step, p_src, p_q, p_off, p_b0, p_b1, rows,
              noise_start, table, chan, noise_step,
              v_out, syn_out, umax, hit_flat, hit_u,
              c_ptr, c_j, c_h, c_dst, h, cols, v_req, e_lo, e_hi):
    """Free membrane of one LIF layer, episode by episode (simulate.run_layer without spikes).

    Only episodes e_lo..e_hi-1 (all arrays stay whole): episodes are independent, so callers
    run disjoint ranges on several threads (nogil) and concatenate the hit lists in range order.

    u0, a_mem, e_eff, theta [N]; a_syn [4, N]; fi, fv: the sub-step tables [Q, 4, N] in the
    tiles() layout. Two event streams, each sorted by (episode, step) with CSR pointers per
    episode: x_* external inputs, p_* earlier layers' spikes; event i from source s in sub-step
    bin q adds rows[off[s] + b - b0] * fi[q, b] to slot block b (b0 <= b < b1) and the
    left-to-right sum over those blocks of rows[.] * fv[q, b] to the membrane
    (events.event_jumps / source_groups; rows: both streams' jump rows [R, N], tiles() layout).
    Within one (step, episode) each stream's events add in stream order into a zeroed row, as
    index_add does. noise_start [T, E] (empty: no noise): table[start + chan[n]] *
    noise_step[n] mV per step.

    Writes v_out [T+1, E, N] = e_eff + u, syn_out [T+1, 4, E, N] (if it has rows) and umax
    [E, N], the largest u over steps 1..T. The neurons whose e_eff + umax reaches theta (the
    ones simulate.lif_spikes follows) are listed in hit_flat (e * N + n, in that order) with
    their u trajectory in hit_u [., T+1], up to the capacity of hit_flat. Returns their count.

    v_out without rows: no grid is written; instead the membrane at the CADC requests (c_*:
    CSR per episode, empty c_ptr: none) is interpolated right after its episode, from the
    trajectory still in cache, into v_req[c_dst[r], cols[n]] (as interpolate() on the grid
    would; interp_patch redoes the neurons that spike).

    An episode runs LANES neurons at a time (a tile) through all of its steps, their state
    (synaptic slots, membrane, maximum) and each step's event sums in SIMD registers; the
    events of each stream and step are summed first, then added, as in the reference.
    """
    n = u0.shape[0]
    n_tiles = -(-n // LANES)
    n_rows = rows.shape[1]
    n_tab = fi.shape[1]
    if (rows.shape[0] != n_tiles or fi.shape[0] != n_tiles or fv.shape[0] != n_tiles
            or fv.shape[1] != n_tab or rows.shape[2] != LANES or fi.shape[2] != LANES
            or fv.shape[2] != LANES):
        raise ValueError("integrate: rows, fi and fv must be in the tiles() layout")
    if n_rows * LANES >= 1 << 32 or n_tab * LANES >= 1 << 24:  # (_prepare's event words)
        raise ValueError("integrate: too many jump rows or sub-step bins")
    npad = _stride(n)
    t1 = hit_u.shape[1]
    t_steps = t1 - 1
    keep_grid = v_out.shape[0] > 0
    keep_syn = syn_out.shape[0] > 0
    noisy = noise_start.shape[0] > 0
    cap = hit_flat.shape[0]
    c0 = chan[0] if n > 0 else 0
    contiguous = True
    for j in range(n):
        if chan[j] != c0 + j:
            contiguous = False
    u0p = _pad(u0, npad)
    amp = _pad(a_mem, npad)
    asp = _pad(a_syn, npad)
    noise = _zeros(max(t_steps, 1) * npad).reshape(max(t_steps, 1), npad)  # 0 beyond n, always
    traj = _zeros(t1 * npad).reshape(t1, npad)  # this episode's u
    synb = _zeros((t1 if keep_syn else 1) * 4 * npad).reshape(-1, 4, npad)  # its slots, if kept
    mxb = _zeros(npad)
    most = 0
    for e in range(e_lo, e_hi):
        most = max(most, x_ptr[e + 1] - x_ptr[e] + p_ptr[e + 1] - p_ptr[e])
    ev = np.zeros(most, np.int64)  # one episode's events (_prepare): x stream, then p
    bound = np.zeros((2, t_steps + 1), np.int64)
    touched = np.zeros((2, max(t_steps, 1)), np.int64)
    zero = _vfill(_F0)
    neg_inf = _vfill(np.float32(-np.inf))
    col0 = cols[0] if cols.shape[0] > 0 else 0
    cols_run = cols.shape[0] == n
    for j in range(cols.shape[0]):
        if cols[j] != col0 + j:
            cols_run = False
    hits = 0
    for e in range(e_lo, e_hi):
        if noisy:  # the episode's noise rows first (prefetched during the episode before)
            for k in range(t_steps):
                st = noise_start[k, e]
                row = noise[k]
                if contiguous:
                    tb = table[st + c0:st + c0 + n]
                    for j in range(n):
                        row[j] = tb[j] * noise_step[j]
                else:
                    for j in range(n):
                        row[j] = table[st + chan[j]] * noise_step[j]
        m = _prepare(x_ptr, x_step, x_src, x_q, x_off, x_b0, x_b1, e, t_steps, 0, ev, bound[0],
                     touched[0])
        _prepare(p_ptr, p_step, p_src, p_q, p_off, p_b0, p_b1, e, t_steps, m, ev, bound[1],
                 touched[1])
        for jb in range(0, n_tiles * LANES, LANES):
            rbase = jb * n_rows  # tile jb // LANES of rows [tiles, R, LANES]
            fbase = jb * n_tab
            j_last = min(jb + LANES, n) - 1
            ahead = noisy and e + 1 < e_hi
            u = _vload(u0p, jb)
            _vstore(traj, jb, u)
            am = _vload(amp, jb)
            r0 = _vload(asp, jb)
            r1 = _vload(asp, npad + jb)
            r2 = _vload(asp, 2 * npad + jb)
            r3 = _vload(asp, 3 * npad + jb)
            s0 = s1 = s2 = s3 = zero
            mx = neg_inf
            for k in range(t_steps):
                d = _vadd(_vadd(_vadd(s0, s1), s2), s3)
                s0 = _vmul(s0, r0)
                s1 = _vmul(s1, r1)
                s2 = _vmul(s2, r2)
                s3 = _vmul(s3, r3)
                for stream in range(2):
                    tm = touched[stream, k]
                    if tm == 0:
                        continue
                    a0 = a1 = a2 = a3 = av = zero
                    for i in range(uint64(bound[stream, k]), uint64(bound[stream, k + 1])):
                        w = ev[i]
                        r = (w & 0xFFFFFFFF) + rbase
                        f = (w >> 32 & 0xFFFFFF) + fbase
                        kd = w >> 56
                        if kd == 8 or kd == 10:  # blocks 0, 1 or 2, 3 (one circuit's exc, inh)
                            x0 = _vload(rows, r)
                            x1 = _vload(rows, r + LANES)
                            t0 = _vmul(x0, _vload(fi, f))
                            t1_ = _vmul(x1, _vload(fi, f + LANES))
                            av = _vadd(av, _vadd(_vmul(x0, _vload(fv, f)),
                                                 _vmul(x1, _vload(fv, f + LANES))))
                            if kd == 8:
                                a0 = _vadd(a0, t0)
                                a1 = _vadd(a1, t1_)
                            else:
                                a2 = _vadd(a2, t0)
                                a3 = _vadd(a3, t1_)
                        else:  # any other run of blocks: the same, block by block
                            b0 = kd & 3
                            sv = zero
                            for bb in range(kd >> 2):
                                x = _vload(rows, r + bb * LANES)
                                t = _vmul(x, _vload(fi, f + bb * LANES))
                                p = _vmul(x, _vload(fv, f + bb * LANES))
                                sv = p if bb == 0 else _vadd(sv, p)
                                b = b0 + bb
                                if b == 0:
                                    a0 = _vadd(a0, t)
                                elif b == 1:
                                    a1 = _vadd(a1, t)
                                elif b == 2:
                                    a2 = _vadd(a2, t)
                                else:
                                    a3 = _vadd(a3, t)
                            av = _vadd(av, sv)
                    if tm & 1:
                        s0 = _vadd(s0, a0)
                    if tm & 2:
                        s1 = _vadd(s1, a1)
                    if tm & 4:
                        s2 = _vadd(s2, a2)
                    if tm & 8:
                        s3 = _vadd(s3, a3)
                    d = _vadd(d, av)
                if noisy:
                    d = _vadd(d, _vload(noise, k * npad + jb))
                    if ahead:  # the next episode's window of this step and tile (a few lines
                        st = noise_start[k, e + 1]  # at a time: a burst would stall)
                        _prefetch(table, st + chan[jb])
                        _prefetch(table, st + chan[j_last])
                x = _vadd(_vmul(u, am), d)
                u = x
                _vstore(traj, (k + 1) * npad + jb, x)
                mx = _vmax(mx, x)
                if keep_syn:
                    o = (k + 1) * 4 * npad + jb
                    _vstore(synb, o, s0)
                    _vstore(synb, o + npad, s1)
                    _vstore(synb, o + 2 * npad, s2)
                    _vstore(synb, o + 3 * npad, s3)
            _vstore(mxb, jb, mx)
        if keep_grid:
            for k in range(t1):
                out = v_out[k, e]
                tr = traj[k]
                for j in range(n):
                    out[j] = tr[j] + e_eff[j]
        if keep_syn:
            syn_out[0, :, e, :] = _F0
            for k in range(1, t1):
                for b in range(4):
                    so = syn_out[k, b, e]
                    sb = synb[k, b]
                    for j in range(n):
                        so[j] = sb[j]
        for j in range(n):
            umax[e, j] = mxb[j]
            if e_eff[j] + mxb[j] >= theta[j]:
                if hits < cap:
                    hit_flat[hits] = e * n + j
                    for k in range(t1):
                        hit_u[hits, k] = traj[k, j]
                hits += 1
        if c_ptr.shape[0] > 0:
            for r in range(c_ptr[e], c_ptr[e + 1]):
                jj = c_j[r]
                hi = c_h[r]
                dst = c_dst[r]
                if cols_run:  # unsigned indices: no negative-index wrap-around (vectorises)
                    for i in range(n):
                        v_a = traj[jj, i] + e_eff[i]
                        v_req[dst, uint64(col0 + i)] = _lerp(v_a, traj[jj + 1, i] + e_eff[i],
                                                             h[hi, i])
                else:
                    for i in range(n):
                        v_a = traj[jj, i] + e_eff[i]
                        v_req[dst, cols[i]] = _lerp(v_a, traj[jj + 1, i] + e_eff[i], h[hi, i])
    return hits


@_jit
def interp_patch(v_cols, e_s, n_s, c_ptr, c_j, c_h, c_dst, h, cols, v_req):  # noqa: ANN001, ANN201
    """Redo the requested membrane values of the neurons that spiked (episode e_s[s], layer
    neuron n_s[s], grid column v_cols[:, s] with its resets), as interpolate() would."""
    for s in range(e_s.shape[0]):
        n = n_s[s]
        for r in range(c_ptr[e_s[s]], c_ptr[e_s[s] + 1]):
            jj = c_j[r]
            v_req[c_dst[r], cols[n]] = _lerp(v_cols[jj, s], v_cols[jj + 1, s], h[c_h[r], n])


@_jit
def put_columns(grid, flat, vals):  # noqa: ANN001, ANN201
    """grid[t, flat[i]] = vals[t, i] (grid [T+1, E*N], vals [T+1, S])."""
    for t in range(grid.shape[0]):  # row by row: the columns are sorted, so writes go forward
        for i in range(flat.shape[0]):
            grid[t, flat[i]] = vals[t, i]


@_jit
def interpolate(grid, j, el, h_index, h, cols, out):  # noqa: ANN001, ANN201
    """out[r, cols[i]] = (v1 - v0) * h + v0 with v0, v1 = grid[j[r], el[r], i],
    grid[j[r] + 1, el[r], i] and h = h[h_index[r], i] (core._neuron_values, membrane)."""
    n = grid.shape[2]
    c0 = cols[0] if n > 0 else 0
    contiguous = True
    for i in range(n):
        if cols[i] != c0 + i:
            contiguous = False
    for r in range(j.shape[0]):
        jj = j[r]
        e = el[r]
        hi = h_index[r]
        if contiguous:  # unsigned indices: no negative-index wrap-around, so it vectorises
            for i in range(n):
                v0 = grid[jj, e, i]
                out[r, uint64(c0 + i)] = _lerp(v0, grid[jj + 1, e, i], h[hi, i])
        else:
            for i in range(n):
                v0 = grid[jj, e, i]
                out[r, cols[i]] = _lerp(v0, grid[jj + 1, e, i], h[hi, i])


@_jit
def cadc_codes(v, run_c, run_n, run_len, gain, off, noise_start, table, alpha,  # noqa: ANN001, ANN201
               rows, out):
    """out[rows[r], c] = clip(rint(v[r, n(c)] * gain[c] + off[c] + table[noise_start[r] + c]
    * alpha), 0, 255) (core._cadc_codes); channel c = run_c[u] + i reads neuron n(c) =
    run_n[u] + i for i < run_len[u]. No noise term if noise_start is empty."""
    noisy = noise_start.shape[0] > 0
    lo = np.float32(0.0)
    hi = np.float32(255.0)
    n_ch = out.shape[1]
    for r in range(rows.shape[0]):
        st = noise_start[r] if noisy else 0
        row = rows[r]
        if noisy and r + 8 < rows.shape[0]:  # random table windows: fetch ahead
            for c in range(0, n_ch, PREFETCH_LINE):
                _prefetch(table, noise_start[r + 8] + c)
        for u in range(run_c.shape[0]):
            c0 = run_c[u]
            n0 = run_n[u]
            # unsigned indices: no negative-index wrap-around, so the loops vectorise
            if noisy:
                for i in range(run_len[u]):
                    c = uint64(c0 + i)
                    x = v[r, uint64(n0 + i)] * gain[c] + off[c] + table[uint64(st + c0 + i)] * (
                        alpha)
                    out[row, c] = np.uint8(min(max(np.rint(x), lo), hi))
            else:
                for i in range(run_len[u]):
                    c = uint64(c0 + i)
                    x = v[r, uint64(n0 + i)] * gain[c] + off[c]
                    out[row, c] = np.uint8(min(max(np.rint(x), lo), hi))


@_jit
def bucket_order(key, n_keys):  # noqa: ANN001, ANN201
    """Stable order of the items by integer key in 0..n_keys-1 (a counting sort)."""
    start = np.zeros(n_keys + 1, np.int64)
    for i in range(key.shape[0]):
        start[key[i] + 1] += 1
    for k in range(n_keys):
        start[k + 1] += start[k]
    order = np.empty(key.shape[0], np.int64)
    for i in range(key.shape[0]):
        k = key[i]
        order[start[k]] = i
        start[k] += 1
    return order


@_jit
def _log2(d):  # noqa: ANN001, ANN202
    """k with d == 2 ** k, -1 if d is no power of two."""
    if d <= 0 or d & (d - 1) != 0:
        return -1
    k = 0
    while (1 << k) < d:
        k += 1
    return k


@_jit
def chunk_stream(ev_ep, ev_t, ev_row, local, group, delay, dt, substep, t_steps, n_groups,  # noqa: ANN001, ANN201, PLR0913
                 n_ep):
    """The external input stream of one chunk in one pass: the events (episode ev_ep, tick
    ev_t, source ev_row) of the chunk's episodes (local row >= 0) that arrive (ev_t + delay)
    before step t_steps, as (ptr [E+1], step, src, q) sorted stably by (local episode, step,
    group[src]) (fast.EventStream.build of core._run_chunk's ext, with events.arrival_np's
    step and sub-step bin)."""
    n_keys = n_ep * t_steps * n_groups
    start = np.zeros(n_keys + 1, np.int64)
    ptr = np.zeros(n_ep + 1, np.int64)
    key = np.full(ev_ep.shape[0], -1, np.int64)
    sh_dt = _log2(dt)  # (a shift is floor division by a power of two, and far cheaper)
    sh_sub = _log2(substep)
    for i in range(ev_ep.shape[0]):
        e = local[ev_ep[i]]
        if e < 0:
            continue
        arr = ev_t[i] + delay
        st = arr >> sh_dt if sh_dt >= 0 else arr // dt
        if st >= t_steps:
            continue
        k = (e * t_steps + st) * n_groups + group[ev_row[i]]
        key[i] = k
        start[k + 1] += 1
        ptr[e + 1] += 1
    for k in range(n_keys):
        start[k + 1] += start[k]
    for e in range(n_ep):
        ptr[e + 1] += ptr[e]
    n = start[n_keys]
    step = np.empty(n, np.int64)
    src = np.empty(n, np.int64)
    q = np.empty(n, np.int64)
    for i in range(ev_ep.shape[0]):
        k = key[i]
        if k < 0:
            continue
        j = start[k]
        start[k] += 1
        arr = ev_t[i] + delay
        st = arr >> sh_dt if sh_dt >= 0 else arr // dt
        step[j] = st
        src[j] = ev_row[i]
        x = (st + 1) * dt - arr - 1
        q[j] = x >> sh_sub if sh_sub >= 0 else x // substep
    return ptr, step, src, q


# ---------------------------------------------------------------- spike following (glue)
# simulate.follow_spikes, one round, split at its transcendental functions: those stay in
# torch (numba's libm differs from torch in the last bit), the arithmetic between them runs
# here, operation for operation as in simulate.py (decay_since, free_v, release_r0, spike_time).


@_jit
def fs_first(v, th, out):  # noqa: ANN001, ANN201
    """out[i] = the first grid point t >= 1 with v[t, i] >= th[i], 1 if there is none
    (argmax + 1 of the crossing mask, as simulate.lif_spikes takes it); row by row."""
    s = v.shape[1]
    for i in range(s):
        out[i] = 0
    for t in range(1, v.shape[0]):
        for i in range(s):
            if out[i] == 0 and v[t, i] >= th[i]:
                out[i] = t
    for i in range(s):
        if out[i] == 0:
            out[i] = 1


@_jit
def fs_grid_args(seg, cols, j, t_rel, rdt, out_arg, out_u):  # noqa: ANN001, ANN201
    """For grid points j-1 and j of each active column cols[i] (its j[i], t_rel[i]):
    decay_since's exponent -(rdt * max(f32(j' - t_rel), 0)) into out_arg [2, S'] and u there
    into out_u [2, S']. Per-column parameters (rdt) are indexed by column."""
    for i in range(cols.shape[0]):
        c = cols[i]
        for g in range(2):
            jj = j[i] - 1 + g
            x = max(np.float32(np.float64(jj) - t_rel[i]), np.float32(0.0))
            out_arg[g, i] = -(rdt[c] * x)
            out_u[g, i] = seg[jj, c]


@_jit
def fs_cross_args(cols, j, t_rel, r0, e_th, rdt, vr, th, dec, u, out_x, out_lam):  # noqa: ANN001, ANN201
    """_grid_v at j-1 and j (decay factors dec [2, S']), then spike_time's operands x and
    lam (float64) per active column into out_x, out_lam; returns its span and t0."""
    s = cols.shape[0]
    span = np.empty(s, np.float64)
    t0 = np.empty(s, np.float64)
    for i in range(s):
        c = cols[i]
        k = np.float64(j[i] - 1)
        k1 = np.float64(j[i])
        v_prev = (e_th[c] + u[0, i]) + r0[i] * dec[0, i] if t_rel[i] < k else vr[c]
        v_j = (e_th[c] + u[1, i]) + r0[i] * dec[1, i] if t_rel[i] < k1 else vr[c]
        late = t_rel[i] > k
        t0[i] = t_rel[i] if late else k
        v0 = vr[c] if late else v_prev
        if v0 >= th[c]:  # already at threshold when the interval starts: fires at t0
            x = np.float32(0.0)
        else:
            x = (th[c] - v0) / (v_j - v0)
            x = min(max(x, np.float32(0.0)), np.float32(1.0))
        span[i] = k1 - t0[i]
        out_x[i] = np.float64(x)
        out_lam[i] = np.float64(rdt[c]) * span[i]
    return span, t0


@_jit
def fs_release_args(seg, cols, x, span, lam, t0, lp, tref, rdt, out_tr, out_kr, out_arg,  # noqa: ANN001, ANN201
                    out_u):
    """spike_time's result (lp = log1p(x * expm1(-lam))) -> spike time; release time tr and
    its step kr; release_r0's expm1 operands (-rdt) * f and -rdt into out_arg [2, S'] and u at
    the release step's two grid points into out_u [2, S']. Returns the spike times."""
    t1 = seg.shape[0]
    ts = np.empty(cols.shape[0], np.float64)
    for i in range(cols.shape[0]):
        c = cols[i]
        frac = -lp[i] / max(lam[i], 1e-300) if lam[i] > 1e-9 else x[i]
        t = t0[i] + span[i] * min(max(frac, 0.0), 1.0)
        ts[i] = t
        tr = t + tref[c]
        kr = np.int64(np.floor(tr))
        out_tr[i] = tr
        out_kr[i] = kr
        f = np.float32(tr - np.float64(kr))
        out_arg[0, i] = (-rdt[c]) * f
        out_arg[1, i] = -rdt[c]
        krc = min(kr, t1 - 2)
        out_u[0, i] = seg[krc, c]
        out_u[1, i] = seg[krc + 1, c]
    return ts


@_jit
def fs_after_args(cols, tr, rdt, vr, e_th, em, u, out_r0, out_arg):  # noqa: ANN001, ANN201
    """release_r0 (em [2, S'] = the two expm1) into out_r0, and decay_since's exponent for every
    grid point t: -(rdt * max(f32(t - tr), 0)) into out_arg [T+1, S']."""
    s = cols.shape[0]
    rdt_c = np.empty(s, np.float32)
    for i in range(s):
        c = cols[i]
        rdt_c[i] = rdt[c]
        h = em[0, i] / em[1, i]
        u_at = u[0, i] + (u[1, i] - u[0, i]) * h
        out_r0[i] = (vr[c] - e_th[c]) - u_at
    for t in range(out_arg.shape[0]):  # row by row (the rows are S' wide)
        tf = np.float64(t)
        row = out_arg[t]
        for i in range(s):
            row[i] = -(rdt_c[i] * max(np.float32(tf - tr[i]), np.float32(0.0)))


@_jit
def fs_write(seg, cols, j, t_rel, r0, tr, kr, r0n, e_th, vr, th, tref, dec, v_cols):  # noqa: ANN001, ANN201, PLR0913
    """The membrane from the spike on (v_reset while refractory, then the released trajectory
    (e_th + u) + r0n * dec) into v_cols[t >= j, col]; then the next round's columns: those that
    reach threshold again at a grid point (> j, or j itself after a release before it;
    released, before the last step), moved to the front of cols with that grid point in j,
    their release time in t_rel and r0n in r0. Returns their number."""
    t1 = v_cols.shape[0]
    s = cols.shape[0]
    nxt = np.full(s, t1, np.int64)  # t1: none
    ident = True  # (the first round: every column, in order)
    e_c = np.empty(s, np.float32)
    vr_c = np.empty(s, np.float32)
    th_c = np.empty(s, np.float32)
    again_at_j = np.empty(s, np.bool_)  # may fire again at j itself
    for i in range(s):
        c = cols[i]
        ident = ident and c == i
        e_c[i] = e_th[c]
        vr_c[i] = vr[c]
        th_c[i] = th[c]
        again_at_j[i] = vr[c] < th[c] or tref[c] > 0
    last_ok = np.empty(s, np.bool_)
    for i in range(s):
        last_ok[i] = kr[i] < t1 - 1
    for t in range(t1):  # row by row: v_cols, seg and dec rows are S (S') wide
        tf = np.float64(t)
        srow = seg[t]
        vrow = v_cols[t]
        drow = dec[t]
        for i in range(s):
            c = i if ident else cols[i]
            free = tf > tr[i]
            vs = (e_c[i] + srow[c]) + r0n[i] * drow[i] if free else vr_c[i]
            if t >= j[i]:
                vrow[c] = vs
            if (t < nxt[i] and vs >= th_c[i] and free and last_ok[i]
                    and (t > j[i] or (t == j[i] and again_at_j[i]))):
                nxt[i] = t
    w = 0
    for i in range(s):
        if nxt[i] < t1:
            cols[w] = cols[i]
            j[w] = nxt[i]
            t_rel[w] = tr[i]
            r0[w] = r0n[i]
            w += 1
    return w


# ------------------------------------------------------------------ host glue (core.py)
# small passes that replace chains of numpy calls (each ~5-20 us of per-call overhead) around
# the kernels; every one gives exactly the integers of the numpy code it stands in for (tested)

_SM_ADD = np.uint64(0x9E3779B97F4A7C15)
_SM_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_SM_MUL2 = np.uint64(0x94D049BB133111EB)


@_jit
def _splitmix64(z):  # noqa: ANN001, ANN202
    """noise.splitmix64 of one uint64 (wrapping arithmetic)."""
    z = z + _SM_ADD
    z = (z ^ (z >> uint64(30))) * _SM_MUL1
    z = (z ^ (z >> uint64(27))) * _SM_MUL2
    return z ^ (z >> uint64(31))


@_jit
def hash_offsets(prefix, parts, shift):  # noqa: ANN001, ANN201
    """noise.hash_keys(..., *parts) >> shift as int64, continuing from the hash `prefix`
    (uint64) of the leading scalar parts; parts [K, M] int64 (reinterpreted as uint64, as
    hash_keys does)."""
    m = parts.shape[1]
    out = np.empty(m, np.int64)
    for i in range(m):
        h = prefix
        for k in range(parts.shape[0]):
            h = _splitmix64(h ^ uint64(parts[k, i]))
        out[i] = np.int64(h >> shift)
    return out


@_jit
def rank_in_episode(ep):  # noqa: ANN001, ANN201
    """Position of each item among the items of its episode (ep >= 0), in input order."""
    n = 0
    for i in range(ep.shape[0]):
        n = max(n, ep[i] + 1)
    seen = np.zeros(n, np.int64)
    out = np.empty(ep.shape[0], np.int64)
    for i in range(ep.shape[0]):
        out[i] = seen[ep[i]]
        seen[ep[i]] += 1
    return out


@_jit
def unique_small(x, n):  # noqa: ANN001, ANN201
    """np.unique(x, return_inverse=True) for integers x in 0..n-1 (as int64)."""
    present = np.zeros(n, np.bool_)
    for i in range(x.shape[0]):
        present[x[i]] = True
    lut = np.empty(n, np.int64)
    k = 0
    for v in range(n):
        if present[v]:
            lut[v] = k
            k += 1
    uniq = np.empty(k, np.int64)
    for v in range(n):
        if present[v]:
            uniq[lut[v]] = v
    inv = np.empty(x.shape[0], np.int64)
    for i in range(x.shape[0]):
        inv[i] = lut[x[i]]
    return uniq, inv


@_jit
def cadc_plan(ep_local, t, n_ep, dt):  # noqa: ANN001, ANN201
    """fast.CadcPlan.build's integer arrays: (ptr [E+1], stable order by episode, grid step
    t // dt and residue index of each request in that order, the distinct residues t % dt in
    increasing order)."""
    r_n = ep_local.shape[0]
    ptr = np.zeros(n_ep + 1, np.int64)
    for i in range(r_n):
        ptr[ep_local[i] + 1] += 1
    for e in range(n_ep):
        ptr[e + 1] += ptr[e]
    fill = ptr[:-1].copy()
    order = np.empty(r_n, np.int64)
    for i in range(r_n):
        e = ep_local[i]
        order[fill[e]] = i
        fill[e] += 1
    q = np.empty(r_n, np.int64)
    res = np.empty(r_n, np.int64)
    for i in range(r_n):
        q[i] = t[i] // dt
        res[i] = t[i] - q[i] * dt  # t % dt (floored, as numpy's)
    ur, res_index = unique_small(res, dt)
    j = np.empty(r_n, np.int64)
    h_index = np.empty(r_n, np.int64)
    for w in range(r_n):
        i = order[w]
        j[w] = q[i]
        h_index[w] = res_index[i]
    return ptr, order, j, h_index, ur


@_jit
def hash_grid(prefix, episodes, n_steps, shift):  # noqa: ANN001, ANN201
    """hash_offsets(prefix, parts of (episodes[None, :], arange(n_steps)[:, None])) as [T, E]:
    each episode's partial hash once, then one mix per (step, episode)."""
    n_e = episodes.shape[0]
    h1 = np.empty(n_e, np.uint64)
    for e in range(n_e):
        h1[e] = _splitmix64(prefix ^ uint64(episodes[e]))
    out = np.empty((n_steps, n_e), np.int64)
    for k in range(n_steps):
        for e in range(n_e):
            out[k, e] = np.int64(_splitmix64(h1[e] ^ uint64(k)) >> shift)
    return out


@_jit
def int_range(x):  # noqa: ANN001, ANN201
    """(min, max) of a non-empty integer array in one pass."""
    lo = x[0]
    hi = x[0]
    for i in range(1, x.shape[0]):  # (branch-free: vectorised)
        lo = min(lo, x[i])
        hi = max(hi, x[i])
    return lo, hi


@_jit
def radix_order(key, bits):  # noqa: ANN001, ANN201
    """np.argsort(key, kind="stable") for keys in 0..2**bits-1: LSD radix passes of 11 bits
    (each a stable counting sort)."""
    n = key.shape[0]
    order = np.arange(n)
    tmp = np.empty(n, np.int64)
    count = np.empty(2049, np.int64)
    shift = 0
    while shift < bits:
        count[:] = 0
        for i in range(n):
            count[((key[order[i]] >> shift) & 2047) + 1] += 1
        for d in range(2048):
            count[d + 1] += count[d]
        for i in range(n):
            d = (key[order[i]] >> shift) & 2047
            tmp[count[d]] = order[i]
            count[d] += 1
        order, tmp = tmp, order
        shift += 11
    return order
