"""Test helper: one (or two) neuron circuits, an FPGA input route and ADC requests."""

from __future__ import annotations

import numpy as np
from analog_chipcfg import ChipImage, lif_defaults

from emulator.analog import AnalogCore, EpisodeBatch, MismatchConfig, SimConfig
from emulator.registers import RegisterFile
from protocol.addressmap import CrossbarInput, ReadoutSource, RowMode

TICK_US = 0.008


def fpga_to_bus(img: ChipImage, hemisphere: int = 0, bus: int = 0, mask: int = 0,
                target: int = 0) -> None:
    img.node(CrossbarInput.FPGA, 4 * hemisphere + bus, mask=mask, target=target)


def synapse(img: ChipImage, hemisphere: int, row: int, col: int, weight: int, addr: int) -> None:
    img.weight[hemisphere, row, col] = weight
    img.syn_addr[hemisphere, row, col] = addr


def madc_select(img: ChipImage, circuit: int, source: ReadoutSource = ReadoutSource.MEMBRANE,
                period: int = 4) -> None:
    img.madc_config = int(circuit) | int(source) << 9 | 1 << 12 | period << 16


def single_neuron(**cells: int) -> ChipImage:
    """Circuit 0: LI neuron (no fire) with default codes; driver 0 of the top hemisphere has
    row 0 excitatory and row 1 inhibitory; FPGA events go to bus 0."""
    img = ChipImage()
    lif_defaults(img, [0], **cells)
    img.capmem_global[:, 0] = 1000
    img.neuron([0], fire=False)
    img.drive(0, 0, RowMode.EXCITATORY, RowMode.INHIBITORY)
    fpga_to_bus(img)
    madc_select(img, 0)
    return img


def core_for(img: ChipImage, *, serial: int = 1, ideal: bool = True,
             sim: SimConfig | None = None, mismatch: MismatchConfig | None = None) -> AnalogCore:
    regs = RegisterFile(serial)
    img.apply(regs)
    mm = mismatch if mismatch is not None else (MismatchConfig.ideal() if ideal else None)
    return AnalogCore(serial, regs, mm, sim)


def run(core: AnalogCore, dur: int, spikes=(), madc_times=(), cadc_times=(), key: int = 0):
    sp = np.array(spikes, np.int64).reshape(-1, 2)
    mt = np.asarray(madc_times, np.int64)
    ct = np.asarray(cadc_times, np.int64)
    b = EpisodeBatch(
        n_episodes=1, duration=np.array([dur]), spike_episode=np.zeros(len(sp), np.int64),
        spike_time=sp[:, 0], spike_label=sp[:, 1], madc_episode=np.zeros(mt.size, np.int64),
        madc_time=mt, cadc_episode=np.zeros(ct.size, np.int64), cadc_time=ct, noise_key=key)
    return core.run(b)


def madc_mv(codes: np.ndarray) -> np.ndarray:
    """Ideal MADC: code -> mV."""
    return 300.0 + 0.75 * np.asarray(codes, np.float64)
