"""Vectorised fits over all neurons at once: exponential relaxations and straight lines.

`fit_exponential` fits y(t) = baseline + amplitude * exp(-t / tau) to every column of a
[samples, neurons] array by variable projection: for a candidate tau the best baseline and
amplitude are a closed-form weighted least-squares solution, so only tau is searched, on a
log-spaced grid per neuron refined twice around the best point with a parabola through the
residuals. No per-neuron Python loop, no iterative optimiser that can diverge; samples can be
masked per neuron (clipped ADC codes, samples after a spike) and the baseline can be fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ExpFit", "fit_exponential", "fit_line"]


@dataclass(frozen=True)
class ExpFit:
    """Per-neuron parameters of y = baseline + amplitude * exp(-t / tau); NaN where unfit."""

    tau: np.ndarray
    amplitude: np.ndarray
    baseline: np.ndarray
    rms: np.ndarray  # residual rms over the used samples
    used: np.ndarray  # samples used per neuron

    def __call__(self, t: np.ndarray) -> np.ndarray:
        """Model values at times t ([S] or [S, N]) -> [S, N]."""
        t = np.asarray(t, np.float64)
        if t.ndim == 1:
            t = t[:, None]
        return self.baseline + self.amplitude * np.exp(-t / self.tau)


def _sse(t: np.ndarray, y: np.ndarray, w: np.ndarray, tau: np.ndarray,
         baseline: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Residual sum of squares, amplitude, baseline for taus [G, N] (t, y, w: [S, N])."""
    e = np.exp(-t[None] / tau[:, None, :])  # [G, S, N]
    if baseline is not None:
        r = y - baseline  # [S, N]
        see = np.einsum("gsn,sn->gn", e * e, w)
        sey = np.einsum("gsn,sn->gn", e, w * r)
        amp = sey / np.maximum(see, 1e-300)
        sse = (w * r * r).sum(0)[None] - amp * sey
        return sse, amp, np.broadcast_to(baseline, amp.shape)
    sw = w.sum(0)[None]
    sy = (w * y).sum(0)[None]
    syy = (w * y * y).sum(0)[None]
    se = np.einsum("gsn,sn->gn", e, w)
    see = np.einsum("gsn,sn->gn", e * e, w)
    sey = np.einsum("gsn,sn->gn", e, w * y)
    det = sw * see - se * se
    ok = det > 1e-12 * np.maximum(sw * see, 1e-300)
    det = np.where(ok, det, 1.0)
    amp = np.where(ok, (sw * sey - se * sy) / det, np.nan)
    base = np.where(ok, (see * sy - se * sey) / det, np.nan)
    sse = syy - base * sy - amp * sey
    return np.where(ok, sse, np.inf), amp, base


def _golden(f: Any, a: np.ndarray, b: np.ndarray, iterations: int = 28) -> np.ndarray:
    """Vectorised golden-section minimisation of f over [a, b] per element (f: [N] -> [N])."""
    r = (np.sqrt(5.0) - 1.0) / 2.0
    c = b - r * (b - a)
    d = a + r * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iterations):
        left = fc < fd  # the minimum lies in [a, d]
        a_new = np.where(left, a, c)
        b_new = np.where(left, d, b)
        c_new = np.where(left, b_new - r * (b_new - a_new), d)
        d_new = np.where(left, c, a_new + r * (b_new - a_new))
        f_new = f(np.where(left, c_new, d_new))
        fc, fd = np.where(left, f_new, fd), np.where(left, fc, f_new)
        a, b, c, d = a_new, b_new, c_new, d_new
    return 0.5 * (a + b)


