"""Training loop, evaluation and resumable checkpoints (used by `python -m tools.train`).

The loop is the same whichever backend the network is connected to: it only calls net(x).
Checkpoints hold everything needed to continue bit-for-bit: weights and buffers, optimiser and
learning-rate schedule, completed epochs, metric history, RNG states and the calibration
reference the run was made with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from hostdriver.atomic import atomic_open
from protocol.errors import ConfigError, TrainingError
from training.averaging import WeightAverage
from training.data import make_loader
from training.loss import PNASLoss, accuracy
from training.nn import Network

__all__ = [
    "CHECKPOINT_FORMAT",
    "EpochMetrics",
    "EvalMetrics",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]

CHECKPOINT_FORMAT = "strobe-training-checkpoint"
CHECKPOINT_VERSION = 1
LAST = "last.pt"
SCHEDULES = ("exponential", "cosine")


@dataclass
class TrainConfig:
    """Hyper-parameters (PNAS 2022 defaults). lr_decay: fraction the learning rate drops per
    epoch. max_batches: cap on batches per epoch (smoke runs); None = the whole set.
    threads: torch intra-op threads while training (None: leave as is); small networks on a
    shared CPU run several times faster with 1.
    schedule: "exponential" (lr * (1 - lr_decay)^epoch, PNAS) or "cosine" (anneals from lr to
    lr * lr_floor over `epochs`, per batch: for a fixed budget of epochs the last ones then
    refine at a small step instead of stopping mid-way down an exponential).
    warmup: epochs of linear warm-up before the cosine (0: none).
    average: decay of an exponential moving average of the weights (training/averaging.py),
    updated after every step; the test pass uses the averaged weights and the trained network
    ends with them (0: off)."""

    epochs: int = 10
    lr: float = 1.5e-3
    lr_decay: float = 0.03
    batch_size: int = 100
    eval_batch_size: int = 1000
    seed: int = 0
    max_batches: int | None = None
    threads: int | None = None
    schedule: str = "exponential"
    lr_floor: float = 0.02
    warmup: float = 0.0
    average: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.lr_floor <= 1.0 or self.warmup < 0:
            raise ConfigError(f"lr_floor must be in [0, 1] and warmup >= 0: {self}")
        if self.epochs < 0 or self.batch_size <= 0 or self.eval_batch_size <= 0:
            raise ConfigError(f"epochs >= 0 and batch sizes > 0 required: {self}")
        if self.lr <= 0 or not 0.0 <= self.lr_decay < 1.0:
            raise ConfigError(f"lr must be > 0 and lr_decay in [0, 1): {self}")
        if self.threads is not None and self.threads <= 0:
            raise ConfigError(f"threads must be positive, got {self.threads}")
        if not 0.0 <= self.average < 1.0:
            raise ConfigError(f"average (a decay) must be in [0, 1), got {self.average}")


@dataclass
class EvalMetrics:
    loss: float
    accuracy: float
    hidden_spikes_per_sample: float
    samples: int


@dataclass
class EpochMetrics:
    """One epoch: training metrics (measured on the fly, dropout on), then test metrics."""

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    hidden_spikes_per_sample: float
    samples_per_s: float
    seconds: float
    test_loss: float | None = None
    test_accuracy: float | None = None
    test_hidden_spikes_per_sample: float | None = None


@dataclass
class TrainResult:
    history: list[EpochMetrics] = field(default_factory=list)
    start_epoch: int = 0  # epochs already done when this call began (> 0 after a resume)

    @property
    def last(self) -> EpochMetrics | None:
        return self.history[-1] if self.history else None


ProgressFn = Callable[[int, int, int, dict[str, float]], None]


@torch.no_grad()
def evaluate(
    net: Network, loss_fn: PNASLoss, dataset: Dataset, batch_size: int = 1000
) -> EvalMetrics:
    """Loss, accuracy and hidden spikes per sample over a dataset (eval mode, no dropout)."""
    was_training = net.training
    net.eval()
    total_loss = correct = spikes = 0.0
    n = 0
    try:
        device = _device(net)
        for x, labels in make_loader(dataset, batch_size):
            x, labels = x.to(device), labels.to(device)
            y = net(x)
            b = len(labels)
            total_loss += float(loss_fn(y, labels)) * b
            correct += accuracy(y.readout, labels) * b
            spikes += float(y.spike_counts().detach().sum())
            n += b
    finally:
        net.train(was_training)
    if n == 0:
        raise ConfigError("cannot evaluate on an empty dataset")
    return EvalMetrics(total_loss / n, correct / n, spikes / n, n)


def train(
    net: Network,
    loss_fn: PNASLoss,
    train_set: Dataset,
    test_set: Dataset | None = None,
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    calibration: dict | None = None,
    progress: ProgressFn | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> TrainResult:
    """Train for config.epochs epochs (in total: a resumed run only does the missing ones).

    checkpoint_dir: where `last.pt` is written atomically after every epoch. resume: continue
    from it (TrainingError if missing or made with another calibration reference).
    calibration: plain-data reference to the calibration in use (e.g. serial + file hash),
    stored in checkpoints. progress(epoch, batch, n_batches, running) is called per batch.
    Seeds torch's global RNG with config.seed (dropout masks), so runs are reproducible.
    """
    config = config or TrainConfig()
    for name, ds in (("training", train_set), ("test", test_set)):
        enc = getattr(ds, "enc", None)
        if enc is not None and enc.substeps != net.substeps:
            raise ConfigError(
                f"the {name} set's spikes come with {enc.substeps} substeps per step, the "
                f"network takes {net.substeps}: build both with the same substeps"
            )
    threads_before = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _train(
            net,
            loss_fn,
            train_set,
            test_set,
            config,
            checkpoint_dir,
            resume,
            calibration,
            progress,
            on_epoch,
        )
    finally:
        torch.set_num_threads(threads_before)


def _train(
    net: Network,
    loss_fn: PNASLoss,
    train_set: Dataset,
    test_set: Dataset | None,
    config: TrainConfig,
    checkpoint_dir: str | Path | None,
    resume: bool,
    calibration: dict | None,
    progress: ProgressFn | None,
    on_epoch: Callable[[EpochMetrics], None] | None,
) -> TrainResult:
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    shuffle = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    result = TrainResult()
    loader = make_loader(train_set, config.batch_size, shuffle=True, generator=shuffle)
    n_batches = len(loader) if config.max_batches is None else min(len(loader), config.max_batches)
    scheduler = _scheduler(optimizer, config, n_batches)
    ckpt_path = Path(checkpoint_dir) / LAST if checkpoint_dir is not None else None
    state = None
    if resume:
        if ckpt_path is None:
            raise ConfigError("resume=True needs a checkpoint_dir")
        state = load_checkpoint(ckpt_path)
        _restore(state, net, optimizer, scheduler, shuffle, calibration, ckpt_path)
        result.start_epoch = state["epoch"]
        result.history = [EpochMetrics(**h) for h in state["history"]]
    # started from the (restored) weights; a checkpoint of a run without averaging has none
    average = WeightAverage(net, config.average) if config.average > 0 else None
    if average is not None and state is not None and state.get("average") is not None:
        average.load_state_dict(state["average"])

    device = _device(net)
    for epoch in range(result.start_epoch, config.epochs):
        net.train()
        lr = optimizer.param_groups[0]["lr"]
        loss_sum = correct = spikes = 0.0
        n = 0
        start = time.perf_counter()
        for b, (x, labels) in enumerate(loader):
            if b >= n_batches:
                break
            x, labels = x.to(device), labels.to(device)
            y = net(x)
            loss = loss_fn(y, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            net.clamp_weights_()
            if average is not None:
                average.update(net)
            if config.schedule == "cosine":
                scheduler.step()
            k = len(labels)
            loss_sum += float(loss.detach()) * k
            correct += accuracy(y.readout.detach(), labels) * k
            spikes += float(y.spike_counts().detach().sum())
            n += k
            if progress is not None:
                running = {"loss": loss_sum / n, "accuracy": correct / n, "spikes": spikes / n}
                progress(epoch, b, n_batches, running)
        seconds = time.perf_counter() - start
        if config.schedule == "exponential":
            scheduler.step()
        metrics = EpochMetrics(
            epoch=epoch + 1,
            lr=lr,
            train_loss=loss_sum / max(n, 1),
            train_accuracy=correct / max(n, 1),
            hidden_spikes_per_sample=spikes / max(n, 1),
            samples_per_s=n / seconds if seconds > 0 else float("inf"),
            seconds=seconds,
        )
        if test_set is not None:
            with average.applied(net) if average is not None else nullcontext():
                ev = evaluate(net, loss_fn, test_set, config.eval_batch_size)
            metrics.test_loss, metrics.test_accuracy = ev.loss, ev.accuracy
            metrics.test_hidden_spikes_per_sample = ev.hidden_spikes_per_sample
        result.history.append(metrics)
        if ckpt_path is not None:
            save_checkpoint(
                ckpt_path,
                net=net,
                optimizer=optimizer,
                scheduler=scheduler,
                epoch=epoch + 1,
                history=[asdict(h) for h in result.history],
                calibration=calibration,
                config=asdict(config),
                shuffle=shuffle,
                average=average,
            )
        if on_epoch is not None:
            on_epoch(metrics)
    if average is not None:
        average.copy_to(net)
    return result


def _scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, n_batches: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule: stepped per epoch (exponential) or per batch (cosine)."""
    if config.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=1.0 - config.lr_decay)
    total = max(1, config.epochs * n_batches)
    warm = min(total - 1, round(config.warmup * n_batches))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min(1.0, (step - warm) / max(1, total - warm))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return config.lr_floor + (1.0 - config.lr_floor) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _device(net: Network) -> torch.device:
    return next(net.parameters()).device


