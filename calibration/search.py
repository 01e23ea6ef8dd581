"""Pluggable vectorised searches over the 10-bit CapMem range (calix's "algorithms").

A search finds, for every element of an array (one per neuron, or any shape), the integer code
0..1022 whose measured value is closest to that element's target. It only sees a callback::

    measure(codes, repeats) -> values      # codes: int array; values: float array, same shape

which must configure *all* elements at once and measure them in one board program (`repeats`
independent repetitions averaged, e.g. episodes). Values must be monotone in the code (per element
`increasing` says in which direction); +-inf may stand for "saturated beyond the measurable range"
and NaN for "no information" (bisection treats it as below target, ModelSearch ignores it).

Three algorithms:
- BinarySearch: bisection, ceil(log2(1023)) = 10 runs plus one final measurement.
- NoisyBinarySearch: bisection whose later, finer steps average more repetitions, then a local
  line through the measurements near the result picks the code (noise-robust), then one final
  measurement with many repetitions.
- ModelSearch: probe 2 codes, fit a per-element line in a transformed value space (identity for
  potentials, log for time constants), predict, measure, refine by secant / regula falsi on the
  closest bracketing pair; 3-5 runs for smooth transfer curves.

Every search ends with an independent measurement at the chosen codes: the reported value and
residual are never the "best of many noisy draws" (that would understate the residual).
Targets no code reaches are flagged in `SearchResult.unreachable` with the values measured at the
range ends, for the caller to raise on or clamp (see calibration.routines).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol.addressmap import CAPMEM_MAX

__all__ = [
    "BinarySearch",
    "Measure",
    "ModelSearch",
    "NoisyBinarySearch",
    "Search",
    "SearchResult",
]

Measure = Callable[[np.ndarray, int], np.ndarray]
MAX_STEP = 300  # codes an unbracketed extrapolation may move in one step


@dataclass
class SearchResult:
    """Outcome of a search; every array has the shape of the target."""

    codes: np.ndarray  # int64 chosen codes
    values: np.ndarray  # float64 value measured at `codes` (final, independent measurement)
    target: np.ndarray  # float64
    runs: int  # measure() calls
    unreachable: np.ndarray  # bool: no code in [lo, hi] reaches the target
    range_lo: np.ndarray  # value measured at code lo where measured, else NaN
    range_hi: np.ndarray  # value measured at code hi where measured, else NaN
    history: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)

    @property
    def residual(self) -> np.ndarray:
        return self.values - self.target


class _History:
    """Measured (code, value) pairs per element, plus the bookkeeping shared by all searches."""

    def __init__(self, measure: Measure, target: np.ndarray, increasing: np.ndarray,
                 lo: np.ndarray, hi: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]):
        self._measure = measure
        self.shape = target.shape
        self.target = target.reshape(-1)
        self.sign = np.where(increasing.reshape(-1), 1.0, -1.0)
        self.lo = lo.reshape(-1)
        self.hi = hi.reshape(-1)
        self.transform = transform
        self.codes: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.runs = 0
        t = transform(self.target)
        if not np.all(np.isfinite(t)):
            bad = np.flatnonzero(~np.isfinite(t))
            raise ValueError(f"targets {self.target[bad[:5]]} have no finite transformed value")
        self.t_target = t

    def measure(self, codes: np.ndarray, repeats: int) -> np.ndarray:
        codes = np.clip(np.rint(codes).astype(np.int64), self.lo, self.hi)
        values = np.asarray(self._measure(codes.reshape(self.shape), int(repeats)), np.float64)
        if values.shape != self.shape:
            raise ValueError(f"measure returned shape {values.shape}, expected {self.shape}")
        values = values.reshape(-1)
        self.runs += 1
        self.codes.append(codes)
        self.values.append(values)
        return values

    def g(self, values: np.ndarray) -> np.ndarray:
        """Signed distance to target in transformed space, increasing with the code (NaN: no
        information; +-inf: saturated on that side)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            tv = self.transform(values)
            return self.sign * (tv - self.t_target)

    def above(self, values: np.ndarray) -> np.ndarray:
        return self.g(values) >= 0

    def stack(self) -> tuple[np.ndarray, np.ndarray]:
        return np.stack(self.codes), np.stack([self.g(v) for v in self.values])

    def ends(self) -> tuple[np.ndarray, np.ndarray]:
        """Value measured at lo / hi (last measurement there), NaN where never measured."""
        r_lo = np.full(self.target.size, np.nan)
        r_hi = np.full(self.target.size, np.nan)
        for c, v in zip(self.codes, self.values, strict=True):
            r_lo = np.where(c == self.lo, v, r_lo)
            r_hi = np.where(c == self.hi, v, r_hi)
        return r_lo, r_hi

    def result(self, codes: np.ndarray, values: np.ndarray) -> SearchResult:
        g = self.g(values)
        r_lo, r_hi = self.ends()
        # unreachable: at a range end and still on the wrong side of the target there (g grows
        # with the code whatever the direction of the values)
        unreachable = ((codes <= self.lo) & (g > 0)) | ((codes >= self.hi) & (g < 0))
        s = self.shape
        return SearchResult(
            codes=codes.reshape(s), values=values.reshape(s), target=self.target.reshape(s),
            runs=self.runs, unreachable=unreachable.reshape(s), range_lo=r_lo.reshape(s),
            range_hi=r_hi.reshape(s),
            history=[(c.reshape(s), v.reshape(s)) for c, v in
                     zip(self.codes, self.values, strict=True)],
        )


