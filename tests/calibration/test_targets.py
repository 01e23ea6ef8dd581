"""Targets: scalars or per-neuron arrays, validation, files, detuning, cache keys."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calibration import Targets
from protocol.errors import ConfigError


def test_defaults_and_per_neuron_views() -> None:
    t = Targets()
    assert t.leak == 80.0 and t.threshold == 150.0 and t.tau_mem == 6.0
    assert t.per_neuron("leak").shape == (512,) and (t.per_neuron("leak") == 80.0).all()
    arr = np.linspace(5.0, 7.0, 512)
    t2 = Targets(tau_mem=arr)
    np.testing.assert_array_equal(t2.per_neuron("tau_mem"), arr)
    assert t2.scalar("tau_mem") == pytest.approx(6.0)
    with pytest.raises(ValueError):
        t2.tau_mem[0] = 1.0  # stored read-only: a Targets object never changes


@pytest.mark.parametrize("kw, message", [
    ({"leak": 500.0}, r"targets.leak: value outside the valid range 20.0..230.0"),
    ({"tau_mem": np.r_[np.full(510, 6.0), -1.0, np.nan]}, r"neurons \[510, 511\]"),
    ({"tau_syn_exc": [1.0, 2.0]}, "512 numbers"),
    ({"threshold": "high"}, "number"),
    ({"synapse_dac": 1023}, "synapse_dac"),
    ({"cadc_reference": [120.0] * 512}, "one number"),
])
def test_invalid_targets_name_field_and_neurons(kw, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Targets(**kw)


def test_targets_file(tmp_path) -> None:
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"threshold": 140, "tau_mem": [6.5] * 512}))
    t = Targets.load(p)
    assert t.threshold == 140.0 and t.per_neuron("tau_mem")[3] == 6.5 and t.leak == 80.0
    p.write_text(json.dumps({"treshold": 140}))
    with pytest.raises(ConfigError, match="unknown target.*treshold"):
        Targets.load(p)
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Targets.load(p)
    p.write_text(json.dumps({"leak": 1000}))
    with pytest.raises(ConfigError, match=str(p)):
        Targets.load(p)
    with pytest.raises(ConfigError, match="cannot read"):
        Targets.load(tmp_path / "missing.json")


def test_round_trip_and_key() -> None:
    t = Targets(tau_mem=np.full(512, 6.0), leak=79.0)
    back = Targets.from_dict(t.to_dict())
    assert back.key() == t.key()
    assert Targets().key() != Targets(leak=79.0).key()
    assert Targets().key() == Targets().key()


def test_detuned_targets_have_the_requested_spread() -> None:
    base = Targets()
    d = base.detuned(0.3, seed=4)
    for name in ("tau_mem", "tau_syn_exc", "tau_syn_inh"):
        rel = d.per_neuron(name) / base.per_neuron(name) - 1
        assert 0.25 < rel.std() < 0.35
    gap = d.per_neuron("threshold") - d.per_neuron("leak")
    assert 0.25 < (gap / 70.0 - 1).std() < 0.35
    assert (d.per_neuron("leak") == 80.0).all()
    assert base.detuned(0.3, seed=4).key() == d.key() != base.detuned(0.3, seed=5).key()


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_wide_detuning_gives_valid_targets_clipped_and_counted(sigma) -> None:
    """PNAS targets (leak 80, threshold 150) at sigma_d >= 50 % draw thresholds above the valid
    230 LSB and gaps to the leak near zero: they are clipped, counted, and the result validates."""
    from calibration.targets import _VALID, MIN_THRESHOLD_GAP

    base = Targets(threshold=150.0, tau_mem=6.0)
    d = base.detuning(sigma, seed=1)
    t = d.targets
    Targets.from_dict(t.to_dict())  # passes validation again from plain data
    thr, leak = t.per_neuron("threshold"), t.per_neuron("leak")
    assert thr.max() <= 230.0 and (thr - leak).min() >= MIN_THRESHOLD_GAP - 1e-9
    assert d.clipped["threshold"]["high"] == np.count_nonzero(thr == 230.0) > 0
    assert d.clipped["threshold"]["low"] == np.count_nonzero(thr == leak + MIN_THRESHOLD_GAP) > 0
    for name in ("tau_mem", "tau_syn_exc", "tau_syn_inh"):
        lo, hi = _VALID[name]
        v = t.per_neuron(name)
        assert lo <= v.min() and v.max() <= hi
    assert d.total_clipped == sum(c["low"] + c["high"] for c in d.clipped.values())
    # the unclipped formula, recomputed from the same draws: equal wherever nothing was clipped
    rng = np.random.default_rng(1)
    f = {n: 1.0 + sigma * rng.standard_normal(512) for n in d.clipped}
    raw = 80.0 + 70.0 * f["threshold"]
    inside = (raw >= 80.0 + MIN_THRESHOLD_GAP) & (raw <= 230.0)
    np.testing.assert_array_equal(thr[inside], raw[inside])
    assert np.count_nonzero(~inside) == d.clipped["threshold"]["low"] + \
        d.clipped["threshold"]["high"]
    np.testing.assert_array_equal(t.per_neuron("tau_mem")[f["tau_mem"] >= 0.1],
                                  6.0 * f["tau_mem"][f["tau_mem"] >= 0.1])
    assert t.key() == base.detuned(sigma, seed=1).key()


def test_moderate_detuning_is_unclipped_and_min_gap_is_an_option() -> None:
    base = Targets()
    d = base.detuning(0.1, seed=1)
    assert d.total_clipped == 0
    rng = np.random.default_rng(1)
    f = {n: 1.0 + 0.1 * rng.standard_normal(512) for n in d.clipped}
    np.testing.assert_array_equal(d.targets.per_neuron("threshold"), 80.0 + 70.0 * f["threshold"])
    np.testing.assert_array_equal(d.targets.per_neuron("tau_syn_inh"), 6.0 * f["tau_syn_inh"])
    wide = base.detuning(0.5, seed=1, min_gap=30.0)
    assert (wide.targets.per_neuron("threshold") >= 110.0).all()
    assert wide.clipped["threshold"]["low"] > base.detuning(0.5, seed=1).clipped["threshold"]["low"]
    only = base.detuning(0.5, seed=1, names=("threshold",))
    assert set(only.clipped) == {"threshold"} and only.targets.tau_mem == 6.0


@pytest.mark.parametrize("kw, message", [
    ({"sigma": -0.1}, "sigma"),
    ({"sigma": float("nan")}, "sigma"),
    ({"sigma": 0.3, "min_gap": -1.0}, "min_gap"),
    ({"sigma": 0.3, "names": ("cadc_reference",)}, "cannot detune"),
    ({"sigma": 0.3, "names": ("tau_membrane",)}, "cannot detune"),
])
def test_bad_detuning_arguments(kw, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Targets().detuning(**kw)
