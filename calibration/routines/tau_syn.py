"""Synaptic time constants tau_syn exc / inh (I_BIAS_SYN_EXC_TAU / _INH_TAU) to targets in us.

Measurement: the CADC reads each circuit's synaptic input current (READOUT_SOURCE SYN_EXC, then
SYN_INH: two blocks of one program) while two weight-63 stimulus events reach every neuron; the
current jumps and decays as exp(-t / tau_syn). A fit with the baseline fixed to the pre-stimulus
samples (calibration.fit, vectorised over neurons) over the samples after the peak gives tau.
Both cells are searched together as one [2, 512] array: ModelSearch in log(tau) (rate cells are
log-linear in the code), larger code -> shorter tau.

Schedules: per-neuron targets can span 0.6..17 us (sigma_d = 50 %). One CADC schedule for all
put its 96 samples ~0.9 us apart, so a 0.6 us decay had 1-2 samples above the noise: unfit (NaN)
or biased long, and the routine did not say so. The targets are therefore grouped into bands
(base.tau_bands, longest < 4x shortest); each band gets its own blocks (samples 1/6 of its
shortest tau apart, a window of 5 of its longest, and at least 2.5 median targets so that the
uncalibrated start code is seen too), and each neuron's tau comes from its band's blocks. The
emulator integrates such taus exactly (its step adapts down to 64 ns; docs/calibration.md).
Circuits that end more than TOLERANCE (relative) off their target, or unmeasured, are reported
through check_reach: CalibrationError, or with clamp=True a CalibrationWarning and .clamped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hostdriver.chip import NeuronCell, ReadoutSource
from hostdriver.program import CADCSchedule, SpikeInput
from hostdriver.traces import EpisodeData
from protocol.wire import TICKS_PER_US

from .. import nominal
from ..fit import fit_exponential
from ..result import CalibrationResult, ParameterResult
from ..search import ModelSearch
from ..session import Block, Session
from ..setup import EXC, INH, nominal_codes, stim_labels
from ..targets import Targets
from .base import Routine, check_reach, run_alone, stacked_results, tau_bands

__all__ = ["TauSynRoutine", "calibrate", "measure_tau_syn", "schedule", "syn_decay_tau"]

REPEATS = 6
FINAL_REPEATS = 12
EVENTS = 3  # stimulus drivers fired at once
STIM_US = 1.0
GM_CODE = 600  # input strength during the measurement (the amplitude only needs to be visible)
NAMES = ("tau_syn_exc", "tau_syn_inh")
CELLS = (NeuronCell.I_BIAS_SYN_EXC_TAU, NeuronCell.I_BIAS_SYN_INH_TAU)
MAX_SAMPLES = 256  # CADC samples per episode (a band's window / interval stays below this)
TOLERANCE = 0.08  # relative: a final tau further off (or unmeasured) is reported


def schedule(tau_lo: float, tau_hi: float, tau_start: float = 0.0
             ) -> tuple[float, CADCSchedule]:
    """Episode length and CADC schedule for taus tau_lo..tau_hi (us): a window of 5 tau_hi
    after the stimulus (at least 2.5 tau_start where MAX_SAMPLES still sample tau_lo finely),
    samples 1/6 of tau_lo apart (at least 48, at most MAX_SAMPLES; whole FPGA ticks)."""
    span = max(5.0 * tau_hi, min(2.5 * tau_start, MAX_SAMPLES * tau_lo / 6.0))
    interval = max(min(tau_lo / 6.0, span / 48), 0.05)
    count = int(min(span / interval, MAX_SAMPLES))
    interval = max(math.ceil(span / count * TICKS_PER_US - 1e-9), 1) / TICKS_PER_US  # whole ticks
    start = max(STIM_US - 4 * interval, 0.05)
    n = int((STIM_US + span - start) / interval)
    return start + (n + 1) * interval, CADCSchedule(interval=interval, count=n, start=start)


def syn_decay_tau(data: EpisodeData, tau_lo: float, tau_hi: float) -> np.ndarray:
    """[512] decay time constant of a readout that jumps after STIM_US (fixed-baseline fit)."""
    y = data.cadc.samples.astype(np.float64).mean(0)  # [S, 512]
    clip = (data.cadc.samples >= 254).any(0) | (data.cadc.samples <= 0).any(0)
    t = data.cadc.rel_time_us[0]
    pre = t < STIM_US
    base = y[pre].mean(0)
    peak = np.argmax(np.where(t[:, None] >= STIM_US, y, -np.inf), axis=0)  # [512]
    k = np.arange(y.shape[0])[:, None]
    amp = y[peak, np.arange(y.shape[1])] - base
    mask = (k > peak[None]) & ~clip & (y - base > np.maximum(0.03 * amp, 1.5)[None])
    f = fit_exponential(t, y, mask, tau_min=tau_lo, tau_max=tau_hi, baseline=base)
    return np.where(amp > 3.0, f.tau, np.nan)


def measure_tau_syn(session: Session, codes: np.ndarray, tau_target: np.ndarray,
                    repeats: int = REPEATS) -> np.ndarray:
    """[2, 512] tau_syn (exc, inh) in us with the two tau cells at codes [2, 512]; tau_target
    [2, 512] (or [512]: both) chooses the schedules (module doc: one band of targets each)."""
    tau_target = np.broadcast_to(np.asarray(tau_target, np.float64), (2, 512))
    bands = tau_bands(tau_target)
    median = float(np.median(tau_target))
    configs = []
    for kind, src in ((EXC, ReadoutSource.SYN_EXC), (INH, ReadoutSource.SYN_INH)):
        cfg = session.config.copy()
        caps = cfg.neuron_capmem
        caps[CELLS[0]] = codes[0]
        caps[CELLS[1]] = codes[1]
        caps[NeuronCell.I_BIAS_SYN_EXC_GM] = GM_CODE
        caps[NeuronCell.I_BIAS_SYN_INH_GM] = GM_CODE
        caps[NeuronCell.I_OFFSET] = 0
        nrn = cfg.neurons
        nrn.enable_fire = False
        nrn.spike_output = False
        nrn.readout_source = int(src)
        lab = stim_labels(kind, EVENTS)
        sp = SpikeInput(np.repeat(np.arange(repeats), lab.size), np.full(repeats * lab.size,
                        STIM_US), np.tile(lab, repeats))
        configs.append((cfg, sp))
    blocks = []
    for _, lo, hi in bands:
        duration, cadc = schedule(lo, hi, median)
        blocks += [Block(cfg, repeats, duration, spikes=sp, cadc=cadc) for cfg, sp in configs]
    data = session.measure(blocks, "tau_syn")
    out = np.full((2, 512), np.nan)
    for b, (mask, lo, hi) in enumerate(bands):
        fit_hi = 5.0 * max(hi, median)
        tau = np.stack([syn_decay_tau(d, 0.2 * lo, fit_hi) for d in data[2 * b:2 * b + 2]])
        out[mask] = tau[mask]
    return out


class TauSynRoutine(Routine):
    names = NAMES
    requires = ("cadc_offset",)

    def __init__(self, *, clamp: bool = False, search: Any = None,
                 tolerance: float = TOLERANCE) -> None:
        super().__init__(clamp=clamp)
        self.search = search
        self.tolerance = tolerance

    def run(self, session: Session, targets: Targets) -> list[ParameterResult]:
        target = np.stack([targets.per_neuron(n) for n in NAMES])
        start = np.stack([np.full(512, nominal_codes(targets)[c]) for c in CELLS])
        search = self.search or ModelSearch(probes=(start,), transform="log",
                                            prior_slope=nominal.log_tau_per_code(
                                                nominal.TAU_SYN_RANGE_US),
                                            iterations=3, tol=0.0, repeats=REPEATS,
                                            final_repeats=FINAL_REPEATS)
        sr = search.search(lambda c, r: measure_tau_syn(session, c, target, r), target,
                           increasing=False, start=start)
        with np.errstate(invalid="ignore"):
            clamped = check_reach("tau_syn", sr, "us", self.clamp, rows=("exc", "inh"),
                                  tolerance=self.tolerance, relative=True)
        return stacked_results(session, sr, target, clamped, NAMES, CELLS)


def calibrate(board: Any, targets: Targets | None = None, *, clamp: bool = False,
              base: CalibrationResult | None = None) -> CalibrationResult:
    """Calibrate tau_syn exc and inh of all 512 neurons on board (standalone)."""
    return run_alone(TauSynRoutine(clamp=clamp), board, targets, base)
