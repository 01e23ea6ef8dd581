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

# nominal codes of the uncalibrated chip (every neuron the same): docs/chip.md section 5
DEFAULT_SYNAPSE_DAC = 800
NOMINAL_GM = 500
NOMINAL_SYN_TAU_US = 6.0
NOMINAL_MEM_TAU_US = 6.0


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


def base_config() -> ChipConfig:
    """The calibration starting point: uncalibrated (nominal) codes, stimulus wired, CADC on."""
    cfg = ChipConfig()
    nrn = cfg.neurons
    nrn.enable_leak = True
    nrn.enable_readout = True
    nrn.enable_syn_exc = True
    nrn.enable_syn_inh = True
    nrn.readout_source = int(ReadoutSource.MEMBRANE)
    nrn.output_label = np.arange(N_NEURONS)
    caps = cfg.neuron_capmem
    caps[NeuronCell.V_LEAK] = nominal.voltage_code_for_cadc(80.0)
    caps[NeuronCell.V_RESET] = nominal.voltage_code_for_cadc(80.0)
    caps[NeuronCell.V_THRESHOLD] = nominal.voltage_code_for_cadc(150.0)
    caps[NeuronCell.I_BIAS_LEAK] = nominal.tau_code(NOMINAL_MEM_TAU_US, nominal.TAU_MEM_RANGE_US)
    tau_syn = nominal.tau_code(NOMINAL_SYN_TAU_US, nominal.TAU_SYN_RANGE_US)
    caps[NeuronCell.I_BIAS_SYN_EXC_TAU] = tau_syn
    caps[NeuronCell.I_BIAS_SYN_INH_TAU] = tau_syn
    caps[NeuronCell.I_BIAS_SYN_EXC_GM] = NOMINAL_GM
    caps[NeuronCell.I_BIAS_SYN_INH_GM] = NOMINAL_GM
    caps[NeuronCell.I_BIAS_READOUT] = 500
    cfg.global_capmem[GlobalCell.I_BIAS_SYNAPSE_DAC] = DEFAULT_SYNAPSE_DAC

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
