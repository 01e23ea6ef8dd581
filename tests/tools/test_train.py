"""python -m tools.train: sim and board runs, JSON, checkpoints/resume, calibration handling."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import calibration
import hostdriver
from tools.train import cli
from training.board import training_targets

SMALL = ["--dataset", "digits", "--hidden", "30", "--max-batches", "3"]


@pytest.fixture(scope="module")
def cal_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A calibration of emu:// (serial 1) to training targets, saved as a file and put into a
    private calibration cache (so --calibrate finds it)."""
    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("STROBE_CACHE_DIR")
    os.environ["STROBE_CACHE_DIR"] = str(root)
    with hostdriver.connect("emu://") as board, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = calibration.calibrate(board, training_targets(), clamp=True)
    path = root / "chip.cal.json"
    calibration.save(result, path)
    yield path
    if old is None:
        os.environ.pop("STROBE_CACHE_DIR", None)
    else:
        os.environ["STROBE_CACHE_DIR"] = old


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_sim_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--sim", *SMALL, "--epochs", "2", "--json"]) == 0
    out = _json(capsys)
    assert out["mode"] == "sim" and out["serial"] is None and out["epochs"] == 2
    assert 0.0 <= out["test_accuracy"] <= 1.0 and out["train_samples_per_s"] > 0
    assert out["hidden_spikes_per_sample"] >= 0 and len(out["history"]) == 2


def test_sub_steps_and_label_smoothing_reach_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--sim", *SMALL, "--epochs", "1", "--json", "--substeps", "2",
            "--label-smoothing", "0.1", "--ema", "0.9"]
    assert cli(argv) == 0
    out = _json(capsys)
    assert out["substeps"] == 2 and out["label_smoothing"] == 0.1 and out["ema"] == 0.9
    assert cli(["--sim", *SMALL, "--epochs", "1", "--json"]) == 0
    assert _json(capsys)["substeps"] == 1  # the digits recipe


def test_sim_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--sim", *SMALL, "--epochs", "1"]) == 0
    captured = capsys.readouterr()
    assert "test accuracy" in captured.out and "in software (--sim)" in captured.out
    assert "epoch 1:" in captured.err


def test_board_run_with_a_calibration_file(cal_file: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--board", "emu://", *SMALL, "--epochs", "1", "--calibration", str(cal_file),
                "--json"]) == 0
    out = _json(capsys)
    assert out["mode"] == "board" and out["serial"] == 1 and out["calibrated"] is True
    assert out["mapping"]["layers"][0]["size"] == 30
    assert out["test_accuracy"] is not None and out["train_samples_per_s"] > 0


