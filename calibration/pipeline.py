"""The full calibration of a chip: every routine in a fixed, documented order.

Order (docs/calibration.md explains each dependency; tests check `requires` against it):

1. cadc_offset  - every later measurement reads potentials through the CADC
2. tau_syn      - synaptic-current readout only; independent of the membrane parameters
3. leak         - the operating point everything else is measured around
4. tau_mem      - a step response starting at the calibrated leak
5. reset        - held at reset after a spike; read through the calibrated CADC
6. threshold    - crossings of a step response whose window is placed with leak and tau_mem
7. synaptic_strength - PSP amplitudes depend on tau_syn and tau_mem, so they come after both
8. leak again   - re-check / correct the leak with every other code final (on hardware the
                  bias currents shift E_L a little: calix ends with the leak too)
9. refractory   - digital counter, set and verified

calix orders tau_syn, threshold, input strength, leak, tau_mem, reset, leak again; ours differs
where our measurements need an earlier result (threshold needs tau_mem for its window).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cache import Cache
from .result import CalibrationResult, ParameterResult
from .routines.base import Routine
from .routines.cadc import CADCRoutine
from .routines.leak import LeakRoutine
from .routines.refractory import RefractoryRoutine
from .routines.reset import ResetRoutine
from .routines.synapse import SynapseRoutine
from .routines.tau_mem import TauMemRoutine
from .routines.tau_syn import TauSynRoutine
from .routines.threshold import ThresholdRoutine
from .session import Session
from .setup import base_config
from .targets import Targets

__all__ = ["ORDER", "Progress", "Step", "calibrate", "steps"]


class Progress:
    """Hooks a caller (e.g. the CLI's progress bars) gets called with; all optional."""

    def start(self, step: str, index: int, total: int, expected_runs: int) -> None:
        """A step begins (index counts from 0)."""

    def run(self, note: str) -> None:
        """One board program of the current step finished."""

    def done(self, step: str, params: list[ParameterResult]) -> None:
        """A step ended with these parameters."""


@dataclass(frozen=True)
class Step:
    name: str
    expected_runs: int  # for progress bars (searches may stop earlier)
    make: Callable[[dict[str, Any]], Routine | Callable[..., list[ParameterResult]]]
    requires: tuple[str, ...]
    provides: tuple[str, ...]


def steps(clamp: bool = False) -> list[Step]:
    """The calibration steps in order. `make(state)` builds the step's callable; state carries
    objects between steps (the leak routine's learnt slopes, the results so far)."""

    def leak(state: dict[str, Any]) -> Routine:
        state["leak_routine"] = LeakRoutine(clamp=clamp)
        return state["leak_routine"]

    def threshold(state: dict[str, Any]) -> Routine:
        return ThresholdRoutine(clamp=clamp, leak_slope=state["leak_routine"].slopes)

    def leak_again(state: dict[str, Any]) -> Callable[..., list[ParameterResult]]:
        def run(session: Session, targets: Targets) -> list[ParameterResult]:
            return [state["leak_routine"].refine(session, state["results"]["leak"])]
        return run

    def simple(cls: type[Routine]) -> Callable[[dict[str, Any]], Routine]:
        return lambda state: cls(clamp=clamp) if cls is not CADCRoutine else cls()

    return [
        Step("cadc_offset", 2, simple(CADCRoutine), CADCRoutine.requires, CADCRoutine.names),
        Step("tau_syn", 5, simple(TauSynRoutine), TauSynRoutine.requires, TauSynRoutine.names),
        Step("leak", 5, leak, LeakRoutine.requires, LeakRoutine.names),
        Step("tau_mem", 5, simple(TauMemRoutine), TauMemRoutine.requires, TauMemRoutine.names),
        Step("reset", 5, simple(ResetRoutine), ResetRoutine.requires, ResetRoutine.names),
        Step("threshold", 7, threshold, ThresholdRoutine.requires, ThresholdRoutine.names),
        Step("synaptic_strength", 5, simple(SynapseRoutine), SynapseRoutine.requires,
             SynapseRoutine.names),
        Step("leak again", 2, leak_again, ("leak",), ("leak",)),
        Step("refractory", 1, simple(RefractoryRoutine), RefractoryRoutine.requires,
             RefractoryRoutine.names),
    ]


ORDER: tuple[str, ...] = tuple(s.name for s in steps())


def calibrate(board: Any, targets: Targets | None = None, *, progress: Progress | None = None,
              cache: Cache | bool | None = True, clamp: bool = False) -> CalibrationResult:
    """Calibrate every parameter of all 512 neurons of board to targets (default Targets()).

    cache: True (default location, see calibration.cache), a Cache, or False/None (always
    measure). A hit returns the cached result at once (result.from_cache is True); a fresh
    result is stored only after every step succeeded. clamp: neurons whose target is out of
    reach are set to the nearest reachable code with a CalibrationWarning instead of a
    CalibrationError. Board or link failures propagate (nothing is cached then).
    """
    targets = targets or Targets()
    progress = progress or Progress()
    store = Cache() if cache is True else (cache or None)
    serial = int(board.info.serial)
    if store is not None:
        hit = store.get(serial, targets)
        if hit is not None:
            hit.from_cache = True
            return hit
    t0 = time.perf_counter()
    session = Session(board, base_config(targets), progress=progress.run)
    result = CalibrationResult(serial, targets)
    state: dict[str, Any] = {"results": result.parameters}
    plan = steps(clamp)
    for i, step in enumerate(plan):
        progress.start(step.name, i, len(plan), step.expected_runs)
        fn = step.make(state)
        t_step, runs0 = time.perf_counter(), session.runs
        params = fn(session, targets)
        for p in params:
            p.runs = session.runs - runs0
            p.seconds = time.perf_counter() - t_step
            if step.name == "leak again":  # the leak's runs and time include both passes
                first = result.parameters["leak"]
                p.runs += first.runs
                p.seconds += first.seconds
            result.add(p)
        progress.done(step.name, params)
    result.seconds = time.perf_counter() - t0
    result.created = time.time()
    if store is not None:
        store.put(result)
    return result