def _arrays(target: Any, increasing: Any, lo: Any, hi: Any) -> tuple[np.ndarray, ...]:
    t = np.asarray(target, np.float64)
    inc = np.broadcast_to(np.asarray(increasing, bool), t.shape).copy()
    lo_a = np.broadcast_to(np.asarray(lo, np.int64), t.shape).copy()
    hi_a = np.broadcast_to(np.asarray(hi, np.int64), t.shape).copy()
    if np.any(lo_a < 0) or np.any(hi_a > CAPMEM_MAX) or np.any(lo_a > hi_a):
        raise ValueError(f"code range must satisfy 0 <= lo <= hi <= {CAPMEM_MAX}")
    return t, inc, lo_a, hi_a


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _log(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.where(x == np.inf, np.inf,
                                                                           -np.inf))


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"linear": _identity, "log": _log}


class Search(ABC):
    """A search algorithm: `search(measure, target, increasing=..., lo=..., hi=...)`."""

    transform: str = "linear"

    def search(self, measure: Measure, target: Any, *, increasing: Any = True, lo: Any = 0,
               hi: Any = CAPMEM_MAX, start: Any = None) -> SearchResult:
        """Codes whose measured value is closest to target (array or scalar broadcast).

        increasing: per element (or scalar) whether the value grows with the code.
        lo, hi: code range per element (or scalar). start: initial guess (ModelSearch uses it
        as its first probe).
        """
        t, inc, lo_a, hi_a = _arrays(target, increasing, lo, hi)
        if t.ndim == 0:
            raise ValueError("target must be an array (use np.full for one value per element)")
        h = _History(measure, t, inc, lo_a, hi_a, TRANSFORMS[self.transform])
        self._shape = t.shape
        st = None if start is None else np.broadcast_to(np.asarray(start), t.shape).reshape(-1)
        codes, values = self._run(h, st)
        return h.result(codes, values)

    @abstractmethod
    def _run(self, h: _History, start: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Return final (codes, values) as flat arrays."""


def _bisect(h: _History, repeats: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Bisection on the code: returns (c, done) with the first code whose value is above the
    target (or hi)."""
    lo = h.lo.copy()
    hi = h.hi.copy()
    steps = int(np.ceil(np.log2(max(int((h.hi - h.lo).max()) + 1, 2))))
    for i in range(steps):
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) // 2
        r = repeats[min(i, len(repeats) - 1)] if repeats else 1
        v = h.measure(np.where(active, mid, lo), r)
        up = h.above(v)
        hi = np.where(active & up, mid, hi)
        lo = np.where(active & ~up, mid + 1, lo)
    return lo, hi


