"""Chip-to-chip transfer of a finished `python -m tools.train` run (any dataset).

bench/transfer.py trains digits networks itself; this script takes the checkpoint of a real run
(e.g. the Fashion-MNIST run of docs/results.md, trained in the loop on chip A), tests it on A,
connects the same weights to chip B (calibrated to the same training targets) and tests before
any retraining, then fine-tunes one epoch in the loop on B and tests again. Claim (issue 5): B
loses <= 2 % before retraining and recovers with one fine-tuning epoch.

Prints a markdown table (or --json: one JSON object) and writes it between
<!-- transfer-checkpoint:begin --> and <!-- transfer-checkpoint:end --> in docs/results.md
(--no-write: don't).

    python bench/transfer_checkpoint.py --checkpoint DIR/last.pt --dataset fashion-mnist \
        --board-a "emu://?seed=1" --board-b "emu://?seed=2" [--finetune-lr LR] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _entry, _results  # noqa: E402
from bench import _recipe as R  # noqa: E402
from tools import train as train_tool  # noqa: E402
from training.board import training_targets  # noqa: E402
from training.loss import PNASLoss  # noqa: E402
from training.trainer import TrainConfig, evaluate, load_checkpoint, load_into, train  # noqa: E402

MARKER = "transfer-checkpoint"
TITLE = "Chip-to-chip transfer of the Fashion-MNIST run (issue 5)"
MAX_LOSS = 0.02


def recipe(args: argparse.Namespace, state: dict[str, Any]) -> argparse.Namespace:
    """tools.train's arguments for this dataset, hidden size from the checkpoint."""
    hidden = state["network"]["layers"][1]["size"]
    argv = ["--dataset", args.dataset, "--epochs", "1", "--hidden", str(hidden)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.max_batches is not None:
        argv += ["--max-batches", str(args.max_batches)]
    out = train_tool.parser().parse_args(argv)
    for name, value in train_tool.RECIPES[args.dataset].items():
        if getattr(out, name) is None:
            setattr(out, name, value)
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    R.single_thread()
    state = load_checkpoint(args.checkpoint)
    opts = recipe(args, state)
    train_set, test_set = train_tool.load_data(args.dataset, args.data_dir, opts.input_code,
                                               opts.substeps, opts.resize)
    if args.max_test is not None:
        test_set = _head(test_set, args.max_test)
    net = train_tool.build_network(opts, train_set.n_inputs,
                                   max(train_set.n_classes, test_set.n_classes))
    load_into(net, state, args.checkpoint)
    loss = PNASLoss(readout_scale=opts.readout_scale)
    history = state.get("history") or []
    first_lr = float(history[0]["lr"]) if history else opts.lr
    ft_lr = args.finetune_lr if args.finetune_lr is not None else 0.1 * first_lr
    row: dict[str, Any] = {"dataset": args.dataset, "checkpoint": str(args.checkpoint),
                           "epochs_trained": int(state["epoch"]), "board_a": args.board_a,
                           "board_b": args.board_b, "finetune_lr": ft_lr}
    targets = training_targets()
    t0 = time.perf_counter()
    for key, url in (("a", args.board_a), ("b", args.board_b)):
        board = R.connect(url)
        try:
            cal = R.calibrate(board, targets)
            row[f"serial_{key}"] = f"{int(board.info.serial):016X}"
            row[f"clamped_{key}"] = R.clamped(cal)
            net.connect(R.backend(board, cal))
            row[f"acc_{key}"] = evaluate(net, loss, test_set).accuracy
            if key == "b":
                row["loss_before"] = row["acc_a"] - row["acc_b"]
                t1 = time.perf_counter()
                config = TrainConfig(epochs=1, lr=ft_lr, batch_size=opts.batch_size,
                                     seed=args.seed, max_batches=opts.max_batches, threads=1)
                train(net, loss, train_set, None, config)
                row["finetune_seconds"] = time.perf_counter() - t1
                ev = evaluate(net, loss, test_set)
                row["acc_b_after"] = ev.accuracy
                row["spikes_b_after"] = ev.hidden_spikes_per_sample
                row["loss_after"] = row["acc_a"] - row["acc_b_after"]
        finally:
            net.connect("sim")
            board.close()
    row["seconds"] = time.perf_counter() - t0
    row["loss_within_2_percent"] = bool(row["loss_before"] <= MAX_LOSS)
    row["recovered"] = bool(row["acc_b_after"] >= row["acc_b"] and row["loss_after"] <= 0.005)
    return row


def _head(ds: Any, n: int) -> Any:
    out = ds.__class__.__new__(ds.__class__)
    out.enc, out.bins, out.labels = ds.enc, ds.bins[:n], ds.labels[:n]
    return out


def table(row: dict[str, Any]) -> str:
    pct = _results.pct
    return "\n".join([
        f"{row['dataset']} network of `python -m tools.train` trained {row['epochs_trained']} "
        f"epochs in the loop on chip A; both chips calibrated to `training_targets()`; test "
        f"accuracy on the whole test set; fine-tuning: one in-the-loop epoch on B at learning "
        f"rate {row['finetune_lr']:.1e}.",
        "",
        "| chip A -> chip B | on A | on B, before retraining | vs A | on B, after 1 epoch | "
        "vs A | fine-tuning epoch |",
        "|---|---|---|---|---|---|---|",
        f"| {row['board_a']} -> {row['board_b']} | {pct(row['acc_a'], 2)} | "
        f"{pct(row['acc_b'], 2)} | {100 * (0 - row['loss_before']):+.2f} | "
        f"{pct(row['acc_b_after'], 2)} | {100 * (0 - row['loss_after']):+.2f} | "
        f"{row['finetune_seconds']:.0f} s |",
        "",
        f"Loss on B before retraining <= 2 %: **{'yes' if row['loss_within_2_percent'] else 'no'}"
        f"**; after one epoch on B no worse than before and within 0.5 % of A: "
        f"**{'yes' if row['recovered'] else 'no'}**. Command: `python bench/transfer_checkpoint.py"
        f" --checkpoint CKPT --dataset {row['dataset']} --board-a \"{row['board_a']}\" "
        f"--board-b \"{row['board_b']}\"`",
    ])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--checkpoint", required=True, help="last.pt of a tools.train run (trained on board A)")
    a("--dataset", choices=train_tool.DATASETS, required=True)
    a("--data-dir", default=None)
    a("--board-a", default="emu://?seed=1")
    a("--board-b", default="emu://?seed=2")
    a("--finetune-lr", type=float, default=None,
      help="learning rate of the fine-tuning epoch (default: 0.1 x the run's initial rate)")
    a("--seed", type=int, default=0)
    a("--max-batches", type=int, default=None, help="fine-tuning batches (smoke runs)")
    a("--max-test", type=int, default=None, help="test samples (smoke runs)")
    a("--json", action="store_true")
    a("--no-write", action="store_true")
    a("--results", default=str(_results.RESULTS), help="markdown file to update")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    row = measure(args)
    if not args.no_write:
        _results.update(MARKER, table(row), TITLE, path=Path(args.results))
    print(json.dumps(row) if args.json else table(row))
    return row


if __name__ == "__main__":
    _entry.run(main)
