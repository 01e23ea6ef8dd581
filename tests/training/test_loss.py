"""Loss and regularisers against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from protocol.errors import ConfigError
from training.loss import (
    PNASLoss,
    accuracy,
    logits,
    readout_amplitude_penalty,
    spike_count_regularizer,
    weight_l2,
)
from training.nn import LayerTrace, NetworkOutput


def _output(readout: torch.Tensor, spikes: list[torch.Tensor]) -> NetworkOutput:
    traces = [LayerTrace(1 + 2 * k, s, torch.zeros_like(s)) for k, s in enumerate(spikes)]
    traces.append(LayerTrace(99, None, readout))
    return NetworkOutput(readout=readout, traces=traces)


def test_spike_count_regularizer_is_pnas_eq6() -> None:
    # two samples, 3 + 1 hidden neurons in two layers, 4 steps
    s1 = torch.zeros(4, 2, 3)
    s1[:, 0, 0] = 1  # sample 0: neuron 0 fires 4 times
    s1[0, 0, 2] = 1  # neuron 2 once
    s1[1:3, 1, 1] = 1  # sample 1: neuron 1 twice
    s2 = torch.zeros(4, 2, 1)
    s2[0, 1, 0] = 1  # sample 1: neuron 3 once
    # sample 0: (16 + 1) / 4 ; sample 1: (4 + 1) / 4 ; batch mean times rho
    expected = 0.5 * ((17 / 4) + (5 / 4)) / 2
    assert float(spike_count_regularizer([s1, s2], 0.5)) == pytest.approx(expected)
    with pytest.raises(ConfigError):
        spike_count_regularizer([], 1.0)


def test_readout_amplitude_penalty() -> None:
    v = torch.zeros(3, 1, 2)
    v[:, 0, 0] = torch.tensor([0.5, 2.0, 1.0])  # max |v| = 2
    v[:, 0, 1] = torch.tensor([-3.0, 0.0, 0.1])  # max |v| = 3
    assert float(readout_amplitude_penalty(v, 0.1)) == pytest.approx(0.1 * (4 + 9) / 2)
    assert float(readout_amplitude_penalty(v, 0.1, bound=2.5)) == pytest.approx(0.1 * 0.25 / 2)


def test_weight_l2() -> None:
    assert float(
        weight_l2([torch.tensor([1.0, -2.0]), torch.tensor([[3.0]])], 0.01)
    ) == pytest.approx(0.14)


def test_logits_accuracy_and_total() -> None:
    readout = torch.zeros(3, 2, 3)
    readout[1, 0] = torch.tensor([0.2, 1.0, 0.1])  # sample 0 -> class 1
    readout[2, 1] = torch.tensor([0.9, 0.3, 0.0])  # sample 1 -> class 0
    labels = torch.tensor([1, 2])
    z = logits(readout, 2.0)
    torch.testing.assert_close(z, torch.tensor([[0.4, 2.0, 0.2], [1.8, 0.6, 0.0]]))
    assert accuracy(readout, labels) == 0.5
    spikes = torch.zeros(3, 2, 2)
    spikes[0, 0, 0] = 1
    w = torch.tensor([1.0, 2.0])
    fn = PNASLoss(readout_scale=2.0, rho=1.0, readout_penalty=0.1, l2=0.5, weights=[w])
    t = fn.terms(_output(readout, [spikes]), labels)
    nll0 = -math.log(math.exp(2.0) / (math.exp(0.4) + math.exp(2.0) + math.exp(0.2)))
    nll1 = -math.log(1.0 / (math.exp(1.8) + math.exp(0.6) + 1.0))
    assert float(t.nll) == pytest.approx((nll0 + nll1) / 2, rel=1e-6)
    assert float(t.spike_count) == pytest.approx(1.0 * (1 / 2 + 0) / 2)
    assert float(t.readout_amplitude) == pytest.approx(0.1 * (0.04 + 1.0 + 0.01 + 0.81 + 0.09) / 6)
    assert float(t.weight_l2) == pytest.approx(2.5)
    assert float(t.total) == pytest.approx(
        float(t.nll + t.spike_count + t.readout_amplitude + t.weight_l2)
    )
    assert float(fn(_output(readout, [spikes]), labels)) == pytest.approx(float(t.total))


def test_disabled_terms_are_zero_and_bad_settings_refused() -> None:
    t = PNASLoss().terms(_output(torch.randn(3, 2, 3), []), torch.tensor([0, 1]))
    assert float(t.spike_count) == float(t.readout_amplitude) == float(t.weight_l2) == 0.0
    with pytest.raises(ConfigError):
        PNASLoss(readout_scale=0.0)
    with pytest.raises(ConfigError):
        PNASLoss(rho=-1.0)
    with pytest.raises(ConfigError, match="weights"):
        PNASLoss(l2=1e-3)


def test_label_smoothing_spreads_the_target_over_all_classes() -> None:
    readout = torch.zeros(2, 1, 3)
    readout[1, 0] = torch.tensor([0.5, 0.1, -0.2])
    labels = torch.tensor([0])
    z = torch.tensor([2.5, 0.5, 0.0])  # readout_scale 5 times the max over time
    logp = z - torch.logsumexp(z, 0)
    eps = 0.3
    expected = -((1 - eps) * logp[0] + eps * logp.mean())
    t = PNASLoss(readout_scale=5.0, label_smoothing=eps).terms(_output(readout, []), labels)
    assert float(t.nll) == pytest.approx(float(expected), rel=1e-6)
    plain = PNASLoss(readout_scale=5.0).terms(_output(readout, []), labels)
    assert float(plain.nll) == pytest.approx(float(-logp[0]), rel=1e-6)
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="label_smoothing"):
            PNASLoss(label_smoothing=bad)
