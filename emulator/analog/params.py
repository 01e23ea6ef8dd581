"""CompiledChip -> float32 torch tensors the integrator multiplies with (built once per compile).

Slot arrays are slot-major ([4, N]) so that a slot is a contiguous row of neurons.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from protocol.wire import TICK_NS

from .compiled import N_SLOTS, CompiledChip
from .events import bin_centres


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, np.float32))


def slot_major(rows: np.ndarray, n: int) -> torch.Tensor:
    """[P, N*4] neuron-major slot rows -> [P, 4, N] float32."""
    return _t(np.asarray(rows).reshape(-1, n, N_SLOTS).transpose(0, 2, 1))


def _g(t: np.ndarray, rs: np.ndarray, rm: np.ndarray) -> np.ndarray:
    """Membrane response at time t to a unit current switched on at 0 and decaying with rs,
    times C: (e^{-rm t} - e^{-rs t}) / (rs - rm), with its limit t e^{-r t}."""
    d = rs - rm
    small = np.abs(d * t) < 1e-9
    return np.where(small, t * np.exp(-rm * t),
                    np.exp(-rm * t) * -np.expm1(-d * t) / np.where(small, 1.0, d))


def substep_tables(chip: CompiledChip) -> tuple[np.ndarray, np.ndarray]:
    """F_I[b, s, n] = exp(-r_s q_b) and F_V[b, s, n] = g_s(q_b) / g_s(dt) per sub-step bin b
    (q_b = the bin centre, ticks before the step end; events.bin_centres).

    An input arriving q before the end of a step leaves a current I0 * F_I at the step end and
    has moved the membrane by I0 * g_s(q) / C; dividing by g_s(dt) = C |phi| expresses that in
    phi-scaled slot units.
    """
    tick_us = TICK_NS * 1e-3
    t = bin_centres(chip.sim.dt_ticks)[:, None, None] * tick_us
    rs = chip.slot_rate.T[None]  # [1, 4, N]
    rm = chip.r_mem[None, None, :]
    g = _g(t, rs, rm)
    g_dt = _g(np.array(chip.sim.dt_us), rs, rm)
    f_v = np.where((rs > 0) & (g_dt > 0), g / np.where(g_dt > 0, g_dt, 1.0), 0.0)
    f_i = np.where(rs > 0, np.exp(-rs * t), 0.0)
    return f_i, f_v


@dataclass
class TorchParams:
    """Per-neuron [N] and per-slot [4, N] coefficients, float32 except where noted."""

    e_eff: torch.Tensor
    u0: torch.Tensor  # free membrane at episode start, relative to e_eff
    a_mem: torch.Tensor
    rdt: torch.Tensor  # r_mem * dt: exp(-rdt * steps) is the decay over `steps` steps
    noise_step: torch.Tensor
    theta: torch.Tensor
    v_reset: torch.Tensor
    t_ref_steps: torch.Tensor  # float64
    slot_a_t: torch.Tensor  # [4, N] exp(-dt r_syn)
    f_i: torch.Tensor  # [Q, 4, N] sub-step tables (substep_tables)
    f_v: torch.Tensor  # [Q, 4, N]
    adex: torch.Tensor  # bool [N]
    kappa: torch.Tensor  # (1 - a_mem) / g_leak: mV per nA held over one step
    adapt_a: torch.Tensor
    adapt_b: torch.Tensor
    adapt_decay: torch.Tensor  # exp(-dt r_w)
    adapt_eref: torch.Tensor
    exp_gain: torch.Tensor  # g_leak * Delta_T where the exponential term is on, else 0
    exp_vt: torch.Tensor
    exp_slope: torch.Tensor
    fire: torch.Tensor  # bool [N]
    rec: torch.Tensor  # [N, 4, N] phi-scaled slot jumps of one spike of neuron n (on chip)

    @staticmethod
    def build(chip: CompiledChip) -> TorchParams:
        dt_ticks = chip.sim.dt_ticks
        dt = chip.sim.dt_us
        # a neuron's spike is emitted by each member circuit with SPIKE_OUTPUT
        rec = np.zeros((chip.n, chip.k), np.float32)
        for j in (0, 1):
            ok = chip.members[:, j] >= 0
            rec[ok] += chip.circuit_rec_slots[chip.members[ok, j]]
        f_i, f_v = substep_tables(chip)
        return TorchParams(
            e_eff=_t(chip.e_eff),
            u0=_t(chip.e_leak - chip.e_eff),
            a_mem=_t(chip.a_mem),
            rdt=_t(chip.r_mem * dt),
            noise_step=_t(chip.noise_step),
            theta=_t(chip.theta),
            v_reset=_t(chip.v_reset),
            t_ref_steps=torch.from_numpy(chip.t_ref_ticks / dt_ticks),
            slot_a_t=_t(chip.slot_a.T),
            f_i=_t(f_i),
            f_v=_t(f_v),
            adex=torch.from_numpy(chip.adex.copy()),
            kappa=_t((1.0 - chip.a_mem) / chip.g_leak),
            adapt_a=_t(chip.adapt_a),
            adapt_b=_t(chip.adapt_b),
            adapt_decay=_t(np.exp(-chip.adapt_rate * dt)),
            adapt_eref=_t(chip.adapt_eref),
            exp_gain=_t(np.where(chip.exp_on, chip.g_leak * chip.exp_slope, 0.0)),
            exp_vt=_t(chip.exp_vt),
            exp_slope=_t(chip.exp_slope),
            fire=torch.from_numpy(chip.fire.copy()),
            rec=slot_major(rec, chip.n),
        )

    def subset(self, idx: torch.Tensor) -> TorchParams:
        """Parameters of neurons idx (rec keeps all sources, restricted to idx targets)."""
        out = {}
        for f in fields(self):
            x = getattr(self, f.name)
            if f.name in ("slot_a_t",):
                out[f.name] = x[:, idx].contiguous()
            elif f.name in ("f_i", "f_v", "rec"):
                out[f.name] = x[:, :, idx].contiguous()
            else:
                out[f.name] = x[idx].contiguous()
        return replace(self, **out)

    @property
    def n(self) -> int:
        return int(self.e_eff.shape[0])

    @property
    def has_fire(self) -> bool:
        return bool(self.fire.any())

    @property
    def has_adex(self) -> bool:
        return bool(self.adex.any())
