"""Threshold routine: fast membranes (short tau_mem) and targets the search ends off."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from calibration import Targets
from calibration.routines import leak, tau_mem
from calibration.routines import threshold as threshold_routine
from calibration.routines.base import CalibrationWarning, check_reach, run_alone
from calibration.search import Search, SearchResult
from protocol.errors import CalibrationError

FAST = np.arange(0, 512, 8)  # every 8th circuit gets a fast membrane


def _fast_targets() -> Targets:
    tau = np.full(512, 6.0)
    tau[FAST] = np.tile([0.6, 0.9, 1.4], 22)[:FAST.size]
    thr = 95.0 + 115.0 * ((np.arange(512) * 37) % 64) / 63.0  # 95..210 LSB, mixed
    return Targets(tau_mem=tau, threshold=thr)


@pytest.fixture(scope="module")
def fast_base(boards):
    """leak and tau_mem calibrated to _fast_targets() on emu://?seed=4."""
    t = _fast_targets()
    base = leak.calibrate(boards(4), t)
    for p in tau_mem.calibrate(boards(4), t, base=base).parameters.values():
        base.add(p)
    return base


def test_fast_membranes_reach_their_thresholds(boards, fast_base) -> None:
    """A 0.6-1.4 us membrane driven by the offset current alone rises only ~10-30 LSB (I tau / C
    at full scale): the trajectory is slowed so that every target in 95..210 is crossed. Without
    that, these neurons never spike at high targets and the search ends far off."""
    t = _fast_targets()
    assert np.max(fast_base["tau_mem"].after[FAST]) < 1.6  # the membranes are fast
    p = threshold_routine.calibrate(boards(4), t, base=fast_base)["threshold"]  # clamp=False
    assert p.clamped.size == 0
    assert np.all(np.isfinite(p.after))
    assert np.max(np.abs(p.residual[FAST])) < 1.5
    assert np.max(np.abs(p.residual)) < 1.5


class _NoSearch(Search):
    """Measures the start codes once and keeps them: a search that ends off target without
    touching a range end (what the old trajectory made ModelSearch do on fast neurons)."""

    def _run(self, h, start):
        return start.astype(np.int64), h.measure(start, 4)


def test_off_target_neurons_raise_or_are_clamped(boards, fast_base) -> None:
    t = _fast_targets()
    with pytest.raises(CalibrationError) as e:
        run_alone(threshold_routine.ThresholdRoutine(search=_NoSearch()), boards(4), t, fast_base)
    msg = str(e.value)
    assert "threshold: target missed by more than 3 LSB for" in msg
    assert "choose targets inside the reachable range" in msg
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = run_alone(threshold_routine.ThresholdRoutine(search=_NoSearch(), clamp=True),
                      boards(4), t, fast_base)
    msgs = [str(x.message) for x in w if issubclass(x.category, CalibrationWarning)]
    assert len(msgs) == 1 and "clamped to the nearest reachable code" in msgs[0]
    p = r["threshold"]
    off = np.flatnonzero(~(np.abs(p.residual) <= 3.0))
    assert off.size > 100  # nominal codes: the 95..210 targets are mostly far off
    np.testing.assert_array_equal(p.clamped, off)
    # the raising run measured independently: only neurons near the 3 LSB border may differ
    assert len(set(e.value.neurons.tolist()) ^ set(off.tolist())) <= 10


def _result(values, target, codes, lo=0, hi=1022) -> SearchResult:
    values, target, codes = (np.asarray(a, np.float64) for a in (values, target, codes))
    unreachable = ((codes <= lo) & (values > target)) | ((codes >= hi) & (values < target))
    n = values.size
    return SearchResult(codes.astype(np.int64), values, target, 3, unreachable,
                        np.full(n, np.nan), np.full(n, np.nan))


def test_check_reach_tolerance_reports_missed_and_unmeasured() -> None:
    sr = _result([100.0, 104.0, np.nan, 150.0, np.inf, 99.0],
                 [100.0, 100.0, 100.0, 160.0, 100.0, 100.0],
                 [500, 500, 500, 1022, 500, 500])
    with pytest.warns(CalibrationWarning, match="out of reach for 1 neuron"):
        assert check_reach("threshold", sr, "LSB", True).tolist() == [3]  # no tolerance
    with pytest.raises(CalibrationError) as e:
        check_reach("threshold", sr, "LSB", False, tolerance=3.0)
    assert sorted(e.value.neurons.tolist()) == [1, 2, 3, 4]
    msg = str(e.value)
    assert "target out of reach for 1 neuron(s) (3: target 160 LSB, reaches at most 150)" in msg
    assert "target missed by more than 3 LSB for 3 neuron(s) (1: target 100 LSB, measured 104;"\
        in msg and "2: target 100 LSB, measured nan" in msg and "measured inf" in msg
    with pytest.warns(CalibrationWarning, match="the closest code found"):
        got = check_reach("threshold", sr, "LSB", True, tolerance=3.0)
    assert got.tolist() == [1, 2, 3, 4]
    ok = _result([100.5, 98.0], [100.0, 100.0], [10, 20])
    assert check_reach("threshold", ok, "LSB", False, tolerance=3.0).size == 0
