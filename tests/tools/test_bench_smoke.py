"""bench/robustness.py and bench/transfer.py at tiny settings: JSON keys, the results block,
the detuned targets, bad arguments."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import robustness, transfer  # noqa: E402
from protocol.errors import ConfigError  # noqa: E402
from training.board import training_targets  # noqa: E402

TINY = ["--epochs", "1", "--max-batches", "1", "--eval-repeats", "1", "--json"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibrations go to a cache shared by this module's tests, not the user's."""
    monkeypatch.setenv("STROBE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "bench-cache"))


def _last_json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_robustness_tiny_run_json_and_block(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nkept\n")
    obj = robustness.main(["--sigmas", "10", *TINY, "--results", str(results)])
    assert _last_json(capsys) == json.loads(json.dumps(obj))
    assert {"sigmas", "epochs", "seeds", "rows", "summary", "sim_software_accuracy", "seconds",
            "table", "command"} <= set(obj)
    row, = obj["rows"]
    assert row["sigma"] == pytest.approx(0.1) and row["seed"] == 0
    for key in ("in_the_loop", "sim_deployed"):
        assert 0.0 <= row[key] <= 1.0
    assert {"clamped", "clamped_detuned", "targets_clipped", "spread", "calibration_seconds",
            "train_seconds"} <= set(row)
    assert 0.05 < row["spread"]["tau_mem"]["measured"] < 0.15  # the detuning reached the chip
    per, = obj["summary"]["per_sigma"]
    assert per["in_the_loop_mean"] == row["in_the_loop"]
    assert obj["summary"]["criteria"] == {"in_the_loop_within_2pct_up_to_30": None,
                                          "sim_deployed_loses_clearly_more_from_30": None}
    text = results.read_text()
    assert text.startswith("# Results\n\nkept\n\n## Robustness (issue 5)\n\n")
    assert "<!-- robustness:begin -->" in text and "| 10 % |" in text

    # --combine: the same run under another seed, averaged into one table
    other = json.loads(json.dumps(obj))
    other["seeds"], other["rows"][0]["seed"] = [7], 7
    other["rows"][0]["in_the_loop"] = 0.5
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    files[0].write_text(json.dumps(obj))
    files[1].write_text("progress line\n" + json.dumps(other))
    both = robustness.main(["--combine", *map(str, files), "--results", str(results), "--json"])
    assert both["seeds"] == [0, 7] and len(both["rows"]) == 2
    per, = both["summary"]["per_sigma"]
    assert per["in_the_loop_mean"] == pytest.approx((row["in_the_loop"] + 0.5) / 2)
    assert results.read_text().count("<!-- robustness:begin -->") == 1
    other["epochs"] = 2
    files[1].write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="differ in epochs"):
        robustness.main(["--combine", *map(str, files), "--no-write"])
    with pytest.raises(ConfigError, match="not a robustness JSON"):
        robustness.main(["--combine", str(tmp_path / "missing.json"), "--no-write"])


def test_transfer_tiny_run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    obj = transfer.main(["--pairs", "1:2", *TINY, "--no-write"])
    assert _last_json(capsys)["rows"] == json.loads(json.dumps(obj["rows"]))
    row, = obj["rows"]
    assert row["serial_a"] != row["serial_b"]
    for key in ("accuracy_a", "accuracy_b_before", "accuracy_b_after"):
        assert 0.0 <= row[key] <= 1.0
    assert row["same_integer_weights_on_b"] is True  # same targets: same weight scale
    assert row["loss_before"] == pytest.approx(row["accuracy_a"] - row["accuracy_b_before"])
    assert set(obj["criteria"]) == {"loss_within_2pct", "recovered"}
    assert "written" not in obj and "| emu://?seed=1 -> emu://?seed=2 |" in obj["table"]

    other = json.loads(json.dumps(obj))
    other["rows"][0].update(board_a="emu://?seed=3", board_b="emu://?seed=4", recovered=False)
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    files[0].write_text(json.dumps(obj))
    files[1].write_text(json.dumps(other))
    both = transfer.main(["--combine", *map(str, files), "--no-write"])
    assert [r["board_a"] for r in both["rows"]] == ["emu://?seed=1", "emu://?seed=3"]
    assert both["criteria"]["recovered"] is False and "seed=3 -> emu://?seed=4" in both["table"]
    other["seed"] = 5
    files[1].write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="differ in seed"):
        transfer.main(["--combine", *map(str, files), "--no-write"])


def test_detuned_targets_are_targets_detuned_where_valid() -> None:
    t, clipped = robustness.detuned_targets(0.3, 1)
    ref = training_targets().detuned(0.3, seed=1)
    assert clipped["threshold"] == {"low": 0, "high": 0}  # only 2 tau factors at their 0.1 floor
    assert sum(c["low"] + c["high"] for c in clipped.values()) == 2
    for name in robustness.DETUNED:
        assert np.array_equal(t.per_neuron(name), ref.per_neuron(name))


def test_detuned_targets_at_50_percent_are_clipped_by_the_library() -> None:
    t, clipped = robustness.detuned_targets(0.5, 1, min_gap=10.0)
    assert t.key() == training_targets().detuned(0.5, seed=1).key()  # no capping of its own
    assert clipped["threshold"]["high"] > 0 and clipped["threshold"]["low"] > 0
    thr = t.per_neuron("threshold")
    assert thr.max() == 230.0 and thr.min() == pytest.approx(90.0)
    assert np.std(thr - 80.0) / 70.0 > 0.4  # still a 50 % spread, only its tails moved


def test_summary_criteria() -> None:
    def row(sigma: float, loop: float, sim: float) -> dict:
        return {"sigma": sigma, "in_the_loop": loop, "sim_deployed": sim, "clamped_detuned": 0,
                "clamped": {}, "targets_clipped": {}, "spread": {}}
    rows = [row(0.0, 0.97, 0.97), row(0.1, 0.965, 0.95), row(0.3, 0.96, 0.85)]
    c = robustness.summarise(rows, [0.0, 0.1, 0.3])["criteria"]
    assert c == {"in_the_loop_within_2pct_up_to_30": True,
                 "sim_deployed_loses_clearly_more_from_30": True}
    rows[2] = row(0.3, 0.94, 0.93)  # in the loop loses 3 %, software only 1 % more
    c = robustness.summarise(rows, [0.0, 0.1, 0.3])["criteria"]
    assert c == {"in_the_loop_within_2pct_up_to_30": False,
                 "sim_deployed_loses_clearly_more_from_30": False}


@pytest.mark.parametrize("argv", [["--sigmas", "x"], ["--sigmas", "-10"], ["--epochs", "0"],
                                  ["--seeds", ""]])
def test_robustness_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        robustness.main([*argv, "--no-write"])


@pytest.mark.parametrize("argv", [["--pairs", "1"], ["--pairs", "1:1"], ["--pairs", "a:b"],
                                  ["--epochs", "0"], ["--finetune-lr", "0"]])
def test_transfer_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        transfer.main([*argv, "--no-write"])
