"""Synaptic input strength (I_BIAS_SYN_EXC_GM / _INH_GM): equal PSP amplitude on every neuron.

Measurement: fire off, membrane at rest low in the CADC range (exc) or high (inh), so even a
strong uncalibrated PSP stays in range; EVENTS weight-63 stimulus events arrive at once (one per
stimulus driver, so the mismatch of single synapses averages out); two blocks of one program.
The PSP amplitude is the extremum of the repeat-averaged CADC trace minus the pre-stimulus
baseline, from a quadratic through the samples around it; divided by EVENTS it is the amplitude
one weight-63 event causes (the target unit). The PSP depends on tau_syn and tau_mem, so those
are calibrated first. ModelSearch in log(amplitude) against log(lin(code)) (a linear current
cell: amplitude = gain * lin(code), so the line has slope 1 whatever the gain), exc and inh
together as [2, 512]. The quadrant synapse DAC is set to targets.synapse_dac throughout (it
scales every weight).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hostdriver.chip import GlobalCell, NeuronCell
from hostdriver.program import CADCSchedule, SpikeInput
from hostdriver.traces import EpisodeData
from protocol.addressmap import CAPMEM_MAX

from .. import nominal
from ..result import CalibrationResult, ParameterResult
from ..search import ModelSearch
from ..session import Block, Session
from ..setup import EXC, INH, nominal_codes, stim_labels
from ..targets import Targets
from .base import Routine, check_reach, run_alone, stacked_results

__all__ = ["SynapseRoutine", "calibrate", "measure_strength", "psp_amplitude"]

NAMES = ("synaptic_strength", "synaptic_strength_inh")
CELLS = (NeuronCell.I_BIAS_SYN_EXC_GM, NeuronCell.I_BIAS_SYN_INH_GM)
EVENTS = 3
EXC_LEVEL = 55.0  # CADC level of the membrane at rest while measuring exc / inh PSPs
INH_LEVEL = 175.0
REPEATS = 4
FINAL_REPEATS = 8
STIM_US = 2.0
INTERVAL_US = 0.4
FIT_HALF_WIDTH = 3  # samples either side of the extremum in the quadratic


def psp_amplitude(data: EpisodeData, episodes: slice, sign: float) -> np.ndarray:
    """[512] PSP amplitude (LSB, positive) of the repeat-averaged trace of `episodes`."""
    s = data.cadc.samples[episodes].astype(np.float64)
    clipped = (s >= 254).any((0, 1)) | (s <= 0).any((0, 1))
    y = s.mean(0) * sign  # [S, 512], PSP upwards
    t = data.cadc.rel_time_us[0]
    base = y[t < STIM_US].mean(0)
    k = np.argmax(np.where(t[:, None] >= STIM_US, y, -np.inf), axis=0)
    k = np.clip(k, FIT_HALF_WIDTH, y.shape[0] - 1 - FIT_HALF_WIDTH)
    off = np.arange(-FIT_HALF_WIDTH, FIT_HALF_WIDTH + 1)
    win = y[k[None] + off[:, None], np.arange(y.shape[1])[None]]  # [W, 512]
    # least-squares quadratic in the sample offset (same design matrix for every neuron)
    a = np.stack([np.ones(off.size), off, off.astype(float) ** 2], 1)
    coef = np.linalg.lstsq(a, win, rcond=None)[0]  # [3, 512]
    c0, c1, c2 = coef
    with np.errstate(invalid="ignore", divide="ignore"):
        xv = np.where(c2 < 0, -c1 / (2 * c2), 0.0)
    xv = np.clip(xv, -1.0, 1.0)
    peak = c0 + c1 * xv + c2 * xv * xv
    amp = peak - base
    return np.where(clipped, np.inf, amp)


def _schedule(targets: Targets) -> tuple[float, CADCSchedule, float]:
    tm = float(np.max(targets.per_neuron("tau_mem")))
    ts = float(np.max(np.r_[targets.per_neuron("tau_syn_exc"), targets.per_neuron("tau_syn_inh")]))
    tp = np.log(tm / ts) * ts * tm / (tm - ts) if abs(tm - ts) > 1e-6 * tm else tm
    duration = STIM_US + 2.0 * tp + 2.0
    count = int(duration / INTERVAL_US) - 1
    return duration, CADCSchedule(interval=INTERVAL_US, count=count, start=0.2), tp


def measure_strength(session: Session, codes: np.ndarray, targets: Targets,
                     repeats: int = REPEATS) -> np.ndarray:
    """[2, 512] PSP amplitude per weight-63 event (exc, inh) with the gm cells at codes."""
    duration, cadc, _ = _schedule(targets)
    blocks = []
    for kind, level in ((EXC, EXC_LEVEL), (INH, INH_LEVEL)):
        cfg = session.config.copy()
        caps = cfg.neuron_capmem
        caps[CELLS[0]] = codes[0]
        caps[CELLS[1]] = codes[1]
        caps[NeuronCell.I_OFFSET] = 0
        # room for the PSP: exc starts low, inh high in the CADC range (nominal leak slope;
        # the baseline is measured, so only the room matters)
        shift = (level - targets.per_neuron("leak")) / nominal.LSB_PER_CODE
        caps[NeuronCell.V_LEAK] = np.clip(caps[NeuronCell.V_LEAK] + np.rint(shift), 0,
                                          CAPMEM_MAX)
        cfg.global_capmem[GlobalCell.I_BIAS_SYNAPSE_DAC] = targets.synapse_dac
        cfg.neurons.enable_fire = False
        cfg.neurons.spike_output = False
        lab = stim_labels(kind, EVENTS)
        sp = SpikeInput(np.repeat(np.arange(repeats), lab.size), np.full(repeats * lab.size,
                        STIM_US), np.tile(lab, repeats))
        blocks.append(Block(cfg, repeats, duration, spikes=sp, cadc=cadc))
    exc, inh = session.measure(blocks, "synaptic strength")
    amp = np.stack([psp_amplitude(exc, slice(None), 1.0), psp_amplitude(inh, slice(None), -1.0)])
    return amp / EVENTS


class SynapseRoutine(Routine):
    names = NAMES
    requires = ("cadc_offset", "leak", "tau_mem", "tau_syn_exc", "tau_syn_inh")

    def __init__(self, *, clamp: bool = False, search: Any = None) -> None:
        super().__init__(clamp=clamp)
        self.search = search

    def run(self, session: Session, targets: Targets) -> list[ParameterResult]:
        target = np.stack([targets.per_neuron(n) for n in NAMES])
        start = np.stack([np.full(512, nominal_codes(targets)[c]) for c in CELLS])
        search = self.search or ModelSearch(
            probes=(start,), transform="log", prior_slope=1.0, iterations=3, repeats=REPEATS,
            final_repeats=FINAL_REPEATS,
            code_transform=(nominal.log_lin_code, nominal.log_lin_code_inverse))
        sr = search.search(lambda c, r: measure_strength(session, c, targets, r), target,
                           increasing=True, start=start)
        clamped = check_reach("synaptic strength", sr, "LSB", self.clamp, rows=("exc", "inh"))
        session.config.global_capmem[GlobalCell.I_BIAS_SYNAPSE_DAC] = targets.synapse_dac
        return stacked_results(session, sr, target, clamped, NAMES, CELLS)


def calibrate(board: Any, targets: Targets | None = None, *, clamp: bool = False,
              base: CalibrationResult | None = None) -> CalibrationResult:
    """Calibrate the exc and inh input strength of all 512 neurons on board (standalone)."""
    return run_alone(SynapseRoutine(clamp=clamp), board, targets, base)