def fit_exponential(t: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None, *,
                    tau_min: float | np.ndarray, tau_max: float | np.ndarray,
                    baseline: np.ndarray | None = None, weights: np.ndarray | None = None,
                    grid: int = 40, min_samples: int = 4) -> ExpFit:
    """Fit y = baseline + amplitude * exp(-t / tau) per column.

    t: [S] or [S, N] times (any unit; tau comes out in it). y: [S, N] values. mask: [S, N] bool of
    samples to use (default all finite). tau_min / tau_max: search range (scalars or [N]).
    baseline: [N] known baseline (then only amplitude and tau are fitted). weights: [S, N]
    optional sample weights (e.g. number of averaged repeats). Neurons with fewer than
    min_samples usable samples get NaN.
    """
    y = np.asarray(y, np.float64)
    if y.ndim != 2:
        raise ValueError(f"y must be [samples, neurons], got shape {y.shape}")
    s, n = y.shape
    t = np.asarray(t, np.float64)
    t = np.broadcast_to(t[:, None] if t.ndim == 1 else t, (s, n))
    m = np.isfinite(y) & np.isfinite(t)
    if mask is not None:
        m &= np.asarray(mask, bool)
    w = m.astype(np.float64) if weights is None else np.where(m, np.asarray(weights, float), 0.0)
    yz = np.where(m, y, 0.0)
    tz = np.where(m, t, 0.0)
    # shift time so the first used sample is at 0: keeps exp() in range, amplitude at that time
    t0 = np.where(m, t, np.inf).min(0)
    t0 = np.where(np.isfinite(t0), t0, 0.0)
    tz = np.where(m, tz - t0, 0.0)
    base = None if baseline is None else np.broadcast_to(np.asarray(baseline, float), (n,))
    lo = np.log(np.broadcast_to(np.asarray(tau_min, float), (n,)))
    hi = np.log(np.broadcast_to(np.asarray(tau_max, float), (n,)))
    frac = np.linspace(0.0, 1.0, grid)[:, None]
    lg = lo[None] + (hi - lo)[None] * frac  # [G, N]
    sse, _, _ = _sse(tz, yz, w, np.exp(lg), base)
    k = np.argmin(np.where(np.isfinite(sse), sse, np.inf), axis=0)
    idx = np.arange(n)
    a = lg[np.clip(k - 1, 0, grid - 1), idx]
    b = lg[np.clip(k + 1, 0, grid - 1), idx]
    best = _golden(lambda x: _sse(tz, yz, w, np.exp(x)[None], base)[0][0], a, b)
    tau = np.exp(best)
    sse1, amp, bl = _sse(tz, yz, w, tau[None], base)
    used = m.sum(0)
    ok = (used >= min_samples) & np.isfinite(sse1[0])
    rms = np.sqrt(np.maximum(sse1[0], 0.0) / np.maximum(w.sum(0), 1e-300))
    amp_t0 = amp[0] * np.exp(t0 / tau)  # amplitude referred to t = 0 of the caller's time axis
    nan = np.full(n, np.nan)
    return ExpFit(
        tau=np.where(ok, tau, nan), amplitude=np.where(ok, amp_t0, nan),
        baseline=np.where(ok, bl[0], nan), rms=np.where(ok, rms, nan), used=used,
    )


def fit_line(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares y = a + b x per column ([S, N] or x [S]); returns (a, b), NaN if degenerate."""
    y = np.asarray(y, np.float64)
    x = np.broadcast_to(np.asarray(x, np.float64).reshape(y.shape[0], -1), y.shape)
    m = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        m &= mask
    w = m.astype(np.float64)
    sw = w.sum(0)
    mx = (w * np.where(m, x, 0)).sum(0) / np.maximum(sw, 1)
    my = (w * np.where(m, y, 0)).sum(0) / np.maximum(sw, 1)
    dx = np.where(m, x - mx, 0)
    sxx = (dx * dx).sum(0)
    sxy = (dx * np.where(m, y - my, 0)).sum(0)
    ok = (sw >= 2) & (sxx > 0)
    b = np.where(ok, sxy / np.where(ok, sxx, 1.0), np.nan)
    return np.where(ok, my - b * mx, np.nan), b
