"""Inputs for the compiled kernels (kernels.py): event streams, per-layer source tables, calls.

The kernels take events as streams sorted by (episode, step) with one CSR pointer per episode;
inside one (step, episode) the events keep the order in which the torch reference adds them
(events.dense_jumps: source group by group, input order within a group; earlier layers' spikes
in emission-step, episode, neuron order), so the sums round alike.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import torch

from . import kernels
from .events import SUBSTEP_TICKS
from .params import TorchParams
from .simulate import NEVER, SpikeList

_I64 = np.int64


@dataclass
class EventStream:
    """Events sorted by (episode, step, ...); ptr [E+1] delimits each episode's run."""

    ptr: np.ndarray
    step: np.ndarray
    src: np.ndarray
    q: np.ndarray

    @staticmethod
    def build(ep: np.ndarray, step: np.ndarray, src: np.ndarray, q: np.ndarray, n_ep: int,
              t_steps: int, group: np.ndarray | None = None, n_groups: int = 1
              ) -> EventStream:
        """Sort (stable) by episode, step (0..t_steps-1), then group (0..n_groups-1), keeping
        the input order within."""
        ep = np.asarray(ep, _I64)
        key = ep * t_steps + np.asarray(step, _I64)
        if group is not None:
            key = key * n_groups + group
        o = kernels.bucket_order(key, n_ep * t_steps * n_groups)
        ptr = np.zeros(n_ep + 1, _I64)
        np.cumsum(np.bincount(ep, minlength=n_ep), out=ptr[1:])
        return EventStream(ptr, np.ascontiguousarray(step[o], _I64),
                           np.ascontiguousarray(src[o], _I64), np.ascontiguousarray(q[o], _I64))

    @staticmethod
    def of_chunk(ev: tuple[np.ndarray, np.ndarray, np.ndarray], local: np.ndarray,
                 group: np.ndarray, n_groups: int, delay: int, dt: int, t_steps: int,
                 n_ep: int) -> EventStream:
        """The stream build() makes of a chunk's external events (ev = (source, episode,
        tick) of the whole batch; local: batch episode -> chunk row or -1; group per source),
        in one compiled pass: the same arrays."""
        row, ep, t = (np.ascontiguousarray(x, _I64) for x in ev)
        ptr, step, src, q = kernels.chunk_stream(
            ep, t, row, np.ascontiguousarray(local, _I64), np.ascontiguousarray(group, _I64),
            int(delay), int(dt), SUBSTEP_TICKS, int(t_steps), int(n_groups), int(n_ep))
        return EventStream(ptr, step, src, q)

    @staticmethod
    def empty(n_ep: int) -> EventStream:
        z = np.zeros(0, _I64)
        return EventStream(np.zeros(n_ep + 1, _I64), z, z, z)

    def select(self, keep: np.ndarray, n_ep: int, ep: np.ndarray) -> EventStream:
        """The events with keep[i] (order kept); ep: episode of each event (sorted)."""
        if bool(keep.all()):  # (every source reaches the layer: the stream itself)
            return self
        ptr = np.searchsorted(ep[keep], np.arange(n_ep + 1), side="left").astype(_I64)
        return EventStream(ptr, self.step[keep], self.src[keep], self.q[keep])


@dataclass
class LayerSources:
    """External sources as one layer sees them: the jump rows of the slot blocks b0..b1-1 of
    source s at rows[off[s]:], [R, N_l] (b0 == b1: the source does not reach this layer, or its
    whole group is zero here, which source_groups skips)."""

    rows: np.ndarray
    off: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    _tiles: np.ndarray | None = field(default=None, repr=False)

    def tiles(self) -> np.ndarray:
        """rows in kernels.tiles' layout (made once: the sources are cached per batch shape)."""
        if self._tiles is None:
            self._tiles = kernels.tiles(self.rows, self.rows.shape[1])
        return self._tiles


