"""Vectorised exponential and line fits."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.fit import fit_exponential, fit_line

N = 512


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, 30.0, 0.5)
    tau = rng.uniform(1.0, 20.0, N)
    amp = rng.uniform(-80.0, 80.0, N)
    base = rng.uniform(50.0, 100.0, N)
    return rng, t, tau, amp, base, base + amp * np.exp(-t[:, None] / tau)


def test_exact_data_recovers_all_three_parameters() -> None:
    _, t, tau, amp, base, y = _data()
    f = fit_exponential(t, y, tau_min=0.3, tau_max=60.0)
    np.testing.assert_allclose(f.tau, tau, rtol=1e-4)
    np.testing.assert_allclose(f.amplitude, amp, atol=1e-3)
    np.testing.assert_allclose(f.baseline, base, atol=1e-3)
    np.testing.assert_allclose(f(t), y, atol=1e-3)


def test_fixed_baseline_masks_and_time_offsets() -> None:
    _, t, tau, amp, base, y = _data(1)
    mask = (t[:, None] > 2.0) & (np.arange(N)[None] % 3 != 0 | (t[:, None] < 20))
    f = fit_exponential(t + 5.0, y, mask, tau_min=0.3, tau_max=60.0, baseline=base)
    np.testing.assert_allclose(f.tau, tau, rtol=1e-4)
    # amplitude refers to t = 0 of the given time axis
    np.testing.assert_allclose(f.amplitude, amp * np.exp(5.0 / tau), rtol=1e-4)


def test_noise_gives_unbiased_estimates() -> None:
    rng, t, tau, amp, base, y = _data(2)
    big = np.abs(amp) > 40
    y = y + rng.normal(0, 0.5, y.shape)
    f = fit_exponential(t, y, tau_min=0.3, tau_max=60.0)
    rel = f.tau[big] / tau[big] - 1
    assert abs(np.median(rel)) < 0.01
    assert np.std(rel) < 0.05


def test_too_few_samples_give_nan_not_garbage() -> None:
    _, t, tau, amp, base, y = _data(3)
    mask = np.ones_like(y, bool)
    mask[3:, :10] = False
    f = fit_exponential(t, y, mask, tau_min=0.3, tau_max=60.0)
    assert np.isnan(f.tau[:10]).all() and np.isfinite(f.tau[10:]).all()
    assert (f.used[:10] == 3).all()


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="samples, neurons"):
        fit_exponential(np.arange(3.0), np.arange(3.0), tau_min=1, tau_max=2)


def test_fit_line_per_column() -> None:
    x = np.arange(10.0)
    a, b = np.array([1.0, -2.0]), np.array([0.5, 3.0])
    y = a + b * x[:, None]
    fa, fb = fit_line(x, y)
    np.testing.assert_allclose(fa, a)
    np.testing.assert_allclose(fb, b)
    fa, fb = fit_line(np.zeros(10), y)  # degenerate: no spread in x
    assert np.isnan(fb).all()
