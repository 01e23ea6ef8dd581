"""The compiled kernels (emulator/analog/kernels.py) against the torch reference path: the same
results bit for bit, on the PNAS shape and on randomised variants that reach every branch
(merged and single circuits, non-contiguous layers, background sources, synaptic and adaptation
readout, AdEx layers, more neurons at threshold than the kernel's first guess)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from analog_chipcfg import ChipImage, lif_defaults, pnas_inputs, pnas_network
from analog_single import core_for
from hypothesis import given, settings
from hypothesis import strategies as st
from test_analog_routing import assert_same, pnas_batch, pnas_core

from emulator.analog import EpisodeBatch, SimConfig, kernels
from protocol.addressmap import BackgroundWords, NeuronConfigBits, ReadoutSource


def both(img: ChipImage, ideal: bool = False, **sim) -> tuple:
    fast = core_for(img, ideal=ideal, sim=SimConfig(**sim))
    ref = core_for(img, ideal=ideal, sim=SimConfig(kernels=False, **sim))
    return fast, ref


def same_run(fast, ref, b: EpisodeBatch, min_chunks: int = 1):
    """Run both; the outputs must be equal, and so must every episode's membrane / synaptic grids
    and spike times inside (outputs are rounded to ADC codes and ticks: they would hide a change
    in the last float bit, the grids do not)."""
    fast.capture, ref.capture = [], []
    a = fast.run(b)
    assert_same(a, ref.run(b))
    assert len(fast.capture) >= min_chunks and len(ref.capture) >= 1
    per_episode = [_by_episode(c.capture) for c in (fast, ref)]
    fast.capture = ref.capture = None
    grids_a, spikes_a = per_episode[0]
    grids_b, spikes_b = per_episode[1]
    assert sorted(grids_a) == sorted(grids_b) == list(range(b.n_episodes))
    for e in grids_a:
        for ga, gb in zip(grids_a[e], grids_b[e], strict=True):
            assert all(torch.equal(x, y) if x is not None else y is None
                       for x, y in zip(ga, gb, strict=True))
    for x, y in zip(spikes_a, spikes_b, strict=True):
        np.testing.assert_array_equal(x, y)
    return a


def _by_episode(capture: list) -> tuple[dict, tuple]:
    """{episode: [(layer neurons, V [T+1, N_l], syn [T+1, 4, N_l] | None) per grid]} and all
    spikes (episode, neuron, time) in a canonical order, from AnalogCore.capture."""
    grids: dict = {}
    spikes = []
    for sel_ep, chunk_grids, (e_l, n_l, t_l) in capture:
        for i, e in enumerate(sel_ep.tolist()):
            grids[e] = [(g.idx, g.v[:, i], None if g.syn is None else g.syn[:, :, i])
                        for g in chunk_grids]
        spikes.append(np.stack([sel_ep[e_l.numpy()], n_l.numpy(), t_l.numpy().view(np.int64)]))
    allsp = np.concatenate(spikes, axis=1)
    o = np.lexsort(allsp[::-1])
    return grids, tuple(allsp[:, o])


def test_numba_is_installed_and_used():
    assert kernels.AVAILABLE  # a declared dependency: without it this module tests nothing
    core = pnas_core()
    assert core.use_kernels and core.model().layers is not None
    assert not pnas_core(sim=SimConfig(kernels=False)).use_kernels


def test_pnas_batch_equals_reference():
    fast = pnas_core()
    ref = pnas_core(sim=SimConfig(kernels=False))
    b = pnas_batch(fast, 16, seed=2)
    a = same_run(fast, ref, b)
    assert a.spike_time.size > 16 and np.ptp(a.cadc_samples) > 20
    assert_same(a, fast.run(b))  # and again from the caches


def random_network(seed: int, mixed: bool) -> tuple[ChipImage, EpisodeBatch]:
    """A PNAS-like network of random size with some columns split into two neurons (layers are
    scattered neuron sets then), random readout sources (mixed; else all membrane), a periodic
    and a Poisson background source on the input buses, the MADC on a random circuit, episodes
    of different lengths."""
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(8, 200))
    n_hidden = int(rng.integers(4, 120))
    n_out = int(rng.integers(1, 12))
    img = ChipImage()
    pnas_network(img, rng, n_in=n_in, n_hidden=n_hidden, n_out=n_out, w1_sigma=20.0)
    cols = np.arange(n_hidden + n_out)
    codes = rng.integers(300, 700, (2, cols.size))
    img.cells(cols, i_bias_syn_exc_tau=codes[0], i_bias_leak=codes[1])
    img.cells(cols + 256, i_bias_syn_inh_tau=rng.integers(300, 700, cols.size))
    split = rng.choice(cols, cols.size // 3, replace=False)  # two neurons per column there
    img.word0[split] &= ~(1 << NeuronConfigBits.CONNECT_OTHER_HEMISPHERE)
    src = rng.choice([int(s) for s in ReadoutSource][:4], 512, p=[0.7, 0.1, 0.1, 0.1]) * mixed
    shift = NeuronConfigBits.READOUT_SOURCE_SHIFT
    img.word0 = img.word0 & ~(NeuronConfigBits.READOUT_SOURCE_MASK << shift) | src << shift
    img.madc_config = int(rng.integers(0, 512)) | int(rng.integers(0, 4)) << 9 | 1 << 12
    for s, poisson, period in ((1, 0, 310), (5, 1, 150)):  # onto an input's rows (top)
        d = int(rng.integers(0, min(n_in, 128)))
        label = (d >> 2) << 6 | (d & 3)
        img.background[s] = [1 << BackgroundWords.ENABLE | poisson << BackgroundWords.POISSON
                             | label << BackgroundWords.LABEL_SHIFT, period, seed]
        img.node(8 + s, d & 3)
    n = int(rng.integers(3, 9))
    ep, t, lab = pnas_inputs(rng, n, n_in=n_in, p_spike=float(rng.uniform(0.2, 0.9)))
    dur = rng.integers(1500, 4500, n)
    keep = t < dur[ep]
    cadc_ep = np.repeat(np.arange(n), 7)
    madc_ep = np.repeat(np.arange(n), 9)
    b = EpisodeBatch(
        n_episodes=n, duration=dur, spike_episode=ep[keep], spike_time=t[keep],
        spike_label=lab[keep], cadc_episode=cadc_ep,
        cadc_time=(rng.random(cadc_ep.size) * dur[cadc_ep]).astype(np.int64),
        madc_episode=madc_ep,
        madc_time=(rng.random(madc_ep.size) * dur[madc_ep]).astype(np.int64), noise_key=seed)
    return img, b


@pytest.mark.parametrize("seed, mixed", [(0, False), (1, False), (2, True), (3, True)])
def test_random_networks_equal_reference(seed, mixed):
    img, b = random_network(seed, mixed)
    # several chunks, two workers
    fast, ref = both(img, chunk_elements=1 << 14, adapt_workers=False)
    layers = fast.model().layers
    assert layers is not None and not bool((layers[0].diff() == 1).all())
    a = same_run(fast, ref, b, min_chunks=2)
    assert a.spike_time.size > 0  # hidden spikes recorded


def test_many_neurons_at_threshold_equal_reference():
    """Every circuit's leak lies above its threshold: more neurons reach threshold than the
    kernel's first guess at their number, so it runs again with room for all of them."""
    img = ChipImage()
    lif_defaults(img, np.arange(512), v_leak=900, v_threshold=700, v_reset=500)
    img.neuron(np.arange(512), fire=True, ref_count=30)
    fast, ref = both(img)
    b = EpisodeBatch(n_episodes=2, duration=np.array([3000, 2000]),
                     cadc_episode=np.array([0, 1, 0]), cadc_time=np.array([2500, 1000, 400]),
                     noise_key=5)
    a = same_run(fast, ref, b)
    assert (a.spike_counts > 0).mean() > 0.9


