"""The whole host model against the real emulated chip (emu://): a config built from coordinates
routes FPGA input to one neuron through a driver, a row and address-matched synapses; episodes
are independent; the trace comes back as arrays keyed by neuron."""

from __future__ import annotations

import numpy as np

import hostdriver
from hostdriver.chip import (
    ChipConfig,
    CrossbarInput,
    CrossbarNode,
    CrossbarNodeCoord,
    CrossbarOutput,
    DriverCoord,
    GlobalCell,
    NeuronCell,
    NeuronCoord,
    RowMode,
    Synapse,
    SynapseCoord,
)
from hostdriver.program import CADCSchedule, Program, SpikeInput
from hostdriver.traces import TimeGrid


def test_input_reaches_only_the_address_matched_neuron_in_its_own_episodes():
    cfg = ChipConfig()
    caps = cfg.neuron_capmem
    caps[NeuronCell.V_LEAK] = 511  # ~600 mV nominal
    caps[NeuronCell.V_RESET] = 468
    caps[NeuronCell.V_THRESHOLD] = 700  # ~220 mV above leak: no spontaneous spikes
    caps[NeuronCell.I_BIAS_LEAK] = 410  # tau_mem ~10 us nominal
    caps[NeuronCell.I_BIAS_SYN_EXC_TAU] = 424  # tau_syn ~5 us
    caps[NeuronCell.I_BIAS_SYN_EXC_GM] = 700
    cfg.global_capmem[GlobalCell.I_BIAS_SYNAPSE_DAC] = 1022
    nrn = cfg.neurons
    for name in ("enable_leak", "enable_fire", "enable_syn_exc", "spike_output", "enable_readout"):
        getattr(nrn, name)[:] = True
    nrn.output_label[:] = np.arange(512) + 1000
    driver = DriverCoord(0, 0)  # bus 0 of the top hemisphere, row select 0
    cfg.crossbar[CrossbarNodeCoord(CrossbarInput.FPGA, driver.bus.crossbar_output)] = CrossbarNode(
        enable=True, mask=0x3800, target=0)  # labels < 2048 (the inputs) go to the bus
    cfg.crossbar[CrossbarNodeCoord(NeuronCoord(3).crossbar_input, CrossbarOutput.FPGA_RECORD)] = (
        CrossbarNode(enable=True))
    cfg.drivers.enable[0, 0] = True
    cfg.drivers[driver.rows[0]] = RowMode.EXCITATORY
    cfg.synapses[SynapseCoord(0, 0, 3)] = Synapse(weight=63, address=5)
    cfg.synapses[SynapseCoord(0, 0, 4)] = Synapse(weight=63, address=6)
    cfg.cadc.enable = True
    with hostdriver.connect("emu://?seed=1") as board:
        assert cfg.write(board) == 79850
        cfg.verify(board)
        label = driver.event_label(5)
        n_in = 12
        p = Program()
        ticket = p.episodes(
            3, 20.0,
            spikes=SpikeInput(np.repeat([0, 2], n_in), np.tile(2.0 + 0.25 * np.arange(n_in), 2),
                              np.full(2 * n_in, label)),
            cadc=CADCSchedule(interval=1.0, count=20), label_map=cfg.label_map(),
        )
        data = p.run(board)[ticket]
    spikes = data.spike_array(TimeGrid(dt=1.0, steps=20), 512)  # [step, episode, neuron]
    per_episode = spikes.sum(axis=0)
    assert per_episode[0, 3] >= 1 and per_episode[2, 3] >= 1  # driven episodes
    assert per_episode[1].sum() == 0  # no input, no spike: episodes are independent
    assert per_episode[:, 4].sum() == 0 and per_episode.sum() == per_episode[:, 3].sum()
    assert (data.spikes.rel_time_us[data.spikes.neuron == 3] > 2.0).all()
    # neuron 4 (other address) stays at rest; neuron 3 rises after its input
    v = data.cadc.samples.astype(float)
    assert np.ptp(v[:, :, 4]) <= 8
    assert v[1, :, 3].std() < 3 and v[0, 2:6, 3].max() > v[1, 2:6, 3].max() + 10
