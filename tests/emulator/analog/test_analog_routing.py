"""Connectivity rules: crossbar, driver selection, row modes, address matching, merged neurons,
on-chip routing; and the equivalences batch == sequential, layered == general."""

from __future__ import annotations

import numpy as np
import pytest
from analog_chipcfg import ChipImage, lif_defaults, pnas_inputs, pnas_network
from analog_single import core_for, fpga_to_bus, madc_mv, madc_select, run, single_neuron, synapse

from emulator.analog import EpisodeBatch, SimConfig
from protocol.addressmap import BackgroundWords, CrossbarInput, CrossbarOutput, RowMode
from protocol.errors import ConfigError

T_PEAK = 1000 + 128 + 600  # ticks: spike at 1000, a few us after arrival


def peak_mv(core, label, circuit=0, spike_t=1000):
    """Membrane change of `circuit` ~5 us after an FPGA event with `label` (MADC)."""
    r = run(core, 3000, spikes=[(spike_t, label)], madc_times=[spike_t - 10, T_PEAK])
    v = madc_mv(r.madc_values)
    return v[1] - v[0]


def test_synapse_answers_only_its_own_6bit_address():
    img = single_neuron()
    synapse(img, 0, 0, 0, weight=40, addr=9)
    core = core_for(img)
    assert peak_mv(core, 9) > 10.0
    assert abs(peak_mv(core, 10)) < 1.0
    assert abs(peak_mv(core, 9 | 1 << 6)) < 1.0  # other row select: another driver
    assert peak_mv(core, 9 | 1 << 11) > 10.0  # bits above [10:0] do not select anything


def test_one_row_serves_two_sources_by_address():
    img = single_neuron()
    lif_defaults(img, [1])
    img.neuron([1], fire=False)
    synapse(img, 0, 0, 0, weight=40, addr=3)
    synapse(img, 0, 0, 1, weight=40, addr=4)
    core = core_for(img)
    assert peak_mv(core, 3, circuit=0) > 10.0 and abs(peak_mv(core, 4, circuit=0)) < 1.0
    madc_select(img, 1)
    core = core_for(img)
    assert peak_mv(core, 4) > 10.0 and abs(peak_mv(core, 3)) < 1.0


@pytest.mark.parametrize("mode, sign", [(RowMode.EXCITATORY, 1), (RowMode.INHIBITORY, -1),
                                        (RowMode.DISABLED, 0)])
def test_row_mode_sets_the_sign(mode, sign):
    img = single_neuron()
    img.drive(0, 0, mode, RowMode.DISABLED)
    synapse(img, 0, 0, 0, weight=40, addr=1)
    synapse(img, 0, 1, 0, weight=63, addr=1)  # row 1 disabled: must not act
    dv = peak_mv(core_for(img), 1)
    if sign == 0:
        assert abs(dv) < 1.0
    else:
        assert sign * dv > 10.0


def test_disabled_driver_and_weight_zero_do_nothing():
    img = single_neuron()
    synapse(img, 0, 0, 0, weight=40, addr=1)
    img.drive(0, 0, RowMode.EXCITATORY, RowMode.INHIBITORY, enable=False)
    assert abs(peak_mv(core_for(img), 1)) < 1.0
    img = single_neuron()
    synapse(img, 0, 0, 0, weight=0, addr=1)
    assert abs(peak_mv(core_for(img), 1)) < 1.0


def test_bus_and_row_select_pick_driver():
    img = single_neuron()
    img.drive(0, 0, RowMode.DISABLED, RowMode.DISABLED)
    d = 4 * 3 + 1  # select 3, bus 1
    img.drive(0, d, RowMode.EXCITATORY, RowMode.DISABLED)
    synapse(img, 0, 2 * d, 0, weight=40, addr=2)
    img.drive(0, d - 1, RowMode.EXCITATORY, RowMode.DISABLED)  # bus 0, same select
    synapse(img, 0, 2 * (d - 1), 0, weight=63, addr=2)
    img.node(CrossbarInput.FPGA, 0, enable=False)
    fpga_to_bus(img, 0, 1)  # only bus 1 passes
    label = 3 << 6 | 2
    core = core_for(img)
    small = peak_mv(core, label)
    assert small > 10.0
    img.node(CrossbarInput.FPGA, 0)  # bus 0 now passes too: driver d-1 adds its synapse
    assert peak_mv(core_for(img), label) > 1.8 * small


def test_crossbar_mask_target_and_several_outputs():
    img = single_neuron()
    synapse(img, 0, 0, 0, weight=30, addr=1)
    img.node(CrossbarInput.FPGA, 0, mask=1 << 12, target=1 << 12)  # needs bit 12 set
    core = core_for(img)
    assert abs(peak_mv(core, 1)) < 1.0
    one = peak_mv(core, 1 | 1 << 12)
    assert one > 8.0
    # the same event reaches the bottom hemisphere too when a second node passes it
    lif_defaults(img, [256])
    img.neuron([256], fire=False)
    img.drive(1, 0, RowMode.EXCITATORY, RowMode.DISABLED)
    synapse(img, 1, 0, 0, weight=30, addr=1)
    img.node(CrossbarInput.FPGA, 4, mask=1 << 12, target=1 << 12)
    madc_select(img, 256)
    core = core_for(img)
    assert peak_mv(core, 1 | 1 << 12) > 8.0
    madc_select(img, 0)
    assert peak_mv(core_for(img), 1 | 1 << 12) == pytest.approx(one, abs=0.8)


