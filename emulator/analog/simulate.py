"""The integrator: exact exponential steps of the linear dynamics, spikes interpolated in a step.

State of neuron n in episode e (docs/emulator.md has the derivation), time in steps of dt:
- syn[s, e, n], s = 0..3: the synaptic currents of the neuron's 4 input slots, stored
  multiplied by phi_s (the membrane's response over one step to a held unit current), so
  sum_s syn is the membrane increment they cause during the next step;
- u[e, n]: the free membrane (no threshold, no reset) relative to e_eff; linear and exact;
- V = e_eff + u + R, where R is the deviation caused by resets (plus the adaptation and
  exponential currents of AdEx neurons). For LIF neurons R is closed-form: after a release at
  t_rel (end of the refractory period, V = v_reset there) R(t) = R0 exp(-r_m (t - t_rel)).

An event arriving q ticks before the end of step k adds syn * F_I[q] to the slot currents at
the end of the step and syn * F_V[q] to the membrane (exact to the tick, tables per slot).

`run_layer` integrates one set of neurons over all steps. The general path runs every neuron in
one call with on-chip spikes scheduled into a ring buffer of later steps; the layered path
(feed-forward networks) runs layer after layer, previous layers' spikes precomputed, and finds
LIF spikes after the loop in closed form (`lif_spikes`). Both use the helpers below on the same
operands, so they agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .events import DenseJumps, arrival, event_jumps
from .params import TorchParams

NEVER = -1.0e30  # t_rel of a neuron that has not spiked yet
EXP_ARG_MAX = 30.0


@dataclass
class SpikeList:
    """Spikes: episode row, neuron (layer-local), time in steps (f64), and the step k whose
    update (k -> k+1) produced them (the order on-chip events are delivered in)."""

    episode: list[torch.Tensor] = field(default_factory=list)
    neuron: list[torch.Tensor] = field(default_factory=list)
    time: list[torch.Tensor] = field(default_factory=list)
    step: list[torch.Tensor] = field(default_factory=list)

    def add(self, e: torch.Tensor, n: torch.Tensor, t: torch.Tensor,
            k: torch.Tensor | int) -> None:
        self.episode.append(e)
        self.neuron.append(n)
        self.time.append(t)
        self.step.append(torch.as_tensor(k, dtype=torch.int64).expand(e.shape))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.episode:
            z = torch.zeros(0, dtype=torch.int64)
            return z, z.clone(), torch.zeros(0, dtype=torch.float64), z.clone()
        return (torch.cat(self.episode), torch.cat(self.neuron), torch.cat(self.time),
                torch.cat(self.step))


@dataclass
class LayerOut:
    u: torch.Tensor  # [T+1, E, N] free membrane relative to e_eff
    v: torch.Tensor | None  # [T+1, E, N] membrane after resets (general / AdEx path)
    syn: torch.Tensor | None  # [T+1, 4, E, N] if requested
    adapt: torch.Tensor | None  # [T+1, E, N] if requested
    spikes: SpikeList


# ---------------------------------------------------------------- shared arithmetic
def decay_since(rdt: torch.Tensor, t_rel: torch.Tensor, j: float | torch.Tensor) -> torch.Tensor:
    """exp(-r_m (j - t_rel)) for grid point j (steps), float32."""
    x = (j - t_rel).to(torch.float32).clamp_(min=0.0)
    return torch.exp(-(rdt * x))


def free_v(e_eff: torch.Tensor, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return (e_eff + u) + r


def release_r0(v_reset: torch.Tensor, e_eff: torch.Tensor, rdt: torch.Tensor,
               u_k: torch.Tensor, u_k1: torch.Tensor, t_rel: torch.Tensor,
               k: float | torch.Tensor) -> torch.Tensor:
    """R at release time t_rel in step [k, k+1): v_reset minus the free V there, interpolated
    with the membrane's relaxation shape (exact for a drive held over the step)."""
    f = (t_rel - k).to(torch.float32)
    h = torch.expm1(-rdt * f) / torch.expm1(-rdt)
    u_at = u_k + (u_k1 - u_k) * h
    return (v_reset - e_eff) - u_at


