"""Each routine alone on an emulated chip, per-neuron targets, unreachable targets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from calibration import Targets
from calibration.routines import cadc, leak, refractory, reset, synapse, tau_mem, tau_syn
from calibration.routines import threshold as threshold_routine
from calibration.routines.base import CalibrationWarning
from calibration.routines.refractory import counter_codes, programmed_us
from protocol.errors import CalibrationError


def test_leak_alone_with_per_neuron_targets(boards) -> None:
    target = 60.0 + 60.0 * (np.arange(512) % 7) / 6.0  # 60..120 LSB, neighbours differ
    r = leak.calibrate(boards(4), Targets(leak=target))
    p = r["leak"]
    assert r.serial == 4 and set(r.parameters) == {"leak"}
    assert np.max(np.abs(p.residual)) < 1.0
    assert p.std_after < 0.1 * p.std_before
    assert 3 <= p.runs <= 6  # model search: probe, prediction, correction(s), final


def test_reset_and_cadc_alone(boards) -> None:
    r = reset.calibrate(boards(4))
    assert r["reset"].ratio < 0.1
    c = cadc.calibrate(boards(4))["cadc_offset"]
    assert c.std_after <= 1.0 < c.std_before
    assert c.runs == 2 and c.codes.min() >= -128 and c.codes.max() <= 127


def test_time_constants_alone(boards) -> None:
    base = leak.calibrate(boards(4))
    m = tau_mem.calibrate(boards(4), base=base)["tau_mem"]
    assert m.ratio < 0.15 and np.max(np.abs(m.residual)) < 0.06 * 6.0
    s = tau_syn.calibrate(boards(4))
    for name in ("tau_syn_exc", "tau_syn_inh"):
        assert s[name].ratio < 0.15, name
        assert np.max(np.abs(s[name].residual)) < 0.06 * 6.0, name


def test_detuned_time_constants_follow_their_targets(boards) -> None:
    """The training issue's robustness runs detune tau per neuron (sigma_d = 30 %)."""
    t = Targets().detuned(0.3, seed=2)
    base = leak.calibrate(boards(4), t)
    p = tau_mem.calibrate(boards(4), t, base=base)["tau_mem"]
    rel = p.after / p.target - 1
    assert np.max(np.abs(rel)) < 0.06
    assert np.corrcoef(p.after, p.target)[0, 1] > 0.99
    # before: every neuron at the nominal code of the median target
    assert np.std(p.before / np.median(p.before) - 1) > 0.1


def test_threshold_alone_and_detuned(boards) -> None:
    t = Targets().detuned(0.3, seed=3, names=("threshold",))
    base = leak.calibrate(boards(4), t)
    p = threshold_routine.calibrate(boards(4), t, base=base)["threshold"]
    assert np.max(np.abs(p.residual)) < 1.5
    assert np.std(p.residual) < 0.1 * np.std(p.before)


def _weakest(seed: int, n: int) -> np.ndarray:
    """Neurons whose excitatory input is weakest on this chip (emulator ground truth)."""
    from emulator.analog.mismatch import ChipMismatch, MismatchConfig
    from protocol.addressmap import GlobalCell, NeuronCell

    mm = ChipMismatch.draw(seed, MismatchConfig())
    idx = np.arange(512)
    quadrant = 2 * (idx // 256) + ((idx % 256) >= 128)
    g = mm.i_gain[:, NeuronCell.I_BIAS_SYN_EXC_GM] * mm.global_i_gain[
        quadrant, GlobalCell.I_BIAS_SYNAPSE_DAC]
    return np.sort(np.argsort(g)[:n])


def test_unreachable_target_names_neurons_and_range(boards, full) -> None:
    weak = _weakest(1, 3)
    target = np.full(512, 8.0)
    target[weak] = 40.0  # the strongest code gives ~33 LSB per event on a nominal neuron
    t = Targets(synaptic_strength=target)
    base = full(1)
    with pytest.raises(CalibrationError) as e:
        synapse.calibrate(boards(1), t, base=base)
    msg = str(e.value)
    assert "synaptic strength: target out of reach for 3 neuron(s)" in msg
    for n in weak:
        assert f"exc {n}: target 40 LSB, reaches at most " in msg
    np.testing.assert_array_equal(e.value.neurons, weak)


def test_unreachable_target_clamped_with_a_warning(boards, full) -> None:
    weak = _weakest(1, 2)
    target = np.full(512, 8.0)
    target[weak] = 40.0
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = synapse.SynapseRoutine(clamp=True)
        from calibration.routines.base import run_alone
        res = run_alone(r, boards(1), Targets(synaptic_strength=target), full(1))
    msgs = [str(x.message) for x in w if issubclass(x.category, CalibrationWarning)]
    assert len(msgs) == 1 and "clamped to the nearest reachable code" in msgs[0]
    p = res["synaptic_strength"]
    np.testing.assert_array_equal(p.clamped, weak)
    assert (p.codes[weak] == 1022).all()
    others = np.setdiff1d(np.arange(512), weak)
    assert np.max(np.abs(p.residual[others])) < 0.8


def test_refractory_counter_codes() -> None:
    count, clock = counter_codes(np.array([0.0, 0.008, 2.0, 2.04, 2.1, 10.0, 66846.72]))
    np.testing.assert_array_equal(clock, [0, 0, 0, 0, 1, 3, 15])
    np.testing.assert_array_equal(count, [0, 1, 250, 255, 131, 156, 255])
    got = programmed_us(count, clock)
    assert abs(got[4] - 2.1) <= 0.008 and abs(got[5] - 10.0) <= 0.032


def test_refractory_alone_verified_by_measurement(boards) -> None:
    t = np.where(np.arange(512) % 2 == 0, 1.5, 5.0)
    p = refractory.calibrate(boards(4), Targets(refractory=t))["refractory"]
    np.testing.assert_allclose(p.after, programmed_us(p.codes & 0xFF, p.codes >> 8), atol=0.01)
    np.testing.assert_allclose(p.after, t, atol=0.02)


def test_refractory_out_of_reach(boards) -> None:
    t = np.full(512, 2.0)
    t[[4, 9]] = 66990.0
    with pytest.raises(CalibrationError, match=r"out of reach for 2 neuron\(s\) \[4, 9\]"):
        refractory.calibrate(boards(4), Targets(refractory=t))