class BinarySearch(Search):
    """Plain bisection: ~10 runs over the full range, then one final measurement.

    The result is the better of c and its neighbour below c (for increasing values) where the
    neighbour was measured during the bisection.
    """

    def __init__(self, repeats: int = 1, final_repeats: int | None = None) -> None:
        self.repeats = int(repeats)
        self.final_repeats = int(final_repeats or repeats)

    def _run(self, h: _History, start: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        c, _ = _bisect(h, [self.repeats])
        codes, g = h.stack()
        # neighbour on the other side of the boundary, if it was measured
        nb = c - 1
        g_nb = np.full(c.size, np.nan)
        g_c = np.full(c.size, np.nan)
        for k in range(codes.shape[0]):
            g_nb = np.where(codes[k] == nb, g[k], g_nb)
            g_c = np.where(codes[k] == c, g[k], g_c)
        better_nb = np.isfinite(g_nb) & np.isfinite(g_c) & (np.abs(g_nb) < np.abs(g_c))
        choice = np.where(better_nb & (nb >= h.lo), nb, c)
        v = h.measure(choice, self.final_repeats)
        return choice, v


class NoisyBinarySearch(Search):
    """Bisection tolerant of measurement noise.

    repeats: repetitions per bisection step (the last entry repeats); later steps decide between
    nearer codes, where noise matters most, so they average more. After bisecting, a line through
    the measurements within `window` codes of the result (least squares, all steps, weighted by
    their repeats) gives the code where it crosses the target; one final measurement with
    final_repeats reports the value there.
    """

    def __init__(self, repeats: Sequence[int] = (1, 1, 1, 1, 2, 2, 4, 4, 8, 8),
                 final_repeats: int = 16, window: int = 8) -> None:
        self.repeats = tuple(int(r) for r in repeats)
        self.final_repeats = int(final_repeats)
        self.window = int(window)

    def _run(self, h: _History, start: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        c, _ = _bisect(h, self.repeats)
        codes = np.stack(h.codes).astype(np.float64)
        vals = np.stack(h.values)
        with np.errstate(invalid="ignore", divide="ignore"):
            y = h.sign * (h.transform(vals) - h.t_target)  # g without the NaN -> -inf mapping
        w = np.array([self.repeats[min(i, len(self.repeats) - 1)] for i in range(len(h.codes))],
                     np.float64)[:, None] * np.ones_like(y)
        near = (np.abs(codes - c) <= self.window) & np.isfinite(y)
        w = np.where(near, w, 0.0)
        y0 = np.where(near, y, 0.0)
        sw = w.sum(0)
        mx = (w * codes).sum(0) / np.maximum(sw, 1e-300)
        my = (w * y0).sum(0) / np.maximum(sw, 1e-300)
        sxx = (w * (codes - mx) ** 2).sum(0)
        sxy = (w * (codes - mx) * (y0 - my)).sum(0)
        slope = sxy / np.where(sxx > 0, sxx, np.inf)
        ok = (slope > 0) & (sw > 0) & (sxx > 0)
        cross = np.where(ok, mx - my / np.where(ok, slope, 1.0), c)
        # stay within one window of the bisection result: a bad local fit never throws it away
        choice = np.clip(np.rint(cross), c - self.window, c + self.window)
        choice = np.clip(choice, h.lo, h.hi).astype(np.int64)
        v = h.measure(choice, self.final_repeats)
        return choice, v


class ModelSearch(Search):
    """Model-based prediction: probes, a per-element line in `transform` space, secant refinement.

    probes: measured first: floats in [0, 1] are fractions of the code range, other values codes
    (scalar or per element); `start` replaces the first.
    iterations: further predict-and-measure steps at most; an element stops when its prediction
    repeats a code it already holds or its value is within tol (in value units) of the target.
    repeats / final_repeats: repetitions per step / for the final measurement.
    prior_slope: expected |d transform(value) / d code| (scalar or per element) used while an
    element has fewer than two finite points: with it one probe suffices (a linear cell is then
    found in ~3 runs: probe, prediction, correction).
    code_transform: (f, f_inverse) applied to codes before fitting lines, for cells whose
    nominal shape is known (e.g. log of a linear current cell's lin(code): then log(value) is
    linear in f(code) with slope 1 whatever the cell's gain).
    """

    def __init__(self, probes: Sequence[Any] = (0.3, 0.7), transform: str = "linear",
                 iterations: int = 4, tol: float = 0.0, repeats: int = 1,
                 final_repeats: int | None = None, prior_slope: Any = None,
                 code_transform: tuple[Callable[[np.ndarray], np.ndarray],
                                       Callable[[np.ndarray], np.ndarray]] | None = None
                 ) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {sorted(TRANSFORMS)}, got {transform!r}")
        if len(probes) < (1 if prior_slope is not None else 2):
            raise ValueError("ModelSearch needs two probe codes, or one and a prior_slope")
        self.probes = tuple(probes)
        self.transform = transform
        self.iterations = int(iterations)
        self.tol = float(tol)
        self.repeats = int(repeats)
        self.final_repeats = int(final_repeats or repeats)
        self.prior_slope = prior_slope
        self.code_transform = code_transform

    def _probe_codes(self, h: _History, start: np.ndarray | None) -> list[np.ndarray]:
        """Probe codes: a float <= 1 is a fraction of each element's range, anything else a
        code (scalar or per-element array); `start` replaces the first probe."""
        out = []
        for i, p in enumerate(self.probes):
            if i == 0 and start is not None:
                out.append(np.asarray(start, np.float64))
            elif isinstance(p, float) and 0.0 <= p <= 1.0:
                out.append(h.lo + p * (h.hi - h.lo))
            else:
                out.append(np.broadcast_to(np.asarray(p, np.float64), self._shape).reshape(-1))
        return out

    def _x(self, codes: np.ndarray) -> np.ndarray:
        return codes if self.code_transform is None else self.code_transform[0](codes)

    def _code(self, x: np.ndarray) -> np.ndarray:
        if self.code_transform is None:
            return x
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return self.code_transform[1](x)

    def _predict(self, h: _History) -> tuple[np.ndarray, np.ndarray]:
        """(next code, converged) from all measurements so far. Lines are fitted in
        (code_transform(code), transform(value)) space; brackets and steps live in code space."""
        codes, g = h.stack()  # [H, n]
        codes = codes.astype(np.float64)
        xs = self._x(codes)
        n = codes.shape[1]
        idx = np.arange(n)
        fin = np.isfinite(g) & np.isfinite(xs)
        below = (g < 0)
        above = (g >= 0)
        # closest point below (largest g < 0) and above (smallest g >= 0)
        # (a saturated measurement, g = -inf / +inf, still counts as a point on its side)
        gb = np.where(below, np.maximum(g, -1e300), -np.inf)
        ga = np.where(above, np.minimum(g, 1e300), np.inf)
        ib = np.argmax(gb, axis=0)
        ia = np.argmin(ga, axis=0)
        # only saturated points on a side: the one nearest the other side (by code)
        ib = np.where(np.isinf(g[ib, idx]), np.argmax(np.where(below, codes, -np.inf), axis=0), ib)
        ia = np.where(np.isinf(g[ia, idx]), np.argmin(np.where(above, codes, np.inf), axis=0), ia)
        has_b = below.any(0)
        has_a = above.any(0)
        cb, gbv, xb = codes[ib, idx], g[ib, idx], xs[ib, idx]
        ca, gav, xa = codes[ia, idx], g[ia, idx], xs[ia, idx]
        # bracketed with finite ends: regula falsi (or the slope step below)
        br = has_b & has_a & np.isfinite(gbv) & np.isfinite(gav) & (gav != gbv)
        with np.errstate(invalid="ignore", divide="ignore"):
            interp = self._code(xb + (0.0 - gbv) * (xa - xb) / (gav - gbv))
        dist = np.where(fin, np.abs(g), np.inf)
        i0 = np.argmin(dist, axis=0)
        c0, g0, x0 = codes[i0, idx], g[i0, idx], xs[i0, idx]
        b_lo, b_hi = np.minimum(ca, cb), np.maximum(ca, cb)
        # from the point closest to the target along the least-squares slope of all finite
        # points (a two-point secant of nearby codes is at the mercy of noise)
        w = fin.astype(np.float64)
        gz = np.where(fin, g, 0.0)
        xz = np.where(fin, xs, 0.0)
        sw = np.maximum(w.sum(0), 1.0)
        mx = (w * xz).sum(0) / sw
        mg = (w * gz).sum(0) / sw
        sxx = (w * (xz - mx) ** 2).sum(0)
        sxy = (w * (xz - mx) * (gz - mg)).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(sxx > 0, sxy / sxx, np.nan)
        if self.prior_slope is not None:
            # too few points, or noise that makes nearby points look flat or reversed: a slope
            # far from the prior would send the next code far off, so it is kept within 4x
            prior = np.broadcast_to(np.asarray(self.prior_slope, np.float64),
                                    self._shape).reshape(-1)
            slope = np.where(np.isfinite(slope) & (slope > 0),
                             np.clip(slope, prior / 4.0, prior * 4.0), prior)
        with np.errstate(invalid="ignore", divide="ignore"):
            extrap = self._code(x0 - g0 / slope)
        extrap = np.clip(extrap, c0 - MAX_STEP, c0 + MAX_STEP)
        good_slope = np.isfinite(slope) & (slope > 0)
        # bracketed: the same step from the point nearest the target when it lands inside the
        # bracket (regula falsi alone stalls when one end stays put; a secant through two
        # nearby noisy points is worse), else regula falsi
        inside = good_slope & np.isfinite(extrap) & (extrap > b_lo) & (extrap < b_hi)
        interp = np.where(inside, extrap, interp)
        # without a usable slope: jump to the range end on the side of the target
        all_below = ~has_a
        fallback = np.where(all_below, h.hi, h.lo).astype(np.float64)
        # bracketed predictions stay inside the bracket: as above when both ends are finite,
        # else the slope's prediction if it lands inside, else bisection (saturated ends)
        bracket = has_a & has_b
        pred = np.where(br, interp, np.where(good_slope, extrap, fallback))
        outside = ~np.isfinite(pred) | (pred <= b_lo) | (pred >= b_hi)
        pred = np.where(bracket & ~br & (~good_slope | outside), 0.5 * (ca + cb), pred)
        pred = np.where(bracket, np.clip(pred, b_lo, b_hi), pred)
        pred = np.where(~bracket & has_a & good_slope, np.minimum(pred, ca), pred)
        pred = np.where(~bracket & has_b & good_slope, np.maximum(pred, cb), pred)
        pred = np.clip(np.where(np.isfinite(pred), pred, fallback), h.lo, h.hi)
        # nothing but failed measurements (NaN): measure the same code again
        pred = np.where(has_a | has_b, pred, codes[-1])
        nxt = np.rint(pred)
        # converged: the code is already measured, or the last value is within tol
        last_c = codes[-1]
        last_v = h.values[-1]
        held = np.zeros(n, bool)
        for k in range(codes.shape[0]):
            held |= codes[k] == nxt
        close = np.abs(last_v - h.target) <= self.tol
        # bracket of adjacent codes: nothing between them to try
        tight = bracket & (np.abs(ca - cb) <= 1)
        conv = held | close | tight
        nxt = np.where(close, last_c, nxt)
        return nxt, conv

    def _run(self, h: _History, start: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        for c in self._probe_codes(h, start):
            h.measure(c, self.repeats)
        for _ in range(self.iterations):
            nxt, conv = self._predict(h)
            if conv.all():
                break
            h.measure(nxt, self.repeats)
        choice, _ = self._predict(h)
        v = h.measure(choice, self.final_repeats)
        return choice.astype(np.int64), v
