"""CADC per-channel offsets: every column reads the same potential as the same code.

The 512 CADC channels each have their own offset (and gain); the neurons' potentials have their
own offsets too, so no CADC reading alone can tell the two apart. The MADC can: it is one
converter for all neurons, so its code for a potential is the same whichever neuron it reads.
Measurement: the top and bottom circuit of every column are merged into one neuron (one common
membrane, seen by both CADC channels of the column), resting at its leak potential near the
reference level (targets.cadc_reference). Episode c (256 of them, one program) points the MADC at
column c; the CADC samples all channels at the same times. Channel n's deviation is
d_n = CADC_n - MADC_col(n) / 4 (the MADC resolves 4x finer), minus the mean over channels; the
offset register takes -round(d_n). An independent second program verifies (`after`).

The MADC's own offset and gain are common to all channels and drop out of the deviations; the
absolute scale is the average channel's. Channel gain mismatch is not correctable with an
offset register: offsets are matched at the reference level, which is why it sits mid-range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hostdriver.chip import NeuronCell, ReadoutSource
from hostdriver.program import CADCSchedule, EpisodeWrites, MADCSchedule
from protocol.addressmap import N_COLUMNS, N_NEURONS, Block, address

from .. import nominal
from ..result import CalibrationResult, ParameterResult
from ..session import Block as MBlock
from ..session import Session
from ..targets import Targets
from .base import Routine, run_alone

__all__ = ["CADCRoutine", "calibrate", "measure_deviation"]

MADC_PERIOD_TICKS = 16
SAMPLES = 8
SAMPLE_START_US = 0.1
DURATION_US = 1.2
OFFSET_MIN, OFFSET_MAX = -128, 127


def measure_deviation(session: Session, offsets: np.ndarray, level: float) -> np.ndarray:
    """[512] deviation (CADC LSB) of each channel's reading of its column's membrane from the
    MADC-referenced average channel, with CADC offset registers = offsets."""
    cfg = session.config.copy()
    cfg.cadc.offsets = offsets
    cfg.neurons.connect_other_hemisphere = True
    cfg.neurons.enable_fire = False
    cfg.neurons.spike_output = False
    cfg.neurons.readout_source = int(ReadoutSource.MEMBRANE)
    cfg.neuron_capmem[NeuronCell.V_LEAK] = nominal.voltage_code_for_cadc(level)
    cfg.neuron_capmem[NeuronCell.I_OFFSET] = 0
    cfg.madc.enable = True
    cfg.madc.source = int(ReadoutSource.MEMBRANE)
    cfg.madc.period = MADC_PERIOD_TICKS
    cfg.madc.neuron = 0
    word0 = int(cfg.madc.enable) << 12 | int(cfg.madc.source) << 9 | MADC_PERIOD_TICKS << 16
    columns = np.arange(N_COLUMNS)
    writes = EpisodeWrites(columns, np.full(N_COLUMNS, address(Block.MADC_CONFIG, 0)),
                           word0 | columns)
    interval = MADC_PERIOD_TICKS / 125.0  # us: CADC samples at the MADC sample times
    (data,) = session.measure([MBlock(
        cfg, N_COLUMNS, DURATION_US, writes=writes,
        cadc=CADCSchedule(interval=interval, count=SAMPLES, start=SAMPLE_START_US),
        madc=MADCSchedule(count=SAMPLES, start=SAMPLE_START_US))], "cadc offsets")
    # channel n is read in episode n % 256 (its column's MADC episode)
    cadc = data.cadc.samples.astype(np.float64).mean(axis=1)  # [256 episodes, 512]
    madc = data.madc.values.astype(np.float64).mean(axis=1)  # [256]
    n = np.arange(N_NEURONS)
    reading = cadc[n % N_COLUMNS, n]
    clipped = (reading <= 0.5) | (reading >= nominal.CADC_MAX - 0.5)
    dev = reading - madc[n % N_COLUMNS] / nominal.MADC_PER_CADC
    dev = np.where(clipped, np.nan, dev)
    return dev - np.nanmean(dev)


class CADCRoutine(Routine):
    names = ("cadc_offset",)
    requires = ()

    def run(self, session: Session, targets: Targets) -> list[ParameterResult]:
        level = float(targets.cadc_reference)
        zero = np.zeros(N_NEURONS, np.int64)
        before = measure_deviation(session, zero, level)
        if np.isnan(before).any():
            bad = np.flatnonzero(np.isnan(before))
            raise_clipped(bad, level)
        offsets = np.clip(-np.rint(before), OFFSET_MIN, OFFSET_MAX).astype(np.int64)
        after = measure_deviation(session, offsets, level)
        session.config.cadc.offsets = offsets
        return [ParameterResult("cadc_offset", np.zeros(N_NEURONS), offsets, before, after,
                                note=f"matched at CADC level {level:g}")]


def raise_clipped(bad: np.ndarray, level: float) -> None:
    from protocol.errors import CalibrationError

    err = CalibrationError(
        f"cadc_offset: channels {bad[:10].tolist()}{' ...' if bad.size > 10 else ''} read a "
        f"potential near CADC level {level:g} at the end of their range (0 or 255); choose "
        "targets.cadc_reference nearer the middle (30..210)")
    err.neurons = bad
    raise err


def calibrate(board: Any, targets: Targets | None = None, *,
              base: CalibrationResult | None = None) -> CalibrationResult:
    """Calibrate the 512 CADC channel offsets of board (standalone)."""
    return run_alone(CADCRoutine(), board, targets, base)
