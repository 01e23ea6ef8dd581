"""What every routine shares: the Routine interface, reach checks, trace reductions.

A routine calibrates one parameter (or a pair, e.g. exc and inh) of all 512 neurons: it builds a
measurement configuration from the session's current config, lets a search (calibration.search)
call its `measure(codes, repeats)` (one board program per call), and returns a ParameterResult
with the codes, the uncalibrated spread (`before`, all neurons at the nominal code) and the
calibrated one (`after`, an independent final measurement).
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from hostdriver.traces import EpisodeData
from protocol.addressmap import N_NEURONS
from protocol.errors import CalibrationError

from ..result import CalibrationResult, ParameterResult
from ..search import SearchResult
from ..session import Session
from ..targets import Targets

__all__ = [
    "CalibrationWarning",
    "Routine",
    "cadc_mean",
    "check_reach",
    "first_spike_times",
    "run_alone",
    "tau_bands",
]

CLIP_HI = 254.5  # mean CADC codes at or beyond these are treated as saturated
CLIP_LO = 0.5
BAND_RATIO = 4.0  # tau_bands: the longest target of a band is < this x its shortest


class CalibrationWarning(UserWarning):
    """A calibration finished with neurons clamped to the end of their range."""


class Routine(ABC):
    """Calibrates the parameters in `names` of every neuron (see module doc)."""

    names: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # parameters best calibrated before this one

    def __init__(self, *, clamp: bool = False) -> None:
        self.clamp = clamp

    @abstractmethod
    def run(self, session: Session, targets: Targets) -> list[ParameterResult]:
        """Measure, search, update session.config with the result; return the parameters."""

    def __call__(self, session: Session, targets: Targets) -> list[ParameterResult]:
        t0 = time.perf_counter()
        runs0 = session.runs
        out = self.run(session, targets)
        dt = time.perf_counter() - t0
        for p in out:
            p.runs = session.runs - runs0
            p.seconds = dt
        return out


def run_alone(routine: Routine, board: Any, targets: Targets | None,
              base: CalibrationResult | None = None) -> CalibrationResult:
    """Standalone use: a fresh session on board (optionally starting from an earlier result's
    codes) running one routine; the result holds only that routine's parameters."""
    from ..setup import base_config

    targets = targets or Targets()
    cfg = base_config(targets)
    if base is not None:
        base.check_serial(board.info.serial)
        base.apply(cfg)
    session = Session(board, cfg)
    t0 = time.perf_counter()
    result = CalibrationResult(session.serial, targets)
    for p in routine(session, targets):
        result.add(p)
    result.seconds = time.perf_counter() - t0
    return result


def check_reach(name: str, sr: SearchResult, unit: str, clamp: bool,
                rows: Sequence[str] = (), tolerance: float | None = None,
                relative: bool = False) -> np.ndarray:
    """Neurons whose target no code reaches: CalibrationError naming them and their reachable
    range, or (clamp=True) a CalibrationWarning listing them; returns their indices (flat).
    rows: names of the rows of a stacked [k, 512] search (e.g. exc, inh).
    tolerance: also report the neurons whose final value is further than this from the target,
    or not measured (NaN, +-inf), although the search did not end at a range end: a target the
    measurement could not see is never passed off as calibrated.
    relative: tolerance is a fraction of each target (time constants: 0.05 = 5 %)."""
    unreachable = sr.unreachable.reshape(-1)
    missed = np.zeros_like(unreachable)
    if tolerance is not None:
        allowed = tolerance * np.abs(sr.target).reshape(-1) if relative else tolerance
        with np.errstate(invalid="ignore"):
            missed = ~(np.abs(sr.values - sr.target).reshape(-1) <= allowed) & ~unreachable
    bad = np.flatnonzero(unreachable | missed)
    if bad.size == 0:
        return bad

    def who(i: int) -> str:
        n = str(int(i % N_NEURONS))
        return f"{rows[i // N_NEURONS]} {n}" if rows else n

    def listing(idx: np.ndarray, what: Any) -> str:
        shown = "; ".join(what(i) for i in idx[:10])
        return shown + (f" and {idx.size - 10} more" if idx.size > 10 else "")

    tgt = sr.target.reshape(-1)
    lo, hi = sr.range_lo.reshape(-1), sr.range_hi.reshape(-1)
    got = sr.values.reshape(-1)
    parts = []
    out = np.flatnonzero(unreachable)
    if out.size:
        parts.append(f"target out of reach for {out.size} neuron(s) (" + listing(
            out, lambda i: f"{who(i)}: target {tgt[i]:.3g} {unit}, reaches "
                           f"{_fmt_range(lo[i], hi[i], got[i], tgt[i])}") + ")")
    off = np.flatnonzero(missed)
    if off.size:
        by = f"{100 * tolerance:g} %" if relative else f"{tolerance:g} {unit}"
        parts.append(f"target missed by more than {by} for {off.size} neuron(s) ("
                     + listing(off, lambda i: f"{who(i)}: target {tgt[i]:.3g} {unit}, measured "
                                              f"{got[i]:.3g}") + ")")
    msg = f"{name}: " + "; ".join(parts)
    if not clamp:
        err = CalibrationError(msg + "; choose targets inside the reachable range")
        err.neurons = bad % N_NEURONS
        raise err
    closest = " (missed: the closest code found)" if off.size else ""
    warnings.warn(msg + f"; clamped to the nearest reachable code{closest}", CalibrationWarning,
                  stacklevel=3)
    return bad


