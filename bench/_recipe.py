"""The digits recipe of `python -m tools.train --dataset digits`, as calls for the benches.

Everything comes from tools.train and training/ (RECIPES["digits"], build_network, load_data,
InputDropout, PNASLoss, TrainConfig, train, evaluate), so a bench trains exactly what the tool
trains; this module only strings the calls together and times them.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import train as train_tool  # noqa: E402
from training.loss import PNASLoss  # noqa: E402
from training.trainer import TrainConfig, evaluate, train  # noqa: E402

DATASET = "digits"
CONNECT_TIMEOUT_S = 30.0  # the machine is shared: a slow batch must not look like a dead link


def log(message: str) -> None:
    """Progress on stderr (stdout carries the table or the JSON)."""
    print(message, file=sys.stderr, flush=True)


def recipe(epochs: int, seed: int, max_batches: int | None = None) -> argparse.Namespace:
    """tools.train's arguments for `--dataset digits --epochs N --seed S`, per-dataset defaults
    filled in as tools.train does."""
    argv = ["--dataset", DATASET, "--epochs", str(epochs), "--seed", str(seed)]
    if max_batches is not None:
        argv += ["--max-batches", str(max_batches)]
    args = train_tool.parser().parse_args(argv)
    for name, value in train_tool.RECIPES[DATASET].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


@dataclass
class Digits:
    train: Any
    test: Any

    @property
    def n_in(self) -> int:
        return int(self.train.n_inputs)

    @property
    def n_out(self) -> int:
        return int(max(self.train.n_classes, self.test.n_classes))


def load(args: argparse.Namespace) -> Digits:
    train_set, test_set = train_tool.load_data(DATASET, None, args.input_code)
    return Digits(train_set, test_set)


def network(args: argparse.Namespace, data: Digits) -> Any:
    """A fresh network of the recipe (same initial weights for the same seed)."""
    return train_tool.build_network(args, data.n_in, data.n_out)


def loss_of(args: argparse.Namespace, net: Any) -> PNASLoss:
    """The recipe's loss; args.readout_penalty / readout_bound (tools.train's --readout-penalty
    / --readout-bound) add PNASLoss's readout amplitude penalty."""
    return PNASLoss(readout_scale=args.readout_scale, rho=args.rho, l2=args.l2,
                    label_smoothing=getattr(args, "label_smoothing", 0.0),
                    readout_penalty=getattr(args, "readout_penalty", 0.0),
                    readout_bound=getattr(args, "readout_bound", 0.0), weights=net.weights())


def fit(net: Any, args: argparse.Namespace, data: Digits, *, epochs: int | None = None,
        lr: float | None = None) -> float:
    """Train net on its current backend with the recipe (no per-epoch test pass); seconds."""
    config = TrainConfig(epochs=args.epochs if epochs is None else epochs,
                         lr=args.lr if lr is None else lr, lr_decay=args.lr_decay,
                         batch_size=args.batch_size, seed=args.seed,
                         max_batches=args.max_batches, threads=args.threads,
                         schedule=args.schedule, lr_floor=args.lr_floor, warmup=args.warmup)
    train_set = train_tool.InputDropout(data.train, args.input_dropout) \
        if args.input_dropout else data.train
    t0 = time.perf_counter()
    train(net, loss_of(args, net), train_set, None, config)
    return time.perf_counter() - t0


def final_lr(args: argparse.Namespace) -> float:
    """The learning rate the recipe's schedule reaches after args.epochs epochs."""
    return float(args.lr * (1.0 - args.lr_decay) ** args.epochs)


def test_accuracy(net: Any, args: argparse.Namespace, data: Digits, repeats: int = 1) -> float:
    """Mean test accuracy over `repeats` passes (the chip's temporal noise moves one pass by
    ~0.3 %; a software net gives the same number every time)."""
    loss = loss_of(args, net)
    accs = [evaluate(net, loss, data.test).accuracy for _ in range(max(1, repeats))]
    return float(np.mean(accs))


def connect(url: str) -> Any:
    import hostdriver

    return hostdriver.connect(url, timeout=CONNECT_TIMEOUT_S)


def calibrate(board: Any, targets: Any) -> Any:
    """calibration.calibrate(board, targets, clamp=True), its clamp warnings silenced (the
    clamped circuits are counted from the result instead)."""
    import calibration

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calibration.calibrate(board, targets, clamp=True)


def clamped(result: Any) -> dict[str, int]:
    """Circuits each parameter's calibration had to clamp (target out of reach)."""
    return {name: int(np.asarray(p.clamped).size) for name, p in result.parameters.items()
            if np.asarray(p.clamped).size}


def backend(board: Any, result: Any) -> Any:
    from training.board import BoardBackend

    return BoardBackend(board, calibration=result, timeout=CONNECT_TIMEOUT_S)


def single_thread() -> None:
    """Small networks run fastest single-threaded on the shared machine (tools.train default)."""
    torch.set_num_threads(1)
