"""Measured by behaviour: one LIF configuration, one input, the same firing rate everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.behaviour import firing_rates, rate_spread
from protocol.errors import CalibrationError


@pytest.mark.parametrize("seed", [1, 2])
def test_calibrated_neurons_fire_alike_uncalibrated_do_not(boards, full, seed: int) -> None:
    board = boards(seed)
    before = rate_spread(board, None)
    after = rate_spread(board, full(seed))
    assert after.silent == 0 and after.cv <= 0.05, after.cv
    assert before.cv > 0.15, before.cv  # visibly not: several times the calibrated spread
    assert before.cv > 4 * after.cv
    assert 50.0 < after.mean_khz < 400.0  # a physiological-looking operating point (kHz HW)


def test_weaker_input_still_agrees(boards, full) -> None:
    after = rate_spread(boards(1), full(1), period_us=2.0)
    assert after.silent == 0 and after.cv <= 0.05


def test_rates_refuse_another_chips_calibration(boards, full) -> None:
    with pytest.raises(CalibrationError, match="serial"):
        firing_rates(boards(2), full(1))
    assert np.isfinite(firing_rates(boards(2), full(2))).all()
