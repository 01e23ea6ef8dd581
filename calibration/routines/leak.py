"""Leak potential E_L (V_LEAK) to a target in CADC units.

Measurement: fire off, no offset current; EPISODE_START puts every membrane at its leak potential,
where it stays (plus temporal noise); the mean CADC code over a few samples and repeats is E_L.
The voltage cell is linear in the code, so ModelSearch (two probes, a line per neuron, one
refinement) needs 3-4 programs. `refine` re-checks calibrated codes with one program and corrects
them by the slope learnt here ("leak again" at the end of the full calibration).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hostdriver.chip import NeuronCell
from hostdriver.program import CADCSchedule
from protocol.addressmap import CAPMEM_MAX

from .. import nominal
from ..fit import fit_line
from ..result import CalibrationResult, ParameterResult
from ..search import ModelSearch, SearchResult
from ..session import Block, Session
from ..setup import nominal_codes
from ..targets import Targets
from .base import Routine, cadc_mean, check_reach, run_alone

__all__ = ["LeakRoutine", "calibrate", "measure_leak"]

REPEATS = 3
FINAL_REPEATS = 6
DURATION_US = 4.0


def measure_leak(session: Session, codes: np.ndarray, repeats: int = REPEATS,
                 note: str = "leak") -> np.ndarray:
    """[512] leak potential (CADC) with V_LEAK = codes, everything else as in session.config."""
    cfg = session.config.copy()
    cfg.neuron_capmem[NeuronCell.V_LEAK] = codes
    cfg.neuron_capmem[NeuronCell.I_OFFSET] = 0
    cfg.neurons.enable_fire = False
    cfg.neurons.spike_output = False
    (data,) = session.measure([Block(cfg, repeats, DURATION_US,
                                     cadc=CADCSchedule(interval=0.4, count=8, start=0.6))], note)
    return cadc_mean(data)


def voltage_slopes(sr: SearchResult) -> np.ndarray:
    """Per-element slope (value per code) from a search's history (least squares; the nominal
    slope where the history holds one code only)."""
    codes = np.stack([c for c, _ in sr.history]).astype(np.float64)
    vals = np.stack([v for _, v in sr.history])
    _, b = fit_line(codes.reshape(codes.shape[0], -1), vals.reshape(vals.shape[0], -1))
    b = np.where(np.isfinite(b) & (b > 0), b, nominal.LSB_PER_CODE)  # one code only: nominal
    return b.reshape(sr.target.shape)


class LeakRoutine(Routine):
    names = ("leak",)
    requires = ("cadc_offset",)

    def __init__(self, *, clamp: bool = False, search: Any = None) -> None:
        super().__init__(clamp=clamp)
        self.search = search
        self.slopes: np.ndarray | None = None  # CADC per code, learnt by run()

    def run(self, session: Session, targets: Targets) -> list[ParameterResult]:
        target = targets.per_neuron("leak")
        start = nominal_codes(targets)[NeuronCell.V_LEAK]
        search = self.search or ModelSearch(probes=(start,), prior_slope=nominal.LSB_PER_CODE,
                                            iterations=3, tol=0.5, repeats=REPEATS,
                                            final_repeats=FINAL_REPEATS)
        sr = search.search(lambda c, r: measure_leak(session, c, r), target, increasing=True,
                           start=np.full(target.shape, start))
        clamped = check_reach("leak", sr, "LSB", self.clamp)
        self.slopes = voltage_slopes(sr)
        session.config.neuron_capmem[NeuronCell.V_LEAK] = sr.codes
        before = sr.history[0][1]
        return [ParameterResult("leak", target, sr.codes, before, sr.values, clamped=clamped)]

    def refine(self, session: Session, previous: ParameterResult) -> ParameterResult:
        """'Leak again': measure at the calibrated codes, correct by the learnt slope, measure."""
        now = measure_leak(session, previous.codes, FINAL_REPEATS, "leak again")
        slope = self.slopes if self.slopes is not None else np.full(512, nominal.LSB_PER_CODE)
        step = np.where(np.isfinite(now) & (slope > 0), (previous.target - now) / slope, 0.0)
        codes = np.clip(previous.codes + np.rint(step), 0, CAPMEM_MAX).astype(np.int64)
        if np.array_equal(codes, previous.codes):
            after = now
        else:
            after = measure_leak(session, codes, FINAL_REPEATS, "leak again")
        session.config.neuron_capmem[NeuronCell.V_LEAK] = codes
        return ParameterResult("leak", previous.target, codes, previous.before, after,
                               clamped=previous.clamped, note="refined after all other routines")


def calibrate(board: Any, targets: Targets | None = None, *, clamp: bool = False,
              base: CalibrationResult | None = None) -> CalibrationResult:
    """Calibrate the leak potential of all 512 neurons on board (standalone)."""
    return run_alone(LeakRoutine(clamp=clamp), board, targets, base)