def save_checkpoint(
    path: str | Path,
    *,
    net: Network,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: object | None = None,
    epoch: int = 0,
    history: list[dict] | None = None,
    calibration: dict | None = None,
    config: dict | None = None,
    shuffle: torch.Generator | None = None,
    average: WeightAverage | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same directory, fsync, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "network": net.describe(),
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,  # type: ignore[attr-defined]
        "epoch": epoch,
        "history": history or [],
        "calibration": calibration,
        "config": config,
        "average": average.state_dict() if average is not None else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "shuffle": shuffle.get_state() if shuffle is not None else None,
        },
    }
    with atomic_open(path) as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by save_checkpoint; TrainingError if missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path} (train without resume first)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises a variety of types for damaged files
        raise TrainingError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a strobe training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(
            f"{path} has checkpoint version {state.get('version')}, "
            f"this code reads version {CHECKPOINT_VERSION}"
        )
    return state


def load_into(
    net: Network, state: dict, path: str | Path = "<checkpoint>", *, averaged: bool = True
) -> None:
    """Load a checkpoint's weights into net, refusing another architecture. averaged: where
    the run kept a weight average (TrainConfig.average), load those (the evaluated weights)."""
    if state["network"] != net.describe():
        raise TrainingError(
            f"checkpoint {path} holds network {state['network']}, this one is {net.describe()}"
        )
    net.load_state_dict(state["model"])
    if averaged and state.get("average") is not None:
        average = WeightAverage(net, float(state["average"]["decay"]))
        average.load_state_dict(state["average"])
        average.copy_to(net)


def _restore(
    state: dict,
    net: Network,
    optimizer: torch.optim.Optimizer,
    scheduler: object,
    shuffle: torch.Generator,
    calibration: dict | None,
    path: Path,
) -> None:
    if state.get("calibration") != calibration:
        raise TrainingError(
            f"checkpoint {path} was made with calibration {state.get('calibration')!r}, "
            f"this run uses {calibration!r}; resume with the same calibration or start afresh"
        )
    load_into(net, state, path, averaged=False)
    if state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])  # type: ignore[attr-defined]
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["shuffle"] is not None:
        shuffle.set_state(state["rng"]["shuffle"])
