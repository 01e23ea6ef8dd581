"""bench/plot_curve.py: a PNG from checkpoint histories; a checkpoint without epochs refused."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import plot_curve  # noqa: E402
from protocol.errors import ConfigError  # noqa: E402
from training import nn  # noqa: E402
from training.trainer import EpochMetrics, save_checkpoint  # noqa: E402


def _ckpt(path: Path, epochs: int) -> Path:
    history = [asdict(EpochMetrics(epoch=e + 1, lr=1e-3, train_loss=1.0 / (e + 1),
                                   train_accuracy=0.5 + 0.01 * e, hidden_spikes_per_sample=30.0,
                                   samples_per_s=1000.0, seconds=1.0, test_loss=1.0,
                                   test_accuracy=0.5 + 0.008 * e,
                                   test_hidden_spikes_per_sample=29.0 - e))
               for e in range(epochs)]
    return save_checkpoint(path, net=nn.pnas_network(16, 8, 3, seed=0), epoch=epochs,
                           history=history)


def test_curve_png_from_checkpoints(tmp_path: Path) -> None:
    a = _ckpt(tmp_path / "a" / "last.pt", 5)
    b = _ckpt(tmp_path / "b" / "last.pt", 3)
    s = plot_curve.series(str(a))
    assert s["epoch"] == [1, 2, 3, 4, 5] and s["test_accuracy"][-1] == pytest.approx(0.532)
    out = plot_curve.main([f"{a}:run A", str(b), "--out", str(tmp_path / "c.png"),
                           "--reference", "0.842"])
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["c.png"]  # no temp files


def test_chained_phases_continue_the_epochs(tmp_path: Path) -> None:
    pre = _ckpt(tmp_path / "p" / "last.pt", 4)
    loop = _ckpt(tmp_path / "l" / "last.pt", 3)
    runs = plot_curve.chained([("pre", plot_curve.series(str(pre))),
                               ("loop", plot_curve.series(str(loop)))])
    assert runs[0][1]["epoch"] == [1, 2, 3, 4] and runs[1][1]["epoch"] == [5, 6, 7]
    assert runs[1][1]["test_accuracy"] == plot_curve.series(str(loop))["test_accuracy"]
    out = plot_curve.main([f"{pre}:software", f"{loop}:in the loop", "--chain", "--out",
                           str(tmp_path / "c.png")])
    assert out.read_bytes().startswith(b"\x89PNG")


def test_checkpoint_without_epochs_is_refused(tmp_path: Path) -> None:
    empty = _ckpt(tmp_path / "last.pt", 0)
    with pytest.raises(ConfigError, match="no finished epoch"):
        plot_curve.series(str(empty))