def group_rank(ranges: np.ndarray) -> np.ndarray:
    """Rank of each source's block range among the sorted distinct ranges (source_groups order);
    -1 for a source that reaches no block."""
    valid = ranges[:, 1] > ranges[:, 0]
    rank = np.full(ranges.shape[0], -1, _I64)
    if valid.any():
        uniq, inv = np.unique(ranges[valid], axis=0, return_inverse=True)
        rank[valid] = inv.reshape(-1)
    return rank


def layer_sources(w_src: torch.Tensor, ranges: np.ndarray, idx: torch.Tensor) -> LayerSources:
    w = w_src[:, :, idx].numpy()
    b0 = ranges[:, 0].astype(_I64)
    b1 = ranges[:, 1].astype(_I64)
    rank = group_rank(ranges)
    for g in np.unique(rank[rank >= 0]):
        members = np.flatnonzero(rank == g)
        r0, r1 = int(b0[members[0]]), int(b1[members[0]])
        if not w[members, r0:r1].any():
            b0[members] = 0
            b1[members] = 0
    nb = np.maximum(b1 - b0, 0)
    off = (np.cumsum(nb) - nb).astype(_I64)
    blk = np.repeat(b0, nb) + (np.arange(int(nb.sum())) - np.repeat(off, nb))
    rows = np.ascontiguousarray(w[np.repeat(np.arange(w.shape[0]), nb), blk], np.float32)
    return LayerSources(rows.reshape(-1, w.shape[2]), off, b0, b1)


_NO_NOISE = np.zeros((0, 0), _I64)
_NO_NOISE_1D = np.zeros(0, _I64)
_NO_I64 = np.zeros(0, _I64)
_NO_H = np.zeros((0, 0), np.float32)
_NO_GRID = np.zeros((0, 0, 0), np.float32)


