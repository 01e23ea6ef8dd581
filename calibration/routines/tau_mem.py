"""Membrane time constant tau_mem (I_BIAS_LEAK) to a target in us.

Measurement: a step response. EPISODE_START puts the membrane at its leak potential; a constant
offset current (I_OFFSET) then drives it towards E_L + I / g_L along
V(t) = V_inf - dV exp(-t / tau_mem). A three-parameter fit (baseline, amplitude, tau; variable
projection, all neurons at once) of the CADC trace gives tau_mem. The offset current is sized for
a ~60 LSB step at the target tau (dV = I tau / C), so the step stays inside the CADC range while
the search moves tau. ModelSearch in log(tau), larger code -> shorter tau.

Per-neuron targets (0.6..15 us at sigma_d = 50 %) are grouped into bands (base.tau_bands), each
measured with its own schedule: one schedule for all spaced its 96 samples ~0.8 us apart, and a
0.6 us step was fit from 1-2 samples on its rise (biased long: 0.6 us targets ended at 0.67 us,
silently). The offset current's full scale limits a fast membrane's step to I tau / C (12 LSB
at 0.6 us), so fast bands get more repeats (repeat_factor, up to 16x: their episodes are short).
Circuits that end more than TOLERANCE (relative) off target or unmeasured are
reported through check_reach (CalibrationError; clamp=True: CalibrationWarning and .clamped).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hostdriver.chip import NeuronCell
from hostdriver.program import CADCSchedule
from hostdriver.traces import EpisodeData
from protocol.wire import TICKS_PER_US

from .. import nominal
from ..fit import ExpFit, fit_exponential
from ..result import CalibrationResult, ParameterResult
from ..search import ModelSearch
from ..session import Block, Session
from ..setup import nominal_codes
from ..targets import Targets
from .base import Routine, check_reach, run_alone, tau_bands

__all__ = ["TauMemRoutine", "calibrate", "measure_tau_mem", "offset_code", "step_fit"]

REPEATS = 6
FINAL_REPEATS = 12
STEP_LSB = 80.0  # intended step height at the target tau
MAX_SAMPLES = 256  # CADC samples per episode of a band's block
MAX_REPEAT_FACTOR = 16  # fast bands: up to this many times the repeats (module doc)
TOLERANCE = 0.08  # relative: a final tau further off (or unmeasured) is reported


def offset_code(tau_target: np.ndarray, step_lsb: float = STEP_LSB) -> np.ndarray:
    """Nominal I_OFFSET code giving a step of step_lsb CADC LSB at tau_target (us)."""
    i_na = step_lsb * nominal.CADC_MV_PER_LSB * nominal.C_MEM_PF / np.asarray(tau_target, float)
    return nominal.current_code(i_na / nominal.I_OFFSET_FULL_NA)


def trace_schedule(tau_hi: float, tau_lo: float, span_taus: float = 5.0,
                   max_samples: int = 96) -> tuple[float, CADCSchedule]:
    """Episode length and CADC schedule from 0.1 us: a window of span_taus x tau_hi, samples
    1/6 of tau_lo apart (at least 40, at most max_samples; whole FPGA ticks)."""
    span = span_taus * tau_hi
    interval = max(min(tau_lo / 6.0, span / 40), 0.05)
    count = int(min(span / interval, max_samples))
    interval = max(math.ceil(span / count * TICKS_PER_US - 1e-9), 1) / TICKS_PER_US
    return 0.1 + count * interval, CADCSchedule(interval=interval, count=count, start=0.1)


def step_fit(data: EpisodeData, tau_lo: float, tau_hi: float) -> ExpFit:
    """Per-neuron fit V(t) = V_inf + A exp(-t / tau) (A < 0 for an upward step) of the mean
    CADC trace; clipped samples are left out."""
    s = data.cadc.samples
    y = s.astype(np.float64).mean(0)
    clip = (s >= 254).any(0) | (s <= 0).any(0)
    t = data.cadc.rel_time_us[0]
    return fit_exponential(t, y, ~clip, tau_min=tau_lo, tau_max=tau_hi)


def repeat_factor(tau_us: float) -> int:
    """Repeats multiplier of a band whose shortest target is tau_us: the offset current's full
    scale limits the step to I_full tau / C (12 LSB at 0.6 us instead of STEP_LSB), and the fit's
    relative noise grows as 1 / step; (STEP_LSB / step)^2 more repeats restore it (capped)."""
    step = nominal.I_OFFSET_FULL_NA * tau_us / nominal.C_MEM_PF / nominal.CADC_MV_PER_LSB
    return int(np.clip(np.ceil((STEP_LSB / step) ** 2), 1, MAX_REPEAT_FACTOR))


def measure_tau_mem(session: Session, codes: np.ndarray, tau_target: np.ndarray,
                    repeats: int = REPEATS) -> np.ndarray:
    """[512] tau_mem (us) with I_BIAS_LEAK = codes; tau_target chooses the offset currents and
    the schedules (one block per band of targets, module doc)."""
    tau_target = np.broadcast_to(np.asarray(tau_target, np.float64), (512,))
    cfg = session.config.copy()
    caps = cfg.neuron_capmem
    caps[NeuronCell.I_BIAS_LEAK] = codes
    caps[NeuronCell.I_OFFSET] = offset_code(tau_target)
    nrn = cfg.neurons
    nrn.enable_fire = False
    nrn.spike_output = False
    bands = tau_bands(tau_target)
    median = float(np.median(tau_target))
    blocks = []
    for _, lo, hi in bands:
        # the window also covers 2.5 median taus (the uncalibrated start code, "before")
        # where MAX_SAMPLES still sample the band's shortest tau at 1/6
        span_tau = max(hi, min(0.5 * median, MAX_SAMPLES * lo / 30.0))
        duration, cadc = trace_schedule(span_tau, lo, max_samples=MAX_SAMPLES)
        blocks.append(Block(cfg, repeats * repeat_factor(lo), duration, cadc=cadc))
    data = session.measure(blocks, "tau_mem")
    out = np.full(512, np.nan)
    for d, (mask, lo, hi) in zip(data, bands, strict=True):
        f = step_fit(d, 0.1 * lo, 10.0 * max(hi, median))
        out[mask] = np.where(np.abs(f.amplitude) > 3.0, f.tau, np.nan)[mask]
    return out


class TauMemRoutine(Routine):
    names = ("tau_mem",)
    requires = ("cadc_offset", "leak")

    def __init__(self, *, clamp: bool = False, search: Any = None,
                 tolerance: float = TOLERANCE) -> None:
        super().__init__(clamp=clamp)
        self.search = search
        self.tolerance = tolerance

    def run(self, session: Session, targets: Targets) -> list[ParameterResult]:
        target = targets.per_neuron("tau_mem")
        start = np.full(512, nominal_codes(targets)[NeuronCell.I_BIAS_LEAK])
        search = self.search or ModelSearch(probes=(start,), transform="log",
                                            prior_slope=nominal.log_tau_per_code(
                                                nominal.TAU_MEM_RANGE_US),
                                            iterations=3, tol=0.0, repeats=REPEATS,
                                            final_repeats=FINAL_REPEATS)
        sr = search.search(lambda c, r: measure_tau_mem(session, c, target, r), target,
                           increasing=False, start=start)
        with np.errstate(invalid="ignore"):
            clamped = check_reach("tau_mem", sr, "us", self.clamp, tolerance=self.tolerance,
                                  relative=True)
        session.config.neuron_capmem[NeuronCell.I_BIAS_LEAK] = sr.codes
        return [ParameterResult("tau_mem", target, sr.codes, sr.history[0][1], sr.values,
                                clamped=clamped)]


def calibrate(board: Any, targets: Targets | None = None, *, clamp: bool = False,
              base: CalibrationResult | None = None) -> CalibrationResult:
    """Calibrate tau_mem of all 512 neurons on board (standalone)."""
    return run_alone(TauMemRoutine(clamp=clamp), board, targets, base)
