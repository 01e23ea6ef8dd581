"""Search algorithms against synthetic, vectorised 'chips' with known transfer curves."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.search import BinarySearch, ModelSearch, NoisyBinarySearch

N = 512
CODES = np.arange(1023)


class LinearChip:
    """value = offset + gain * code (+ noise / sqrt(repeats)); counts measure calls."""

    def __init__(self, seed: int = 0, noise: float = 0.0, sign: float = 1.0) -> None:
        rng = np.random.default_rng(seed)
        self.offset = rng.normal(0.0, 15.0, N)
        self.gain = sign * 0.39 * (1 + rng.normal(0.0, 0.05, N))
        self.noise = noise
        self.rng = np.random.default_rng(seed + 1)
        self.calls = 0

    def exact(self, codes: np.ndarray) -> np.ndarray:
        return self.offset + self.gain * codes

    def __call__(self, codes: np.ndarray, repeats: int) -> np.ndarray:
        self.calls += 1
        assert codes.dtype.kind == "i" and codes.min() >= 0 and codes.max() <= 1022
        v = self.exact(codes)
        return v + self.rng.normal(0.0, self.noise / np.sqrt(repeats), v.shape)

    def best(self, target: np.ndarray) -> np.ndarray:
        """Exhaustive optimum per element (the answer a perfect search gives)."""
        all_v = self.offset[None] + self.gain[None] * CODES[:, None]
        return np.argmin(np.abs(all_v - target[None]), axis=0)


class TauChip:
    """tau = 1 / rate, rate log-linear in the code with soft ends (like the emulator's cells)."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.gain = np.clip(np.exp(rng.normal(0, 0.2, N)), 0.4, 2.5)

    def tau(self, codes: np.ndarray) -> np.ndarray:
        x = codes / 1022.0
        s = 0.5 * (np.tanh(2.0 * (x - 0.5)) / np.tanh(1.0) + 1.0)
        return 1.0 / (self.gain / 160.0 * 1000.0 ** s)

    def __call__(self, codes: np.ndarray, repeats: int) -> np.ndarray:
        return self.tau(codes)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_binary_search_finds_the_optimum_of_every_element(sign: float) -> None:
    chip = LinearChip(seed=3, sign=sign)
    target = np.full(N, 80.0 if sign > 0 else -80.0) + np.linspace(-20, 20, N)
    r = BinarySearch().search(chip, target, increasing=sign > 0)
    best = chip.best(target)
    np.testing.assert_array_equal(np.abs(chip.exact(r.codes) - target),
                                  np.abs(chip.exact(best) - target))
    assert r.runs == chip.calls == 11
    assert not r.unreachable.any()
    np.testing.assert_allclose(r.residual, chip.exact(r.codes) - target)


def test_model_search_linear_cell_in_three_to_five_runs() -> None:
    chip = LinearChip(seed=5)
    target = np.full(N, 80.0)
    r = ModelSearch(probes=(460,), prior_slope=0.39, iterations=3).search(chip, target)
    assert r.runs <= 5
    # within one code of the exhaustive optimum (rounding of the interpolation)
    assert np.max(np.abs(r.codes - chip.best(target))) <= 1
    assert np.max(np.abs(r.residual)) <= 0.45  # half a code step
    assert r.history[0][0].tolist() == [460] * N  # first probe: the nominal code, all neurons


def test_model_search_two_probes_and_per_element_targets() -> None:
    chip = LinearChip(seed=6)
    target = np.random.default_rng(1).uniform(40, 140, N)
    r = ModelSearch(probes=(300, 700), iterations=3).search(chip, target)
    assert np.max(np.abs(r.codes - chip.best(target))) <= 1


def test_model_search_log_transform_on_soft_saturating_time_constants() -> None:
    chip = TauChip(seed=2)
    target = np.full(N, 6.0) * np.random.default_rng(0).uniform(0.7, 1.3, N)
    r = ModelSearch(probes=(491,), transform="log", prior_slope=0.00885,
                    iterations=4).search(chip, target, increasing=False)
    rel = chip.tau(r.codes) / target - 1
    # one code changes tau by ~0.9 %: the result is within about half a code
    assert np.max(np.abs(rel)) < 0.012
    assert r.runs <= 6


def test_noisy_binary_search_beats_plain_bisection_under_noise() -> None:
    target = np.full(N, 80.0)
    plain = BinarySearch().search(LinearChip(seed=7, noise=2.0), target)
    chip = LinearChip(seed=7, noise=2.0)
    noisy = NoisyBinarySearch().search(chip, target)
    err_plain = np.abs(chip.exact(plain.codes) - target)
    err_noisy = np.abs(chip.exact(noisy.codes) - target)
    assert err_noisy.mean() < 0.6 * err_plain.mean()
    assert np.percentile(err_noisy, 95) < 1.5


def test_final_value_is_a_fresh_measurement() -> None:
    chip = LinearChip(seed=8, noise=1.0)
    r = ModelSearch(probes=(460,), prior_slope=0.39, final_repeats=16).search(
        chip, np.full(N, 80.0))
    final_codes, final_values = r.history[-1]
    np.testing.assert_array_equal(final_codes, r.codes)
    np.testing.assert_array_equal(final_values, r.values)


@pytest.mark.parametrize("search", [BinarySearch(), ModelSearch(probes=(460,), prior_slope=0.39)])
def test_unreachable_targets_are_flagged_with_the_range_they_reach(search) -> None:
    chip = LinearChip(seed=9)
    target = np.full(N, 80.0)
    target[[3, 100]] = 1e4  # far above what code 1022 gives
    target[7] = -1e4
    r = search.search(chip, target)
    assert np.flatnonzero(r.unreachable).tolist() == [3, 7, 100]
    assert r.codes[3] == 1022 and r.codes[100] == 1022 and r.codes[7] == 0
    assert r.range_hi[3] == pytest.approx(chip.offset[3] + chip.gain[3] * 1022)
    assert np.isfinite(r.range_lo[7])


def test_saturated_measurements_are_bracketed_and_bisected() -> None:
    """+-inf (e.g. no spike in the window) carries a side but no magnitude."""
    chip = LinearChip(seed=10)

    def measure(codes: np.ndarray, repeats: int) -> np.ndarray:
        v = chip(codes, repeats)
        return np.where(v > 120, np.inf, np.where(v < 40, -np.inf, v))

    target = np.full(N, 80.0)
    r = ModelSearch(probes=(1000, 10), iterations=8).search(measure, target)
    assert np.isfinite(r.values).all()
    assert np.max(np.abs(r.codes - chip.best(target))) <= 1


def test_nan_measurements_carry_no_direction() -> None:
    chip = LinearChip(seed=11)
    calls = {"n": 0}

    def measure(codes: np.ndarray, repeats: int) -> np.ndarray:
        calls["n"] += 1
        v = chip(codes, repeats)
        if calls["n"] == 2:  # one failed measurement for half of the neurons
            v[::2] = np.nan
        return v

    r = ModelSearch(probes=(460,), prior_slope=0.39, iterations=4).search(
        measure, np.full(N, 80.0))
    assert np.max(np.abs(r.codes - chip.best(np.full(N, 80.0)))) <= 1


def test_search_validates_its_inputs() -> None:
    chip = LinearChip()
    with pytest.raises(ValueError, match="array"):
        BinarySearch().search(chip, 80.0)
    with pytest.raises(ValueError, match="code range"):
        BinarySearch().search(chip, np.full(N, 80.0), lo=10, hi=1023)
    with pytest.raises(ValueError, match="shape"):
        BinarySearch().search(lambda c, r: np.zeros(3), np.full(N, 80.0))
    with pytest.raises(ValueError, match="transform"):
        ModelSearch(transform="cubic")
    with pytest.raises(ValueError, match="prior_slope"):
        ModelSearch(probes=(1,))


def test_searches_work_on_any_shape() -> None:
    """Routines search exc and inh cells together as one [2, 512] array."""
    chip_a, chip_b = LinearChip(seed=12), LinearChip(seed=13, sign=-1.0)

    def measure(codes: np.ndarray, repeats: int) -> np.ndarray:
        return np.stack([chip_a(codes[0], repeats), chip_b(codes[1], repeats)])

    target = np.stack([np.full(N, 80.0), np.full(N, -80.0)])
    r = ModelSearch(probes=(460,), prior_slope=0.39).search(
        measure, target, increasing=np.array([[True], [False]]))
    assert r.codes.shape == (2, N)
    assert np.max(np.abs(r.codes[0] - chip_a.best(target[0]))) <= 1
    assert np.max(np.abs(r.codes[1] - chip_b.best(target[1]))) <= 1


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), target=st.floats(-60.0, 60.0),
       increasing=st.booleans())
def test_random_monotone_lines(seed: int, target: float, increasing: bool) -> None:
    """Any reachable target on any monotone line: bisection finds the optimum exactly, the
    model search within one code."""
    chip = LinearChip(seed=seed % 1000, sign=1.0 if increasing else -1.0)
    t = np.full(N, target + (150.0 if increasing else -250.0))
    reach = (np.minimum(chip.exact(0), chip.exact(1022)) <= t) & (
        t <= np.maximum(chip.exact(0), chip.exact(1022)))
    b = BinarySearch().search(chip, t, increasing=increasing)
    m = ModelSearch(probes=(0.3, 0.7), iterations=5).search(chip, t, increasing=increasing)
    best = chip.best(t)
    ok = reach
    np.testing.assert_allclose(np.abs(chip.exact(b.codes) - t)[ok],
                               np.abs(chip.exact(best) - t)[ok])
    assert np.max(np.abs(m.codes - best)[ok], initial=0) <= 1
    np.testing.assert_array_equal(b.unreachable, ~reach)
