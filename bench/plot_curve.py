"""Learning curves of `python -m tools.train` runs, read from their checkpoints, as one PNG.

Each checkpoint (DIR/last.pt) holds the per-epoch history of its run: train and test accuracy
and hidden spikes per sample. Top panel: accuracies per epoch (test solid, train dashed), with
an optional horizontal reference line; bottom panel: test hidden spikes per sample.

    python bench/plot_curve.py RUN.pt[:LABEL] [...] --out docs/curve.png [--reference 0.842]
                               [--chain]

--chain: the runs are consecutive phases of one training (e.g. `tools.train --pretrain-epochs`:
DIR/pretrain/last.pt, then DIR/last.pt), so each run's epochs continue where the previous
run's ended.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hostdriver.atomic import atomic_open  # noqa: E402
from protocol.errors import ConfigError  # noqa: E402
from training.trainer import load_checkpoint  # noqa: E402


def series(path: str) -> dict[str, list[float]]:
    """Per-epoch columns of a checkpoint's history."""
    history = load_checkpoint(path)["history"]
    if not history:
        raise ConfigError(f"{path}: the checkpoint has no finished epoch")
    keys = ("epoch", "train_accuracy", "test_accuracy", "test_hidden_spikes_per_sample")
    return {k: [float(h[k]) if h.get(k) is not None else float("nan") for h in history]
            for k in keys}


def chained(runs: list[tuple[str, dict[str, list[float]]]]) -> list[tuple[str, dict]]:
    """The runs' epochs shifted so that each run starts after the previous one's last epoch."""
    out, offset = [], 0.0
    for label, s in runs:
        shifted = dict(s, epoch=[e + offset for e in s["epoch"]])
        out.append((label, shifted))
        offset = shifted["epoch"][-1]
    return out


def plot(runs: list[tuple[str, dict[str, list[float]]]], out: Path,
         reference: float | None = None, reference_label: str = "reference") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    for label, s in runs:
        line, = top.plot(s["epoch"], [100 * a for a in s["test_accuracy"]], label=f"{label} test")
        top.plot(s["epoch"], [100 * a for a in s["train_accuracy"]], "--", color=line.get_color(),
                 alpha=0.6, label=f"{label} train")
        bottom.plot(s["epoch"], s["test_hidden_spikes_per_sample"], color=line.get_color())
    if reference is not None:
        top.axhline(100 * reference, color="grey", lw=0.8, ls=":", label=reference_label)
    top.set_ylabel("accuracy (%)")
    top.legend(fontsize=8, loc="lower right")
    top.grid(alpha=0.3)
    bottom.set_ylabel("hidden spikes / sample")
    bottom.set_xlabel("epoch")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_open(out) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="checkpoint paths, each optionally :LABEL")
    p.add_argument("--out", required=True, help="PNG to write (atomically)")
    p.add_argument("--reference", type=float, default=None, help="accuracy line, e.g. 0.842")
    p.add_argument("--reference-label", default="reference")
    p.add_argument("--chain", action="store_true",
                   help="the runs are consecutive phases: each continues the previous' epochs")
    args = p.parse_args(argv)
    runs = []
    for spec in args.runs:
        path, _, label = spec.partition(":")
        runs.append((label or Path(path).parent.name, series(path)))
    if args.chain:
        runs = chained(runs)
    out = plot(runs, Path(args.out), args.reference, args.reference_label)
    print(out)
    return out


if __name__ == "__main__":
    main()
