"""AnalogCore basics: crossbar loopback, CADC of resting potentials, spike counters, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from analog_chipcfg import ChipImage, lif_defaults, loopback

from emulator.analog import AnalogCore, EpisodeBatch, MismatchConfig
from emulator.registers import RegisterFile
from protocol.addressmap import CrossbarInput, CrossbarOutput
from protocol.errors import ConfigError


def make_core(img: ChipImage, serial: int = 1, mismatch: MismatchConfig | None = None
              ) -> AnalogCore:
    regs = RegisterFile(serial)
    img.apply(regs)
    return AnalogCore(serial, regs, mismatch)


def batch(n=1, dur=2000, spikes=(), cadc=(), madc=(), key=0) -> EpisodeBatch:
    sp = np.array(spikes, np.int64).reshape(-1, 3)
    cd = np.array(cadc, np.int64).reshape(-1, 2)
    md = np.array(madc, np.int64).reshape(-1, 2)
    return EpisodeBatch(
        n_episodes=n, duration=np.full(n, dur, np.uint64),
        spike_episode=sp[:, 0], spike_time=sp[:, 1], spike_label=sp[:, 2],
        cadc_episode=cd[:, 0], cadc_time=cd[:, 1], madc_episode=md[:, 0], madc_time=md[:, 1],
        noise_key=key)


def test_loopback_returns_fpga_spikes_unchanged_and_sorted():
    img = ChipImage()
    loopback(img)
    core = make_core(img)
    r = core.run(batch(2, spikes=[(1, 30, 7), (0, 20, 0x3FFF), (1, 10, 5), (0, 20, 3)]))
    assert r.spike_episode.tolist() == [0, 0, 1, 1]
    assert r.spike_time.tolist() == [20, 20, 10, 30]
    assert r.spike_label.tolist() == [3, 0x3FFF, 5, 7]
    assert r.spike_time.dtype == np.uint64 and r.spike_label.dtype == np.uint16


def test_crossbar_mask_target_filters_and_disabled_node_blocks():
    img = ChipImage()
    img.node(CrossbarInput.FPGA, CrossbarOutput.FPGA_RECORD, mask=0x0F00, target=0x0300)
    core = make_core(img)
    labels = [0x0300, 0x0301, 0x1300, 0x0200, 0x0F00]
    r = core.run(batch(1, spikes=[(0, 10 * i, lab) for i, lab in enumerate(labels)]))
    assert r.spike_label.tolist() == [0x0300, 0x0301, 0x1300]
    img.node(CrossbarInput.FPGA, CrossbarOutput.FPGA_RECORD, mask=0, target=0, enable=False)
    core = make_core(img)
    assert core.run(batch(1, spikes=[(0, 10, 1)])).spike_label.size == 0
    # a node from another input does not pass FPGA events
    img = ChipImage()
    img.node(CrossbarInput.BACKGROUND0, CrossbarOutput.FPGA_RECORD)
    assert make_core(img).run(batch(1, spikes=[(0, 10, 1)])).spike_label.size == 0


def test_resting_potentials_spread_uncalibrated_and_follow_the_leak_code():
    img = ChipImage()
    lif_defaults(img, np.arange(512), v_leak=560)
    img.neuron(np.arange(512), fire=False)
    core = make_core(img, serial=1)
    r = core.run(batch(1, dur=20000, cadc=[(0, 19000)]))
    codes = r.cadc_samples[0].astype(float)
    assert codes.std() >= 15.0  # uncalibrated chip: CapMem, leak and CADC mismatch
    assert 90 < codes.mean() < 160  # ~660 mV lands mid-range
    img.cells(np.arange(512), v_leak=700)
    r2 = make_core(img, serial=1).run(batch(1, dur=20000, cadc=[(0, 19000)]))
    assert (r2.cadc_samples[0].astype(int) >= r.cadc_samples[0]).mean() > 0.97
    assert 30 < r2.cadc_samples[0].mean() - codes.mean() < 60  # 164 mV / 3 mV ~ 55 LSB * gains


def test_ideal_chip_has_no_spread_and_cadc_offset_register_shifts_codes():
    img = ChipImage()
    lif_defaults(img, np.arange(512), v_leak=600)
    img.neuron(np.arange(512), fire=False)
    img.cadc_offset[:] = 0
    img.cadc_offset[5] = -10 & 0xFF
    img.cadc_offset[6] = 20
    core = make_core(img, mismatch=MismatchConfig.ideal())
    c = core.run(batch(1, dur=20000, cadc=[(0, 19000)])).cadc_samples[0].astype(int)
    expect = round((600 * 1200 / 1022 - 300) / 3)
    assert c[0] == expect and c[5] == expect - 10 and c[6] == expect + 20
    assert (np.delete(c, [5, 6]) == expect).all()


def test_same_serial_same_chip_other_serial_other_chip():
    img = ChipImage()
    lif_defaults(img, np.arange(512))
    img.neuron(np.arange(512), fire=False)
    b = batch(1, dur=20000, cadc=[(0, 19000)], key=3)
    a1 = make_core(img, serial=7).run(b).cadc_samples
    a2 = make_core(img, serial=7).run(b).cadc_samples
    a3 = make_core(img, serial=8).run(b).cadc_samples
    assert (a1 == a2).all()
    assert np.abs(a1.astype(int) - a3).mean() > 5


def test_spike_counters_count_spikes_of_firing_neurons_only():
    img = ChipImage()
    lif_defaults(img, [3, 4], v_leak=900, v_threshold=700, v_reset=500)  # leak above threshold
    img.neuron([3, 4], fire=True, ref_count=20)
    img.neuron([4], fire=False)
    core = make_core(img, mismatch=MismatchConfig.ideal())
    r = core.run(batch(1, dur=12500))
    assert r.spike_counts[3] > 5
    assert r.spike_counts[4] == 0
    assert r.spike_counts.sum() == r.spike_counts[3]
    assert r.spike_counts.dtype == np.uint32


def test_bad_batches_raise_config_error():
    core = make_core(ChipImage())
    with pytest.raises(ConfigError, match="duration"):
        core.run(EpisodeBatch(n_episodes=2, duration=np.array([10], np.uint64)))
    with pytest.raises(ConfigError, match="spike_episode outside"):
        core.run(batch(1, spikes=[(1, 10, 1)]))
    with pytest.raises(ConfigError, match="labels"):
        core.run(batch(1, spikes=[(0, 10, 1 << 14)]))
    with pytest.raises(ConfigError, match="cadc_episode"):
        core.run(EpisodeBatch(n_episodes=1, duration=np.array([10]), cadc_episode=np.array([0]),
                              cadc_time=np.array([1, 2])))


def test_empty_batch_gives_empty_result():
    r = make_core(ChipImage()).run(EpisodeBatch(n_episodes=0, duration=np.zeros(0, np.uint64)))
    assert r.spike_label.size == 0 and r.cadc_samples.shape == (0, 512)
    assert r.spike_counts.shape == (512,)
