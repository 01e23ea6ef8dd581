"""Membrane time constant tau_mem (I_BIAS_LEAK) to a target in us.

Measurement: a step response. EPISODE_START puts the membrane at its leak potential; a constant
offset current (I_OFFSET) then drives it towards E_L + I / g_L along
V(t) = V_inf - dV exp(-t / tau_mem). A three-parameter fit (baseline, amplitude, tau; variable
projection, all neurons at once) of the CADC trace gives tau_mem. The offset current is sized for
a ~60 LSB step at the target tau (dV = I tau / C), so the step stays inside the CADC range while
the search moves tau. ModelSearch in log(tau), larger code -> shorter tau.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hostdriver.chip import NeuronCell
from hostdriver.program import CADCSchedule
from hostdriver.traces import EpisodeData

from .. import nominal
from ..fit import ExpFit, fit_exponential
from ..result import CalibrationResult, ParameterResult
from ..search import ModelSearch
from ..session import Block, Session
from ..setup import nominal_codes
from ..targets import Targets
from .base import Routine, check_reach, run_alone

__all__ = ["TauMemRoutine", "calibrate", "measure_tau_mem", "offset_code", "step_fit"]

REPEATS = 6
FINAL_REPEATS = 12
STEP_LSB = 80.0  # intended step height at the target tau


def offset_code(tau_target: np.ndarray, step_lsb: float = STEP_LSB) -> np.ndarray:
    """Nominal I_OFFSET code giving a step of step_lsb CADC LSB at tau_target (us)."""
    i_na = step_lsb * nominal.CADC_MV_PER_LSB * nominal.C_MEM_PF / np.asarray(tau_target, float)
    return nominal.current_code(i_na / nominal.I_OFFSET_FULL_NA)


def trace_schedule(tau_hi: float, tau_lo: float, span_taus: float = 5.0
                   ) -> tuple[float, CADCSchedule]:
    span = span_taus * tau_hi
    interval = max(min(tau_lo / 6.0, span / 40), 0.05)
    count = int(min(span / interval, 96))
    interval = span / count
    return span + interval, CADCSchedule(interval=interval, count=count, start=0.1)


def step_fit(data: EpisodeData, tau_lo: float, tau_hi: float) -> ExpFit:
    """Per-neuron fit V(t) = V_inf + A exp(-t / tau) (A < 0 for an upward step) of the mean
    CADC trace; clipped samples are left out."""
    s = data.cadc.samples
    y = s.astype(np.float64).mean(0)
    clip = (s >= 254).any(0) | (s <= 0).any(0)
    t = data.cadc.rel_time_us[0]
    return fit_exponential(t, y, ~clip, tau_min=tau_lo, tau_max=tau_hi)


def measure_tau_mem(session: Session, codes: np.ndarray, tau_target: np.ndarray,
                    repeats: int = REPEATS) -> np.ndarray:
    """[512] tau_mem (us) with I_BIAS_LEAK = codes."""
    cfg = session.config.copy()
    caps = cfg.neuron_capmem
    caps[NeuronCell.I_BIAS_LEAK] = codes
    caps[NeuronCell.I_OFFSET] = offset_code(tau_target)
    nrn = cfg.neurons
    nrn.enable_fire = False
    nrn.spike_output = False
    duration, cadc = trace_schedule(float(np.max(tau_target)), float(np.min(tau_target)))
    (data,) = session.measure([Block(cfg, repeats, duration, cadc=cadc)], "tau_mem")
    f = step_fit(data, 0.1 * float(np.min(tau_target)), 10.0 * float(np.max(tau_target)))
    return np.where(np.abs(f.amplitude) > 3.0, f.tau, np.nan)


class TauMemRoutine(Routine):
    names = ("tau_mem",)
    requires = ("cadc_offset", "leak")

    def __init__(self, *, clamp: bool = False, search: Any = None) -> None:
        super().__init__(clamp=clamp)
        self.search = search

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
        clamped = check_reach("tau_mem", sr, "us", self.clamp)
        session.config.neuron_capmem[NeuronCell.I_BIAS_LEAK] = sr.codes
        return [ParameterResult("tau_mem", target, sr.codes, sr.history[0][1], sr.values,
                                clamped=clamped)]


def calibrate(board: Any, targets: Targets | None = None, *, clamp: bool = False,
              base: CalibrationResult | None = None) -> CalibrationResult:
    """Calibrate tau_mem of all 512 neurons on board (standalone)."""
    return run_alone(TauMemRoutine(clamp=clamp), board, targets, base)
