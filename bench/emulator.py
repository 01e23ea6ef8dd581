"""Inference throughput of the PNAS MNIST network shape on the emulated chip vs snnTorch.

Shape (issue 3): 256 inputs, one latency-coded spike per spiking pixel (~50 % of pixels),
246 hidden LIF + 10 LI output neurons with two circuits each (fan-in 512 rows), 34 us per sample,
hidden spikes and CADC traces (all 512 channels) every 1.7 us returned.

Through the whole stack: hostdriver program encode -> link/frames -> in-process emulator
(executor + AnalogCore) -> trace -> decode into per-episode arrays. snnTorch runs the same
network shape (Linear 256->246, Leaky, Linear 246->10, Leaky without reset) for 20 steps on the
same batch size, in the same process. Prints one JSON object.

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


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (compiles, caches, page faults)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def inputs(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return pnas_inputs(np.random.default_rng(seed), batch, t_max_ticks=1000)


def bench_core(batch: int, repeats: int) -> dict:
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
    out = {}

    def run() -> None:
        out["r"] = core.run(b)

    sec = median_time(run, repeats)
    return {"core_samples_per_s": batch / sec,
            "hidden_spikes_per_sample": float(out["r"].spike_label.size / batch)}


def bench_stack(batch: int, repeats: int) -> dict:
    import hostdriver
    from hostdriver.program import CADCSchedule, Program, SpikeInput

    img = ChipImage()
    pnas_network(img, np.random.default_rng(0))
    addrs, values = img.addresses_values()
    board = hostdriver.connect(f"emu://?seed={SERIAL}", timeout=60.0)
    try:
        board.write(addrs, values)
        ep, t, lab = inputs(batch, 1)
        spikes = SpikeInput(ep, t, lab)
        out = {}

        def run() -> None:
            prog = Program()
            ticket = prog.episodes(batch, DURATION_TICKS, spikes=spikes, unit="ticks",
                                   cadc=CADCSchedule(CADC_INTERVAL, CADC_COUNT, 0))
            res = prog.run(board, timeout=120.0)
            out["data"] = res[ticket]

        sec = median_time(run, repeats)
    finally:
        board.close()
    return {"samples_per_s": batch / sec}


def bench_snntorch(batch: int, repeats: int) -> dict:
    import snntorch as snn

    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(256, 246), torch.nn.Linear(246, 10)
    lif1 = snn.Leaky(beta=0.9)
    li2 = snn.Leaky(beta=0.9, reset_mechanism="none")
    rng = np.random.default_rng(1)
    x = torch.zeros(20, batch, 256)
    on = torch.from_numpy(rng.random((batch, 256)) < 0.5)
    step = torch.from_numpy(rng.integers(0, 20, (batch, 256)))
    x[step[on], torch.nonzero(on)[:, 0], torch.nonzero(on)[:, 1]] = 1.0

    def run() -> None:
        with torch.no_grad():
            m1, m2 = lif1.init_leaky(), li2.init_leaky()
            for k in range(20):
                s1, m1 = lif1(fc1(x[k]), m1)
                _, m2 = li2(fc2(s1), m2)

    return {"snntorch_samples_per_s": batch / median_time(run, repeats)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--core-only", action="store_true", help="time AnalogCore.run alone")
    args = ap.parse_args(argv)
    res: dict = {"batch": args.batch, "torch_threads": torch.get_num_threads()}
    res.update(bench_core(args.batch, args.repeats))
    if not args.core_only:
        res.update(bench_stack(args.batch, args.repeats))
    res.update(bench_snntorch(args.batch, args.repeats))
    ours = res.get("samples_per_s", res["core_samples_per_s"])
    res["vs_snntorch"] = ours / res["snntorch_samples_per_s"]
    res["real_chip_samples_per_s"] = 84_000
    res["vs_real_chip"] = ours / 84_000
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
