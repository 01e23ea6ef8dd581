"""The chip configuration every calibration measurement starts from, and its test stimulus.

All 512 circuits are LIF neurons with leak and readout on, CADC on, adaptation / exponential term
off. A small stimulus network is wired once: drivers 0..STIM_DRIVERS-1 of each hemisphere have an
excitatory row (2d, synapse address 1) and an inhibitory row (2d+1, address 2), every synapse of
those rows at weight 63; the FPGA reaches them through crossbar nodes FPGA -> bus. So one FPGA
event `stim_label(h, d, EXC)` gives every neuron of hemisphere h one weight-63 excitatory input
(through its own synapse in row 2d). Neuron spikes reach the trace through nodes
neurons -> FPGA_RECORD, labelled by circuit index (nothing is routed back onto the chip).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hostdriver.chip import ChipConfig, GlobalCell, NeuronCell, ReadoutSource, RowMode
from protocol.addressmap import (
    N_BUSES,
    N_HEMISPHERES,
    N_NEURONS,
    CrossbarInput,
    CrossbarOutput,
)

from . import nominal

__all__ = [
    "EXC",
    "INH",
    "STIM_DRIVERS",
    "STIM_WEIGHT",
    "base_config",
    "nominal_codes",
    "neuron_label_map",
    "stim_label",
    "stim_labels",
]

STIM_DRIVERS = 8  # drivers 0..7 (rows 0..15) of each hemisphere carry the calibration stimulus
STIM_WEIGHT = 63
EXC = 1  # synapse address of the excitatory stimulus rows
INH = 2  # ... of the inhibitory rows
HIGH_SHIFT = 11  # label[13:11] selects the (hemisphere, bus) crossbar output
ROW_SELECT_SHIFT = 6



def nominal_codes(targets: Any) -> dict[NeuronCell, int]:
    """The codes an uncalibrated chip gets for targets: every neuron the same code, from the
    nominal transfer curves (calibration.nominal) at the median target. Every routine's search
    starts here, so its first measurement is the honest 'before'."""
    t = targets
    gm = {
        cell: nominal.gm_code_for_psp(t.scalar(name), STIM_WEIGHT, t.synapse_dac,
                                      t.scalar(tau), t.scalar("tau_mem"))
        for cell, name, tau in ((NeuronCell.I_BIAS_SYN_EXC_GM, "synaptic_strength", "tau_syn_exc"),
                                (NeuronCell.I_BIAS_SYN_INH_GM, "synaptic_strength_inh",
                                 "tau_syn_inh"))}
    return {
        NeuronCell.V_LEAK: int(nominal.voltage_code_for_cadc(t.scalar("leak"))),
        NeuronCell.V_RESET: int(nominal.voltage_code_for_cadc(t.scalar("reset"))),
        NeuronCell.V_THRESHOLD: int(nominal.voltage_code_for_cadc(t.scalar("threshold"))),
        NeuronCell.I_BIAS_LEAK: int(nominal.tau_code(t.scalar("tau_mem"),
                                                     nominal.TAU_MEM_RANGE_US)),
        NeuronCell.I_BIAS_SYN_EXC_TAU: int(nominal.tau_code(t.scalar("tau_syn_exc"),
                                                            nominal.TAU_SYN_RANGE_US)),
        NeuronCell.I_BIAS_SYN_INH_TAU: int(nominal.tau_code(t.scalar("tau_syn_inh"),
                                                            nominal.TAU_SYN_RANGE_US)),
        **gm,
    }


def stim_label(hemisphere: int | np.ndarray, driver: int | np.ndarray,
               kind: int | np.ndarray) -> np.ndarray:
    """Event label reaching the `kind` (EXC / INH) row of stimulus driver d in hemisphere h."""
    h = np.asarray(hemisphere, np.int64)
    d = np.asarray(driver, np.int64)
    k = np.asarray(kind, np.int64)
    return ((N_BUSES * h + d % N_BUSES) << HIGH_SHIFT) | ((d >> 2) << ROW_SELECT_SHIFT) | k


def stim_labels(kind: int, drivers: int) -> np.ndarray:
    """Labels of `drivers` stimulus drivers of both hemispheres: every neuron gets `drivers`
    weight-63 inputs of `kind` when all of them are sent at once."""
    if not 1 <= drivers <= STIM_DRIVERS:
        raise ValueError(f"1..{STIM_DRIVERS} stimulus drivers, got {drivers}")
    h, d = np.meshgrid(np.arange(N_HEMISPHERES), np.arange(drivers), indexing="ij")
    return stim_label(h.reshape(-1), d.reshape(-1), kind)


def neuron_label_map() -> np.ndarray:
    """[16384] label -> circuit for the recorded neuron spikes of base_config (label = index)."""
    out = np.full(1 << 14, -1, np.int64)
    out[:N_NEURONS] = np.arange(N_NEURONS)
    return out


def base_config(targets: Any = None) -> ChipConfig:
    """The calibration starting point: the uncalibrated chip at the nominal codes for targets
    (default Targets(): every neuron the same code), stimulus wired, CADC on."""
    from .routines.refractory import counter_codes
    from .targets import Targets

    t = targets or Targets()
    cfg = ChipConfig()
    nrn = cfg.neurons
    nrn.enable_leak = True
    nrn.enable_readout = True
    nrn.enable_syn_exc = True
    nrn.enable_syn_inh = True
    nrn.readout_source = int(ReadoutSource.MEMBRANE)
    nrn.output_label = np.arange(N_NEURONS)
    count, clock = counter_codes(np.full(N_NEURONS, t.scalar("refractory")))
    nrn.refractory_count = count
    nrn.refractory_clock = clock
    caps = cfg.neuron_capmem
    for cell, codes in nominal_codes(t).items():
        caps[cell] = codes
    caps[NeuronCell.I_BIAS_READOUT] = 500
    cfg.global_capmem[GlobalCell.I_BIAS_SYNAPSE_DAC] = t.synapse_dac

    # stimulus rows: 2d excitatory (address EXC), 2d+1 inhibitory (address INH), weight 63
    drv = cfg.drivers
    syn = cfg.synapses
    for h in range(N_HEMISPHERES):
        drv.enable[h, :STIM_DRIVERS] = True
        drv.row_modes[h, 0:2 * STIM_DRIVERS:2] = int(RowMode.EXCITATORY)
        drv.row_modes[h, 1:2 * STIM_DRIVERS:2] = int(RowMode.INHIBITORY)
        syn.weights[h, :2 * STIM_DRIVERS, :] = STIM_WEIGHT
        syn.addresses[h, 0:2 * STIM_DRIVERS:2, :] = EXC
        syn.addresses[h, 1:2 * STIM_DRIVERS:2, :] = INH
    xb = cfg.crossbar
    fpga = int(CrossbarInput.FPGA)
    for out in range(N_HEMISPHERES * N_BUSES):  # FPGA -> bus (h, b) for labels with high 4h+b
        xb.enable[fpga, out] = True
        xb.mask[fpga, out] = 0x7 << HIGH_SHIFT
        xb.target[fpga, out] = out << HIGH_SHIFT
    rec = int(CrossbarOutput.FPGA_RECORD)
    for inp in range(4):  # neuron events -> trace, never onto the chip
        xb.enable[inp, rec] = True
    cfg.cadc.enable = True
    return cfg
