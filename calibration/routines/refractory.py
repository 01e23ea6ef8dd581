"""Refractory time: a digital counter, computed from the target, then verified by measurement.

refractory = count * 2**clock ticks of 8 ns (count 0..255, clock 0..15): the smallest clock
whose count fits gives the finest step (8 ns up to 2.04 us, then 16 ns, ...). Verification:
threshold far below the reset and the leak far above it, so a neuron spikes at the episode
start, is held for the refractory time, and on release (V = reset >= threshold, rising) spikes
again at once: its inter-spike interval *is* the refractory time. Measured = median interval per
neuron (refractory times over MAX_VERIFY_US are measured at a smaller count with the same clock
and scaled; clocks whose one count exceeds it stay unmeasured, NaN); neurons off by more than
the tolerance are listed in a CalibrationWarning (a chip or emulator that cannot resolve that
refractory time; the emulator integrates in 0.512 us steps and re-fires at a step's end, so
shorter refractory times read as one step).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from hostdriver.chip import NeuronCell
from protocol.addressmap import N_NEURONS
from protocol.errors import CalibrationError
from protocol.wire import TICKS_PER_US

from ..result import CalibrationResult, ParameterResult
from ..session import Block, Session
from ..targets import Targets
from .base import CalibrationWarning, Routine, run_alone, spike_intervals

__all__ = ["RefractoryRoutine", "calibrate", "counter_codes", "measure_refractory"]

MAX_COUNT, MAX_CLOCK = 255, 15
TOLERANCE_US = 0.02  # measured vs programmed (the programmed value is exact in 8 ns ticks)
TOLERANCE_REL = 0.01
LEAK_HIGH = 1000
MAX_VERIFY_US = 40.0  # longer refractory times are verified at a shorter count (same clock)


def counter_codes(target_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count, clock) per neuron nearest to target_us with the finest clock that fits."""
    ticks = np.rint(np.asarray(target_us, np.float64) * TICKS_PER_US).astype(np.int64)
    clock = np.zeros(ticks.shape, np.int64)
    for c in range(MAX_CLOCK, -1, -1):  # 16 vectorised steps, not a loop over neurons
        fits = np.rint(ticks / (1 << c)) <= MAX_COUNT
        clock = np.where(fits, c, clock)
    count = np.rint(ticks / (1 << clock)).astype(np.int64)
    return np.minimum(count, MAX_COUNT), clock


def programmed_us(count: np.ndarray, clock: np.ndarray) -> np.ndarray:
    return (np.asarray(count) << np.asarray(clock)) / TICKS_PER_US


def measure_refractory(session: Session, count: np.ndarray, clock: np.ndarray) -> np.ndarray:
    """[512] median inter-spike interval (us) of neurons that re-fire on release."""
    cfg = session.config.copy()
    caps = cfg.neuron_capmem
    caps[NeuronCell.V_THRESHOLD] = 0
    caps[NeuronCell.V_RESET] = np.maximum(caps[NeuronCell.V_RESET], 300)
    caps[NeuronCell.V_LEAK] = LEAK_HIGH  # above the reset: after release V rises through theta
    caps[NeuronCell.I_OFFSET] = 0
    nrn = cfg.neurons
    nrn.enable_fire = True
    nrn.spike_output = True
    nrn.refractory_count = count
    nrn.refractory_clock = clock
    t_max = max(float(programmed_us(count, clock).max()), 0.1)
    duration = 2.5 * t_max + 1.0
    (data,) = session.measure([Block(cfg, 1, duration)], "refractory")
    return spike_intervals(data)


class RefractoryRoutine(Routine):
    names = ("refractory",)
    requires = ()

    def __init__(self, *, clamp: bool = False, verify: bool = True) -> None:
        super().__init__(clamp=clamp)
        self.verify = verify

    def run(self, session: Session, targets: Targets) -> list[ParameterResult]:
        target = targets.per_neuron("refractory")
        limit = programmed_us(MAX_COUNT, MAX_CLOCK)
        over = np.flatnonzero(target > limit + 0.5 * (1 << MAX_CLOCK) / TICKS_PER_US)
        if over.size:
            msg = (f"refractory: target out of reach for {over.size} neuron(s) "
                   f"{over[:10].tolist()}: the counter reaches 0..{limit:.6g} us")
            if not self.clamp:
                err = CalibrationError(msg)
                err.neurons = over
                raise err
            warnings.warn(msg + "; clamped to the longest", CalibrationWarning, stacklevel=3)
        count, clock = counter_codes(np.minimum(target, limit))
        programmed = programmed_us(count, clock)
        measured = programmed.copy()
        if self.verify and programmed.max() > 0:
            # long times are verified at a smaller count with the same clock (the counter is
            # digital: its clock scale is what can go wrong), then scaled back
            # (clocks whose single count exceeds that are left unmeasured: NaN)
            per_count = (1 << clock) / TICKS_PER_US
            v_count = np.minimum(count, MAX_VERIFY_US // per_count).astype(np.int64)
            measured = measure_refractory(session, v_count, clock)
            measured = np.where(v_count > 0, measured * count / np.maximum(v_count, 1), np.nan)
            measured = np.where(count == 0, 0.0, measured)
            tol = np.maximum(TOLERANCE_US, TOLERANCE_REL * programmed)
            bad = np.flatnonzero((programmed > 0) & np.isfinite(measured)
                                 & ~(np.abs(measured - programmed) <= tol))
            if bad.size:
                warnings.warn(
                    f"refractory: {bad.size} neuron(s) fire at intervals that differ from the "
                    f"programmed refractory time: neurons {bad[:10].tolist()} programmed "
                    f"{programmed[bad[:10]].round(4).tolist()} us, measured "
                    f"{measured[bad[:10]].round(4).tolist()} us", CalibrationWarning,
                    stacklevel=3)
        session.config.neurons.refractory_count = count
        session.config.neurons.refractory_clock = clock
        return [ParameterResult("refractory", target, count | clock << 8,
                                np.full(N_NEURONS, np.nan), measured, clamped=over,
                                note="digital counter; after = measured interval")]


def calibrate(board: Any, targets: Targets | None = None, *, clamp: bool = False,
              base: CalibrationResult | None = None) -> CalibrationResult:
    """Set and verify the refractory counters of all 512 neurons on board (standalone)."""
    return run_alone(RefractoryRoutine(clamp=clamp), board, targets, base)