def _fmt_range(a: float, b: float, got: float, target: float) -> str:
    ends = [x for x in (a, b) if np.isfinite(x)]
    if len(ends) == 2:
        return f"{min(ends):.3g}..{max(ends):.3g}"
    side = "at most" if target > got else "at least"
    return f"{side} {got:.3g}"


def tau_bands(tau_target: np.ndarray, ratio: float = BAND_RATIO
              ) -> list[tuple[np.ndarray, float, float]]:
    """Group time-constant targets (any shape) into bands whose longest target is < ratio x
    their shortest: [(mask, shortest, longest)], shortest band first. One CADC schedule cannot
    serve 0.6 us and 17 us at once (its samples are ~1/6 of the shortest tau apart, its window
    ~5 of the longest, and the sample count is bounded), so each band gets its own."""
    t = np.asarray(tau_target, np.float64)
    u = np.unique(t)
    starts = [float(u[0])]
    while (rest := u[u >= starts[-1] * ratio]).size:  # at most log_ratio(range) bands
        starts.append(float(rest[0]))
    band = np.searchsorted(np.asarray(starts), t, side="right") - 1
    out = []
    for b in range(len(starts)):
        m = band == b
        out.append((m, float(t[m].min()), float(t[m].max())))
    return out


# ---------------------------------------------------------------------- reductions
def cadc_mean(data: EpisodeData, t_min_us: float = -np.inf, t_max_us: float = np.inf,
              channels: Sequence[int] | None = None) -> np.ndarray:
    """[512] mean CADC code over episodes and the samples in [t_min, t_max]; +inf / -inf where
    the mean is clipped at the converter's ends (no information about the true value)."""
    s = data.cadc.samples.astype(np.float64)
    t = data.cadc.rel_time_us
    sel = (t >= t_min_us) & (t <= t_max_us)  # [E, S]
    w = sel[..., None].astype(np.float64)
    m = (s * w).sum((0, 1)) / np.maximum(w.sum((0, 1)), 1.0)
    m = np.where(m >= CLIP_HI, np.inf, np.where(m <= CLIP_LO, -np.inf, m))
    return m if channels is None else m[np.asarray(channels)]


def first_spike_times(data: EpisodeData, n: int = N_NEURONS) -> np.ndarray:
    """[E, n] time (us since episode start) of the first spike per episode; NaN if none."""
    sp = data.spikes
    out = np.full((data.n_episodes, n), np.nan)
    ok = (sp.neuron >= 0) & (sp.neuron < n)
    if not ok.any():
        return out
    key = sp.episode[ok] * n + sp.neuron[ok]
    t = sp.rel_time_us[ok]
    order = np.lexsort((t, key))
    key, t = key[order], t[order]
    first = np.ones(key.size, bool)
    first[1:] = key[1:] != key[:-1]
    out.reshape(-1)[key[first]] = t[first]
    return out


def spike_intervals(data: EpisodeData, n: int = N_NEURONS) -> np.ndarray:
    """[n] median inter-spike interval (us) over all episodes; NaN with fewer than 2 spikes."""
    sp = data.spikes
    ok = (sp.neuron >= 0) & (sp.neuron < n)
    key = sp.episode[ok] * n + sp.neuron[ok]
    t = sp.rel_time_us[ok]
    order = np.lexsort((t, key))
    key, t = key[order], t[order]
    same = key[1:] == key[:-1]
    isi = np.diff(t)[same]
    nrn = (key[1:][same]) % n
    out = np.full(n, np.nan)
    if isi.size == 0:
        return out
    o = np.lexsort((isi, nrn))
    nrn, isi = nrn[o], isi[o]
    starts = np.flatnonzero(np.r_[True, nrn[1:] != nrn[:-1]])
    counts = np.diff(np.r_[starts, nrn.size])
    mid = starts + counts // 2
    med = np.where(counts % 2 == 1, isi[mid], 0.5 * (isi[mid] + isi[np.maximum(mid - 1, starts)]))
    out[nrn[starts]] = med
    return out


def stacked_results(session: Any, sr: SearchResult, target: np.ndarray, clamped: np.ndarray,
                    names: Sequence[str], cells: Sequence[int]) -> list[ParameterResult]:
    """Apply a stacked [k, 512] search (e.g. exc and inh) to its CapMem cells and give one
    ParameterResult per row, each with the neurons clamped in that row."""
    out = []
    for i, (name, cell) in enumerate(zip(names, cells, strict=True)):
        session.config.neuron_capmem[cell] = sr.codes[i]
        mine = clamped[(clamped >= i * N_NEURONS) & (clamped < (i + 1) * N_NEURONS)]
        out.append(ParameterResult(name, target[i], sr.codes[i], sr.history[0][1][i],
                                   sr.values[i], clamped=mine - i * N_NEURONS))
    return out
