"""python -m tools.calibrate: calibrate every neuron of a board, write the calibration file.

  python -m tools.calibrate --board URL [--targets FILE] --out FILE [--plot PNG] [--json]
                            [--no-cache] [--clamp] [--check]

One progress bar per routine (stderr), then a table: per parameter the spread (std) across the
512 neurons before (uncalibrated chip, every neuron at the nominal code) and after calibration,
in physical units, and their ratio. --json prints one JSON object on the last stdout line:
{"serial", "seconds", "parameters": {NAME: {"std_before", "std_after", "ratio", "unit"}}, ...}.
The file is written only after every routine succeeded, atomically: a board that disconnects
mid-calibration leaves no file (and no partial file) behind. docs/calibration.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

import hostdriver
from calibration import Cache, CalibrationResult, Progress, Targets, calibrate, nominal, save
from calibration.behaviour import rate_spread
from tools import _cli

TABLE_ORDER = ("cadc_offset", "leak", "reset", "threshold", "tau_mem", "tau_syn_exc",
               "tau_syn_inh", "synaptic_strength", "synaptic_strength_inh")


class _Bars(Progress):
    """One tqdm bar per calibration step, counting board programs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None

    def start(self, step: str, index: int, total: int, expected_runs: int) -> None:
        self.close()
        self.bar = tqdm(total=expected_runs, desc=f"[{index + 1}/{total}] {step}", unit="run",
                        file=sys.stderr, disable=None if self.enabled else True, leave=True,
                        dynamic_ncols=True)

    def run(self, note: str) -> None:
        if self.bar is not None:
            if self.bar.n >= self.bar.total:
                self.bar.total += 1
            self.bar.update(1)

    def done(self, step: str, params: list) -> None:
        if self.bar is not None:
            self.bar.total = self.bar.n
            self.bar.refresh()
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def table(result: CalibrationResult) -> str:
    """The before/after table, one row per parameter."""
    head = f"{'parameter':<22} {'unit':<4} {'std before':>11} {'std after':>10} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    summary = result.summary()
    for name in (*TABLE_ORDER, *[n for n in summary if n not in TABLE_ORDER]):
        if name not in summary:
            continue
        s = summary[name]
        ratio = "-" if s["ratio"] is None else f"{s['ratio']:.3f}"
        lines.append(f"{name:<22} {s['unit']:<4} {_num(s['std_before']):>11} "
                     f"{_num(s['std_after']):>10} {ratio:>7}")
    if "refractory" in result:
        r = result["refractory"]
        lines.append(f"{'refractory':<22} {'us':<4} {'(digital: set to target, measured mean '}"
                     f"{_num(float(_nanmean(r.after)))} us)")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _nanmean(a: Any) -> float:
    import numpy as np

    a = np.asarray(a, float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def _physical(name: str, p: Any, values: Any) -> Any:
    """Values in the physical unit: potentials as absolute mV, the rest scaled."""
    if name in ("leak", "reset", "threshold"):
        return nominal.cadc_to_mv(values)
    return values * p.physical_scale


def plot(result: CalibrationResult, path: str) -> None:
    """Before/after histograms per parameter (physical units) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [n for n in (*TABLE_ORDER,) if n in result.parameters]
    cols = 3
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        p = result.parameters[name]
        before, after = (_physical(name, p, np.asarray(v, float)) for v in (p.before, p.after))
        vals = np.r_[before[np.isfinite(before)], after[np.isfinite(after)]]
        if vals.size == 0:
            ax.set_visible(False)
            continue
        bins = np.linspace(vals.min(), vals.max(), 60) if vals.max() > vals.min() else 10
        ax.hist(before[np.isfinite(before)], bins=bins, alpha=0.6, label="before")
        ax.hist(after[np.isfinite(after)], bins=bins, alpha=0.8, label="after")
        s = p.summary()
        ax.set_title(f"{name}: std {_num(s['std_before'])} -> {_num(s['std_after'])}",
                     fontsize=9)
        ax.set_xlabel(p.physical_unit)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(f"calibration of chip {result.serial:016X} ({result.seconds:.1f} s)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    targets = Targets.load(args.targets) if args.targets else Targets()
    out = Path(args.out)
    if out.is_dir():
        raise _cli.ToolFailure(f"--out {out} is a directory; give a file name")
    t0 = time.perf_counter()
    bars = _Bars(enabled=not args.json)
    cache: Cache | bool = False if args.no_cache else Cache()
    with hostdriver.connect(args.board, timeout=args.timeout) as board:
        try:
            result = calibrate(board, targets, progress=bars, cache=cache, clamp=args.clamp)
        finally:
            bars.close()
        check = None
        if args.check:
            check = (rate_spread(board, None), rate_spread(board, result))
    save(result, out)
    if args.plot:
        plot(result, args.plot)
    seconds = time.perf_counter() - t0
    if args.json:
        obj: dict[str, Any] = {
            "serial": result.serial, "seconds": round(seconds, 3),
            "parameters": result.summary(), "cached": result.from_cache,
            "calibration_seconds": round(result.seconds, 3), "out": str(out),
        }
        if "refractory" in result:
            r = result["refractory"]
            obj["refractory"] = {"target_us": _nanmean(r.target), "measured_us": _nanmean(r.after)}
        if check is not None:
            obj["firing_rate_cv"] = {"before": round(check[0].cv, 5),
                                     "after": round(check[1].cv, 5)}
        _cli.emit_json(obj)
        return _cli.EXIT_OK
    print(f"chip {result.serial:016X}: calibrated in {seconds:.1f} s"
          + (" (from the cache)" if result.from_cache else ""))
    print(table(result))
    if check is not None:
        print(f"firing rate spread (std/mean) under one input: {check[0].cv:.1%} uncalibrated, "
              f"{check[1].cv:.1%} calibrated")
    print(f"wrote {out}" + (f" and {args.plot}" if args.plot else ""))
    return _cli.EXIT_OK


def cli(argv: Sequence[str] | None = None) -> int:
    p = _cli.parser("python -m tools.calibrate",
                    "Calibrate all 512 neurons of a board and write a calibration file.")
    p.add_argument("--targets", metavar="FILE", help="JSON targets (docs/calibration.md)")
    p.add_argument("--out", metavar="FILE", required=True, help="calibration file to write")
    p.add_argument("--plot", metavar="PNG", help="write before/after histograms")
    p.add_argument("--no-cache", action="store_true",
                   help="always measure (default: reuse a cached calibration of this chip, "
                        "targets and software version)")
    p.add_argument("--clamp", action="store_true",
                   help="clamp unreachable targets to the nearest code (warning) instead of "
                        "failing")
    p.add_argument("--check", action="store_true",
                   help="also compare firing rates under one input before/after")
    return _cli.run(main, p, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
