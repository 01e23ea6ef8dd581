"""python -m tools.calibrate: JSON and table output, plot, cache, bad paths (targets, disconnect,
foreign or corrupted files are the library's; here: what the CLI does with them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import calibration
import hostdriver
from tools.calibrate import cli

REPO = Path(__file__).resolve().parents[2]
NAMES = ("leak", "reset", "threshold", "tau_mem", "tau_syn_exc", "tau_syn_inh",
         "synaptic_strength", "cadc_offset")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STROBE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One cache shared by this module's tests: the first calibration fills it."""
    return tmp_path_factory.mktemp("shared-cache")


def _json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_json_run_writes_the_file_and_reports_every_parameter(tmp_path, capsys, monkeypatch,
                                                              cache_dir) -> None:
    monkeypatch.setenv("STROBE_CACHE_DIR", str(cache_dir))
    out = tmp_path / "chip7.cal.json"
    png = tmp_path / "plots" / "chip7.png"
    assert cli(["--board", "emu://?seed=7", "--out", str(out), "--plot", str(png), "--json",
                "--check"]) == 0
    obj = _json(capsys.readouterr().out)
    assert obj["serial"] == 7 and obj["seconds"] > 0 and obj["cached"] is False
    for name in NAMES:
        p = obj["parameters"][name]
        assert set(p) == {"std_before", "std_after", "ratio", "unit"}
        assert p["std_after"] < p["std_before"]
    assert obj["parameters"]["leak"]["unit"] == "mV"
    assert obj["parameters"]["tau_mem"]["unit"] == "us"
    assert obj["parameters"]["cadc_offset"]["unit"] == "LSB"
    for name in ("leak", "reset", "threshold"):
        assert obj["parameters"][name]["ratio"] <= 0.1
    for name in ("tau_mem", "tau_syn_exc", "tau_syn_inh", "synaptic_strength"):
        assert obj["parameters"][name]["ratio"] <= 0.15
    assert obj["parameters"]["cadc_offset"]["std_after"] <= 1.0
    assert obj["refractory"] == {"target_us": 2.0, "measured_us": pytest.approx(2.0, abs=0.01)}
    assert obj["firing_rate_cv"]["after"] <= 0.05 < obj["firing_rate_cv"]["before"]
    r = calibration.load(out)
    assert r.serial == 7 and r.summary() == obj["parameters"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_run_is_cached_and_human_output_has_the_table(tmp_path, capsys, monkeypatch,
                                                              cache_dir) -> None:
    monkeypatch.setenv("STROBE_CACHE_DIR", str(cache_dir))
    out = tmp_path / "again.json"
    assert cli(["--board", "emu://?seed=7", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(from the cache)" in text
    assert "parameter" in text and "std before" in text and "ratio" in text
    for name in NAMES:
        assert f"\n{name} " in text
    assert f"wrote {out}" in text
    assert calibration.load(out).serial == 7
    # --no-cache would measure again; a different chip misses the cache (not run: slow)


def test_bad_targets_file_is_a_usage_error(tmp_path, capsys) -> None:
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"leak": 999}))
    out = tmp_path / "x.json"
    assert_exit(2, ["--board", "emu://?seed=7", "--targets", str(t), "--out", str(out)])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "targets.leak" in err and err.count("\n") == 1
    assert not out.exists()


def test_out_must_be_given(capsys) -> None:
    assert_exit(2, ["--board", "emu://?seed=7"])
    assert "--out" in capsys.readouterr().err


def test_disconnect_mid_calibration_writes_no_file(tmp_path, capsys, monkeypatch) -> None:
    sys.path.insert(0, str(REPO / "tests" / "calibration"))
    from cal_helpers import DyingBoard

    real = hostdriver.connect

    def dying(url=None, *, timeout=2.0):
        return DyingBoard(real(url, timeout=timeout), die_before=9)

    monkeypatch.setattr(hostdriver, "connect", dying)
    out = tmp_path / "cal" / "chip.json"
    out.parent.mkdir()
    assert_exit(1, ["--board", "emu://?seed=8", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert captured.err.startswith("error: LinkError: ") and captured.err.count("\n") == 1
    assert captured.out == ""
    assert not any(out.parent.iterdir())  # neither the file nor a partial temp file


def test_unreachable_target_fails_cleanly_and_clamp_proceeds(tmp_path, capsys, monkeypatch
                                                            ) -> None:
    """A refractory time beyond the counter: error naming the neurons; --clamp warns."""
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"refractory": [2.0] * 511 + [66990.0]}))
    out = tmp_path / "x.json"
    from calibration import pipeline

    # skip the analog steps: only the refractory routine runs (its check comes first)
    steps = pipeline.steps
    monkeypatch.setattr(pipeline, "steps", lambda clamp=False: [
        s for s in steps(clamp) if s.name == "refractory"])
    assert_exit(1, ["--board", "emu://?seed=7", "--targets", str(t), "--out", str(out),
                    "--no-cache"])
    err = capsys.readouterr().err
    assert "CalibrationError: refractory: target out of reach for 1 neuron(s) [511]" in err
    assert not out.exists()
    with pytest.warns(UserWarning, match="refractory"):
        assert cli(["--board", "emu://?seed=7", "--targets", str(t), "--out", str(out),
                    "--no-cache", "--clamp", "--json"]) == 0
    assert calibration.load(out)["refractory"].clamped.tolist() == [511]


def assert_exit(code: int, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli(argv)
    assert e.value.code == code


def test_runs_as_a_module(tmp_path) -> None:
    """`python -m tools.calibrate --help` from a shell."""
    p = subprocess.run([sys.executable, "-m", "tools.calibrate", "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0
    for flag in ("--board", "--targets", "--out", "--plot", "--json", "--no-cache", "--clamp"):
        assert flag in p.stdout