def merged_pair(merge_top=True, merge_bottom=True):
    img = ChipImage()
    lif_defaults(img, [7, 263])
    img.capmem_global[:, 0] = 1000
    img.neuron([7], fire=False, merge=merge_top)
    img.neuron([263], fire=False, merge=merge_bottom)
    img.drive(1, 0, RowMode.EXCITATORY, RowMode.DISABLED)
    fpga_to_bus(img, 1, 0)
    synapse(img, 1, 0, 7, weight=50, addr=1)  # input on the bottom circuit's column only
    return img


@pytest.mark.parametrize("merged", [True, False])
def test_merged_compartments_share_one_membrane(merged):
    img = merged_pair(merge_bottom=merged)
    core = core_for(img)
    r = run(core, 3000, spikes=[(1000, 1)], cadc_times=[990, T_PEAK])
    d = r.cadc_samples[1].astype(int) - r.cadc_samples[0]
    assert d[263] >= 3
    if merged:
        assert d[7] == d[263]  # one membrane, read by both channels (ideal CADC)
        assert core.model().chip.n == 511
    else:
        assert d[7] == 0
        assert core.model().chip.n == 512


def test_merged_neuron_integrates_both_columns_and_halves_the_psp():
    alone = merged_pair(merge_top=False)
    both = merged_pair()
    synapse(both, 0, 0, 7, weight=50, addr=1)
    both.drive(0, 0, RowMode.EXCITATORY, RowMode.DISABLED)
    fpga_to_bus(both, 0, 0)
    madc_select(alone, 263)
    madc_select(both, 263)
    a = peak_mv(core_for(alone), 1)
    b = peak_mv(core_for(both), 1)
    # double capacitance and leak, two synapses: same PSP height as one circuit alone
    assert b == pytest.approx(a, rel=0.1)
    one_syn = merged_pair()
    madc_select(one_syn, 263)
    assert peak_mv(core_for(one_syn), 1) == pytest.approx(a / 2, rel=0.1)


def test_merged_neuron_spikes_once_per_threshold_crossing():
    img = ChipImage()
    lif_defaults(img, [7, 263], v_leak=500, v_reset=450, v_threshold=650, i_offset=700)
    img.neuron([7], fire=True, merge=True, spike_out=True, label=11, ref_count=40)
    img.neuron([263], fire=False, merge=True, spike_out=True, label=12)
    img.node(CrossbarInput.NEURONS_TOP_LEFT, CrossbarOutput.FPGA_RECORD)
    img.node(CrossbarInput.NEURONS_BOTTOM_LEFT, CrossbarOutput.FPGA_RECORD)
    r = run(core_for(img), 125 * 100)
    t11 = r.spike_time[r.spike_label == 11]
    t12 = r.spike_time[r.spike_label == 12]
    assert t11.size > 3
    np.testing.assert_array_equal(t11, t12)  # both member circuits emit the same spike
    assert r.spike_counts[7] == r.spike_counts[263] == t11.size
    assert np.diff(t11).min() > 40  # not two spikes per crossing


def two_neurons(a_to_b=True, b_to_a=False):
    """Neuron 0 fires regularly (offset current); its label reaches neuron 1 through the
    crossbar (neurons block -> bus 2 of the top hemisphere -> driver 2)."""
    img = ChipImage()
    lif_defaults(img, [0], v_leak=500, v_reset=450, v_threshold=650, i_offset=700)
    lif_defaults(img, [1], v_leak=500, v_reset=450, v_threshold=650)
    img.capmem_global[:, 0] = 1000
    img.neuron([0], fire=True, spike_out=True, label=1 << 12 | 2 << 6 | 7, ref_count=40)
    img.neuron([1], fire=True, spike_out=True, label=1 << 12 | 2 << 6 | 8, ref_count=40)
    img.node(CrossbarInput.NEURONS_TOP_LEFT, 2, mask=1 << 12, target=1 << 12)
    img.node(CrossbarInput.NEURONS_TOP_LEFT, CrossbarOutput.FPGA_RECORD)
    img.drive(0, 4 * 2 + 2, RowMode.EXCITATORY, RowMode.DISABLED)  # select 2, bus 2
    if a_to_b:
        synapse(img, 0, 2 * 10, 1, weight=63, addr=7)
    if b_to_a:
        synapse(img, 0, 2 * 10, 0, weight=63, addr=8)
    madc_select(img, 1)
    return img


