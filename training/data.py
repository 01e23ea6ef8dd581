"""Data for training: latency encoding, 16x16 crop-and-resize, IDX loader, torch datasets.

Images become one spike per pixel at t = tau_in * log(x / (x - theta_in)) (PNAS 2022), binned
onto the network's time grid (step k holds spikes in [k dt, (k+1) dt)); pixels at or below
theta_in, or whose spike would fall after the last step, stay silent. Datasets keep only the
per-pixel step index (int16), so a whole Fashion-MNIST split fits in a few MB, and build the
[time, batch, pixels] spike tensor per batch in one scatter.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from protocol.errors import ConfigError, TrainingError
from training.nn import DT, N_STEPS

__all__ = [
    "FASHION_MNIST_DIR",
    "DatasetError",
    "DatasetNotFoundError",
    "Encoding",
    "ImageAugment",
    "SpikeBatch",
    "SpikeDataset",
    "bins_to_spikes",
    "collate_time_major",
    "crop_resize",
    "latency_bins",
    "latency_encode",
    "latency_times",
    "load_digits_split",
    "load_fashion_mnist",
    "load_idx_split",
    "load_mnist",
    "make_loader",
    "read_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
TAU_IN = 8e-6
THETA_IN = 0.2


class DatasetError(TrainingError, ValueError):
    """A data file is corrupt or does not match what the loader expects."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A data file or directory is missing; the message lists the names looked for."""


# ---------------------------------------------------------------------------------------------
# latency encoding


@dataclass(frozen=True)
class Encoding:
    """Latency code and time grid (PNAS 2022 defaults).

    substeps K > 1 keeps spike times on a K times finer grid (dt / K) than the network's steps:
    the chip gets spikes at those times and the model integrates them exactly
    (training.nn.Network(substeps=K)); K = 1 rounds each spike down to its step.
    """

    tau_in: float = TAU_IN
    theta_in: float = THETA_IN
    dt: float = DT
    n_steps: int = N_STEPS
    substeps: int = 1

    def __post_init__(self) -> None:
        if self.tau_in <= 0 or self.dt <= 0 or self.n_steps <= 0 or self.substeps <= 0:
            raise ConfigError(f"tau_in, dt, n_steps and substeps must be positive: {self}")
        if not 0.0 <= self.theta_in < 1.0:
            raise ConfigError(f"theta_in must be in [0, 1), got {self.theta_in}")

    @property
    def input_steps(self) -> int:
        """Time steps of an input spike tensor: n_steps * substeps."""
        return self.n_steps * self.substeps


def latency_times(x: Tensor, tau_in: float = TAU_IN, theta_in: float = THETA_IN) -> Tensor:
    """Spike time per pixel (seconds) for intensities x in [0, 1]; inf where x <= theta_in
    (compared in x's own precision, so a float32 0.2 counts as the threshold itself)."""
    x = torch.as_tensor(x)
    above = x > torch.tensor(theta_in, dtype=x.dtype if x.is_floating_point() else torch.float64)
    x = x.to(torch.float64)
    safe = torch.where(above, x, torch.ones_like(x))
    t = tau_in * torch.log(safe / (safe - theta_in))
    return torch.where(above, t, torch.full_like(x, math.inf))


def latency_bins(x: Tensor, enc: Encoding = Encoding()) -> Tensor:
    """Input-step index per pixel (int16; steps of dt / substeps), -1 where the pixel does not
    spike within the window."""
    t = latency_times(x, enc.tau_in, enc.theta_in)
    steps = torch.floor(t / (enc.dt / enc.substeps))
    inside = steps < enc.input_steps  # inf compares False
    return torch.where(inside, steps, torch.full_like(steps, -1.0)).to(torch.int16)