def test_adex_layer_runs_beside_kernel_layers():
    """Hidden neurons with adaptation (torch, spikes inside the step loop), output layer through
    the kernels: same as the reference, and as the general path."""
    img = ChipImage()
    pnas_network(img, np.random.default_rng(4), n_in=64, n_hidden=20, n_out=4, w1_sigma=25.0)
    hid = np.arange(20)
    img.word0[hid] |= 1 << NeuronConfigBits.ENABLE_ADAPTATION
    img.cells(hid, i_bias_adapt_a=20, i_bias_adapt_b=100, i_bias_adapt_tau=600, v_adapt_ref=600,
              i_offset=400)
    fast, ref = both(img)
    m = fast.model()
    assert len(m.layers) == 2 and m.layer_params[0].has_adex and not m.layer_params[1].has_adex
    ep, t, lab = pnas_inputs(np.random.default_rng(5), 5, n_in=64, p_spike=0.7)
    b = EpisodeBatch(n_episodes=5, duration=np.full(5, 4000), spike_episode=ep, spike_time=t,
                     spike_label=lab, cadc_episode=np.repeat(np.arange(5), 4),
                     cadc_time=np.tile([100, 1300, 2600, 3900], 5), noise_key=9)
    a = same_run(fast, ref, b)
    assert a.spike_time.size > 0
    fast.force_general = True
    assert_same(a, fast.run(b))