def test_on_chip_spikes_reach_synapses_through_the_crossbar():
    img = two_neurons()
    core = core_for(img)
    times = np.arange(0, 125 * 30, 25)
    r = run(core, 125 * 30, madc_times=times)
    src = r.spike_time[r.spike_label == (1 << 12 | 2 << 6 | 7)]
    assert src.size >= 3
    v = madc_mv(r.madc_values)
    t_arr = src[0] + 128
    before = v[times < t_arr].max()
    assert v[(times > t_arr) & (times < t_arr + 500)].max() > before + 5.0
    # without the crossbar node the target stays at rest
    img.node(CrossbarInput.NEURONS_TOP_LEFT, 2, enable=False)
    v2 = madc_mv(run(core_for(img), 125 * 30, madc_times=times).madc_values)
    assert np.ptp(v2) < 1.0


def test_recurrent_loop_runs_on_the_general_path():
    core = core_for(two_neurons(b_to_a=True))
    assert core.model().layers is None
    r = run(core, 125 * 40)
    assert r.spike_time.size > 0
    r2 = run(core, 125 * 40)
    np.testing.assert_array_equal(r.spike_time, r2.spike_time)


def test_periodic_background_source_is_recorded():
    img = ChipImage()
    img.background[2] = [1 << BackgroundWords.ENABLE | 0x155 << BackgroundWords.LABEL_SHIFT,
                         1000, 0]
    img.node(CrossbarInput.BACKGROUND0 + 2, CrossbarOutput.FPGA_RECORD)
    r = run(core_for(img), 5500)
    assert r.spike_time.tolist() == [1000, 2000, 3000, 4000, 5000]
    assert (r.spike_label == 0x155).all()


def test_poisson_background_rate_and_seed():
    img = ChipImage()
    img.background[0] = [1 << BackgroundWords.ENABLE | 1 << BackgroundWords.POISSON | 5 << 16,
                         200, 42]
    img.node(CrossbarInput.BACKGROUND0, CrossbarOutput.FPGA_RECORD)
    core = core_for(img)
    r1, r2 = run(core, 200_000), run(core, 200_000, key=9)
    assert r1.spike_time.size == pytest.approx(1000, rel=0.1)
    np.testing.assert_array_equal(r1.spike_time, r2.spike_time)  # the seed decides, not the run
    img.background[0, 2] = 43
    assert not np.array_equal(run(core_for(img), 200_000).spike_time[:20], r1.spike_time[:20])


# ---------------------------------------------------------------- equivalences
def pnas_batch(core, n, seed=0):
    rng = np.random.default_rng(seed)
    ep, t, lab = pnas_inputs(rng, n)
    return EpisodeBatch(
        n_episodes=n, duration=np.full(n, 34 * 125), spike_episode=ep, spike_time=t,
        spike_label=lab, cadc_episode=np.repeat(np.arange(n), 20),
        cadc_time=np.tile(np.arange(20) * 212, n), noise_key=77)


def pnas_core(**kw):
    img = ChipImage()
    pnas_network(img, np.random.default_rng(1))
    return core_for(img, ideal=False, **kw)


def assert_same(a, b):
    for f in ("spike_episode", "spike_time", "spike_label", "cadc_samples", "madc_values",
              "spike_counts"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def test_layered_path_equals_general_path():
    core = pnas_core()
    assert core.model().layers is not None and len(core.model().layers) == 2
    b = pnas_batch(core, 12)
    fast = core.run(b)
    core.force_general = True
    slow = core.run(b)
    assert fast.spike_time.size > 12  # hidden spikes recorded
    assert_same(fast, slow)


def test_batch_equals_one_episode_at_a_time():
    core = pnas_core(sim=SimConfig(chunk_elements=1 << 15))  # several chunks too
    b = pnas_batch(core, 6, seed=4)
    core.capture = []
    whole = core.run(b)
    assert len(core.capture) > 1
    core.capture = None
    parts = []
    for e in range(6):
        s = b.spike_episode == e
        c = b.cadc_episode == e
        one = EpisodeBatch(n_episodes=1, duration=b.duration[e:e + 1],
                           spike_episode=np.zeros(s.sum()), spike_time=b.spike_time[s],
                           spike_label=b.spike_label[s], cadc_episode=np.zeros(c.sum()),
                           cadc_time=b.cadc_time[c], noise_key=b.noise_key,
                           episode_ids=np.array([e]))
        parts.append(core.run(one))
    np.testing.assert_array_equal(whole.cadc_samples, np.concatenate([p.cadc_samples
                                                                      for p in parts]))
    np.testing.assert_array_equal(whole.spike_time, np.concatenate([p.spike_time for p in parts]))
    np.testing.assert_array_equal(whole.spike_label,
                                  np.concatenate([p.spike_label for p in parts]))
    np.testing.assert_array_equal(whole.spike_counts, sum(p.spike_counts for p in parts))


def test_noise_key_changes_noise_only():
    core = pnas_core()
    b = pnas_batch(core, 4)
    a = core.run(b)
    b.noise_key = 78
    c = core.run(b)
    diff = np.abs(a.cadc_samples.astype(int) - c.cadc_samples)
    assert 0 < diff.mean() < 2.0


def test_sim_config_is_validated():
    with pytest.raises(ConfigError, match="multiple"):
        SimConfig(dt_ticks=64, route_delay_ticks=96)
    with pytest.raises(ConfigError, match="dt_ticks"):
        SimConfig(dt_ticks=0)
