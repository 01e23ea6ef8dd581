"""The integrator: exact exponential steps of the linear dynamics, spikes interpolated in a step.

State of neuron n in episode e (docs/emulator.md has the derivation):
- slots I[e, n, s]: the 4 synaptic currents, stored pre-multiplied by phi (the membrane's step
  response to a held current), so sum_s I is the membrane increment they cause over one step;
- u[e, n]: the free membrane (no threshold, no reset) relative to e_eff; linear, exact;
- V = e_eff + u + R, where R is the deviation caused by resets (and by the adaptation /
  exponential currents for AdEx neurons). For LIF neurons R is closed-form: after a release at
  time t_rel (end of the refractory period, V = v_reset there) R(t) = R0 exp(-r_m (t - t_rel)).

Inputs arrive as jumps: B0[k] (sum of phi-scaled jumps that arrive in step k) and B1[k] (the same
weighted by delta, the fraction of the step between arrival and step end). First order in delta
keeps the jumps one multiply-add per slot and is exact for arrivals on the grid.

`run_steps` is the general path (any connectivity, AdEx): one step at a time for all neurons,
on-chip spikes scheduled into B0/B1 of later steps (the routing delay is >= one step).
`run_layered` (module layered.py) computes the same numbers layer by layer for feed-forward LIF
networks. Both call the helper functions below, so they agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .params import TorchParams

NEVER = -1.0e30  # t_rel of a neuron that has not spiked yet
EXP_ARG_MAX = 30.0


@dataclass
class SpikeList:
    """Spikes of the simulated neurons: episode, neuron, time in steps (float64)."""

    episode: list[torch.Tensor] = field(default_factory=list)
    neuron: list[torch.Tensor] = field(default_factory=list)
    time: list[torch.Tensor] = field(default_factory=list)

    def add(self, e: torch.Tensor, n: torch.Tensor, t: torch.Tensor) -> None:
        self.episode.append(e)
        self.neuron.append(n)
        self.time.append(t)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.episode:
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
        return (torch.cat(self.episode).numpy(), torch.cat(self.neuron).numpy(),
                torch.cat(self.time).numpy())


@dataclass
class SimOutput:
    spikes: SpikeList
    v: torch.Tensor  # [T+1, E, N] membrane at grid points (after resets)
    syn: torch.Tensor | None  # [T+1, E, N, 4] phi-scaled synaptic currents, if requested
    adapt: torch.Tensor | None  # [T+1, E, N] adaptation current (nA), if requested


# ---------------------------------------------------------------- shared arithmetic
def decay_since(p: TorchParams, t_rel: torch.Tensor, j: float | torch.Tensor,
                idx: torch.Tensor | slice = slice(None)) -> torch.Tensor:
    """exp(-r_m (j - t_rel)) for grid point j (steps), float32."""
    x = (j - t_rel).to(torch.float32).clamp_(min=0.0)
    return torch.exp(-(p.rdt[idx] * x))


def free_v(p: TorchParams, u: torch.Tensor, r: torch.Tensor,
           idx: torch.Tensor | slice = slice(None)) -> torch.Tensor:
    return (p.e_eff[idx] + u) + r


def release_r0(p: TorchParams, u_k: torch.Tensor, u_k1: torch.Tensor, t_rel: torch.Tensor,
               k: float | torch.Tensor, idx: torch.Tensor | slice = slice(None)) -> torch.Tensor:
    """R at release time t_rel in step [k, k+1): v_reset minus the (interpolated) free V."""
    f = (t_rel - k).to(torch.float32)
    u_at = u_k + (u_k1 - u_k) * f
    return (p.v_reset[idx] - p.e_eff[idx]) - u_at


def spike_time(p: TorchParams, v0: torch.Tensor, v1: torch.Tensor, t0: torch.Tensor,
               k1: float | torch.Tensor, idx: torch.Tensor | slice = slice(None)) -> torch.Tensor:
    """Threshold crossing between (t0, v0) and (k1, v1), linear interpolation, float64 steps."""
    frac = ((p.theta[idx] - v0) / (v1 - v0)).clamp_(0.0, 1.0).to(torch.float64)
    return t0 + (k1 - t0) * frac


def scatter_jumps(b0: torch.Tensor, b1: torch.Tensor, rows: torch.Tensor, jumps: torch.Tensor,
                  delta: torch.Tensor) -> None:
    """B0[rows] += jumps, B1[rows] += jumps * delta (b0, b1 viewed as [T*E, K])."""
    b0.index_add_(0, rows, jumps)
    b1.index_add_(0, rows, jumps * delta[:, None])


def arrival(spike_ticks: torch.Tensor, delay_ticks: int, dt_ticks: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(arrival step, delta in (0, 1]) of events emitted at integer tick times."""
    arr = spike_ticks + delay_ticks
    step = torch.div(arr, dt_ticks, rounding_mode="floor")
    delta = ((step + 1) * dt_ticks - arr).to(torch.float32) / dt_ticks
    return step, delta


def to_ticks(t_steps: torch.Tensor, dt_ticks: int) -> torch.Tensor:
    return torch.floor(t_steps * dt_ticks).to(torch.int64)


