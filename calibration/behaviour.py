"""The end-to-end check of a calibration: one LIF configuration, one input, 512 firing rates.

Every neuron gets the same input (periodic weight-63 excitatory events through the stimulus
synapses, EVENTS_PER_STEP drivers at once every `period_us`) and the same nominal LIF codes; with
a good calibration every neuron fires at the same rate. `rate_spread` returns std/mean of the 512
rates (the issue's 5 % criterion) for a calibration result, or for the uncalibrated chip (None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hostdriver.program import SpikeInput

from .result import CalibrationResult
from .session import Block, Session
from .setup import EXC, base_config, stim_labels

__all__ = ["RateCheck", "firing_rates", "rate_spread"]


@dataclass(frozen=True)
class RateCheck:
    rates_khz: np.ndarray  # [512]
    mean_khz: float
    cv: float  # std / mean across neurons
    silent: int  # neurons that never fired


def firing_rates(board: Any, result: CalibrationResult | None, *, period_us: float = 1.0,
                 drivers: int = 2, duration_us: float = 200.0, episodes: int = 2,
                 settle_us: float = 20.0) -> np.ndarray:
    """[512] firing rate (kHz, hardware time) under the reference input, one program."""
    cfg = base_config()
    if result is not None:
        result.check_serial(board.info.serial)
        result.apply(cfg)
    nrn = cfg.neurons
    nrn.enable_fire = True
    nrn.spike_output = True
    lab = stim_labels(EXC, drivers)
    times = np.arange(0.5, duration_us, period_us)
    ep = np.repeat(np.arange(episodes), times.size * lab.size)
    t = np.tile(np.repeat(times, lab.size), episodes)
    la = np.tile(lab, times.size * episodes)
    (data,) = Session(board, cfg).measure(
        [Block(cfg, episodes, duration_us + 1.0, spikes=SpikeInput(ep, t, la))], "rates")
    sp = data.spikes
    late = (sp.rel_time_us >= settle_us) & (sp.neuron >= 0)
    counts = np.bincount(sp.neuron[late], minlength=512)[:512]
    return counts / (episodes * (duration_us - settle_us)) * 1e3


def rate_spread(board: Any, result: CalibrationResult | None, **kw: Any) -> RateCheck:
    r = firing_rates(board, result, **kw)
    mean = float(r.mean())
    return RateCheck(r, mean, float(r.std() / mean) if mean > 0 else float("inf"),
                     int((r == 0).sum()))