def bins_to_spikes(bins: Tensor, n_steps: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """[B, P] step indices (-1 = silent) -> spikes [n_steps, B, P] with one 1 per spiking pixel."""
    idx = bins.long()
    idx = torch.where(idx < 0, torch.full_like(idx, n_steps), idx)  # silent pixels -> spare step
    out = torch.zeros((n_steps + 1, *bins.shape), dtype=dtype)
    out.scatter_(0, idx.unsqueeze(0), 1.0)
    return out[:n_steps]


def latency_encode(x: Tensor, enc: Encoding = Encoding()) -> Tensor:
    """Intensities [B, P] in [0, 1] -> input spikes [input_steps, B, P]."""
    return bins_to_spikes(latency_bins(x, enc), enc.input_steps)


def crop_resize(
    images: Tensor | np.ndarray, crop: int = 2, size: int = 16, mode: str = "area"
) -> Tensor:
    """[N, H, W] uint8 or float images -> [N, size, size] float in [0, 1]: crop `crop` pixels per
    side (28 -> 24), then resize (PNAS 16x16). mode: 'area' or 'bilinear' (antialiased)."""
    x = torch.as_tensor(images)
    if x.dim() != 3:
        raise ConfigError(f"images must be [N, H, W], got shape {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    h, w = x.shape[1:]
    if 2 * crop >= min(h, w):
        raise ConfigError(f"cannot crop {crop} px per side from {h}x{w} images")
    x = x[:, crop : h - crop, crop : w - crop].unsqueeze(1)
    if mode == "area":
        y = F.interpolate(x, size=(size, size), mode="area")
    elif mode == "bilinear":
        y = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    else:
        raise ConfigError(f"resize mode must be 'area' or 'bilinear', got {mode!r}")
    return y.squeeze(1).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# IDX files

_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw, detected from its first bytes) into an array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetNotFoundError(f"IDX file {path} does not exist") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(
            f"{path}: not an IDX file (expected magic 00 00 <type> <ndim>, got {raw[:4].hex(' ')})"
        )
    kind, ndim = raw[2], raw[3]
    if kind not in _IDX_TYPES:
        raise DatasetError(f"{path}: unknown IDX data type 0x{kind:02x} (valid: 08 09 0b 0c 0d 0e)")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = _IDX_TYPES[kind]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(
            f"{path}: size does not match its header (dims {dims}, type 0x{kind:02x}): "
            f"expected {expected} bytes, got {len(raw)}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path:
    names = [stem, stem.replace("-idx", ".idx")]
    candidates = [directory / (n + ext) for n in names for ext in ("", ".gz")]
    for c in candidates:
        if c.is_file():
            return c
    raise DatasetNotFoundError(
        f"no {stem} file in {directory} (looked for {', '.join(c.name for c in candidates)})"
    )


def load_idx_split(directory: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images [N, H, W] uint8, labels [N] int64) of an MNIST-layout directory
    (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)."""
    directory = Path(directory)
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if not directory.is_dir():
        raise DatasetNotFoundError(f"dataset directory {directory} does not exist")
    prefix = "train" if split == "train" else "t10k"
    images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(
            f"{images_path}: expected 3-d uint8 images, got {images.ndim}-d {images.dtype}"
        )
    if labels.ndim != 1:
        raise DatasetError(f"{labels_path}: expected 1-d labels, got {labels.ndim}-d")
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path.name} has {len(images)} images but "
            f"{labels_path.name} has {len(labels)} labels"
        )
    return images, labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# datasets


class SpikeBatch(NamedTuple):
    """A batch: input spikes [time, batch, inputs] and labels [batch]."""

    spikes: Tensor
    labels: Tensor


class SpikeDataset(Dataset):
    """Latency-coded images: item i is (spikes [n_steps, P], label).

    images: [N, P] intensities in [0, 1] (flattened); only their step indices are kept.
    Batched access (`__getitems__`, used by DataLoader) returns a time-major SpikeBatch.
    """

    def __init__(self, images: Tensor, labels: Tensor, enc: Encoding = Encoding()) -> None:
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels).long()
        if images.dim() != 2 or labels.dim() != 1 or len(images) != len(labels):
            raise ConfigError(
                f"SpikeDataset wants images [N, P] and labels [N], got {tuple(images.shape)} "
                f"and {tuple(labels.shape)}"
            )
        if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
            raise ConfigError("image intensities must lie in [0, 1]")
        self.enc = enc
        self.bins = latency_bins(images, enc)
        self.labels = labels

    @property
    def n_inputs(self) -> int:
        return int(self.bins.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return bins_to_spikes(self.bins[i : i + 1], self.enc.input_steps)[:, 0], int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> SpikeBatch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return SpikeBatch(bins_to_spikes(self.bins[idx], self.enc.input_steps), self.labels[idx])


def collate_time_major(batch: SpikeBatch | list[tuple[Tensor, int]]) -> SpikeBatch:
    """DataLoader collate: passes a SpikeBatch through, stacks (spikes [T, P], label) items."""
    if isinstance(batch, SpikeBatch):
        return batch
    spikes = torch.stack([s for s, _ in batch], dim=1)
    labels = torch.as_tensor([int(y) for _, y in batch], dtype=torch.long)
    return SpikeBatch(spikes, labels)


def make_loader(
    dataset: Dataset,
    batch_size: int = 100,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """DataLoader yielding SpikeBatch(spikes [T, B, P], labels [B]) in the main process."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        collate_fn=collate_time_major,
        num_workers=0,
    )


def load_idx_dataset(
    directory: str | Path,
    split: str,
    *,
    size: int = 16,
    enc: Encoding = Encoding(),
    resize: str = "area",
) -> SpikeDataset:
    """A 28x28 IDX split cropped and resized to size x size (size=28: no crop), latency-coded.
    resize: crop_resize's mode ('bilinear' = torchvision's Resize default)."""
    images, labels = load_idx_split(directory, split)
    x = (
        crop_resize(images, size=size, mode=resize)
        if size != images.shape[1]
        else torch.as_tensor(images) / 255.0
    )
    return SpikeDataset(x.reshape(len(x), -1), torch.as_tensor(labels), enc)


def load_fashion_mnist(
    split: str = "train", directory: str | Path = FASHION_MNIST_DIR, **kw: object
) -> SpikeDataset:
    """Fashion-MNIST (Debian dataset-fashion-mnist) as a 16x16 latency-coded SpikeDataset."""
    return load_idx_dataset(directory, split, **kw)  # type: ignore[arg-type]


def load_mnist(split: str, directory: str | Path, **kw: object) -> SpikeDataset:
    """MNIST from a user's directory of IDX files, 16x16 latency-coded."""
    return load_idx_dataset(directory, split, **kw)  # type: ignore[arg-type]


def load_digits_split(
    *, test_fraction: float = 0.2, seed: int = 0, enc: Encoding = Encoding()
) -> tuple[SpikeDataset, SpikeDataset]:
    """scikit-learn's 8x8 digits (1,797 images, 64 inputs, scaled to [0, 1]) as a stratified
    (train, test) split fixed by seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.as_tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.as_tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return (
        SpikeDataset(x[train_idx], y[train_idx], enc),
        SpikeDataset(x[test_idx], y[test_idx], enc),
    )


# ---------------------------------------------------------------------------------------------
# augmentation


class ImageAugment(Dataset):
    """Training-set augmentation of square latency-coded images, applied per batch to the
    step indices: a horizontal mirror with probability `flip` and a random translation by up
    to `shift` pixels in each direction (vacated pixels stay silent). Fashion-MNIST's garments
    are left-right symmetric in kind, so mirrors and small shifts are new plausible samples.
    Draws from torch's global RNG, which the trainer seeds and checkpoints (resumes stay
    bit-exact)."""

    def __init__(self, dataset: SpikeDataset, *, flip: float = 0.5, shift: int = 1) -> None:
        side = math.isqrt(dataset.n_inputs)
        if side * side != dataset.n_inputs:
            raise ConfigError(
                f"image augmentation needs square images, got {dataset.n_inputs} inputs"
            )
        if not 0.0 <= flip <= 1.0 or not 0 <= shift < side:
            raise ConfigError(f"flip must be in [0, 1] and shift in [0, {side}): {flip}, {shift}")
        self.dataset, self.flip, self.shift, self.side = dataset, flip, shift, side
        self.n_inputs, self.n_classes = dataset.n_inputs, dataset.n_classes
        self.enc = dataset.enc

    def __len__(self) -> int:
        return len(self.dataset)

    def augment_bins(self, bins: Tensor) -> Tensor:
        """[B, side * side] step indices -> augmented copy (same shape and dtype)."""
        b, s, k = len(bins), self.side, self.shift
        img = bins.reshape(b, s, s)
        if k:
            img = F.pad(img, (k, k, k, k), value=-1)
        rows = torch.arange(s)
        dy = torch.randint(-k, k + 1, (b, 1)) if k else torch.zeros(b, 1, dtype=torch.long)
        dx = torch.randint(-k, k + 1, (b, 1)) if k else torch.zeros(b, 1, dtype=torch.long)
        cols = rows[None, :].expand(b, s)
        mirrored = torch.rand(b) < self.flip
        cols = torch.where(mirrored[:, None], s - 1 - cols, cols)
        r = (rows[None, :] + k + dy)[:, :, None]  # [B, s, 1]
        c = (cols + k + dx)[:, None, :]  # [B, 1, s]
        out = img[torch.arange(b)[:, None, None], r, c]
        return out.reshape(b, s * s)

    def __getitems__(self, indices: list[int]) -> SpikeBatch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        bins = self.augment_bins(self.dataset.bins[idx])
        return SpikeBatch(bins_to_spikes(bins, self.enc.input_steps), self.dataset.labels[idx])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        batch = self.__getitems__([i])
        return batch.spikes[:, 0], int(batch.labels[0])
