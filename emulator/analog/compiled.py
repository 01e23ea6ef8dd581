"""Register file -> the physical model the integrator runs (compiled once per register version).

Logical neurons: a column whose two circuits both have CONNECT_OTHER_HEMISPHERE is one neuron
(members top and bottom); every other circuit is a neuron of its own. Neurons are ordered by
their first member circuit ("canonical circuit"). Each neuron has 4 synaptic-input slots:
(member 0 exc, member 0 inh, member 1 exc, member 1 inh); unused slots stay empty.

Per-step coefficients use the simulation step dt (SimConfig), so the integrator only multiplies
and adds; see docs/emulator.md for the equations.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from protocol.addressmap import (
    N_COLUMNS,
    N_NEURONS,
    GlobalCell,
    NeuronCell,
    NeuronConfigBits,
)
from protocol.errors import ConfigError
from protocol.wire import TICK_NS

from . import transfer as tf
from .mismatch import ChipMismatch
from .routing import Router

N_SLOTS = 4
LEAK_FLOOR_US = 1e-6  # rate of a circuit whose leak is disabled (tau = 1 s)
ADAPT_READOUT_MV_PER_NA = 2.0
SYN_READOUT_MV_PER_NA = 2.0
READOUT_BASE_MV = 500.0


@dataclass(frozen=True)
class SimConfig:
    """Numerical settings of the integrator (not part of the chip's physics, except the delay)."""

    dt_ticks: int | None = None  # integration step; None: adaptive (choose_dt)
    route_delay_ticks: int = 128  # crossbar -> synapse delivery delay (a multiple of dt)
    chunk_elements: int = 1 << 23  # episodes per chunk: T * E * (slots + neurons) below this
    threads: int | None = 1  # torch intra-op threads during run (None: leave as is); small
    #                          in-cache ops run best single-threaded, above all on a busy host
    workers: int = 2  # chunks of episodes simulated concurrently (threads)
    kernels: bool = True  # compiled kernels (kernels.py) where numba is installed; False: the
    #                       torch reference path (same results bit for bit, tested)
    adapt_workers: bool = True  # fewer workers while the host's load leaves no core free for
    #                             them (core.usable_workers; results are the same either way)

    def __post_init__(self) -> None:
        if self.dt_ticks is None:
            if self.route_delay_ticks < 1 or self.route_delay_ticks % max(DT_CHOICES):
                raise ConfigError(
                    "SimConfig.route_delay_ticks must be a positive multiple of "
                    f"{max(DT_CHOICES)} with an adaptive dt, got {self.route_delay_ticks}")
            return
        if self.dt_ticks < 1:
            raise ConfigError(f"SimConfig.dt_ticks must be >= 1, got {self.dt_ticks}")
        if self.route_delay_ticks < self.dt_ticks or self.route_delay_ticks % self.dt_ticks:
            raise ConfigError(
                f"SimConfig.route_delay_ticks ({self.route_delay_ticks}) must be a positive "
                f"multiple of dt_ticks ({self.dt_ticks})"
            )

    @property
    def dt_us(self) -> float:
        assert self.dt_ticks is not None, "resolved by compile_chip"
        return self.dt_ticks * TICK_NS * 1e-3


DT_CHOICES = (128, 64, 32, 16, 8)  # ticks; adaptive dt takes the largest <= tau_min / DT_DIV
DT_DIV = 2.0


def choose_dt(tau_min_us: float) -> int:
    """Largest step in DT_CHOICES not above tau_min / DT_DIV (the smallest otherwise)."""
    for d in DT_CHOICES:
        if d * TICK_NS * 1e-3 <= tau_min_us / DT_DIV:
            return d
    return DT_CHOICES[-1]


def _bits(word: np.ndarray, shift: int, mask: int = 1) -> np.ndarray:
    return (word.astype(np.int64) >> shift) & mask


@dataclass
class CompiledChip:
    """Everything the integrator needs, as numpy arrays (float64 unless noted)."""

    sim: SimConfig
    n: int  # logical neurons
    members: np.ndarray  # [N, 2] circuit indices, -1 where there is no second member
    canon: np.ndarray  # [N] first member circuit
    circuit_neuron: np.ndarray  # [512] neuron of each circuit
    circuit_slot0: np.ndarray  # [512] slot of the circuit's exc input (inh is +1)
    # membrane (per neuron)
    cap: np.ndarray  # pF
    g_leak: np.ndarray  # uS
    e_leak: np.ndarray  # mV, conductance-weighted over members
    e_eff: np.ndarray  # mV, leak potential shifted by the offset current
    r_mem: np.ndarray  # 1/us
    a_mem: np.ndarray  # exp(-dt r_mem)
    noise_step: np.ndarray  # mV per step, keeps the stationary rms at membrane_noise_mv
    theta: np.ndarray  # mV, +inf where no member fires
    fire: np.ndarray  # bool
    v_reset: np.ndarray  # mV
    t_ref_ticks: np.ndarray  # int64
    # synaptic slots [N, 4]
    slot_rate: np.ndarray  # 1/us
    slot_a: np.ndarray  # exp(-dt r_syn)
    slot_phi: np.ndarray  # mV per nA: membrane step response to a unit current held at t_k,
    #                        signed (inhibitory slots negative)
    # adaptation / exponential (per neuron, lumped over members)
    adex: np.ndarray  # bool: adaptation or exponential term on
    adapt_a: np.ndarray  # uS
    adapt_b: np.ndarray  # nA
    adapt_rate: np.ndarray  # 1/us
    adapt_eref: np.ndarray  # mV
    exp_on: np.ndarray  # bool
    exp_vt: np.ndarray  # mV
    exp_slope: np.ndarray  # mV
    # readout (per circuit)
    readout_source: np.ndarray  # [512] ReadoutSource
    # events
    circuit_current: np.ndarray  # [512, 2] nA per weight unit (gm x quadrant DAC x enable)
    spike_output: np.ndarray  # [512] bool
    output_label: np.ndarray  # [512] int64
    router: Router
    circuit_rec_slots: np.ndarray  # [512, N*4] float32: phi-scaled jumps of a circuit's event
    circuit_record: np.ndarray  # [512] bool: the circuit's events reach FPGA_RECORD
    background: np.ndarray  # [8, 4] raw words

    @property
    def k(self) -> int:
        return self.n * N_SLOTS

    def slot_matrix(self, current: np.ndarray) -> np.ndarray:
        """[P, 512, 2] weight-unit currents -> [P, N*4] phi-scaled jumps (float32)."""
        cur = current * self.circuit_current[None]  # nA
        out = np.zeros((current.shape[0], self.n, N_SLOTS))
        nrn = self.circuit_neuron
        for ch in (0, 1):
            slot = self.circuit_slot0 + ch
            np.add.at(out, (slice(None), nrn, slot), cur[:, :, ch] * self.slot_phi[nrn, slot])
        return out.reshape(current.shape[0], -1).astype(np.float32)


def compile_chip(regs: object, mm: ChipMismatch, sim: SimConfig) -> CompiledChip:
    """Build the physical model from a RegisterFile (attributes of docs/interfaces.md)."""
    cap = np.asarray(regs.capmem_neuron, np.int64)  # [512, 32]
    gcap = np.asarray(regs.capmem_global, np.int64)  # [4, 32]
    w0 = np.asarray(regs.neuron_config, np.int64)[:, 0]
    w1 = np.asarray(regs.neuron_config, np.int64)[:, 1]
    B = NeuronConfigBits

    def vcell(cell: int) -> np.ndarray:
        return tf.voltage(cap[:, cell], mm.v_offset[:, cell], mm.v_gain[:, cell])

    def rcell(cell: int, rng: tuple[float, float]) -> np.ndarray:
        return tf.rate(cap[:, cell], mm.i_gain[:, cell], rng)

    def icell(cell: int, full: float) -> np.ndarray:
        return tf.linear_current(cap[:, cell], mm.i_gain[:, cell], full)

    en = {name: _bits(w0, getattr(B, name)).astype(bool) for name in (
        "ENABLE_FIRE", "ENABLE_LEAK", "ENABLE_SYN_EXC", "ENABLE_SYN_INH", "ENABLE_ADAPTATION",
        "ENABLE_EXPONENTIAL", "CONNECT_OTHER_HEMISPHERE", "SPIKE_OUTPUT")}

    # ---- per circuit physics
    c_e_leak = vcell(NeuronCell.V_LEAK)
    c_reset = vcell(NeuronCell.V_RESET) + mm.reset_offset
    c_theta = vcell(NeuronCell.V_THRESHOLD) + mm.threshold_offset
    c_g = np.where(en["ENABLE_LEAK"], tf.C_MEM_PF * rcell(NeuronCell.I_BIAS_LEAK,
                                                           tf.TAU_MEM_RANGE_US), 0.0)
    c_ioff = icell(NeuronCell.I_OFFSET, tf.I_OFFSET_FULL_NA)
    c_rsyn = np.stack([rcell(NeuronCell.I_BIAS_SYN_EXC_TAU, tf.TAU_SYN_RANGE_US),
                       rcell(NeuronCell.I_BIAS_SYN_INH_TAU, tf.TAU_SYN_RANGE_US)], axis=1)
    gm = np.stack([icell(NeuronCell.I_BIAS_SYN_EXC_GM, tf.SYN_GM_FULL_NA) * en["ENABLE_SYN_EXC"],
                   icell(NeuronCell.I_BIAS_SYN_INH_GM, tf.SYN_GM_FULL_NA) * en["ENABLE_SYN_INH"]],
                  axis=1)
    col = np.arange(N_NEURONS) % N_COLUMNS
    quadrant = 2 * (np.arange(N_NEURONS) // N_COLUMNS) + (col >= N_COLUMNS // 2)
    dac = tf.linear_current(gcap[:, GlobalCell.I_BIAS_SYNAPSE_DAC],
                            mm.global_i_gain[:, GlobalCell.I_BIAS_SYNAPSE_DAC],
                            tf.SYNAPSE_DAC_FULL)
    circuit_current = gm * dac[quadrant][:, None]
    c_adapt_on = en["ENABLE_ADAPTATION"]
    c_exp_on = en["ENABLE_EXPONENTIAL"]
    c_a = icell(NeuronCell.I_BIAS_ADAPT_A, tf.ADAPT_A_FULL_US)
    c_b = icell(NeuronCell.I_BIAS_ADAPT_B, tf.ADAPT_B_FULL_NA)
    c_rw = rcell(NeuronCell.I_BIAS_ADAPT_TAU, tf.TAU_ADAPT_RANGE_US)
    c_eref = vcell(NeuronCell.V_ADAPT_REF)
    c_vt = vcell(NeuronCell.V_EXP)
    c_slope = tf.exp_slope(cap[:, NeuronCell.I_BIAS_EXP], mm.i_gain[:, NeuronCell.I_BIAS_EXP])
    c_tref = _bits(w1, B.REFRACTORY_COUNT_SHIFT, B.REFRACTORY_COUNT_MASK) << _bits(
        w1, B.REFRACTORY_CLOCK_SHIFT, B.REFRACTORY_CLOCK_MASK)

    # ---- logical neurons
    merged_col = en["CONNECT_OTHER_HEMISPHERE"][:N_COLUMNS] & en["CONNECT_OTHER_HEMISPHERE"][
        N_COLUMNS:]
    canon_mask = np.ones(N_NEURONS, bool)
    canon_mask[N_COLUMNS:][merged_col] = False
    canon = np.flatnonzero(canon_mask)
    n = canon.size
    second = np.where(merged_col[canon % N_COLUMNS] & (canon < N_COLUMNS), canon + N_COLUMNS, -1)
    members = np.stack([canon, second], axis=1)
    circuit_neuron = np.empty(N_NEURONS, np.int64)
    circuit_neuron[canon] = np.arange(n)
    circuit_slot0 = np.zeros(N_NEURONS, np.int64)
    has2 = second >= 0
    circuit_neuron[second[has2]] = np.flatnonzero(has2)
    circuit_slot0[second[has2]] = 2

    valid = members >= 0
    m = np.where(valid, members, 0)

    def msum(x: np.ndarray) -> np.ndarray:
        return np.where(valid, x[m], 0.0).sum(axis=1)

    def mmean(x: np.ndarray, sel: np.ndarray | None = None) -> np.ndarray:
        w = valid if sel is None else valid & sel[m]
        cnt = w.sum(axis=1)
        return np.where(cnt > 0, np.where(w, x[m], 0.0).sum(axis=1) / np.maximum(cnt, 1), 0.0)

    n_cap = tf.C_MEM_PF * valid.sum(axis=1)
    g_sum = msum(c_g)
    g_leak = np.maximum(g_sum, n_cap * LEAK_FLOOR_US)
    e_leak = np.where(g_sum > 0, msum(c_g * c_e_leak) / np.maximum(g_sum, 1e-300),
                      mmean(c_e_leak))
    e_eff = e_leak + msum(c_ioff) / g_leak
    r_mem = g_leak / n_cap
    if sim.dt_ticks is None:  # adaptive: resolve the fastest dynamics that can matter
        rates = [r_mem, c_rsyn[circuit_current > 0]]
        rates.append(c_rw[en["ENABLE_ADAPTATION"]])
        r_max = max(float(np.max(r)) if np.size(r) else 0.0 for r in rates)
        sim = replace(sim, dt_ticks=choose_dt(1.0 / r_max if r_max > 0 else np.inf))
    dt = sim.dt_us
    a_mem = np.exp(-r_mem * dt)
    fire_sel = en["ENABLE_FIRE"]
    fire = (valid & fire_sel[m]).any(axis=1)
    theta = np.where(valid & fire_sel[m], c_theta[m], np.inf).min(axis=1)
    v_reset = mmean(c_reset)
    t_ref = np.where(valid, c_tref[m], 0).max(axis=1)

    # synaptic slots
    slot_rate = np.zeros((n, N_SLOTS))
    for j in (0, 1):
        ok = valid[:, j]
        slot_rate[ok, 2 * j:2 * j + 2] = c_rsyn[m[ok, j]]
    slot_a = np.where(slot_rate > 0, np.exp(-slot_rate * dt), 0.0)
    d = slot_rate - r_mem[:, None]
    # phi = (exp(-r_m dt) - exp(-r_s dt)) / (C (r_s - r_m)), with its limit dt e^{-r dt} / C
    small = np.abs(d * dt) < 1e-6
    phi = np.where(small, dt * a_mem[:, None] * (1 - 0.5 * d * dt),
                   a_mem[:, None] * -np.expm1(-d * dt) / np.where(small, 1.0, d))
    phi = phi / n_cap[:, None] * (slot_rate > 0)
    phi[:, 1::2] *= -1.0

    adapt_sel = c_adapt_on
    exp_sel = c_exp_on
    adapt_on = (valid & adapt_sel[m]).any(axis=1)
    exp_on = (valid & exp_sel[m]).any(axis=1)

    router = Router.compile(regs.crossbar, regs.driver, regs.synapse, mm.synapse_gain)
    chip = CompiledChip(
        sim=sim, n=n, members=members, canon=canon, circuit_neuron=circuit_neuron,
        circuit_slot0=circuit_slot0, cap=n_cap, g_leak=g_leak, e_leak=e_leak, e_eff=e_eff,
        r_mem=r_mem, a_mem=a_mem, noise_step=np.zeros(n), theta=theta, fire=fire,
        v_reset=v_reset, t_ref_ticks=t_ref.astype(np.int64), slot_rate=slot_rate, slot_a=slot_a,
        slot_phi=phi, adex=adapt_on | exp_on,
        adapt_a=np.where(adapt_on, msum(np.where(adapt_sel, c_a, 0.0)), 0.0),
        adapt_b=np.where(adapt_on, msum(np.where(adapt_sel, c_b, 0.0)), 0.0),
        adapt_rate=np.where(adapt_on, mmean(c_rw, adapt_sel), 1.0),
        adapt_eref=mmean(c_eref, adapt_sel),
        exp_on=exp_on, exp_vt=mmean(c_vt, exp_sel), exp_slope=np.where(
            exp_on, mmean(c_slope, exp_sel), 1.0),
        readout_source=_bits(w0, B.READOUT_SOURCE_SHIFT, B.READOUT_SOURCE_MASK),
        circuit_current=circuit_current, spike_output=en["SPIKE_OUTPUT"],
        output_label=_bits(w0, B.OUTPUT_LABEL_SHIFT, B.OUTPUT_LABEL_MASK), router=router,
        circuit_rec_slots=np.zeros((0, 0), np.float32),
        circuit_record=np.zeros(N_NEURONS, bool),
        background=np.asarray(regs.background, np.int64),
    )
    # on-chip events of each circuit (neurons block = circuit // 128)
    src = np.flatnonzero(chip.spike_output)
    rec_slots = np.zeros((N_NEURONS, chip.k), np.float32)
    if src.size:
        cur, record = router.route(src // 128, chip.output_label[src])
        rec_slots[src] = chip.slot_matrix(cur)
        chip.circuit_record[src] = record
    chip.circuit_rec_slots = rec_slots
    return chip


def with_noise(chip: CompiledChip, membrane_noise_mv: float) -> CompiledChip:
    """Per-step noise amplitude so that the free membrane's noise has the given stationary rms."""
    chip.noise_step = membrane_noise_mv * np.sqrt(np.maximum(1.0 - chip.a_mem**2, 0.0))
    return chip