# ---------------------------------------------------------------- general path
def run_steps(p: TorchParams, b0: torch.Tensor, b1: torch.Tensor, noise: torch.Tensor,
              *, dt_ticks: int, delay_ticks: int, keep_syn: bool = False,
              keep_adapt: bool = False) -> SimOutput:
    """Integrate T steps for E episodes. b0, b1: [T, E, N*4] (modified: on-chip spikes are added);
    noise: [T, E, N] membrane noise per step (mV)."""
    t_steps, n_ep, k_slots = b0.shape
    n = p.n
    b0f, b1f = b0.view(-1, k_slots), b1.view(-1, k_slots)
    slot_a, slot_b1 = p.slot_a, p.slot_b1
    syn = torch.zeros(n_ep, n, 4)
    u = p.u0.expand(n_ep, n).clone()
    r0 = torch.zeros(n_ep, n)
    t_rel = torch.full((n_ep, n), NEVER, dtype=torch.float64)
    v = free_v(p, u, r0)
    v_grid = torch.empty(t_steps + 1, n_ep, n)
    v_grid[0] = v
    syn_grid = torch.empty(t_steps + 1, n_ep, n, 4) if keep_syn else None
    ad_grid = torch.empty(t_steps + 1, n_ep, n) if keep_adapt else None
    if syn_grid is not None:
        syn_grid[0] = syn
    w = torch.zeros(n_ep, n)
    r_ad = torch.zeros(n_ep, n)
    if ad_grid is not None:
        ad_grid[0] = w
    spikes = SpikeList()
    rec = p.rec_neuron
    any_rec = bool(rec.abs().sum() > 0)
    fire = p.has_fire
    adex = p.has_adex
    for k in range(t_steps):
        k1 = k + 1
        bk0 = b0[k].view(n_ep, n, 4)
        bk1 = b1[k].view(n_ep, n, 4)
        s = syn + bk1
        drive = s[..., 0] + s[..., 1] + s[..., 2] + s[..., 3]
        syn = torch.addcmul(torch.addcmul(bk0, bk1, slot_b1), syn, slot_a)
        u_new = torch.addcmul(drive + noise[k], u, p.a_mem)
        if not fire and not adex:
            v = free_v(p, u_new, r0)
        else:
            pending = (t_rel >= k) & (t_rel < k1)
            if bool(pending.any()):
                r0 = torch.where(pending, release_r0(p, u, u_new, t_rel, k), r0)
            free = t_rel < k1
            r = r0 * decay_since(p, t_rel, k1)
            if adex:
                nl = exp_current(p, v) - w
                frac_free = (k1 - torch.clamp(t_rel, min=k)).to(torch.float32).clamp_(0, 1)
                r_ad = torch.where(t_rel < k, r_ad * p.a_mem, r) + p.kappa * nl * frac_free
                r = torch.where(p.adex, r_ad, r)
                w_inf = p.adapt_a * (v - p.adapt_eref)
                w = w_inf + (w - w_inf) * p.adapt_decay
            v_new = torch.where(free, free_v(p, u_new, r), p.v_reset)
            if fire:
                spk = (v_new >= p.theta) & free
                if bool(spk.any()):
                    e_i, n_i = torch.nonzero(spk, as_tuple=True)
                    late = t_rel[e_i, n_i] > k
                    t0 = torch.where(late, t_rel[e_i, n_i], torch.full_like(t_rel[e_i, n_i], k))
                    v0 = torch.where(late, p.v_reset[n_i], v[e_i, n_i])
                    ts = spike_time(p, v0, v_new[e_i, n_i], t0, k1, n_i)
                    tr = ts + p.t_ref_steps[n_i]
                    t_rel[e_i, n_i] = tr
                    now = tr < k1
                    vs = p.v_reset[n_i].clone()
                    if bool(now.any()):
                        r0n = release_r0(p, u[e_i, n_i], u_new[e_i, n_i], tr, k, n_i)
                        r0[e_i[now], n_i[now]] = r0n[now]
                        vn = free_v(p, u_new[e_i, n_i], r0n * decay_since(p, tr, k1, n_i), n_i)
                        vs = torch.where(now, vn, vs)
                        if adex:
                            r_ad[e_i[now], n_i[now]] = (r0n * decay_since(p, tr, k1, n_i))[now]
                    v_new[e_i, n_i] = vs
                    if adex:
                        w[e_i, n_i] += p.adapt_b[n_i]
                    spikes.add(e_i, n_i, ts)
                    if any_rec:
                        step, delta = arrival(to_ticks(ts, dt_ticks), delay_ticks, dt_ticks)
                        ok = step < t_steps
                        if bool(ok.any()):
                            scatter_jumps(b0f, b1f, step[ok] * n_ep + e_i[ok], rec[n_i[ok]],
                                          delta[ok])
            v = v_new
        u = u_new
        v_grid[k1] = v
        if syn_grid is not None:
            syn_grid[k1] = syn
        if ad_grid is not None:
            ad_grid[k1] = w
    return SimOutput(spikes=spikes, v=v_grid, syn=syn_grid, adapt=ad_grid)


def exp_current(p: TorchParams, v: torch.Tensor) -> torch.Tensor:
    """AdEx exponential current g_L Delta_T exp((V - V_T) / Delta_T) in nA (0 where off)."""
    arg = ((v - p.exp_vt) / p.exp_slope).clamp_(max=EXP_ARG_MAX)
    return p.exp_gain * torch.exp(arg)
