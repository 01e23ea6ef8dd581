"""CompiledChip -> float32 torch tensors the integrator multiplies with (built once per compile)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .compiled import N_SLOTS, CompiledChip


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, np.float32))


@dataclass
class TorchParams:
    """Per-neuron [N] and per-slot [N, 4] coefficients, float32 except where noted."""

    e_eff: torch.Tensor
    u0: torch.Tensor  # free membrane at episode start, relative to e_eff
    a_mem: torch.Tensor
    rdt: torch.Tensor  # r_mem * dt: exp(-rdt * steps) is the decay over `steps` steps
    noise_step: torch.Tensor
    theta: torch.Tensor
    v_reset: torch.Tensor
    t_ref_steps: torch.Tensor  # float64
    slot_a: torch.Tensor  # [N, 4]
    slot_b1: torch.Tensor  # [N, 4]: -(1 - slot_a), the first-order in-step decay of a jump
    has_fire: bool
    # adaptation / exponential
    adex: torch.Tensor  # bool [N]
    has_adex: bool
    kappa: torch.Tensor  # (1 - a_mem) / g_leak: mV per nA held over one step
    adapt_a: torch.Tensor
    adapt_b: torch.Tensor
    adapt_decay: torch.Tensor  # exp(-dt r_w)
    adapt_eref: torch.Tensor
    exp_gain: torch.Tensor  # g_leak * Delta_T where the exponential term is on, else 0
    exp_vt: torch.Tensor
    exp_slope: torch.Tensor
    rec_neuron: torch.Tensor  # [N, N*4] phi-scaled jumps of one spike of the neuron (on chip)

    @staticmethod
    def build(chip: CompiledChip) -> TorchParams:
        dt_ticks = chip.sim.dt_ticks
        dt = chip.sim.dt_us
        # a neuron's spike is emitted by each member circuit with SPIKE_OUTPUT
        rec = np.zeros((chip.n, chip.k), np.float32)
        for j in (0, 1):
            ok = chip.members[:, j] >= 0
            rec[ok] += chip.circuit_rec_slots[chip.members[ok, j]]
        return TorchParams(
            e_eff=_t(chip.e_eff),
            u0=_t(chip.e_leak - chip.e_eff),
            a_mem=_t(chip.a_mem),
            rdt=_t(chip.r_mem * dt),
            noise_step=_t(chip.noise_step),
            theta=_t(chip.theta),
            v_reset=_t(chip.v_reset),
            t_ref_steps=torch.from_numpy(chip.t_ref_ticks / dt_ticks),
            slot_a=_t(chip.slot_a),
            slot_b1=_t(-(1.0 - chip.slot_a)),
            has_fire=bool(chip.fire.any()),
            adex=torch.from_numpy(chip.adex.copy()),
            has_adex=bool(chip.adex.any()),
            kappa=_t((1.0 - chip.a_mem) / chip.g_leak),
            adapt_a=_t(chip.adapt_a),
            adapt_b=_t(chip.adapt_b),
            adapt_decay=_t(np.exp(-chip.adapt_rate * dt)),
            adapt_eref=_t(chip.adapt_eref),
            exp_gain=_t(np.where(chip.exp_on, chip.g_leak * chip.exp_slope, 0.0)),
            exp_vt=_t(chip.exp_vt),
            exp_slope=_t(chip.exp_slope),
            rec_neuron=torch.from_numpy(rec),
        )

    @property
    def n(self) -> int:
        return int(self.e_eff.shape[0])

    @property
    def k(self) -> int:
        return self.n * N_SLOTS
