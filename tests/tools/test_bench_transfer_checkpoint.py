"""bench/transfer_checkpoint.py at tiny settings: a real tools.train checkpoint moved between two
emulated chips, its JSON, its results block, and a refused checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import transfer_checkpoint  # noqa: E402
from protocol.errors import TrainingError  # noqa: E402
from tools.train import cli as train_cli  # noqa: E402


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STROBE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "bench-cache"))


def test_checkpoint_moves_to_another_chip_and_is_fine_tuned(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "ckpt"
    assert train_cli(["--board", "emu://?seed=3", "--dataset", "digits", "--epochs", "1",
                      "--max-batches", "2", "--calibrate", "--checkpoint", str(ckpt),
                      "--json"]) == 0
    capsys.readouterr()
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nkept\n")
    row = transfer_checkpoint.main([
        "--checkpoint", str(ckpt / "last.pt"), "--dataset", "digits",
        "--board-a", "emu://?seed=3", "--board-b", "emu://?seed=4", "--max-batches", "1",
        "--max-test", "60", "--json", "--results", str(results)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == json.loads(json.dumps(row))
    assert out["serial_a"] != out["serial_b"] and out["epochs_trained"] == 1
    for key in ("acc_a", "acc_b", "acc_b_after"):
        assert 0.0 <= out[key] <= 1.0
    assert out["loss_before"] == pytest.approx(out["acc_a"] - out["acc_b"])
    assert out["finetune_lr"] == pytest.approx(5e-4)  # 0.1 x the run's initial 5e-3
    text = results.read_text()
    assert text.startswith("# Results\n\nkept\n")
    assert "<!-- transfer-checkpoint:begin -->" in text and "emu://?seed=4" in text


def test_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot be read"):
        transfer_checkpoint.main(["--checkpoint", str(bad), "--dataset", "digits", "--no-write"])