def test_cadc_time_beyond_the_episode_is_refused():
    from protocol.errors import ConfigError

    fast = pnas_core()
    b = EpisodeBatch(n_episodes=1, duration=np.array([1000]), cadc_episode=np.array([0]),
                     cadc_time=np.array([1200]))
    with pytest.raises(ConfigError, match="CADC"):
        fast.run(b)


def test_readout_kernels_equal_reference_bit_for_bit():
    """Membrane interpolation and CADC conversion on their own, on enough values that a change
    of the last float bit would flip codes at rounding boundaries."""
    from emulator.analog import fast as fp

    core = pnas_core(sim=SimConfig(workers=1))
    b = pnas_batch(core, 8, seed=1)
    core.capture = []
    core.run(b)
    (ep, grids, _), = core.capture
    m = core.model()
    rng = np.random.default_rng(0)
    t_max = grids[0].v.shape[0] - 1
    dt = m.chip.sim.dt_ticks
    t = rng.integers(0, t_max * dt, 3000)
    el = rng.integers(0, ep.size, t.size)
    j = torch.from_numpy(t // dt)
    f = torch.from_numpy(((t % dt) / dt).astype(np.float32))
    ref = core._neuron_values(m, grids, torch.from_numpy(el), j, f[:, None],
                              int(ReadoutSource.MEMBRANE))
    got = fp.membrane_values(grids, m.params.rdt, m.params.n, t // dt, el, f)
    assert torch.equal(ref, torch.from_numpy(got))
    # codes: potentials that land within float rounding of a half code (where a change in the
    # last bit of any step flips the code), channel map with runs and a jump
    chan = np.concatenate([np.arange(200, 300), np.arange(0, 256), np.arange(100, 256)])
    gain, off = core._cadc_affine()
    starts = rng.integers(0, 1 << 20, 2048)
    for noise in (None, starts):
        nz = 0.0 if noise is None else core.noise.rows(noise, np.arange(512)).numpy().astype(
            np.float64) * core.config.cadc_read_noise_lsb
        x = rng.integers(1, 254, (2048, 512)) + 0.5 - nz
        v_ch = (x - off.double().numpy()) / gain.double().numpy()
        v = np.zeros((2048, 300), np.float32)
        v[:, chan] = v_ch  # (a neuron read by two channels keeps the later channel's value)
        v = torch.from_numpy(v)
        want = core._cadc_codes(v[:, torch.from_numpy(chan)], gain, off, noise)
        out = np.zeros((v.shape[0] + 3, 512), np.uint8)
        rows = np.arange(v.shape[0]) + 3
        fp.cadc_codes(v.numpy(), chan, gain, off, noise, core.noise.table,
                      core.config.cadc_read_noise_lsb, rows, out)
        np.testing.assert_array_equal(out[3:], want)
        assert (out[:3] == 0).all() and 0 < want.mean() < 255


@pytest.mark.parametrize("seed", [None, 0, 1])
def test_requests_interpolated_without_grid_equal_reference(seed, monkeypatch):
    """No test capture, no MADC, all channels on the membrane: the kernels interpolate the CADC
    requests per episode and keep no grid (fast.CadcPlan); same results as the reference."""
    from emulator.analog import fast as fp

    if seed is None:
        fast, ref = pnas_core(), pnas_core(sim=SimConfig(kernels=False))
        b = pnas_batch(fast, 12, seed=5)
    else:
        img, b = random_network(seed, mixed=False)
        b.madc_episode = b.madc_episode[:0]
        b.madc_time = b.madc_time[:0]
        fast, ref = both(img, chunk_elements=1 << 14)
    plans = []
    build = fp.CadcPlan.build
    monkeypatch.setattr(fp.CadcPlan, "build", staticmethod(
        lambda *a, **k: plans.append(1) or build(*a, **k)))
    a = fast.run(b)
    assert plans  # the grid-less path ran
    assert_same(a, ref.run(b))
    assert a.spike_time.size > 0


def test_episode_ranges_split_by_work():
    from emulator.analog import fast

    ptr = np.zeros(11, np.int64)
    assert fast.episode_ranges(ptr, ptr, 10, 4, 3, 1) == [0, 10]
    assert fast.episode_ranges(ptr, ptr, 10, 1, 1, 4) == [0, 10]  # too little work to split
    big = fast.PARALLEL_MIN_WORK
    even = fast.episode_ranges(ptr, ptr, 10, big, 1, 2)
    assert even == [0, 5, 10]
    # episodes 0..1 carry most events: the first range ends early
    x = np.concatenate([[0], np.cumsum([100, 100] + [0] * 8)]).astype(np.int64)
    assert fast.episode_ranges(x, ptr, 10, big, 1, 2)[1] <= 2
    p3 = np.zeros(4, np.int64)
    assert fast.episode_ranges(p3, p3, 3, big, 1, 8) == [0, 1, 2, 3]  # at most one per ep
    # a layer of one neuron splits too once its steps' fixed cost adds up (STEP_OVERHEAD)
    steps = 2 * big // (10 * (1 + fast.STEP_OVERHEAD))
    assert fast.episode_ranges(ptr, ptr, 10, 1, steps, 2) == [0, 5, 10]
    assert fast.episode_ranges(ptr, ptr, 10, 1, steps // 2 - 1, 2) == [0, 10]


@pytest.mark.parametrize("workers", [2, 3])
def test_episodes_split_over_threads_equal_reference(workers, monkeypatch):
    """Each layer's episodes split over worker threads (any size): the same grids, spikes,
    codes as the torch reference, with and without the grid-less CADC path."""
    from emulator.analog import fast

    monkeypatch.setattr(fast, "PARALLEL_MIN_WORK", 1)
    monkeypatch.setattr(fast, "PARALLEL_MIN_PATCH", 1)
    calls = []
    orig = kernels.integrate

    def spy(*args):
        calls.append((args[-2], args[-1]))
        return orig(*args)

    patches = []
    orig_patch = kernels.interp_patch

    def spy_patch(*args):
        patches.append(args[1].size)
        return orig_patch(*args)

    monkeypatch.setattr(kernels, "integrate", spy)
    monkeypatch.setattr(kernels, "interp_patch", spy_patch)
    par = pnas_core(sim=SimConfig(workers=workers, adapt_workers=False))
    ref = pnas_core(sim=SimConfig(kernels=False))
    b = pnas_batch(par, 7, seed=3)
    a = same_run(par, ref, b)  # capture on: grids kept
    assert len({c for c in calls if c[1] - c[0] < 7}) >= workers  # really split
    calls.clear()
    assert_same(par.run(b), a)  # capture off: CADC interpolated in the kernels
    assert any(hi - lo < 7 for lo, hi in calls)
    assert len(patches) >= 2  # the spiking neurons' CADC values redone in several runs
    serial = pnas_core(sim=SimConfig(workers=1))
    assert_same(serial.run(b), a)


def test_spikes_inside_one_step_equal_reference():
    """Refractory times shorter than a step (several spikes per step) and a reset above
    threshold (fires at its release): kernels and torch reference agree bit for bit."""
    from protocol.addressmap import CrossbarInput, CrossbarOutput

    img = ChipImage()
    lif_defaults(img, [0, 1], v_leak=500, v_reset=645, v_threshold=650, i_offset=1000)
    lif_defaults(img, [2], v_leak=500, v_reset=800, v_threshold=650, i_offset=300)
    img.neuron([0, 1, 2], fire=True, spike_out=True, label=77, ref_count=10)
    img.neuron([2], fire=True, spike_out=True, label=78, ref_count=150)
    img.node(CrossbarInput.NEURONS_TOP_LEFT, CrossbarOutput.FPGA_RECORD)
    fast, ref = both(img)
    n = 3
    b = EpisodeBatch(
        n_episodes=n, duration=np.full(n, 125 * 12), spike_episode=np.zeros(0, np.int64),
        spike_time=np.zeros(0, np.int64), spike_label=np.zeros(0, np.int64),
        cadc_episode=np.repeat(np.arange(n), 5), cadc_time=np.tile(np.arange(5) * 300, n),
        noise_key=5)
    a = same_run(fast, ref, b)
    mine = (a.spike_label == 77) & (a.spike_episode == 0)  # two neurons
    per_step = np.bincount(a.spike_time[mine] // fast.model().chip.sim.dt_ticks)
    assert per_step.max() >= 4  # really several spikes per neuron in one step


def test_readout_registers_per_episode_equal_one_episode_at_a_time():
    """Per-episode CADC offsets and MADC configs in the batch: the same codes as running each
    episode alone with the register file set so (kernels, torch reference, and no recompile)."""
    fast, ref = pnas_core(), pnas_core(sim=SimConfig(kernels=False))
    n = 4
    b = pnas_batch(fast, n, seed=6)
    rng = np.random.default_rng(1)
    offs = rng.integers(0, 256, (n, 512)).astype(np.uint32)
    offs[2] = offs[1]  # two episodes share a setting
    madc = np.array([0, 7, 7, 300]) | 1 << 12 | 4 << 16  # membrane of circuits 0, 7, 300
    b.madc_episode = np.repeat(np.arange(n), 5)
    b.madc_time = np.tile(np.arange(5) * 400 + 100, n)
    b.cadc_offset, b.madc_config = offs, madc
    a = same_run(fast, ref, b)
    assert_same(fast.run(b), a)  # and through the grid-less CADC path (no capture)
    for e in range(n):
        one = pnas_batch(fast, n, seed=6)
        keep_c, keep_s = one.cadc_episode == e, one.spike_episode == e
        single = EpisodeBatch(
            n_episodes=1, duration=one.duration[e:e + 1],
            spike_episode=one.spike_episode[keep_s] * 0, spike_time=one.spike_time[keep_s],
            spike_label=one.spike_label[keep_s],
            cadc_episode=one.cadc_episode[keep_c] * 0, cadc_time=one.cadc_time[keep_c],
            madc_episode=np.zeros(5, np.int64), madc_time=np.arange(5) * 400 + 100,
            noise_key=one.noise_key, episode_ids=np.array([e]))
        fast.regs.cadc_offset[:] = offs[e]
        fast.regs.madc_config[()] = madc[e]
        r = fast.run(single)
        np.testing.assert_array_equal(r.cadc_samples, a.cadc_samples[b.cadc_episode == e])
        np.testing.assert_array_equal(r.madc_values, a.madc_values[b.madc_episode == e])


def test_run_ranges_keeps_range_order_and_raises():
    from concurrent.futures import ThreadPoolExecutor

    from emulator.analog import fast

    bounds = [0, 3, 4, 9, 10, 20]
    with ThreadPoolExecutor(2) as pool:
        got = fast.run_ranges(pool, 3, bounds, lambda a, b: list(range(a, b)))
        assert sum(got, []) == list(range(20)) and len(got) == 5

        def bad(a, b):
            if a == 9:
                raise ValueError("range 9")
            return a

        with pytest.raises(ValueError, match="range 9"):
            fast.run_ranges(pool, 2, bounds, bad)


def test_usable_workers_follow_the_host_load(monkeypatch):
    from emulator.analog import core as core_mod

    monkeypatch.setattr(core_mod.os, "cpu_count", lambda: 2)
    for load, want in ((0.2, 2), (1.0, 2), (1.6, 1), (2.0, 1), (4.5, 1)):
        monkeypatch.setattr(core_mod.os, "getloadavg", lambda load=load: (load, load, load))
        assert core_mod.usable_workers(2) == want, load
    # this process's own 2 workers made the load 2 on an otherwise idle host: keep them
    monkeypatch.setattr(core_mod.os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    assert core_mod.usable_workers(2, running=2) == 2
    monkeypatch.setattr(core_mod.os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    assert core_mod.usable_workers(2, running=2) == 1  # plus one busy process: one core left
    assert core_mod.usable_workers(1) == 1
    monkeypatch.setattr(core_mod.os, "cpu_count", lambda: 16)
    assert core_mod.usable_workers(3) == 3  # load 4.5 on 16 cores

    def no_load():
        raise OSError("no load average here")

    monkeypatch.setattr(core_mod.os, "getloadavg", no_load)
    assert core_mod.usable_workers(2) == 2


def test_deferred_cadc_codes_equal_run_and_executor_trace():
    """run_deferred: with a worker free the CADC codes are left to it (pending until wait());
    the result is run()'s, and an executor that lets the core finish them while it assembles
    the trace sends the same bytes as one that waits for run()."""
    from emulator.executor import Executor
    from protocol import instructions as ins
    from protocol.records import decode_trace

    par = pnas_core(sim=SimConfig(workers=2, adapt_workers=False))
    b = pnas_batch(par, 9, seed=5)
    ref = par.run(b)
    assert ref.pending is None
    got = par.run_deferred(b)
    assert got.pending is not None  # a worker is writing the codes
    got.wait()
    assert got.pending is None
    assert_same(got, ref)
    serial = pnas_core(sim=SimConfig(workers=1))
    one = serial.run_deferred(b)
    assert one.pending is None  # no worker: nothing is left behind
    assert_same(one, ref)

    class NoDefer:  # the same core seen through run() only
        def __init__(self, core):
            self.run = core.run

    sel = b.spike_episode == 0
    words = ins.program_bytes(ins.program(
        ins.episode_start(0), ins.cadc_schedule(212, 20),
        ins.spikes(b.spike_time[sel].astype(np.int64) + 10, b.spike_label[sel]),
        ins.wait_until(34 * 125), ins.halt()))
    traces, left = [], []
    for wrap in (False, True):
        core = pnas_core(sim=SimConfig(workers=2, adapt_workers=False))
        if not wrap:
            orig = core.run_deferred

            def spy(batch, orig=orig):
                res = orig(batch)
                left.append(res.pending is not None)
                return res

            core.run_deferred = spy
        traces.append(Executor(core.regs, NoDefer(core) if wrap else core).run(words))
    assert left == [True]  # the executor took the deferred path
    assert traces[0] == traces[1]
    assert decode_trace(traces[0]).cadc_samples.shape == (20, 512)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 12), st.integers(1, 4),
       st.sampled_from([16, 12, 128]))
def test_chunk_stream_equals_numpy_build(seed, n_batch, t_steps, n_groups, dt):
    """EventStream.of_chunk (one compiled pass) == the chunk's events selected, their arrival
    step / sub-step bin computed and filtered in numpy, then EventStream.build (steps of a
    power of two ticks or not: shifts or divisions)."""
    from emulator.analog import fast
    from emulator.analog.events import arrival_np

    rng = np.random.default_rng(seed)
    n_src, delay = 7, 16
    n = int(rng.integers(0, 60))
    ev = (rng.integers(0, n_src, n), rng.integers(0, n_batch, n),
          rng.integers(0, dt * (t_steps + 1), n))
    sel_ep = np.sort(rng.choice(n_batch, int(rng.integers(1, n_batch + 1)), replace=False))
    local = np.full(n_batch, -1, np.int64)
    local[sel_ep] = np.arange(sel_ep.size)
    group = rng.integers(0, n_groups, n_src)
    got = fast.EventStream.of_chunk(ev, local, group, n_groups, delay, dt, t_steps, sel_ep.size)
    row, ep, t = ev
    sel = np.flatnonzero(local[ep] >= 0)
    step, q = arrival_np(t[sel], delay, dt)
    ok = step < t_steps
    want = fast.EventStream.build(local[ep[sel]][ok], step[ok], row[sel][ok], q[ok], sel_ep.size,
                                  t_steps, group[row[sel][ok]], n_groups)
    for f in ("ptr", "step", "src", "q"):
        np.testing.assert_array_equal(getattr(got, f), getattr(want, f), err_msg=f)
        assert getattr(got, f).dtype == np.int64


def _integrate_numpy(a: dict, e_lo: int, e_hi: int) -> dict:
    """kernels.integrate's results, recomputed in numpy: the reference's float32 operations
    (simulate.run_layer without spikes, events.event_jumps per event, index_add order), a
    whole layer row at a time (one rounding per operation, as numpy does elementwise)."""
    n, t_steps = a["u0"].size, a["t_steps"]
    out = {"umax": np.zeros((a["n_ep"], n), np.float32), "flat": [], "seg": [],
           "v_out": np.zeros((t_steps + 1, a["n_ep"], n), np.float32),
           "syn_out": np.zeros((t_steps + 1, 4, a["n_ep"], n), np.float32),
           "v_req": np.zeros_like(a["v_req"])}
    for e in range(e_lo, e_hi):
        syn = np.zeros((4, n), np.float32)
        u = a["u0"].copy()
        traj = [u]
        mx = np.full(n, -np.inf, np.float32)
        for k in range(t_steps):
            d = ((syn[0] + syn[1]) + syn[2]) + syn[3]
            syn = syn * a["a_syn"]
            for s in ("x", "p"):
                ptr, step = a[s + "_ptr"], a[s + "_step"]
                sel = [i for i in range(ptr[e], ptr[e + 1]) if step[i] == k]
                if not sel:
                    continue
                acc = np.zeros((4, n), np.float32)
                acc_v = np.zeros(n, np.float32)
                touched = set()
                for i in sel:
                    src, q = a[s + "_src"][i], a[s + "_q"][i]
                    b0, b1, o = a[s + "_b0"][src], a[s + "_b1"][src], a[s + "_off"][src]
                    sv = None
                    for bb in range(b1 - b0):
                        x = a["rows"][o + bb]
                        acc[b0 + bb] = acc[b0 + bb] + x * a["fi"][q, b0 + bb]
                        p = x * a["fv"][q, b0 + bb]
                        sv = p if sv is None else sv + p
                        touched.add(b0 + bb)
                    if sv is not None:
                        acc_v = acc_v + sv
                for b in sorted(touched):
                    syn[b] = syn[b] + acc[b]
                d = d + acc_v
            if a["noise_start"].size:
                d = d + a["table"][a["noise_start"][k, e] + a["chan"]] * a["noise_step"]
            u = u * a["a_mem"] + d
            traj.append(u)
            mx = np.where(u > mx, u, mx)
            out["syn_out"][k + 1, :, e] = syn
        traj = np.stack(traj)
        out["v_out"][:, e] = traj + a["e_eff"]
        out["umax"][e] = mx
        for j in np.flatnonzero(a["e_eff"] + mx >= a["theta"]):
            out["flat"].append(e * n + j)
            out["seg"].append(traj[:, j])
        for r in range(a["c_ptr"][e], a["c_ptr"][e + 1]):
            v0 = traj[a["c_j"][r]] + a["e_eff"]
            v1 = traj[a["c_j"][r] + 1] + a["e_eff"]
            out["v_req"][a["c_dst"][r], a["cols"]] = (v1 - v0) * a["h"][a["c_h"][r]] + v0
    return out


def _random_layer(rng: np.random.Generator, n: int, contiguous: bool) -> dict:
    """A layer's parameters and two event streams whose sources reach every run of slot blocks
    (none, 1..4 blocks from any first block), noise, CADC requests."""
    f32 = np.float32
    n_ep, t_steps, n_q = 5, 9, 4
    a: dict = {"n_ep": n_ep, "t_steps": t_steps,
               "u0": rng.normal(0, 5, n).astype(f32), "a_mem": rng.uniform(.8, 1, n).astype(f32),
               "a_syn": rng.uniform(.5, 1, (4, n)).astype(f32),
               "fi": rng.uniform(0, 1, (n_q, 4, n)).astype(f32),
               "fv": rng.uniform(0, .3, (n_q, 4, n)).astype(f32),
               "e_eff": rng.normal(0, 3, n).astype(f32), "theta": rng.normal(4, 2, n).astype(f32),
               "noise_step": rng.uniform(0, .5, n).astype(f32),
               "table": rng.normal(0, 1, 4096).astype(f32)}
    ranges = [(b0, b1) for b0 in range(4) for b1 in range(b0, 5)]  # incl. empty ones
    rows = []
    for s in ("x", "p"):
        b0 = np.array([r[0] for r in ranges] * 2, np.int64)
        b1 = np.array([r[1] for r in ranges] * 2, np.int64)
        nb = b1 - b0
        a[s + "_b0"], a[s + "_b1"] = b0, b1
        a[s + "_off"] = sum(len(r) for r in rows) + np.cumsum(nb) - nb
        w = rng.normal(0, 2, (int(nb.sum()), n)).astype(f32)
        w[rng.random(w.shape) < .3] = 0.0
        rows.append(w)
        n_ev = rng.integers(0, 25, n_ep)
        ep = np.repeat(np.arange(n_ep), n_ev)
        step = rng.integers(0, t_steps + 2, ep.size)  # some beyond the last step: never read
        o = np.lexsort((step, ep))
        a[s + "_ptr"] = np.concatenate([[0], np.cumsum(n_ev)]).astype(np.int64)
        a[s + "_step"] = step[o].astype(np.int64)
        a[s + "_src"] = rng.integers(0, b0.size, ep.size).astype(np.int64)
        a[s + "_q"] = rng.integers(0, n_q, ep.size).astype(np.int64)
    a["rows"] = np.concatenate(rows)
    a["noise_start"] = rng.integers(0, 4096 - 600, (t_steps, n_ep)).astype(np.int64)
    a["chan"] = (np.arange(n) + 7 if contiguous else rng.permutation(512)[:n]).astype(np.int64)
    n_req = 4
    a["c_ptr"] = np.arange(0, n_ep * n_req + 1, n_req, dtype=np.int64)
    a["c_j"] = rng.integers(0, t_steps, n_ep * n_req).astype(np.int64)
    a["c_h"] = rng.integers(0, 3, n_ep * n_req).astype(np.int64)
    a["c_dst"] = rng.permutation(n_ep * n_req).astype(np.int64)
    a["h"] = rng.uniform(0, 1, (3, n)).astype(f32)
    a["cols"] = (np.arange(n) + 3 if contiguous else rng.permutation(n + 9)[:n]).astype(np.int64)
    a["v_req"] = np.zeros((n_ep * n_req, n + 9), f32)
    return a


@pytest.mark.parametrize("n, contiguous, grid, noise", [
    (5, True, False, True), (16, False, True, True), (37, True, True, False),
    (37, False, False, True), (70, True, False, True)])
def test_integrate_kernel_equals_numpy_for_every_block_run(n, contiguous, grid, noise):
    """kernels.integrate on sources reaching every run of slot blocks (its generic path as well
    as its two-block one), both streams, noise through any channel map, the grid or the CADC
    requests, episode ranges, a hit list longer than its room: bit for bit as numpy."""
    rng = np.random.default_rng(n)
    a = _random_layer(rng, n, contiguous)
    if not noise:
        a["noise_start"] = np.zeros((0, 0), np.int64)
    t1 = a["t_steps"] + 1
    want = _integrate_numpy(a, 0, a["n_ep"])
    assert 3 <= len(want["flat"])
    for e_lo, e_hi, cap in ((0, a["n_ep"], 64), (1, 4, 64), (0, a["n_ep"], 2)):
        v_out = np.full((t1, a["n_ep"], n) if grid else (0, 0, 0), 7, np.float32)
        syn_out = np.full((t1, 4, a["n_ep"], n) if grid else (0, 4, 1, 1), 7, np.float32)
        umax = np.full((a["n_ep"], n), 7, np.float32)
        flat = np.full(cap, -1, np.int64)
        seg = np.zeros((cap, t1), np.float32)
        v_req = np.zeros_like(a["v_req"])
        c = (a["c_ptr"] if not grid else np.zeros(0, np.int64), a["c_j"], a["c_h"], a["c_dst"],
             a["h"], a["cols"], v_req)
        hits = kernels.integrate(
            a["u0"], a["a_mem"], a["a_syn"], kernels.tiles(a["fi"], n), kernels.tiles(a["fv"], n),
            a["e_eff"], a["theta"], *(a["x_" + k] for k in ("ptr", "step", "src", "q", "off",
                                                           "b0", "b1")),
            *(a["p_" + k] for k in ("ptr", "step", "src", "q", "off", "b0", "b1")),
            kernels.tiles(a["rows"], n), a["noise_start"], a["table"], a["chan"],
            a["noise_step"], v_out, syn_out, umax, flat, seg, *c, e_lo, e_hi)
        sub = _integrate_numpy(a, e_lo, e_hi)
        assert hits == len(sub["flat"])
        k = min(hits, cap)
        np.testing.assert_array_equal(flat[:k], sub["flat"][:k])
        bits = [(umax[e_lo:e_hi], sub["umax"][e_lo:e_hi])]
        if k:
            bits.append((seg[:k], np.stack(sub["seg"][:k])))
        if grid:
            bits += [(v_out[:, e_lo:e_hi], sub["v_out"][:, e_lo:e_hi]),
                     (syn_out[:, :, e_lo:e_hi], sub["syn_out"][:, :, e_lo:e_hi])]
        else:
            bits.append((v_req, sub["v_req"]))
        for got, ref in bits:
            np.testing.assert_array_equal(got.view(np.int32), ref.view(np.int32))
    assert len(want["flat"]) > 2  # (the last run's room of 2 was too small)


def test_integrate_kernel_refuses_tables_not_in_tiles_layout():
    rng = np.random.default_rng(0)
    a = _random_layer(rng, 20, True)
    t1 = a["t_steps"] + 1
    with pytest.raises(ValueError, match="tiles"):
        kernels.integrate(
            a["u0"], a["a_mem"], a["a_syn"], kernels.tiles(a["fi"], 20), a["fv"].copy(),
            a["e_eff"], a["theta"], *(a["x_" + k] for k in ("ptr", "step", "src", "q", "off",
                                                           "b0", "b1")),
            *(a["p_" + k] for k in ("ptr", "step", "src", "q", "off", "b0", "b1")),
            kernels.tiles(a["rows"], 20), a["noise_start"], a["table"], a["chan"],
            a["noise_step"], np.zeros((0, 0, 0), np.float32), np.zeros((0, 4, 1, 1), np.float32),
            np.zeros((a["n_ep"], 20), np.float32), np.zeros(8, np.int64),
            np.zeros((8, t1), np.float32), np.zeros(0, np.int64), a["c_j"], a["c_h"],
            a["c_dst"], a["h"], a["cols"], a["v_req"], 0, a["n_ep"])
