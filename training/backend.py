"""Where a network's forward pass runs: the backend interface and the software backends.

The layers in `training.nn` always compute the model dynamics. A backend may *observe* the same
network on some substrate (the chip, or a deliberately different model) and hand back what it saw;
the layers then substitute those observations for the model's values step by step with the
identity trick ``v = v_model + (v_measured - v_model).detach()``: the forward pass carries the
measured values, the backward pass flows through the model (PNAS 2022, hxtorch).

A board backend (to come, in ``training/board*.py``) subclasses `Backend`: `attach` maps the
network onto the chip (raising `TrainingError` naming the resource that ran out), `observe` writes
changed weights, runs one program per batch and returns `LayerObservation`s on the model's time
grid, `detach` releases the board.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from protocol.errors import TrainingError

if TYPE_CHECKING:
    from training.nn import Network, NeuronParams

__all__ = [
    "Backend",
    "LayerObservation",
    "ModelBackend",
    "Observations",
    "SimBackend",
    "resolve_backend",
]


@dataclass
class LayerObservation:
    """What a substrate measured for one neuron layer, on the model's time grid.

    spikes: [time, batch, n] 0/1, a spike in step t means the neuron fired in (t-1, t] (LIF only).
    membrane: [time, batch, n] membrane in model units (leak 0, threshold 1) sampled at t*dt,
        *before* any reset in that step: where a spike was recorded the backend should report the
        pre-reset value (e.g. the threshold) rather than a sample taken after the reset, so that
        the surrogate gradient is evaluated where the spike happened.
    Either may be None: that quantity then stays the model's own.
    """

    spikes: torch.Tensor | None = None
    membrane: torch.Tensor | None = None


Observations = dict[int, LayerObservation]
"""Observations keyed by the index of the neuron layer in `Network.layers`."""


class Backend(abc.ABC):
    """A place a `Network` runs on; `Network.connect` calls `attach`, every forward `observe`."""

    name: str = "backend"

    def attach(self, net: Network) -> None:  # noqa: B027 - optional hook
        """Place `net` on the substrate; raise TrainingError if it does not fit."""

    @abc.abstractmethod
    def observe(
        self, net: Network, x: torch.Tensor, masks: dict[int, torch.Tensor]
    ) -> Observations:
        """Run `net` (its current weights) on input spikes x [time, batch, n_in].

        masks: dropout masks [batch, n] per LIF layer index (1 keeps a neuron's output spikes);
        a backend that cannot apply them must raise TrainingError rather than ignore them.
        Returns observations for the neuron layers it measured (possibly none).
        """

    def detach(self) -> None:  # noqa: B027 - optional hook
        """Release the substrate; the network falls back to no backend."""


class SimBackend(Backend):
    """Pure software: observes nothing, so the forward pass is the model itself."""

    name = "sim"

    def observe(
        self, net: Network, x: torch.Tensor, masks: dict[int, torch.Tensor]
    ) -> Observations:
        return {}


class ModelBackend(Backend):
    """A software stand-in for a mismatched substrate (a "digital twin" of an imperfect chip).

    It runs the network's current weights with other neuron parameters (e.g. per-neuron detuned
    time constants and thresholds) and reports that run's spikes and membranes as measurements, so
    in-the-loop training can be exercised and compared without a board.
    params: per neuron-layer index, the parameters the substrate really has; layers not listed
    use the network's own.
    """

    name = "model"

    def __init__(self, params: dict[int, NeuronParams] | None = None) -> None:
        self.params = dict(params or {})

    def attach(self, net: Network) -> None:
        neuron_indices = {i for i, _ in net.neuron_layers()}
        unknown = sorted(set(self.params) - neuron_indices)
        if unknown:
            raise TrainingError(
                f"ModelBackend has parameters for layer(s) {unknown}, which are not neuron layers "
                f"of this network (neuron layers: {sorted(neuron_indices)})"
            )
        for i, layer in net.neuron_layers():
            if i in self.params and self.params[i].size != layer.size:
                raise TrainingError(
                    f"ModelBackend parameters for layer {i} have {self.params[i].size} neurons, "
                    f"the layer has {layer.size}"
                )

    def observe(
        self, net: Network, x: torch.Tensor, masks: dict[int, torch.Tensor]
    ) -> Observations:
        with torch.no_grad():
            out = net.simulate(x, masks=masks, neuron_params=self.params)
        return {
            tr.index: LayerObservation(spikes=tr.spikes, membrane=tr.membrane) for tr in out.traces
        }


def resolve_backend(target: object) -> Backend:
    """Turn what `Network.connect` was given into a Backend ("sim" or a Backend instance)."""
    if isinstance(target, Backend):
        return target
    if isinstance(target, str) and target == "sim":
        return SimBackend()
    if type(target).__name__ == "Board":  # a hostdriver Board: imported only when one is given
        from training.board import BoardBackend, is_board

        if is_board(target):
            return BoardBackend(target)
    raise TrainingError(
        f"cannot connect a network to {target!r} ({type(target).__name__}): pass 'sim', a "
        "hostdriver Board or a training.backend.Backend instance (e.g. "
        "training.board.BoardBackend(board, calibration=...))"
    )
