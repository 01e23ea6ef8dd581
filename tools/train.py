"""python -m tools.train: train a PNAS-style spiking network with the chip in the loop.

  python -m tools.train --board URL --dataset digits|fashion-mnist|mnist [--data-dir DIR]
                        --epochs N [--calibration FILE | --calibrate | --allow-uncalibrated]
                        [--checkpoint DIR] [--resume] [--json] [--sim] ...

The network is inputs -> LIF hidden -> LI readout (Linear layers quantised to the chip's +-63
signed weights). With a board its forward pass runs on the chip (training.board.BoardBackend,
one program per batch, measured membranes and spikes injected into the model: docs/training.md);
--sim trains the same model in software only. A progress bar per epoch shows loss, accuracy and
hidden spikes per sample; a checkpoint is written after every epoch (--resume continues after an
interruption, refusing another calibration). --json prints one JSON object on the last stdout
line: test_accuracy, hidden_spikes_per_sample, train_samples_per_s, epochs, serial, ...
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from protocol.errors import ConfigError, TrainingError
from tools import _cli

DATASETS = ("digits", "fashion-mnist", "mnist")
WEAK_STRENGTH_LSB = 10.0  # below this a calibration's synapses are weak for the PNAS model


def load_data(name: str, data_dir: str | None) -> tuple[Any, Any]:
    """(train, test) SpikeDatasets of a named dataset."""
    from training import data

    if name == "digits":
        return data.load_digits_split()
    if name == "fashion-mnist":
        d = data_dir or str(data.FASHION_MNIST_DIR)
        return data.load_fashion_mnist("train", d), data.load_fashion_mnist("test", d)
    if name == "mnist":
        if not data_dir:
            raise ConfigError("--dataset mnist needs --data-dir DIR (MNIST IDX files)")
        return data.load_mnist("train", data_dir), data.load_mnist("test", data_dir)
    raise ConfigError(f"unknown dataset {name!r} (valid: {', '.join(DATASETS)})")


class _Bars:
    """One tqdm bar per epoch on stderr (hidden with --json or when stderr is no terminal)."""

    def __init__(self, enabled: bool, epochs: int) -> None:
        self.enabled, self.epochs = enabled, epochs
        self.bar: tqdm | None = None
        self.epoch = -1

    def __call__(self, epoch: int, batch: int, n_batches: int, running: dict[str, float]) -> None:
        if epoch != self.epoch:
            self.close()
            self.epoch = epoch
            self.bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{self.epochs}",
                            unit="batch", file=sys.stderr, dynamic_ncols=True, leave=True,
                            disable=None if self.enabled else True)
        assert self.bar is not None
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{running['loss']:.3f}", acc=f"{running['accuracy']:.3f}",
                             spikes=f"{running['spikes']:.1f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _calibration(args: argparse.Namespace, board: Any) -> Any:
    """The CalibrationResult the run uses (None: uncalibrated, allowed)."""
    import calibration
    from training.board import training_targets

    if args.calibration:
        result = calibration.load(args.calibration)
        result.check_serial(board.info.serial, source=f"calibration file {args.calibration}")
        strength = float(result.targets.scalar("synaptic_strength"))
        if strength < WEAK_STRENGTH_LSB and not args.json:
            print(f"note: {args.calibration} calibrates a weight-63 event to {strength:g} LSB; "
                  f"training works best with ~14 LSB (--calibrate uses "
                  "training.board.training_targets())", file=sys.stderr)
        return result
    if args.calibrate:
        if not args.json:
            print("calibrating the board to training targets ...", file=sys.stderr)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a few clamped circuits are absorbed by training
            result = calibration.calibrate(board, training_targets(args.strength), clamp=True)
        if not args.json:
            how = "from the cache" if getattr(result, "from_cache", False) else \
                f"in {time.perf_counter() - t0:.1f} s"
            print(f"calibrated chip {result.serial:016X} {how}", file=sys.stderr)
        return result
    if not args.allow_uncalibrated:
        raise TrainingError(
            "the board is uncalibrated: pass --calibration FILE (python -m tools.calibrate), "
            "--calibrate (calibrate to training targets first), or --allow-uncalibrated"
        )
    return None


def build_network(args: argparse.Namespace, n_in: int, n_out: int) -> Any:
    from training.nn import pnas_network

    return pnas_network(n_in, args.hidden, n_out, quantize=True, seed=args.seed,
                        dropout=args.dropout)


def main(args: argparse.Namespace) -> int:
    if args.epochs < 0:
        raise ConfigError(f"--epochs must be >= 0, got {args.epochs}")
    if args.resume and not args.checkpoint:
        raise ConfigError("--resume needs --checkpoint DIR")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.calibration and args.calibrate:
        raise ConfigError("give either --calibration FILE or --calibrate, not both")
    if args.sim and (args.calibration or args.calibrate):
        raise ConfigError("--sim trains in software: --calibration/--calibrate need a board")
    if not args.sim and args.dropout > 0:
        raise ConfigError("--dropout works with --sim only (the chip cannot silence neurons "
                          "per sample)")
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _main(args)
    finally:
        torch.set_num_threads(threads_before)


def _main(args: argparse.Namespace) -> int:
    from training import board as tb
    from training.loss import PNASLoss
    from training.trainer import TrainConfig, train

    train_set, test_set = load_data(args.dataset, args.data_dir)
    n_out = max(train_set.n_classes, test_set.n_classes)
    net = build_network(args, train_set.n_inputs, n_out)

    board = None
    backend = None
    reference = None
    serial = None
    t0 = time.perf_counter()
    try:
        if not args.sim:
            import hostdriver

            board = hostdriver.connect(args.board, timeout=args.timeout)
            serial = int(board.info.serial)
            cal = _calibration(args, board)
            backend = tb.BoardBackend(board, calibration=cal,
                                      allow_uncalibrated=args.allow_uncalibrated,
                                      targets=tb.training_targets(args.strength),
                                      timeout=args.batch_timeout)
            net.connect(backend)
            reference = backend.reference()
        loss = PNASLoss(readout_scale=args.readout_scale, rho=args.rho, l2=args.l2,
                        weights=net.weights())
        config = TrainConfig(epochs=args.epochs, lr=args.lr, lr_decay=args.lr_decay,
                             batch_size=args.batch_size, seed=args.seed,
                             max_batches=args.max_batches, threads=args.threads)
        bars = _Bars(enabled=not args.json, epochs=args.epochs)

        def on_epoch(m: Any) -> None:
            bars.close()
            if not args.json:
                test = "" if m.test_accuracy is None else \
                    f", test {m.test_accuracy:.2%} ({m.test_hidden_spikes_per_sample:.1f} spikes)"
                print(f"epoch {m.epoch}: loss {m.train_loss:.4f}, train {m.train_accuracy:.2%}"
                      f"{test}, {m.samples_per_s:.0f} samples/s", file=sys.stderr, flush=True)

        try:
            result = train(net, loss, train_set, test_set, config,
                           checkpoint_dir=args.checkpoint, resume=args.resume,
                           calibration=reference, progress=bars, on_epoch=on_epoch)
        finally:
            bars.close()
    finally:
        if board is not None:
            board.close()
    seconds = time.perf_counter() - t0
    return _report(args, result, serial, backend, seconds)


def _report(args: argparse.Namespace, result: Any, serial: int | None, backend: Any,
            seconds: float) -> int:
    new = result.history[result.start_epoch:]
    last = result.last
    rates = [h.samples_per_s for h in new]
    obj: dict[str, Any] = {
        "dataset": args.dataset,
        "mode": "sim" if args.sim else "board",
        "board": None if args.sim else args.board,
        "serial": serial,
        "calibrated": None if backend is None else backend.calibrated,
        "epochs": len(result.history),
        "test_accuracy": None if last is None else last.test_accuracy,
        "train_accuracy": None if last is None else last.train_accuracy,
        "hidden_spikes_per_sample": None if last is None else last.test_hidden_spikes_per_sample,
        "train_samples_per_s": sum(rates) / len(rates) if rates else None,
        "seconds": round(seconds, 3),
        "resumed_from_epoch": result.start_epoch,
        "checkpoint": None if not args.checkpoint else str(Path(args.checkpoint) / "last.pt"),
        "history": [
            {"epoch": h.epoch, "train_loss": h.train_loss, "train_accuracy": h.train_accuracy,
             "test_accuracy": h.test_accuracy, "hidden_spikes_per_sample":
                 h.test_hidden_spikes_per_sample, "samples_per_s": h.samples_per_s}
            for h in result.history
        ],
    }
    if backend is not None and backend.mapping is not None:
        obj["mapping"] = backend.mapping.summary()
    if args.json:
        _cli.emit_json(obj)
        return _cli.EXIT_OK
    if last is None:
        print("nothing to train (0 epochs)")
        return _cli.EXIT_OK
    where = "in software (--sim)" if args.sim else \
        f"on chip {serial:016X}{'' if obj['calibrated'] else ' (uncalibrated)'}"
    print(f"{args.dataset}: {len(result.history)} epochs {where} in {seconds:.1f} s")
    if last.test_accuracy is not None:
        print(f"test accuracy {last.test_accuracy:.2%}, "
              f"{last.test_hidden_spikes_per_sample:.1f} hidden spikes per sample")
    if rates:
        print(f"training throughput {obj['train_samples_per_s']:.0f} samples/s")
    if args.checkpoint:
        print(f"checkpoint {obj['checkpoint']}")
    return _cli.EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = _cli.parser("python -m tools.train",
                    "Train a spiking network with the chip in the loop (PNAS 2022 method).")
    a = p.add_argument
    a("--dataset", choices=DATASETS, required=True, help="what to learn")
    a("--data-dir", metavar="DIR", help="IDX directory (fashion-mnist default: "
      "/usr/share/datasets/fashion-mnist; mnist: required)")
    a("--epochs", type=int, required=True, help="epochs in total (a resumed run does the rest)")
    a("--calibration", metavar="FILE", help="calibration file of this board (tools.calibrate)")
    a("--calibrate", action="store_true",
      help="calibrate the board to training targets first (cached per chip)")
    a("--allow-uncalibrated", action="store_true", help="run on the nominal codes")
    a("--sim", action="store_true", help="software only (no board)")
    a("--checkpoint", metavar="DIR", help="write DIR/last.pt after every epoch")
    a("--resume", action="store_true", help="continue from --checkpoint DIR/last.pt")
    a("--hidden", type=int, default=246, help="hidden LIF neurons (default 246, PNAS)")
    a("--batch-size", type=int, default=100)
    a("--lr", type=float, default=5e-3, help="Adam learning rate (default 5e-3)")
    a("--lr-decay", type=float, default=0.03, help="learning-rate decay per epoch (default 3 %%)")
    a("--seed", type=int, default=0)
    a("--rho", type=float, default=0.0, help="spike-count regulariser weight (PNAS Eq. 6)")
    a("--l2", type=float, default=0.0, help="weight L2")
    a("--readout-scale", type=float, default=5.0, help="factor on the readout maxima before the "
      "softmax (default 5)")
    a("--dropout", type=float, default=0.0, help="hidden dropout (--sim only)")
    a("--strength", type=float, default=14.0,
      help="--calibrate: PSP of a weight-63 event on one circuit, CADC LSB (default 14)")
    a("--max-batches", type=int, default=None, help="batches per epoch (smoke runs)")
    a("--threads", type=int, default=1, help="torch threads (default 1: fastest for small nets)")
    a("--batch-timeout", type=float, default=60.0,
      help="seconds one batch program may take on the board (default 60)")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    return _cli.run(main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(cli())
