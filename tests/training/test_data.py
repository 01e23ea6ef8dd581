"""Latency code, crop-and-resize, IDX loader (good, gz, corrupt, missing), datasets."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ConfigError
from training import data
from training.data import DatasetError, DatasetNotFoundError, Encoding, SpikeBatch, SpikeDataset


def test_latency_times_hand_computed() -> None:
    x = torch.tensor([1.0, 0.5, 0.25, 0.21, 0.2, 0.1, 0.0])
    t = data.latency_times(x)
    # t = 8 us * ln(x / (x - 0.2))
    assert float(t[0]) == pytest.approx(8e-6 * math.log(1.25))  # 1.785 us
    assert float(t[1]) == pytest.approx(8e-6 * math.log(0.5 / 0.3))  # 4.087 us
    assert float(t[2]) == pytest.approx(8e-6 * math.log(5.0))  # 12.876 us
    assert float(t[3]) == pytest.approx(8e-6 * math.log(21.0))  # 24.357 us
    assert torch.isinf(t[4:]).all()


def test_latency_bins_on_the_pnas_grid() -> None:
    x = torch.tensor([[1.0, 0.5, 0.25, 0.21, 0.201, 0.2, 0.0]])
    # 1.785/1.7 -> 1 ; 4.087/1.7 -> 2 ; 12.876/1.7 -> 7 ; 24.357/1.7 -> 14 ;
    # 0.201: 42.4 us is after the 34 us window ; 0.2 and 0 never spike
    assert data.latency_bins(x).tolist() == [[1, 2, 7, 14, -1, -1, -1]]
    assert data.latency_bins(x, Encoding(n_steps=30)).tolist() == [[1, 2, 7, 14, 24, -1, -1]]
    spikes = data.latency_encode(x)
    assert spikes.shape == (20, 1, 7)
    assert spikes.sum(0).tolist() == [[1, 1, 1, 1, 0, 0, 0]]
    assert spikes[7, 0, 2] == 1 and spikes[1, 0, 0] == 1


def test_encoding_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError):
        Encoding(theta_in=1.0)
    with pytest.raises(ConfigError):
        Encoding(n_steps=0)


def test_crop_resize() -> None:
    img = np.zeros((2, 28, 28), np.uint8)
    img[:, :2, :] = 255  # border that the crop removes
    img[1, 2:, 2:] = 255  # sample 1: interior white
    out = data.crop_resize(img)
    assert out.shape == (2, 16, 16) and out.dtype == torch.float32
    assert float(out[0].abs().max()) == 0.0
    torch.testing.assert_close(out[1], torch.ones(16, 16))
    # area resize 24 -> 16 averages 1.5x1.5 blocks: a 3x3 block covers exactly 2x2 outputs
    x = torch.zeros(1, 28, 28)
    x[0, 2:5, 2:5] = 0.9
    out = data.crop_resize(x)
    torch.testing.assert_close(out[0, :2, :2], torch.full((2, 2), 0.9))
    assert float(out[0, 2:].abs().sum() + out[0, :, 2:].abs().sum()) == 0.0
    assert data.crop_resize(x, mode="bilinear").shape == (1, 16, 16)
    with pytest.raises(ConfigError):
        data.crop_resize(x, mode="nearest")
    with pytest.raises(ConfigError):
        data.crop_resize(torch.zeros(28, 28))


def _idx_bytes(arr: np.ndarray) -> bytes:
    codes = {
        np.uint8: 0x08,
        np.int8: 0x09,
        np.int16: 0x0B,
        np.int32: 0x0C,
        np.float32: 0x0D,
        np.float64: 0x0E,
    }
    code = codes[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write_split(
    directory: Path, split: str, n: int, *, gz: bool, dotted: bool = False
) -> np.ndarray:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    prefix = "train" if split == "train" else "t10k"
    sep = "." if dotted else "-"
    for kind, arr in (("images" + sep + "idx3", images), ("labels" + sep + "idx1", labels)):
        name = f"{prefix}-{kind}-ubyte" + (".gz" if gz else "")
        raw = _idx_bytes(arr)
        (directory / name).write_bytes(gzip.compress(raw) if gz else raw)
    return images


def test_idx_golden_header() -> None:
    arr = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    assert _idx_bytes(arr).hex() == "00000802" + "00000002" + "00000003" + "010203040506"


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    gz=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_idx_round_trip(tmp_path_factory, dtype, shape, gz, seed) -> None:
    rng = np.random.default_rng(seed)
    arr = (rng.standard_normal(shape) * 50).astype(dtype)
    path = tmp_path_factory.mktemp("idx") / "x.idx"
    raw = _idx_bytes(arr)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    back = data.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_idx_corrupt_files(tmp_path: Path) -> None:
    good = _idx_bytes(np.zeros((3, 4), np.uint8))
    cases = {
        "truncated": (good[:-1], "expected 24 bytes, got 23"),
        "extra": (good + b"\x00", "expected 24 bytes, got 25"),
        "magic": (b"\x01" + good[1:], "not an IDX file"),
        "type": (good[:2] + b"\x07" + good[3:], "unknown IDX data type 0x07"),
        "header": (good[:6], "truncated IDX header"),
        "gzip": (gzip.compress(good)[:-9], "corrupt gzip"),
        "empty": (b"", "not an IDX file"),
    }
    for name, (raw, message) in cases.items():
        p = tmp_path / name
        p.write_bytes(raw)
        with pytest.raises(DatasetError, match=message):
            data.read_idx(p)
    with pytest.raises(DatasetNotFoundError):
        data.read_idx(tmp_path / "nope")


def test_load_idx_split_raw_gz_and_dotted_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    imgs_a = _write_split(tmp_path / "a", "train", 12, gz=True)
    imgs_b = _write_split(tmp_path / "b", "test", 7, gz=False, dotted=True)
    x, y = data.load_idx_split(tmp_path / "a", "train")
    np.testing.assert_array_equal(x, imgs_a)
    assert y.dtype == np.int64 and y.tolist() == [i % 10 for i in range(12)]
    x, _ = data.load_idx_split(tmp_path / "b", "test")
    np.testing.assert_array_equal(x, imgs_b)
    ds = data.load_idx_dataset(tmp_path / "a", "train")
    assert len(ds) == 12 and ds.n_inputs == 256
    for mode in ("area", "bilinear"):
        enc = data.Encoding(substeps=4)
        ds = data.load_idx_dataset(tmp_path / "a", "train", resize=mode, enc=enc)
        expect = data.latency_bins(data.crop_resize(imgs_a, mode=mode).reshape(12, -1), enc)
        assert torch.equal(ds.bins, expect) and ds.enc.substeps == 4
    with pytest.raises(ConfigError, match="resize mode"):
        data.load_idx_dataset(tmp_path / "a", "train", resize="nearest")


def test_load_idx_split_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        data.load_idx_split(tmp_path / "missing", "train")
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte.gz"):
        data.load_idx_split(tmp_path, "train")
    with pytest.raises(ConfigError):
        data.load_idx_split(tmp_path, "validation")
    _write_split(tmp_path, "train", 5, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DatasetError, match="5 images but .* has 4 labels"):
        data.load_idx_split(tmp_path, "train")


def test_spike_dataset_item_and_batch_access_agree() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(9, 5, generator=g)
    ds = SpikeDataset(images, torch.arange(9) % 3)
    batch = ds.__getitems__([4, 0, 7])
    assert isinstance(batch, SpikeBatch) and batch.spikes.shape == (20, 3, 5)
    for k, i in enumerate([4, 0, 7]):
        s, label = ds[i]
        torch.testing.assert_close(batch.spikes[:, k], s)
        assert label == batch.labels[k] == i % 3
    torch.testing.assert_close(batch.spikes, data.latency_encode(images[[4, 0, 7]]))
    loaded = list(data.make_loader(ds, 4))
    assert [b.spikes.shape for b in loaded] == [(20, 4, 5), (20, 4, 5), (20, 1, 5)]
    # the default per-item path of a DataLoader gives the same tensors
    stacked = data.collate_time_major([ds[i] for i in range(4)])
    torch.testing.assert_close(stacked.spikes, loaded[0].spikes)
    with pytest.raises(ConfigError):
        SpikeDataset(images * 2, torch.zeros(9))
    with pytest.raises(ConfigError):
        SpikeDataset(images, torch.zeros(8))


def test_digits_split() -> None:
    train, test = data.load_digits_split()
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert train.n_inputs == test.n_inputs == 64 and train.n_classes == 10
    counts = torch.bincount(test.labels, minlength=10)
    assert int(counts.min()) >= 35  # stratified
    again, _ = data.load_digits_split()
    torch.testing.assert_close(again.bins, train.bins)


@pytest.mark.skipif(
    not data.FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_fashion_mnist() -> None:
    test = data.load_fashion_mnist("test")
    assert len(test) == 10000 and test.n_inputs == 256 and test.n_classes == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    spikes_per_image = (test.bins >= 0).sum(1).float().mean()
    assert 50 < float(spikes_per_image) < 256


def _bins_dataset(bins: torch.Tensor) -> SpikeDataset:
    ds = SpikeDataset.__new__(SpikeDataset)
    ds.enc, ds.bins, ds.labels = Encoding(), bins.to(torch.int16), torch.arange(len(bins)) % 10
    return ds


def test_image_augment_mirrors_and_shifts_the_step_indices() -> None:
    img = torch.arange(16, dtype=torch.int16).reshape(1, 4, 4) % 7  # steps 0..6
    ds = _bins_dataset(img.reshape(1, 16))
    mirror = data.ImageAugment(ds, flip=1.0, shift=0)
    assert torch.equal(mirror.augment_bins(ds.bins).reshape(4, 4), img[0].flip(1))
    plain = data.ImageAugment(ds, flip=0.0, shift=0)
    assert torch.equal(plain.augment_bins(ds.bins), ds.bins)
    # with shifts, every output is the image moved by (dy, dx) with silent (-1) borders
    many = _bins_dataset(img.reshape(1, 16).repeat(400, 1))
    shifted = data.ImageAugment(many, flip=0.0, shift=1)
    torch.manual_seed(0)
    out = shifted.augment_bins(many.bins).reshape(400, 4, 4)
    padded = torch.nn.functional.pad(img[0], (1, 1, 1, 1), value=-1)
    moves = set()
    for o in out:
        match = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if torch.equal(o, padded[1 + dy:5 + dy, 1 + dx:5 + dx])]
        assert match, o
        moves.add(match[0])
    assert len(moves) == 9  # all nine translations occur


def test_image_augment_batches_keep_labels_and_refuse_bad_settings() -> None:
    g = torch.Generator().manual_seed(1)
    ds = _bins_dataset(torch.randint(-1, 20, (50, 64), generator=g))
    aug = data.ImageAugment(ds, flip=0.5, shift=2)
    torch.manual_seed(3)
    batch = aug.__getitems__(list(range(10, 20)))
    assert batch.spikes.shape == (20, 10, 64) and torch.equal(batch.labels, ds.labels[10:20])
    assert float(batch.spikes.sum(dim=(0, 2)).max()) <= 64
    torch.manual_seed(3)
    again = aug.__getitems__(list(range(10, 20)))
    assert torch.equal(batch.spikes, again.spikes)  # the global RNG decides: reproducible
    assert len(aug) == 50 and aug.n_inputs == 64
    with pytest.raises(ConfigError, match="square"):
        data.ImageAugment(_bins_dataset(torch.zeros(2, 10)))
    with pytest.raises(ConfigError):
        data.ImageAugment(ds, flip=1.5)
    with pytest.raises(ConfigError):
        data.ImageAugment(ds, shift=8)
