"""Spike threshold (V_THRESHOLD) to a target in CADC units.

Measurement, in two parts:
1. Trajectory (once): fire off, leak placed ~70 LSB below the target, an offset current (sized
   per neuron from a first look) drives the membrane up towards ~80 LSB above the target along
   V(t) = V_inf + A exp(-t / tau). A fit of the CADC trace (all neurons at once) gives each
   neuron's V(t) with sub-LSB precision. The membrane is slowed for this (I_BIAS_LEAK lowered):
   the step an offset current I can make is I tau / C, and the offset cell's full scale
   (150 nA) moves a membrane of tau = 1 us by only ~20 LSB, so a fast neuron's trajectory would
   stop short of its threshold (it never spikes: the search saw +inf and ended off target, e.g.
   a target 90 LSB read 75 on a 1.5 us neuron at sigma_d = 50 %). Every trajectory therefore
   gets tau = TAU_FACTOR x max(its tau_mem target, the median target): ~2x its own, and fast
   neurons as slow as the median's (the threshold comparator does not care how fast the
   membrane moves; one CADC schedule then samples every neuron's rise well).
2. Crossing (each search step): the same configuration with fire on and a refractory time longer
   than the episode: every neuron spikes once, when V(t) crosses its threshold. The spike time
   t* (8 ns resolution) gives threshold = V(t*), averaged over repeats.
The threshold cell is linear in the code: ModelSearch, 3-4 crossing programs. Temporal membrane
noise makes the first crossing come slightly early (the noise peak crosses first): a bias of a
fraction of an LSB, the same for all neurons, so it does not add spread. A neuron that spikes at
t = 0 (threshold below its leak) reads -inf, one that never spikes +inf (outside the window).
Neurons that end further than TOLERANCE_LSB from their target (or unmeasured) are reported as
out of reach: CalibrationError, or with clamp=True a CalibrationWarning and result.clamped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hostdriver.chip import ChipConfig, NeuronCell
from protocol.addressmap import CAPMEM_MAX

from .. import nominal
from ..fit import ExpFit
from ..result import CalibrationResult, ParameterResult
from ..search import ModelSearch
from ..session import Block, Session
from ..setup import nominal_codes
from ..targets import Targets
from .base import Routine, check_reach, first_spike_times, run_alone
from .tau_mem import step_fit, trace_schedule

__all__ = ["ThresholdRoutine", "calibrate", "prepare_trajectory"]

BELOW_LSB = 70.0  # the window the trajectory sweeps: leak this far below the target ...
ABOVE_LSB = 80.0  # ... and V_inf this far above it (both kept inside the CADC range)
WINDOW = (20.0, 245.0)
TAU_SHIFT_CODES = 80  # I_BIAS_LEAK lowered by this: ~2x tau, so the offset current reaches
TAU_FACTOR = 2.0  # a ~150 LSB step on every neuron (dV = I tau / C)
TRAJ_REPEATS = 6
REPEATS = 3
FINAL_REPEATS = 8
HOLD_COUNT, HOLD_CLOCK = 255, 15
EARLY_US = 0.05  # a first spike this early means: threshold at or below the leak potential
TOLERANCE_LSB = 3.0  # a final value further off (or unmeasured) is reported like an unreachable one


def trajectory_tau(targets: Targets) -> np.ndarray:
    """[512] time constant (us) each neuron's trajectory is slowed to: TAU_FACTOR x its tau_mem
    target, but at least TAU_FACTOR x the median target (module doc: a fast membrane's offset
    step I tau / C would not reach its threshold)."""
    tau = targets.per_neuron("tau_mem")
    return TAU_FACTOR * np.maximum(tau, float(np.median(tau)))


def leak_bias_shift(targets: Targets) -> np.ndarray:
    """[512] I_BIAS_LEAK codes to subtract from the calibrated ones for trajectory_tau: the fixed
    TAU_SHIFT_CODES (~2x) plus, for neurons faster than the median, the nominal codes of the
    remaining factor (log-linear cell)."""
    tau = targets.per_neuron("tau_mem")
    extra = np.log(np.maximum(float(np.median(tau)) / tau, 1.0))
    return TAU_SHIFT_CODES + np.rint(extra / nominal.log_tau_per_code(nominal.TAU_MEM_RANGE_US))


def prepare_trajectory(session: Session, targets: Targets, leak_slope: np.ndarray | None = None
                       ) -> tuple[ChipConfig, ExpFit, float]:
    """(measurement config without threshold codes, trajectory fit, episode length in us)."""
    from .tau_mem import offset_code

    cfg = session.config.copy()
    caps = cfg.neuron_capmem
    slope = (np.full(512, nominal.V_PER_CODE_MV / nominal.CADC_MV_PER_LSB)
             if leak_slope is None else leak_slope)
    # the window covers each neuron's target and the median target (where the uncalibrated
    # chip's thresholds lie: the "before" measurement happens at its nominal code)
    theta = targets.per_neuron("threshold")
    median = targets.scalar("threshold")
    low = np.clip(np.minimum(theta, median) - BELOW_LSB, *WINDOW)
    high = np.clip(np.maximum(theta, median) + ABOVE_LSB, *WINDOW)
    shift = low - targets.per_neuron("leak")
    caps[NeuronCell.V_LEAK] = np.clip(caps[NeuronCell.V_LEAK] + np.rint(shift / slope), 0,
                                      CAPMEM_MAX)
    tau = trajectory_tau(targets)
    caps[NeuronCell.I_BIAS_LEAK] = np.clip(caps[NeuronCell.I_BIAS_LEAK]
                                           - leak_bias_shift(targets), 0, CAPMEM_MAX)
    step_want = high - low
    caps[NeuronCell.I_OFFSET] = offset_code(tau, step_want)
    nrn = cfg.neurons
    nrn.enable_fire = False
    nrn.spike_output = False
    nrn.refractory_count = HOLD_COUNT
    nrn.refractory_clock = HOLD_CLOCK
    tau_hi, tau_lo = 4.0 * float(tau.max()), 0.2 * float(tau.min())

    def look(repeats: int) -> ExpFit:
        duration, cadc = trace_schedule(float(tau.max()) * 1.5, float(tau.min()), 4.0)
        (data,) = session.measure([Block(cfg, repeats, duration, cadc=cadc)], "threshold")
        return step_fit(data, tau_lo, tau_hi)

    first = look(2)
    # resize each neuron's offset current so that its step spans the window
    step = -first.amplitude
    code = caps[NeuronCell.I_OFFSET].astype(np.float64)
    frac = nominal.lin(code / CAPMEM_MAX) * np.where(step > 5, step_want / np.maximum(step, 5),
                                                     1.0)
    caps[NeuronCell.I_OFFSET] = nominal.current_code(np.clip(frac, 0.0, 1.0))
    traj = look(TRAJ_REPEATS)
    duration = float(np.clip(3.0 * np.nanmax(traj.tau), 2.0, 400.0))
    return cfg, traj, duration


def measure_threshold(session: Session, cfg: ChipConfig, traj: ExpFit, duration: float,
                      codes: np.ndarray, repeats: int) -> np.ndarray:
    """[512] threshold (CADC) with V_THRESHOLD = codes (crossing of the known trajectory)."""
    c = cfg.copy()
    c.neuron_capmem[NeuronCell.V_THRESHOLD] = codes
    c.neurons.enable_fire = True
    c.neurons.spike_output = True
    (data,) = session.measure([Block(c, repeats, duration)], "threshold")
    t = first_spike_times(data)  # [E, 512]
    early = t < EARLY_US
    v = np.where(np.isfinite(t) & ~early, traj(np.nan_to_num(t, nan=0.0)), np.nan)
    n_ok = np.isfinite(v).sum(0)
    value = np.where(np.isfinite(v), v, 0.0).sum(0) / np.maximum(n_ok, 1)
    value = np.where(n_ok > 0, value, np.nan)
    value = np.where(early.sum(0) * 2 > repeats, -np.inf, value)  # mostly at t = 0: below leak
    never = np.isnan(t).all(0)
    value = np.where(never, np.inf, value)
    return np.where(np.isfinite(traj.tau), value, np.nan)


class ThresholdRoutine(Routine):
    names = ("threshold",)
    requires = ("cadc_offset", "leak", "tau_mem")

    def __init__(self, *, clamp: bool = False, search: Any = None,
                 leak_slope: np.ndarray | None = None,
                 tolerance: float = TOLERANCE_LSB) -> None:
        super().__init__(clamp=clamp)
        self.search = search
        self.leak_slope = leak_slope
        self.tolerance = tolerance

    def run(self, session: Session, targets: Targets) -> list[ParameterResult]:
        target = targets.per_neuron("threshold")
        cfg, traj, duration = prepare_trajectory(session, targets, self.leak_slope)
        start = np.full(512, nominal_codes(targets)[NeuronCell.V_THRESHOLD])
        search = self.search or ModelSearch(probes=(start,), prior_slope=nominal.LSB_PER_CODE,
                                            iterations=3, tol=0.5,
                                            repeats=REPEATS, final_repeats=FINAL_REPEATS)
        with np.errstate(invalid="ignore"):
            sr = search.search(
                lambda c, r: measure_threshold(session, cfg, traj, duration, c, r), target,
                increasing=True, start=start)
        clamped = check_reach("threshold", sr, "LSB", self.clamp, tolerance=self.tolerance)
        session.config.neuron_capmem[NeuronCell.V_THRESHOLD] = sr.codes
        return [ParameterResult("threshold", target, sr.codes, sr.history[0][1], sr.values,
                                clamped=clamped)]


def calibrate(board: Any, targets: Targets | None = None, *, clamp: bool = False,
              base: CalibrationResult | None = None) -> CalibrationResult:
    """Calibrate the threshold of all 512 neurons on board (standalone)."""
    return run_alone(ThresholdRoutine(clamp=clamp), board, targets, base)