def spike_time(theta: torch.Tensor, rdt: torch.Tensor, v0: torch.Tensor, v1: torch.Tensor,
               t0: torch.Tensor, k1: float | torch.Tensor) -> torch.Tensor:
    """Threshold crossing between (t0, v0) and (k1, v1), float64 steps: V is taken to relax
    exponentially (rate r_m) across the interval, V(f) = v0 + (v1 - v0) (1 - a^f) / (1 - a),
    a = exp(-r_m (k1 - t0)); exact for a drive held constant over the interval. A membrane
    already at or above threshold at t0 fires at t0 (not where the line through v0 and a
    lower v1 would cross)."""
    x = torch.where(v0 >= theta, 0.0, ((theta - v0) / (v1 - v0)).clamp_(0.0, 1.0))
    x = x.to(torch.float64)
    span = (k1 - t0) if isinstance(k1, torch.Tensor) else (k1 - t0)
    lam = rdt.to(torch.float64) * span  # r_m * interval length
    frac = torch.where(lam > 1e-9, -torch.log1p(x * torch.expm1(-lam)) / lam.clamp(min=1e-300),
                       x)
    return t0 + span * frac.clamp_(0.0, 1.0)


def to_ticks(t_steps: torch.Tensor, dt_ticks: int) -> torch.Tensor:
    return torch.floor(t_steps * dt_ticks).to(torch.int64)


@dataclass
class Recurrence:
    """On-chip events of the general path: spikes of this run's neurons feed its own slots."""

    w: torch.Tensor  # [N, 4, N] phi-scaled jumps of one spike of neuron n (all its emitters)
    f_i: torch.Tensor
    f_v: torch.Tensor
    delay_ticks: int
    dt_ticks: int


# ---------------------------------------------------------------- one set of neurons
def run_layer(p: TorchParams, jumps: DenseJumps | None,
              pre: tuple[torch.Tensor, torch.Tensor] | None, noise: torch.Tensor | None,
              n_ep: int, t_steps: int, *, spikes_in_loop: bool, rec: Recurrence | None = None,
              keep_syn: bool = False, keep_adapt: bool = False) -> LayerOut:
    """Integrate the neurons of `p` for t_steps steps.

    jumps: external arrivals; pre: dense arrivals from earlier layers ([4, T, E, N], [T, E, N])
    in the layered path; noise: [T, E, N] membrane noise (mV) per step; spikes_in_loop:
    threshold and reset every step (general path, AdEx) instead of afterwards in closed form;
    rec: on-chip recurrence (general path).
    """
    n = p.n
    a_syn = p.slot_a_t[:, None, :]  # [4, 1, N]
    syn = torch.zeros(4, n_ep, n)
    d = torch.empty(n_ep, n)
    u_grid = torch.empty(t_steps + 1, n_ep, n)
    u_grid[0] = p.u0
    syn_grid = torch.empty(t_steps + 1, 4, n_ep, n) if keep_syn else None
    if syn_grid is not None:
        syn_grid[0] = 0.0
    k0, k1 = (jumps.k0, jumps.k1) if jumps is not None else (0, 0)
    ring_i = ring_v = None
    if rec is not None:
        n_ring = rec.delay_ticks // rec.dt_ticks + 2
        ring_i = torch.zeros(4, n_ring, n_ep, n)
        ring_v = torch.zeros(n_ring, n_ep, n)
    st = _SpikeState(p, n_ep, t_steps, keep_adapt) if spikes_in_loop else None
    for k in range(t_steps):
        torch.add(syn[0], syn[1], out=d)
        d.add_(syn[2]).add_(syn[3])
        syn.mul_(a_syn)
        if k0 <= k < k1:
            syn.add_(jumps.syn[:, k - k0])
            d.add_(jumps.v[k - k0])
        if pre is not None:
            syn.add_(pre[0][:, k])
            d.add_(pre[1][k])
        if ring_i is not None:
            slot = k % ring_i.shape[1]
            syn.add_(ring_i[:, slot])
            d.add_(ring_v[slot])
            ring_i[:, slot].zero_()
            ring_v[slot].zero_()
        if noise is not None:
            d.add_(noise[k])
        # u * a + d as two roundings (torch.addcmul fuses them; the kernels do not)
        torch.mul(u_grid[k], p.a_mem, out=u_grid[k + 1]).add_(d)
        if syn_grid is not None:
            syn_grid[k + 1] = syn
        if st is not None:
            fired = st.step(k, u_grid[k], u_grid[k + 1])
            if fired is not None and rec is not None:
                _schedule(rec, fired, ring_i, ring_v, k)
    return LayerOut(u=u_grid, v=None if st is None else st.v_grid, syn=syn_grid,
                    adapt=None if st is None else st.ad_grid,
                    spikes=SpikeList() if st is None else st.spikes)


