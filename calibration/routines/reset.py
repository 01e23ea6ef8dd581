"""Reset potential (V_RESET) to a target in CADC units.

Measurement: threshold far below the leak potential (code 0), so every neuron spikes right at
the episode start, and the longest refractory time (255 counts of 2**15 ticks, 67 ms): the
membrane is then held at its reset potential for the rest of the episode, where the CADC reads
it directly. Linear voltage cell: ModelSearch as for the leak.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hostdriver.chip import NeuronCell
from hostdriver.program import CADCSchedule

from .. import nominal
from ..result import CalibrationResult, ParameterResult
from ..search import ModelSearch
from ..session import Block, Session
from ..setup import nominal_codes
from ..targets import Targets
from .base import Routine, cadc_mean, check_reach, run_alone

__all__ = ["ResetRoutine", "calibrate", "measure_reset"]

REPEATS = 2
FINAL_REPEATS = 4
DURATION_US = 4.0
HOLD_COUNT, HOLD_CLOCK = 255, 15  # refractory far longer than any episode


def measure_reset(session: Session, codes: np.ndarray, repeats: int = REPEATS) -> np.ndarray:
    """[512] reset potential (CADC) with V_RESET = codes."""
    cfg = session.config.copy()
    caps = cfg.neuron_capmem
    caps[NeuronCell.V_RESET] = codes
    caps[NeuronCell.V_THRESHOLD] = 0
    caps[NeuronCell.I_OFFSET] = 0
    nrn = cfg.neurons
    nrn.enable_fire = True
    nrn.spike_output = False
    nrn.refractory_count = HOLD_COUNT
    nrn.refractory_clock = HOLD_CLOCK
    (data,) = session.measure([Block(cfg, repeats, DURATION_US,
                                     cadc=CADCSchedule(interval=0.4, count=8, start=1.0))],
                              "reset")
    return cadc_mean(data)


class ResetRoutine(Routine):
    names = ("reset",)
    requires = ("cadc_offset",)

    def __init__(self, *, clamp: bool = False, search: Any = None) -> None:
        super().__init__(clamp=clamp)
        self.search = search

    def run(self, session: Session, targets: Targets) -> list[ParameterResult]:
        target = targets.per_neuron("reset")
        start = nominal_codes(targets)[NeuronCell.V_RESET]
        search = self.search or ModelSearch(probes=(start,), prior_slope=nominal.LSB_PER_CODE,
                                            iterations=3, tol=0.5, repeats=REPEATS,
                                            final_repeats=FINAL_REPEATS)
        sr = search.search(lambda c, r: measure_reset(session, c, r), target, increasing=True,
                           start=np.full(target.shape, start))
        clamped = check_reach("reset", sr, "LSB", self.clamp)
        session.config.neuron_capmem[NeuronCell.V_RESET] = sr.codes
        return [ParameterResult("reset", target, sr.codes, sr.history[0][1], sr.values,
                                clamped=clamped)]


def calibrate(board: Any, targets: Targets | None = None, *, clamp: bool = False,
              base: CalibrationResult | None = None) -> CalibrationResult:
    """Calibrate the reset potential of all 512 neurons on board (standalone)."""
    return run_alone(ResetRoutine(clamp=clamp), board, targets, base)