@dataclass
class CadcPlan:
    """A chunk's CADC requests, interpolated inside kernels.integrate (no membrane grid kept):
    request r (in the chunk's request order) of local episode e at grid step j + fraction
    fu[h_index]; ptr [E+1] delimits each episode's run of the order `order`. v [R, N] receives
    every neuron's membrane there."""

    ptr: np.ndarray
    order: np.ndarray
    j: np.ndarray
    h_index: np.ndarray
    fu: torch.Tensor
    v: np.ndarray
    _args: dict = field(default_factory=dict)  # kernel_args per layer

    @staticmethod
    def build(ep_local: np.ndarray, t: np.ndarray, n_ep: int, n: int, dt: int) -> CadcPlan:
        if kernels.AVAILABLE:  # one compiled pass, the same arrays as the numpy code below
            ptr, o, j, h_index, ur = kernels.cadc_plan(np.ascontiguousarray(ep_local, _I64),
                                                       np.ascontiguousarray(t, _I64),
                                                       int(n_ep), int(dt))
            return CadcPlan(ptr, o, j, h_index, torch.from_numpy((ur / dt).astype(np.float32)),
                            np.empty((t.size, n), np.float32))
        if ep_local.size < 2 or bool((ep_local[1:] >= ep_local[:-1]).all()):  # (the usual)
            o = np.arange(ep_local.size, dtype=_I64)
        else:
            o = np.argsort(ep_local, kind="stable").astype(_I64)
        ptr = np.zeros(n_ep + 1, _I64)
        np.cumsum(np.bincount(ep_local, minlength=n_ep), out=ptr[1:])
        # distinct fractions (t % dt) / dt, sorted, and each request's: through the residues
        # (fewer than dt; f32(r / dt) grows with r, so the same set and order as a sort of f)
        r = np.asarray(t % dt, _I64)
        present = np.zeros(dt, bool)
        present[r] = True
        ur = np.flatnonzero(present)
        lut = np.zeros(dt, _I64)
        lut[ur] = np.arange(ur.size)
        fu = torch.from_numpy((ur / dt).astype(np.float32))
        return CadcPlan(ptr, o, np.ascontiguousarray((t // dt)[o], _I64),
                        np.ascontiguousarray(lut[r][o], _I64), fu,
                        np.empty((t.size, n), np.float32))

    def kernel_args(self, rdt: torch.Tensor, cols: torch.Tensor) -> tuple:
        """(c_ptr, c_j, c_h, c_dst, h, cols, v_req) of kernels.integrate / interp_patch for
        the layer with neurons cols (rates rdt); kept for the layer's second call."""
        key = (id(rdt), id(cols))
        got = self._args.get(key)
        if got is None or got[0] is not rdt or got[1] is not cols:
            h = interp_weights(rdt, self.fu).contiguous().numpy()
            got = (rdt, cols, (self.ptr, self.j, self.h_index, self.order, h,
                               np.ascontiguousarray(cols.numpy(), _I64), self.v))
            self._args[key] = got
        return got[2]


_NO_PLAN = (_NO_I64, _NO_I64, _NO_I64, _NO_I64, _NO_H, _NO_I64, _NO_H)


def integrate(lp: TorchParams, n_ep: int, t_steps: int, ext: EventStream, src: LayerSources,
              pre: EventStream, noise_start: np.ndarray | None, table: torch.Tensor,
              chan: np.ndarray, keep_syn: bool, plan: CadcPlan | None = None,
              idx: torch.Tensor | None = None, pool: Executor | None = None, workers: int = 1
              ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """One LIF layer through kernels.integrate (simulate.run_layer without spikes, then the
    first half of simulate.lif_spikes, on the same operands): (V grid [T+1, E, N_l] = e_eff + u,
    syn grid [T+1, 4, E, N_l] or None, flat indices e * N_l + n of the neurons that reach
    threshold, their free membrane [T+1, S]). With a plan (and the layer's neuron indices idx)
    no grid (None): the membrane at the CADC requests goes into plan.v instead. With a pool,
    `workers` disjoint episode ranges run at once (the kernel releases the GIL); the result
    is the same bit for bit (each episode is computed alone, hits concatenated in order)."""
    n = lp.n
    v = torch.empty(t_steps + 1, n_ep, n) if plan is None else torch.from_numpy(_NO_GRID)
    syn = torch.empty(t_steps + 1, 4, n_ep, n) if keep_syn else torch.empty(0, 4, 1, 1)
    umax = np.empty((n_ep, n), np.float32)
    rec = lp.rec.numpy()
    n_src = rec.shape[0]
    noise = _NO_NOISE if noise_start is None else np.ascontiguousarray(noise_start, _I64)
    n_x = src.rows.shape[0]
    if pre.step.size:  # one row table for both streams: the recurrent rows after the inputs'
        rows = kernels.tiles(np.concatenate([src.rows, rec.reshape(n_src * 4, n)]), n)
    else:
        rows = src.tiles()
    args = (lp.u0.numpy(), lp.a_mem.numpy(), lp.slot_a_t.numpy(), kernels.tiles(lp.f_i.numpy(), n),
            kernels.tiles(lp.f_v.numpy(), n), lp.e_eff.numpy(), lp.theta.numpy(),
            ext.ptr, ext.step, ext.src, ext.q, src.off, src.b0, src.b1,
            pre.ptr, pre.step, pre.src, pre.q, np.arange(n_x, n_x + 4 * n_src, 4, dtype=_I64),
            np.zeros(n_src, _I64), np.full(n_src, 4, _I64), rows, noise, table.numpy(),
            np.ascontiguousarray(chan, _I64), lp.noise_step.numpy(), v.numpy(), syn.numpy(), umax)
    ro = _NO_PLAN if plan is None else plan.kernel_args(lp.rdt, idx)
    bounds = episode_ranges(ext.ptr, pre.ptr, n_ep, n, t_steps,
                            1 if pool is None else workers * RANGES_PER_WORKER)

    def part(e_lo: int, e_hi: int) -> tuple[np.ndarray, np.ndarray]:
        cap = max(64, (e_hi - e_lo) * n // 16)
        while True:
            flat = np.empty(cap, _I64)
            seg = np.empty((cap, t_steps + 1), np.float32)
            hits = kernels.integrate(*args, flat, seg, *ro, e_lo, e_hi)
            if hits <= cap:
                return flat[:hits], seg[:hits]
            cap = hits  # more neurons reach threshold than expected: again, with room for all

    if len(bounds) > 2:
        parts = run_ranges(pool, workers, bounds, part)
        flat = np.concatenate([f for f, _ in parts])
        seg = np.concatenate([g for _, g in parts])
    else:
        flat, seg = part(0, n_ep)
    return (v if plan is None else None, syn if keep_syn else None,
            torch.from_numpy(flat), torch.from_numpy(np.ascontiguousarray(seg.T)))


# neuron-steps (~1.7 ns each, PNAS hidden layer) below which one more range costs more (hand-off
# ~0.1 ms) than it saves
PARALLEL_MIN_WORK = 1 << 17
# fixed cost of one episode step of kernels.integrate in neuron-steps (its event scan, noise
# window, the padding of the layer to whole SIMD tiles): measured ~23 ns per episode step on the
# PNAS output layer's 10 neurons (~0.23 ms a batch of 256: not worth splitting)
STEP_OVERHEAD = 4
# ranges per worker thread: taken one at a time, so a thread the OS pauses (a shared host)
# holds up one small range, not half of the batch
RANGES_PER_WORKER = 4


def run_ranges(pool: Executor, workers: int, bounds: list[int], fn: Callable) -> list:
    """[fn(bounds[i], bounds[i + 1]) for each i], run by the calling thread and workers - 1
    pool threads, each taking the next range as it gets free; results in range order."""
    n = len(bounds) - 1
    out: list = [None] * n
    lock = threading.Lock()
    nxt = [0]

    def drain() -> None:
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= n:
                return
            out[i] = fn(bounds[i], bounds[i + 1])

    futs = [pool.submit(drain) for _ in range(min(workers, n) - 1)]
    try:
        drain()
    finally:
        for f in futs:
            f.result()
    return out


def episode_ranges(x_ptr: np.ndarray, p_ptr: np.ndarray, n_ep: int, n: int, t_steps: int,
                   workers: int) -> list[int]:
    """Bounds of up to `workers` episode ranges of about equal work (steps x neurons plus the
    events' rows), [0, n_ep] when one range is enough."""
    work = n_ep * (n + STEP_OVERHEAD) * (t_steps + 1)
    k = min(workers, n_ep, max(1, work // PARALLEL_MIN_WORK))
    if k <= 1:
        return [0, n_ep]
    # per-episode cost: the fused step pass over n neurons, plus about n per event
    cost = np.full(n_ep, float(n * t_steps)) + (np.diff(x_ptr) + np.diff(p_ptr)) * float(n)
    cum = np.cumsum(cost)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, k) / k, side="left") + 1
    return sorted({0, n_ep, *np.clip(cuts, 1, n_ep - 1).tolist()})


# spiking neurons below which interp_patch runs on the calling thread alone (~0.2 us each)
PARALLEL_MIN_PATCH = 512


def interp_patch(v_cols: torch.Tensor, flat: torch.Tensor, lp: TorchParams, plan: CadcPlan,
                 idx: torch.Tensor, pool: Executor | None = None, workers: int = 1) -> None:
    """Redo plan.v for the neurons that spiked (flat = e * N_l + n; membrane columns v_cols
    [T+1, S] from follow_spikes). With a pool, `workers` runs of them at once (each neuron
    writes only its own column of its episode's rows: the same values)."""
    s = flat.numel()
    if s == 0:
        return
    f = flat.numpy()
    c_ptr, c_j, c_h, c_dst, h, cols, v_req = plan.kernel_args(lp.rdt, idx)
    vc = np.ascontiguousarray(v_cols.numpy())
    e_s, n_s = f // lp.n, f % lp.n

    def part(a: int, b: int) -> None:
        kernels.interp_patch(vc[:, a:b], e_s[a:b], n_s[a:b], c_ptr, c_j, c_h, c_dst, h, cols,
                             v_req)

    k = 1 if pool is None else min(workers, s // PARALLEL_MIN_PATCH)
    if k <= 1:
        part(0, s)
        return
    run_ranges(pool, workers, [s * i // k for i in range(k + 1)], part)


def put_columns(v: torch.Tensor, flat: torch.Tensor, cols: torch.Tensor) -> None:
    """v.view(T+1, -1)[:, flat] = cols (simulate.follow_spikes' columns back into the grid)."""
    kernels.put_columns(v.view(v.shape[0], -1).numpy(), np.ascontiguousarray(flat.numpy(), _I64),
                        np.ascontiguousarray(cols.numpy()))


def interp_weights(rdt: torch.Tensor, fu: torch.Tensor) -> torch.Tensor:
    """[U, N] weight of grid point j+1 at fraction fu of a step: the membrane's relaxation
    shape (exact for a free relaxation between grid points)."""
    return torch.expm1(-rdt * fu[:, None]) / torch.expm1(-rdt)


def membrane_values(grids: list, rdt: torch.Tensor, n: int, j: np.ndarray, el: np.ndarray,
                    f: torch.Tensor) -> np.ndarray:
    """[R, N] membrane (mV) of every neuron at (episode row el, step j + fraction f)."""
    fu, inv = torch.unique(f, return_inverse=True)
    out = np.empty((j.size, n), np.float32)
    j = np.ascontiguousarray(j, _I64)
    el = np.ascontiguousarray(el, _I64)
    inv = np.ascontiguousarray(inv.numpy(), _I64)
    for g in grids:
        h = interp_weights(rdt[g.idx], fu).contiguous()
        kernels.interpolate(g.v.numpy(), j, el, inv, h.numpy(),
                            np.ascontiguousarray(g.idx.numpy(), _I64), out)
    return out


def channel_runs(chan_col: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel -> neuron map as runs of consecutive channels reading consecutive neurons:
    (first channel, first neuron, length) each."""
    chan_col = np.asarray(chan_col, _I64)
    brk = np.flatnonzero(np.diff(chan_col) != 1) + 1
    start = np.concatenate([[0], brk]).astype(_I64)
    length = np.diff(np.append(start, chan_col.size)).astype(_I64)
    return start, chan_col[start].astype(_I64), length


def cadc_codes(v: np.ndarray, chan_col: np.ndarray, gain: torch.Tensor, off: torch.Tensor,
               noise_start: np.ndarray | None, table: torch.Tensor, alpha: float,
               rows: np.ndarray, out: np.ndarray, pool: Executor | None = None,
               workers: int = 1) -> None:
    """out[rows] = 8-bit codes of v[:, chan_col] (core._cadc_codes, in one pass); with a pool,
    in `workers` disjoint runs of requests at once (each row is converted alone)."""
    run_c, run_n, run_len = channel_runs(chan_col)
    v = np.ascontiguousarray(v, np.float32)
    noise = _NO_NOISE_1D if noise_start is None else np.ascontiguousarray(noise_start, _I64)
    rows = np.ascontiguousarray(rows, _I64)
    g, o, tb, a = gain.numpy(), off.numpy(), table.numpy(), np.float32(alpha)

    def part(r0: int, r1: int) -> None:
        kernels.cadc_codes(v[r0:r1], run_c, run_n, run_len, g, o,
                           noise[r0:r1] if noise.size else noise, tb, a, rows[r0:r1], out)

    k = 1 if pool is None else min(workers * RANGES_PER_WORKER,
                                   rows.size * out.shape[1] // PARALLEL_MIN_WORK)
    if k <= 1:
        part(0, rows.size)
        return
    run_ranges(pool, workers, [rows.size * i // k for i in range(k + 1)], part)


def follow_spikes(p: TorchParams, n: int, flat: torch.Tensor, seg_all: torch.Tensor
                  ) -> tuple[SpikeList, torch.Tensor]:
    """simulate.follow_spikes with the arithmetic between its transcendental functions in
    kernels (fs_*): the same operations, far fewer calls. Returns (spikes, membrane [T+1, S]).
    (torch's exp / expm1 / log1p give each element the same value whatever the tensor's shape,
    so they run on all of a round's columns at once.)"""
    spikes = SpikeList()
    flat_np = flat.numpy()
    n_i_np = flat_np % n
    e_th_all = p.e_eff.numpy()[n_i_np]  # (numpy gathers: the same values as torch's)
    v_cols = torch.from_numpy(e_th_all) + seg_all
    if flat.numel() == 0:
        return spikes, v_cols
    e_i_np = flat_np // n
    seg = np.ascontiguousarray(seg_all.numpy())
    vc = v_cols.numpy()
    rdt_all, vr_all = p.rdt.numpy()[n_i_np], p.v_reset.numpy()[n_i_np]
    th_all, tref_all = p.theta.numpy()[n_i_np], p.t_ref_steps.numpy()[n_i_np]
    n_s = flat_np.size
    j = np.empty(n_s, _I64)  # first grid point after 0 at threshold (v_cols[t] is
    kernels.fs_first(vc, th_all, j)  # the reference's e_th + seg[t], the same float32 sums)
    cols = np.arange(n_s, dtype=_I64)  # this round's columns (moved to the front by fs_write)
    t_rel = np.full(n_s, NEVER)
    r0 = np.zeros(n_s, np.float32)
    buf_arg = np.empty(2 * n_s, np.float32)
    buf_u = np.empty(2 * n_s, np.float32)
    buf_x, buf_lam, buf_tr = np.empty(n_s), np.empty(n_s), np.empty(n_s)
    buf_kr = np.empty(n_s, _I64)
    buf_r0 = np.empty(n_s, np.float32)
    buf_dec = np.empty(seg.shape[0] * n_s, np.float32)
    parts: list = []
    s = n_s
    while s:
        c, jc, tc, rc = cols[:s], j[:s], t_rel[:s], r0[:s]
        arg, u = buf_arg[:2 * s].reshape(2, s), buf_u[:2 * s].reshape(2, s)
        kernels.fs_grid_args(seg, c, jc, tc, rdt_all, arg, u)
        dec = torch.exp(torch.from_numpy(arg)).numpy()
        x, lam = buf_x[:s], buf_lam[:s]
        span, t0 = kernels.fs_cross_args(c, jc, tc, rc, e_th_all, rdt_all, vr_all, th_all, dec,
                                         u, x, lam)
        lp = torch.log1p(torch.from_numpy(x) * torch.expm1(-torch.from_numpy(lam))).numpy()
        tr, kr = buf_tr[:s], buf_kr[:s]
        ts = kernels.fs_release_args(seg, c, x, span, lam, t0, lp, tref_all, rdt_all, tr, kr,
                                     arg, u)
        parts.append((c.copy(), ts, jc - 1))
        em = torch.expm1(torch.from_numpy(arg)).numpy()
        r0n = buf_r0[:s]
        dec_t = buf_dec[:seg.shape[0] * s].reshape(seg.shape[0], s)
        kernels.fs_after_args(c, tr, rdt_all, vr_all, e_th_all, em, u, r0n, dec_t)
        dec_t = torch.exp(torch.from_numpy(dec_t)).numpy()
        s = kernels.fs_write(seg, c, jc, tc, rc, tr, kr, r0n, e_th_all, vr_all, th_all, tref_all,
                             dec_t, vc)
    # one entry for all rounds: tensors() concatenates them in this order all the same
    c_all = np.concatenate([q[0] for q in parts])
    spikes.add(torch.from_numpy(e_i_np[c_all]), torch.from_numpy(n_i_np[c_all]),
               torch.from_numpy(np.concatenate([q[1] for q in parts])),
               torch.from_numpy(np.concatenate([q[2] for q in parts])))
    return spikes, v_cols
