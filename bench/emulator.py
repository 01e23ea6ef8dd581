"""Inference throughput of the PNAS MNIST network shape on the emulated chip vs snnTorch.

Shape (issue 3): 256 inputs, one latency-coded spike per spiking pixel (~50 % of pixels),
246 hidden LIF + 10 LI output neurons with two circuits each (fan-in 512 rows), 34 us per sample,
hidden spikes and CADC traces (all 512 channels) every 1.7 us returned.

Through the whole stack: hostdriver program encode -> link/frames -> in-process emulator
(executor + AnalogCore) -> trace -> decode into per-episode arrays. snnTorch runs the same
network shape (Linear 256->246, Leaky, Linear 246->10, Leaky without reset) for 20 steps on the
same batch size, in the same process, at its better of 1 and all threads; all runs interleaved.
Prints one JSON object (rates, ratios, median wall and CPU ms per batch, whether the numba
kernels ran, and where the stack's time goes: `stack_stage_ms` / `stack_stage_cpu_ms`, from
extra batches after the timed ones).

    python bench/emulator.py [--batch 256] [--repeats 5] [--core-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "emulator", "analog"))

from analog_chipcfg import ChipImage, pnas_inputs, pnas_network  # noqa: E402

from emulator.analog import AnalogCore, EpisodeBatch  # noqa: E402
from emulator.registers import RegisterFile  # noqa: E402

DURATION_TICKS = 34 * 125  # 34 us per sample
CADC_INTERVAL = 212  # ~1.7 us
CADC_COUNT = 20
SERIAL = 1


def interleaved(fns: dict, repeats: int, cpu: dict | None = None) -> dict:
    """Median seconds per call of each fn, calls interleaved so that all see the same load;
    cpu (if given) receives each fn's median process CPU time (all its threads), which a
    loaded machine disturbs far less than wall time."""
    for fn in fns.values():
        fn()  # warm-up (caches, page faults)
    times: dict = {k: [] for k in fns}
    cpus: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
            cpus[k].append(time.process_time() - c0)
    if cpu is not None:
        cpu.update({k: statistics.median(v) for k, v in cpus.items()})
    return {k: statistics.median(v) for k, v in times.items()}


def inputs(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return pnas_inputs(np.random.default_rng(seed), batch, t_max_ticks=1000)


def core_fn(batch: int, out: dict):
    img = ChipImage()
    pnas_network(img, np.random.default_rng(0))
    regs = RegisterFile(SERIAL)
    img.apply(regs)
    core = AnalogCore(SERIAL, regs)
    ep, t, lab = inputs(batch, 1)
    b = EpisodeBatch(
        n_episodes=batch, duration=np.full(batch, DURATION_TICKS), spike_episode=ep,
        spike_time=t, spike_label=lab, cadc_episode=np.repeat(np.arange(batch), CADC_COUNT),
        cadc_time=np.tile(np.arange(CADC_COUNT) * CADC_INTERVAL, batch), noise_key=1)
    out["dt_ticks"] = core.model().chip.sim.dt_ticks
    out["kernels"] = core.use_kernels

    def run() -> None:
        out["hidden_spikes_per_sample"] = float(core.run(b).spike_label.size / batch)

    return run


def stack_fn(batch: int, out: dict):
    import hostdriver
    from hostdriver.program import CADCSchedule, Program, SpikeInput

    img = ChipImage()
    pnas_network(img, np.random.default_rng(0))
    addrs, values = img.addresses_values()
    board = hostdriver.connect(f"emu://?seed={SERIAL}", timeout=60.0)
    board.write(addrs, values)
    out["board"] = board
    ep, t, lab = inputs(batch, 1)
    spikes = SpikeInput(ep, t, lab)

    def run() -> None:
        prog = Program()
        ticket = prog.episodes(batch, DURATION_TICKS, spikes=spikes, unit="ticks",
                               cadc=CADCSchedule(CADC_INTERVAL, CADC_COUNT, 0))
        data = prog.run(board, timeout=120.0)[ticket]
        out["stack_spikes_per_sample"] = float(np.asarray(data.spikes.time).size / batch) if (
            hasattr(data, "spikes") and hasattr(data.spikes, "time")) else None

    return run


_STAGES = (  # (stage, module, attribute path): the stack's steps, timed by wrapping them
    ("program_encode", "hostdriver.program", "Program.episodes"),
    ("board_run", "hostdriver.board", "Board.run"),
    ("executor", "emulator.executor", "_Run.execute"),
    ("core", "emulator.analog.core", "AnalogCore._run"),
    ("trace_decode", "protocol.records", "decode_trace"),
    ("episode_data", "hostdriver.traces", "EpisodeData.from_trace"),
)


def stage_times(run, batches: int) -> tuple[dict, dict]:
    """Median wall and process-CPU ms per batch of each step of the stack (its functions
    wrapped for `batches` extra calls of run, after the timed ones): program encode, link and
    transport both ways (Board.run less the executor and the decode), executor beyond the core,
    AnalogCore (its worker threads' CPU included), trace decode, EpisodeData."""
    import importlib

    acc: dict = {}
    undo = []
    for name, mod, path in _STAGES:
        owner = importlib.import_module(mod)
        *outer, attr = path.split(".")
        for part in outer:
            owner = getattr(owner, part)
        fn = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        is_cm = isinstance(fn, classmethod)

        def timed(*a, _fn=fn.__func__ if is_cm else fn, _name=name, **k):
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                return _fn(*a, **k)
            finally:
                w, c = acc.setdefault(_name, ([0.0], [0.0]))
                w[-1] += time.perf_counter() - w0
                c[-1] += time.process_time() - c0

        setattr(owner, attr, classmethod(timed) if is_cm else timed)
        undo.append((owner, attr, fn))
    per: dict = {}
    try:
        for _ in range(batches):
            for w, c in acc.values():
                w.append(0.0)
                c.append(0.0)
            w0, c0 = time.perf_counter(), time.process_time()
            run()
            for key, val in (("total", (time.perf_counter() - w0, time.process_time() - c0)),):
                per.setdefault(key, []).append(val)
            for name, (w, c) in acc.items():
                per.setdefault(name, []).append((w[-1], c[-1]))
    finally:
        for owner, attr, fn in reversed(undo):
            setattr(owner, attr, fn)
    med = {k: [statistics.median(x[i] for x in v) * 1e3 for i in (0, 1)] for k, v in per.items()}
    out_w, out_c = {}, {}
    for i, out in ((0, out_w), (1, out_c)):
        g = {k: v[i] for k, v in med.items()}
        out.update({
            "program_encode": g.get("program_encode", 0.0),
            "link_transport": g.get("board_run", 0.0) - g.get("executor", 0.0)
            - g.get("trace_decode", 0.0),
            "executor_beyond_core": g.get("executor", 0.0) - g.get("core", 0.0),
            "core": g.get("core", 0.0),
            "trace_decode": g.get("trace_decode", 0.0),
            "episode_data": g.get("episode_data", 0.0),
            "total": g.get("total", 0.0),
        })
    return ({k: round(v, 2) for k, v in out_w.items()}, {k: round(v, 2) for k, v in out_c.items()})


def snntorch_fn(batch: int, threads: int):
    import snntorch as snn

    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(256, 246), torch.nn.Linear(246, 10)
    lif1 = snn.Leaky(beta=0.9)
    li2 = snn.Leaky(beta=0.9, reset_mechanism="none")
    rng = np.random.default_rng(1)
    x = torch.zeros(20, batch, 256)
    on = torch.from_numpy(rng.random((batch, 256)) < 0.5)
    step = torch.from_numpy(rng.integers(0, 20, (batch, 256)))
    idx = torch.nonzero(on)
    x[step[on], idx[:, 0], idx[:, 1]] = 1.0

    def run() -> None:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                m1, m2 = lif1.init_leaky(), li2.init_leaky()
                for k in range(20):
                    s1, m1 = lif1(fc1(x[k]), m1)
                    _, m2 = li2(fc2(s1), m2)
        finally:
            torch.set_num_threads(old)

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--core-only", action="store_true", help="time AnalogCore.run alone")
    args = ap.parse_args(argv)
    n = args.batch
    info: dict = {}
    fns = {"core": core_fn(n, info)}
    if not args.core_only:
        fns["stack"] = stack_fn(n, info)
    threads = sorted({1, torch.get_num_threads()})
    for th in threads:
        fns[f"snntorch_{th}"] = snntorch_fn(n, th)
    cpu: dict = {}
    stages = None
    try:
        sec = interleaved(fns, args.repeats, cpu)
        if "stack" in fns:
            stages = stage_times(fns["stack"], args.repeats)
    finally:
        if "board" in info:
            info.pop("board").close()
    snn_best = max(n / sec[f"snntorch_{th}"] for th in threads)
    res: dict = {"batch": n, "dt_ticks": info["dt_ticks"],
                 "core_samples_per_s": n / sec["core"]}
    res["samples_per_s"] = n / sec["stack"] if "stack" in sec else None
    res["snntorch_samples_per_s"] = snn_best
    res.update({f"snntorch_threads{th}_samples_per_s": n / sec[f"snntorch_{th}"]
                for th in threads})
    ours = res["samples_per_s"] if res["samples_per_s"] is not None else res[
        "core_samples_per_s"]
    res["vs_snntorch"] = ours / snn_best
    res["core_vs_snntorch"] = res["core_samples_per_s"] / snn_best
    res["hidden_spikes_per_sample"] = info.get("hidden_spikes_per_sample")
    res["real_chip_samples_per_s"] = 84_000
    res["vs_real_chip"] = ours / 84_000
    # where the time goes (median ms per batch): the stack's share beyond AnalogCore.run is
    # program encode, framing + CRC both ways, executor and trace decode
    res["ms_per_batch"] = {k: round(v * 1e3, 2) for k, v in sec.items()}
    if "stack" in sec:
        res["ms_per_batch"]["stack_minus_core"] = round((sec["stack"] - sec["core"]) * 1e3, 2)
    # process CPU time per batch (ms; every thread of the process, load-independent within
    # ~10 %): the cost itself, where wall time also counts waiting for a busy core
    res["cpu_ms_per_batch"] = {k: round(v * 1e3, 2) for k, v in cpu.items()}
    res["kernels"] = info.get("kernels")
    if stages is not None:
        # the stack's steps (medians of `repeats` extra batches, run after the timed ones with
        # the steps' functions wrapped): wall ms and process CPU ms per batch
        res["stack_stage_ms"], res["stack_stage_cpu_ms"] = stages
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