def test_software_pretraining_then_the_loop_and_resume(cal_file: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "ckpt"
    base = ["--board", "emu://", *SMALL, "--calibration", str(cal_file), "--checkpoint",
            str(ckpt), "--json", "--pretrain-epochs", "2", "--lr", "4e-3"]
    assert cli([*base, "--epochs", "1"]) == 0
    first = _json(capsys)
    assert first["mode"] == "board" and first["epochs"] == 1 and first["lr"] == 1e-3
    assert first["pretrain"]["epochs"] == 2 and len(first["pretrain"]["history"]) == 2
    assert (ckpt / "pretrain" / "last.pt").is_file() and (ckpt / "last.pt").is_file()
    # the software phase keeps the weight scale the board adopted: the chip runs its weights
    state = torch.load(ckpt / "pretrain" / "last.pt", weights_only=False)
    chip = torch.load(ckpt / "last.pt", weights_only=False)
    assert torch.equal(state["model"]["layers.0.scale"], chip["model"]["layers.0.scale"])
    assert float(state["model"]["layers.0.scale"]) != pytest.approx(1 / 16)
    # resuming skips the finished software phase and continues the loop
    assert cli([*base, "--epochs", "2", "--resume"]) == 0
    second = _json(capsys)
    assert second["resumed_from_epoch"] == 1 and second["epochs"] == 2
    assert second["pretrain"]["history"] == first["pretrain"]["history"]
    assert second["history"][0] == first["history"][0]


def test_calibrate_checkpoint_and_resume(cal_file: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "ckpt"
    base = ["--board", "emu://", *SMALL, "--checkpoint", str(ckpt), "--json"]
    assert cli([*base, "--epochs", "1", "--calibrate"]) == 0  # the cached calibration
    first = _json(capsys)
    assert (ckpt / "last.pt").is_file() and first["epochs"] == 1
    assert cli([*base, "--epochs", "2", "--calibrate", "--resume"]) == 0
    second = _json(capsys)
    assert second["resumed_from_epoch"] == 1 and second["epochs"] == 2
    assert second["history"][0] == first["history"][0]
    # the checkpoint belongs to the calibrated chip: an uncalibrated resume is refused
    with pytest.raises(SystemExit) as info:
        cli([*base, "--epochs", "3", "--allow-uncalibrated", "--resume"])
    assert info.value.code == 1
    assert "calibration" in capsys.readouterr().err


def test_uncalibrated_board_is_refused_unless_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["--board", "emu://", *SMALL, "--epochs", "1"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "uncalibrated" in err and "--calibrate" in err
    assert cli(["--board", "emu://", *SMALL, "--epochs", "1", "--allow-uncalibrated",
                "--json"]) == 0
    out = _json(capsys)
    assert out["calibrated"] is False and out["serial"] == 1


def test_another_chips_calibration_is_refused(cal_file: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["--board", "emu://?seed=2", *SMALL, "--epochs", "1", "--calibration",
             str(cal_file)])
    assert info.value.code == 1
    assert "serial" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--sim", *SMALL, "--epochs", "1", "--resume"],
        ["--sim", "--dataset", "mnist", "--epochs", "1"],
        ["--board", "emu://", *SMALL, "--epochs", "1", "--dropout", "0.2",
         "--dropout-scope", "sample"],
        ["--sim", *SMALL, "--epochs", "1", "--dropout", "1.5"],
        ["--sim", *SMALL, "--epochs", "1", "--calibrate"],
        ["--board", "emu://", *SMALL, "--epochs", "1", "--calibrate", "--calibration", "x"],
        ["--sim", *SMALL, "--epochs", "-1"],
        ["--sim", *SMALL, "--epochs", "1", "--substeps", "0"],
        ["--sim", *SMALL, "--epochs", "1", "--label-smoothing", "1.0"],
        ["--sim", *SMALL, "--epochs", "1", "--pretrain-epochs", "2"],
        ["--sim", *SMALL, "--epochs", "1", "--ema", "1.0"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_missing_dataset_directory_exits_1(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["--sim", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "none"),
             "--epochs", "1"])
    assert info.value.code == 1
    assert "does not exist" in capsys.readouterr().err


def test_onoff_digits_match_the_standard_split() -> None:
    import torch

    from tools.train import onoff_digits
    from training.data import load_digits_split

    on_train, on_test = onoff_digits()
    train_set, test_set = load_digits_split()
    assert on_train.n_inputs == 128 and len(on_train) == len(train_set)
    assert torch.equal(on_train.bins[:, :64], train_set.bins)
    assert torch.equal(on_test.labels, test_set.labels)
    # a pixel too dark to spike (x <= 0.2) spikes early in its off input (1 - x >= 0.8)
    on, off = on_train.bins[:, :64], on_train.bins[:, 64:]
    assert bool((off[on < 0] == 1).all()) and bool((on < 0).any())


def test_input_dropout_drops_spikes_at_the_given_rate() -> None:
    import torch

    from protocol.errors import ConfigError
    from tools.train import InputDropout
    from training.data import load_digits_split

    train_set, _ = load_digits_split()
    torch.manual_seed(0)
    kept = InputDropout(train_set, 0.3).__getitems__(list(range(500)))
    full = train_set.__getitems__(list(range(500)))
    assert torch.equal(kept.labels, full.labels)
    assert bool((kept.spikes <= full.spikes).all())
    assert float(kept.spikes.sum() / full.spikes.sum()) == pytest.approx(0.7, abs=0.03)
    with pytest.raises(ConfigError):
        InputDropout(train_set, 1.0)


def test_onoff_code_is_for_digits_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["--sim", "--dataset", "fashion-mnist", "--input-code", "onoff", "--epochs", "1"])
    assert info.value.code == 2
    assert "digits" in capsys.readouterr().err
