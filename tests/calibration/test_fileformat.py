"""Calibration files: round trip, schema, corruption, foreign chips, atomic writes, apply."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import calibration
from calibration import CalibrationResult, ParameterResult, Targets, fileformat
from calibration.result import CELLS
from hostdriver.chip import ChipConfig, GlobalCell, NeuronCell, believed
from protocol.errors import CalibrationError

N = 512


def small_result(serial: int = 0x1234_5678_9ABC_DEF0) -> CalibrationResult:
    """A synthetic result with every kind of parameter (no board needed)."""
    rng = np.random.default_rng(0)
    r = CalibrationResult(serial, Targets(tau_mem=np.full(N, 6.0) + np.arange(N) * 1e-3),
                          created=1_700_000_000.0, seconds=12.5)
    for name, cell_codes in (("leak", rng.integers(0, 1023, N)),
                             ("tau_mem", rng.integers(0, 1023, N)),
                             ("synaptic_strength", rng.integers(0, 1023, N)),
                             ("cadc_offset", rng.integers(-128, 128, N)),
                             ("refractory", np.full(N, 250))):
        before = rng.normal(80, 15, N)
        after = rng.normal(80, 0.2, N)
        after[5] = np.nan  # a neuron without a measurement survives as null
        r.add(ParameterResult(name, np.full(N, 80.0), cell_codes, before, after, runs=3,
                              seconds=0.5, clamped=np.array([7, 9]), note="x"))
    return r


def test_round_trip_keeps_everything(tmp_path) -> None:
    r = small_result()
    path = calibration.save(r, tmp_path / "chip.cal.json")
    back = calibration.load(path)
    assert back.serial == r.serial and back.software_version == r.software_version
    assert back.created == r.created and back.seconds == r.seconds
    assert back.targets.key() == r.targets.key()
    np.testing.assert_array_equal(back.targets.tau_mem, r.targets.tau_mem)
    assert set(back.parameters) == set(r.parameters)
    for name, p in r.parameters.items():
        q = back[name]
        np.testing.assert_array_equal(q.codes, p.codes)
        np.testing.assert_array_equal(q.before, p.before)
        np.testing.assert_array_equal(q.after, p.after)  # NaN where NaN
        np.testing.assert_array_equal(q.clamped, p.clamped)
        assert (q.runs, q.seconds, q.note) == (p.runs, p.seconds, p.note)
    assert back.summary() == r.summary()


def test_file_layout_is_the_documented_schema(tmp_path) -> None:
    path = calibration.save(small_result(), tmp_path / "c.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == "strobe-calibration" and doc["schema_version"] == 1
    assert doc["serial"] == 0x1234_5678_9ABC_DEF0 and doc["serial_hex"] == "123456789ABCDEF0"
    assert doc["created"] == "2023-11-14T22:13:20Z"
    assert set(doc) == {"format", "schema_version", "serial", "serial_hex", "software_version",
                        "created", "created_unix", "seconds", "targets", "parameters",
                        "checksum"}
    leak = doc["parameters"]["leak"]
    assert leak["cell"] == "V_LEAK" and leak["unit"] == "LSB"
    assert leak["physical_unit"] == "mV" and leak["physical_scale"] == 3.0
    assert len(leak["codes"]) == N and leak["after"][5] is None
    assert doc["parameters"]["cadc_offset"]["cell"] == "CADC_OFFSET"
    assert len(doc["checksum"]) == 64
    assert doc["targets"]["leak"] == 80.0 and len(doc["targets"]["tau_mem"]) == N


def _rewrite(path, mutate, *, fix_checksum: bool) -> None:
    doc = json.loads(path.read_text())
    mutate(doc)
    if fix_checksum:
        doc.pop("checksum")
        doc["checksum"] = fileformat._checksum(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("damage, message", [
    (lambda t: t[: len(t) // 2], "not valid JSON"),
    (lambda t: t.replace('"V_LEAK"', '"V_LEAX"'), "checksum mismatch"),
    (lambda t: "[1, 2, 3]", "format"),
    (lambda t: "", "not valid JSON"),
    (lambda t: t.replace('"strobe-calibration"', '"strobe-chip-config"'), "format"),
])
def test_corrupted_files_give_a_clear_error(tmp_path, damage, message) -> None:
    path = calibration.save(small_result(), tmp_path / "c.json")
    path.write_text(damage(path.read_text()))
    with pytest.raises(CalibrationError, match=message) as e:
        calibration.load(path)
    assert str(path) in str(e.value)


def test_a_flipped_digit_is_caught_by_the_checksum(tmp_path) -> None:
    path = calibration.save(small_result(), tmp_path / "c.json")
    text = path.read_text()
    i = text.index('"codes": [') + len('"codes": [')
    digit = text[i]
    text = text[:i] + ("1" if digit != "1" else "2") + text[i + 1:]
    path.write_text(text)
    with pytest.raises(CalibrationError, match="checksum"):
        calibration.load(path)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["parameters"]["leak"]["codes"].__setitem__(0, 1023), r"codes\[0\] = 1023"),
    (lambda d: d["parameters"]["cadc_offset"]["codes"].__setitem__(3, 200), "-128..127"),
    (lambda d: d["parameters"]["leak"].__setitem__("codes", [1, 2]), "512 numbers"),
    (lambda d: d["parameters"]["leak"].__setitem__("cell", "V_RESET"), "cell must be"),
    (lambda d: d["parameters"].__setitem__("magic", {}), "unknown parameter"),
    (lambda d: d.__setitem__("serial", -1), "serial"),
    (lambda d: d["targets"].__setitem__("leak", 999.0), "targets"),
    (lambda d: d["parameters"]["leak"]["after"].__setitem__(0, "x"), "numbers or null"),
])
def test_invalid_content_with_a_valid_checksum_is_refused(tmp_path, mutate, message) -> None:
    path = calibration.save(small_result(), tmp_path / "c.json")
    _rewrite(path, mutate, fix_checksum=True)
    with pytest.raises(CalibrationError, match=message):
        calibration.load(path)


def test_newer_schema_asks_for_an_upgrade(tmp_path) -> None:
    path = calibration.save(small_result(), tmp_path / "c.json")
    _rewrite(path, lambda d: d.__setitem__("schema_version", 2), fix_checksum=True)
    with pytest.raises(CalibrationError, match="newer than this software"):
        calibration.load(path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CalibrationError, match="cannot read calibration file"):
        calibration.load(tmp_path / "nope.json")


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "c.json"
    calibration.save(small_result(1), path)
    good = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        calibration.save(small_result(2), path)
    assert path.read_bytes() == good  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_apply_writes_codes_offsets_refractory_and_dac() -> None:
    r = small_result()
    cfg = ChipConfig()
    r.apply(cfg)
    np.testing.assert_array_equal(cfg.neuron_capmem[NeuronCell.V_LEAK], r["leak"].codes)
    np.testing.assert_array_equal(cfg.neuron_capmem[NeuronCell.I_BIAS_LEAK], r["tau_mem"].codes)
    np.testing.assert_array_equal(cfg.neuron_capmem[NeuronCell.I_BIAS_SYN_EXC_GM],
                                  r["synaptic_strength"].codes)
    np.testing.assert_array_equal(cfg.cadc.offsets, r["cadc_offset"].codes)
    assert (cfg.neurons.refractory_count == 250).all()
    assert (cfg.neurons.refractory_clock == 0).all()
    assert (cfg.global_capmem[GlobalCell.I_BIAS_SYNAPSE_DAC] == r.targets.synapse_dac).all()
    # untouched: what the calibration does not own
    assert (cfg.neuron_capmem[NeuronCell.V_THRESHOLD] == 0).all()
    assert not cfg.neurons.enable_fire.any()


def test_foreign_serial_is_refused_naming_both_serials(boards, tmp_path) -> None:
    board = boards(1)
    path = calibration.save(small_result(serial=77), tmp_path / "other.json")
    with pytest.raises(CalibrationError) as e:
        calibration.apply_file(board, path)
    text = str(e.value)
    assert "77" in text and "0x000000000000004D" in text
    assert "serial 1 " in text and "0x0000000000000001" in text
    # force: applied and written to the board
    cfg = calibration.apply_file(board, path, ChipConfig(), force=True)
    np.testing.assert_array_equal(cfg.neuron_capmem[NeuronCell.V_LEAK],
                                  calibration.load(path)["leak"].codes)
    held = ChipConfig.read(board)
    np.testing.assert_array_equal(held.neuron_capmem[NeuronCell.V_LEAK],
                                  cfg.neuron_capmem[NeuronCell.V_LEAK])
    assert believed(board) == held


def test_own_file_applies_to_the_board(boards, full, tmp_path) -> None:
    r = full(1)
    path = calibration.save(r, tmp_path / "mine.json")
    cfg = calibration.apply_file(boards(1), path, ChipConfig())
    held = ChipConfig.read(boards(1))
    np.testing.assert_array_equal(held.neuron_capmem[NeuronCell.V_THRESHOLD],
                                  r["threshold"].codes)
    np.testing.assert_array_equal(held.cadc.offsets, r["cadc_offset"].codes)
    assert held == cfg


def test_merge_refuses_other_chips() -> None:
    with pytest.raises(CalibrationError, match="serial"):
        small_result(1).merge(small_result(2))
    merged = small_result(1).merge(small_result(1))
    assert set(merged.parameters) == set(small_result(1).parameters)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), serial=st.integers(0, 2**64 - 1),
       names=st.sets(st.sampled_from(sorted(CELLS)), min_size=1))
def test_random_results_round_trip(seed: int, serial: int, names: set[str]) -> None:
    rng = np.random.default_rng(seed)
    r = CalibrationResult(serial, Targets(leak=float(rng.uniform(30, 200))))
    for name in names:
        lo, hi = fileformat._CODE_RANGE.get(CELLS[name], (0, 1022))
        vals = rng.normal(0, 1, (3, N))
        vals[:, rng.integers(0, N, 5)] = np.nan
        r.add(ParameterResult(name, vals[0], rng.integers(lo, hi + 1, N), vals[1], vals[2]))
    back = fileformat.loads(fileformat.dumps(r))
    assert back.serial == serial and set(back.parameters) == names
    for name in names:
        np.testing.assert_array_equal(back[name].codes, r[name].codes)
        np.testing.assert_array_equal(back[name].after, r[name].after)


@settings(max_examples=60, deadline=None)
@given(pos=st.integers(0, 10**9), byte=st.integers(0, 255))
def test_any_single_byte_change_is_refused_or_harmless(pos: int, byte: int) -> None:
    text = fileformat.dumps(small_result()).encode()
    i = pos % len(text)
    damaged = text[:i] + bytes([byte]) + text[i + 1:]
    try:
        back = fileformat.loads(damaged)
    except CalibrationError:
        return
    # accepted only if the content is unchanged (e.g. whitespace that JSON ignores)
    assert fileformat.dumps(back) == fileformat.dumps(small_result())


@pytest.mark.parametrize("number", ["1E999", "-1e400", "NaN", "Infinity"])
def test_non_finite_numbers_are_refused_as_a_damaged_file(number: str) -> None:
    text = fileformat.dumps(small_result())
    damaged = text.replace('"serial": ', f'"bogus": {number}, "serial": ', 1)
    with pytest.raises(CalibrationError, match="not finite|not a valid number"):
        fileformat.loads(damaged)
