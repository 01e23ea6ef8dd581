"""PNAS 2022 loss: NLL of a softmax over max-over-time readout membranes, plus regularisers.

All terms are means over the batch, so their weights do not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from protocol.errors import ConfigError
from training.nn import NetworkOutput

__all__ = [
    "LossTerms",
    "PNASLoss",
    "accuracy",
    "logits",
    "readout_amplitude_penalty",
    "spike_count_regularizer",
    "weight_l2",
]


def logits(readout: Tensor, scale: float = 1.0) -> Tensor:
    """Class scores [B, n_out]: scale * max over time of the readout membrane [T, B, n_out]."""
    return scale * readout.max(dim=0).values


def accuracy(readout: Tensor, labels: Tensor) -> float:
    """Fraction of samples whose largest max-over-time readout is the label."""
    return float((readout.max(dim=0).values.argmax(dim=1) == labels).float().mean())


def spike_count_regularizer(hidden_spikes: Sequence[Tensor], rho: float) -> Tensor:
    """PNAS Eq. 6: rho * (1/N_H) * sum_i (sum_t S_i)^2 over all hidden neurons i, batch mean."""
    if not hidden_spikes:
        raise ConfigError("the spike-count regulariser needs at least one spiking hidden layer")
    counts = torch.cat([s.sum(dim=0) for s in hidden_spikes], dim=1)  # [B, N_H]
    return rho * (counts**2).sum(dim=1).mean() / counts.shape[1]


def readout_amplitude_penalty(readout: Tensor, weight: float, bound: float = 0.0) -> Tensor:
    """weight * mean over samples and classes of relu(max_t |v| - bound)^2: keeps readout
    membranes inside the range a chip's ADC can record."""
    excess = F.relu(readout.abs().max(dim=0).values - bound)
    return weight * (excess**2).mean()


def weight_l2(weights: Iterable[Tensor], weight: float) -> Tensor:
    """weight * sum of squared weights."""
    terms = [(w**2).sum() for w in weights]
    if not terms:
        return torch.zeros(())
    return weight * torch.stack(terms).sum()


@dataclass
class LossTerms:
    """The total loss and its parts (each a scalar tensor) plus the logits it was computed from."""

    total: Tensor
    nll: Tensor
    spike_count: Tensor
    readout_amplitude: Tensor
    weight_l2: Tensor
    logits: Tensor


class PNASLoss:
    """loss_fn(y, labels) -> scalar; `terms` returns the parts for logging.

    readout_scale: factor on the max-over-time membranes before the softmax.
    label_smoothing: target mass spread evenly over all classes (torch's cross_entropy option):
    the readout is not pushed to ever larger margins on training images it already gets right.
    rho: spike-count regulariser weight (PNAS Eq. 6). readout_penalty / readout_bound: amplitude
    penalty on readout membranes beyond the bound. l2 / weights: weight L2 on the given tensors
    (pass `net.weights()`).
    """

    def __init__(
        self,
        *,
        readout_scale: float = 2.0,
        rho: float = 0.0,
        label_smoothing: float = 0.0,
        readout_penalty: float = 0.0,
        readout_bound: float = 0.0,
        l2: float = 0.0,
        weights: Iterable[Tensor] = (),
    ) -> None:
        if readout_scale <= 0:
            raise ConfigError(f"readout_scale must be > 0, got {readout_scale}")
        for name, v in (("rho", rho), ("readout_penalty", readout_penalty), ("l2", l2)):
            if v < 0:
                raise ConfigError(f"{name} must be >= 0, got {v}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.readout_scale, self.rho = readout_scale, rho
        self.readout_penalty, self.readout_bound = readout_penalty, readout_bound
        self.l2, self.weights = l2, list(weights)
        if l2 > 0 and not self.weights:
            raise ConfigError("l2 > 0 needs the weights to regularise (weights=net.weights())")

    def terms(self, y: NetworkOutput, labels: Tensor) -> LossTerms:
        z = logits(y.readout, self.readout_scale)
        nll = F.cross_entropy(z, labels.to(z.device).long(), label_smoothing=self.label_smoothing)
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        spikes = spike_count_regularizer(y.hidden_spikes, self.rho) if self.rho > 0 else zero
        amplitude = (
            readout_amplitude_penalty(y.readout, self.readout_penalty, self.readout_bound)
            if self.readout_penalty > 0
            else zero
        )
        l2 = weight_l2(self.weights, self.l2).to(z) if self.l2 > 0 else zero
        return LossTerms(nll + spikes + amplitude + l2, nll, spikes, amplitude, l2, z)

    def __call__(self, y: NetworkOutput, labels: Tensor) -> Tensor:
        return self.terms(y, labels).total
