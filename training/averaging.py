"""Exponential moving average of a network's parameters (Polyak averaging).

Noisy gradients (mini-batches, and on a chip the trial-to-trial noise of the measured traces)
leave the weights jittering around a good point; their running average sits closer to it.
The trainer evaluates (and finally keeps) the averaged weights, while the optimiser goes on
stepping the raw ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from protocol.errors import ConfigError

__all__ = ["WeightAverage"]


class WeightAverage:
    """shadow <- decay * shadow + (1 - decay) * parameter, after every optimiser step.

    decay 0.998 averages over the last ~500 steps (1 / (1 - decay)).
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"the weight average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = [p.detach().clone() for p in net.parameters()]

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        for s, p in zip(self.shadow, net.parameters(), strict=True):
            s.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, net: nn.Module) -> None:
        """Overwrite net's parameters with the averages."""
        for s, p in zip(self.shadow, net.parameters(), strict=True):
            p.copy_(s)

    @contextmanager
    def applied(self, net: nn.Module) -> Iterator[None]:
        """net carries the averaged parameters inside the block, its own ones again after."""
        raw = [p.detach().clone() for p in net.parameters()]
        self.copy_to(net)
        try:
            yield
        finally:
            with torch.no_grad():
                for r, p in zip(raw, net.parameters(), strict=True):
                    p.copy_(r)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        shadow: list[Tensor] = state["shadow"]
        if len(shadow) != len(self.shadow) or any(
            a.shape != b.shape for a, b in zip(shadow, self.shadow, strict=True)
        ):
            raise ConfigError("the weight average in the checkpoint belongs to another network")
        self.decay = float(state["decay"])
        self.shadow = [s.to(device=t.device, dtype=t.dtype).clone()
                       for s, t in zip(shadow, self.shadow, strict=True)]