def _schedule(rec: Recurrence, fired: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
              ring_i: torch.Tensor, ring_v: torch.Tensor, k: int) -> None:
    e_i, n_i, ts = fired
    step, q = arrival(to_ticks(ts, rec.dt_ticks), rec.delay_ticks, rec.dt_ticks)
    js, jv = event_jumps(rec.w, rec.f_i, rec.f_v, n_i, q)
    n_ring, n_ep = ring_v.shape[0], ring_v.shape[1]
    rows = (step % n_ring) * n_ep + e_i
    add_blocks(ring_i.view(4, n_ring * n_ep, -1), rows, js)
    ring_v.view(n_ring * n_ep, -1).index_add_(0, rows, jv)


def add_blocks(dst: torch.Tensor, rows: torch.Tensor, js: torch.Tensor) -> None:
    """dst[b, rows] += js[:, b] for each of the 4 slot blocks (dst [4, R, N], js [S, 4, N])."""
    jt = js.transpose(0, 1).contiguous()
    for b in range(dst.shape[0]):
        dst[b].index_add_(0, rows, jt[b])


class _SpikeState:
    """Per-step threshold, reset, refractory and AdEx currents (general path)."""

    def __init__(self, p: TorchParams, n_ep: int, t_steps: int, keep_adapt: bool) -> None:
        n = p.n
        self.p = p
        self.r0 = torch.zeros(n_ep, n)
        self.t_rel = torch.full((n_ep, n), NEVER, dtype=torch.float64)
        self.v = free_v(p.e_eff, p.u0.expand(n_ep, n), torch.zeros(n_ep, n))
        self.v_grid = torch.empty(t_steps + 1, n_ep, n)
        self.v_grid[0] = self.v
        self.adex = p.has_adex
        self.fire = p.has_fire
        self.w = torch.zeros(n_ep, n)
        self.r_ad = torch.zeros(n_ep, n)
        self.ad_grid = torch.empty(t_steps + 1, n_ep, n) if keep_adapt else None
        if self.ad_grid is not None:
            self.ad_grid[0] = 0.0
        self.spikes = SpikeList()

    def step(self, k: int, u: torch.Tensor, u_new: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        p, t_rel, k1 = self.p, self.t_rel, k + 1
        fired = None
        pending = (t_rel >= k) & (t_rel < k1)
        if bool(pending.any()):
            r0 = release_r0(p.v_reset, p.e_eff, p.rdt, u, u_new, t_rel, k)
            self.r0 = torch.where(pending, r0, self.r0)
        free = t_rel < k1
        r = self.r0 * decay_since(p.rdt, t_rel, k1)
        if self.adex:
            nl = exp_current(p, self.v) - self.w
            frac_free = (k1 - torch.clamp(t_rel, min=k)).to(torch.float32).clamp_(0, 1)
            self.r_ad = torch.where(t_rel < k, self.r_ad * p.a_mem, r) + p.kappa * nl * frac_free
            r = torch.where(p.adex, self.r_ad, r)
            w_inf = p.adapt_a * (self.v - p.adapt_eref)
            self.w = w_inf + (self.w - w_inf) * p.adapt_decay
        v_new = torch.where(free, free_v(p.e_eff, u_new, r), p.v_reset)
        if self.fire:
            spk = (v_new >= p.theta) & free
            if bool(spk.any()):
                e_i, n_i = torch.nonzero(spk, as_tuple=True)
                tr_old = t_rel[e_i, n_i]
                late = tr_old > k
                t0 = torch.where(late, tr_old, torch.full_like(tr_old, k))
                v0 = torch.where(late, p.v_reset[n_i], self.v[e_i, n_i])
                v1 = v_new[e_i, n_i]
                parts = []
                while True:  # again while a release inside the step is followed by a crossing
                    ts = spike_time(p.theta[n_i], p.rdt[n_i], v0, v1, t0, k1)
                    tr = ts + p.t_ref_steps[n_i]
                    t_rel[e_i, n_i] = tr
                    now = tr < k1
                    vs = p.v_reset[n_i].clone()
                    if bool(now.any()):
                        r0n = release_r0(p.v_reset[n_i], p.e_eff[n_i], p.rdt[n_i], u[e_i, n_i],
                                         u_new[e_i, n_i], tr, k)
                        self.r0[e_i[now], n_i[now]] = r0n[now]
                        rn = r0n * decay_since(p.rdt[n_i], tr, k1)
                        vs = torch.where(now, free_v(p.e_eff[n_i], u_new[e_i, n_i], rn), vs)
                        if self.adex:
                            self.r_ad[e_i[now], n_i[now]] = rn[now]
                    v_new[e_i, n_i] = vs
                    if self.adex:
                        self.w[e_i, n_i] += p.adapt_b[n_i]
                    self.spikes.add(e_i, n_i, ts, k)
                    parts.append((e_i, n_i, ts))
                    # refractory shorter than the rest of the step: the released membrane
                    # reaching threshold by the step's end fires again inside it (each round
                    # moves on: by the refractory time, or from a reset below threshold)
                    again = now & (vs >= p.theta[n_i]) & (
                        (p.v_reset[n_i] < p.theta[n_i]) | (p.t_ref_steps[n_i] > 0))
                    if not bool(again.any()):
                        break
                    e_i, n_i = e_i[again], n_i[again]
                    t0, v0, v1 = tr[again], p.v_reset[n_i], vs[again]
                fired = parts[0] if len(parts) == 1 else tuple(
                    torch.cat(x) for x in zip(*parts, strict=True))
        self.v = v_new
        self.v_grid[k1] = v_new
        if self.ad_grid is not None:
            self.ad_grid[k1] = self.w
        return fired


def exp_current(p: TorchParams, v: torch.Tensor) -> torch.Tensor:
    """AdEx exponential current g_L Delta_T exp((V - V_T) / Delta_T) in nA (0 where off)."""
    arg = ((v - p.exp_vt) / p.exp_slope).clamp_(max=EXP_ARG_MAX)
    return p.exp_gain * torch.exp(arg)


# ---------------------------------------------------------------- closed-form LIF spikes
def lif_spikes(p: TorchParams, u: torch.Tensor) -> tuple[SpikeList, torch.Tensor]:
    """Spikes and membrane grid of LIF neurons from their free membrane u [T+1, E, N].

    Same decisions and arithmetic as _SpikeState.step, organised by spike instead of by step:
    one pass finds the neurons whose free membrane reaches threshold at all; only those are
    followed, spike by spike, on their own [T+1] trajectories. u is turned into the membrane
    grid in place (V = e_eff + u where no reset happened).
    """
    t1 = u.shape[0]
    if not p.has_fire or t1 < 2:
        return SpikeList(), u.add_(p.e_eff)
    # fl(e + u) is monotonic in u: max_k fl(e + u_k) == fl(e + max_k u_k)
    hit = (p.e_eff + u[1:].amax(0)) >= p.theta
    e_i, n_i = torch.nonzero(hit, as_tuple=True)
    # [T+1, S] free membrane of the neurons that spike (column gather of the flat grid: much
    # faster than advanced indexing)
    flat = e_i * u.shape[2] + n_i
    seg_all = u.view(t1, -1).index_select(1, flat)
    v = u.add_(p.e_eff)
    spikes, v_cols = follow_spikes(p, u.shape[2], flat, seg_all)
    v.view(t1, -1).index_copy_(1, flat, v_cols)
    return spikes, v


def follow_spikes(p: TorchParams, n: int, flat: torch.Tensor, seg_all: torch.Tensor
                  ) -> tuple[SpikeList, torch.Tensor]:
    """The spikes of the neurons flat = e * n + neuron (those whose free membrane reaches
    threshold at all; seg_all [T+1, S] their free membrane u), in closed form, and their
    membrane [T+1, S] with the resets (the grid's columns there: V = e_eff + u elsewhere)."""
    spikes = SpikeList()
    e_i, n_i = flat // n, flat % n
    e_th, rdt, vr, th = p.e_eff[n_i], p.rdt[n_i], p.v_reset[n_i], p.theta[n_i]
    v_cols = e_th + seg_all
    if flat.numel() == 0:
        return spikes, v_cols
    t1 = seg_all.shape[0]
    tref = p.t_ref_steps[n_i]
    cols = torch.arange(e_i.numel())
    first = free_v(e_th, seg_all[1:], torch.zeros(())) >= th
    j = torch.argmax(first.to(torch.uint8), dim=0) + 1  # first grid point >= theta
    t_rel = torch.full(e_i.shape, NEVER, dtype=torch.float64)
    r0 = torch.zeros(e_i.shape)
    steps = torch.arange(t1, dtype=torch.float64)[:, None]
    while cols.numel():
        seg = seg_all[:, cols]
        ce, cr, cv, ct = e_th[cols], rdt[cols], vr[cols], th[cols]  # this round's neurons
        k = (j - 1).to(torch.float64)
        late = t_rel > k
        t0 = torch.where(late, t_rel, k)
        # V at grid j-1 and j for these neurons, as the per-step path has them
        ar = torch.arange(cols.numel())
        v_prev = _grid_v(ce, cr, cv, seg[j - 1, ar], j - 1, t_rel, r0)
        v_j = _grid_v(ce, cr, cv, seg[j, ar], j, t_rel, r0)
        v0 = torch.where(late, cv, v_prev)
        ts = spike_time(ct, cr, v0, v_j, t0, j.to(torch.float64))
        spikes.add(e_i[cols], n_i[cols], ts, j - 1)
        tr = ts + tref[cols]
        kr = torch.floor(tr).to(torch.int64)
        # membrane from the spike on: v_reset while refractory, then the released trajectory
        keep = kr < t1 - 1
        krc = kr.clamp(max=t1 - 2)
        r0n = release_r0(cv, ce, cr, seg[krc, ar], seg[krc + 1, ar], tr, kr.to(torch.float64))
        free = steps > tr
        vs = torch.where(free, free_v(ce, seg, r0n * decay_since(cr, tr, steps)), cv)
        after = steps >= j
        v_cols.index_copy_(1, cols, torch.where(after, vs, v_cols.index_select(1, cols)))
        # the next crossing: a grid point after j, or j itself when the refractory time ended
        # before it (as _SpikeState.step fires again inside the step)
        nxt = (vs >= ct) & free & ((steps > j) | ((steps == j) & ((cv < ct) | (tref[cols] > 0))
                                                   )) & keep
        again = nxt.any(0)
        if not bool(again.any()):
            break
        sel = torch.nonzero(again, as_tuple=True)[0]
        cols = cols[sel]
        j = torch.argmax(nxt[:, sel].to(torch.uint8), dim=0)
        t_rel, r0 = tr[sel], r0n[sel]
    return spikes, v_cols


def _grid_v(e_eff: torch.Tensor, rdt: torch.Tensor, v_reset: torch.Tensor, u_j: torch.Tensor,
            j: torch.Tensor, t_rel: torch.Tensor, r0: torch.Tensor) -> torch.Tensor:
    """Membrane at grid point j (per neuron) as the per-step path computes it."""
    jf = j.to(torch.float64)
    r = r0 * decay_since(rdt, t_rel, jf)
    return torch.where(t_rel < jf, free_v(e_eff, u_j, r), v_reset)
