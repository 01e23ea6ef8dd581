"""Backends: connect, the identity trick with measured observations, ModelBackend."""

from __future__ import annotations

import pytest
import torch

from protocol.errors import TrainingError
from training import nn
from training.backend import Backend, LayerObservation, ModelBackend, SimBackend
from training.loss import PNASLoss
from training.nn import LI, LIF, Linear, Network


def _net(seed: int = 0) -> Network:
    g = torch.Generator().manual_seed(seed)
    return Network(
        [Linear(10, 16, init_std=1.5, generator=g), LIF(16), Linear(16, 3, generator=g), LI(3)]
    )


def _x(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(20, 6, 10, generator=g) < 0.3).float()


def _grads(net: Network, x: torch.Tensor) -> tuple[nn.NetworkOutput, list[torch.Tensor]]:
    net.zero_grad()
    y = net(x)
    PNASLoss(rho=0.01)(y, torch.arange(6) % 3).backward()
    return y, [p.grad.clone() for p in net.parameters()]


class Recording(Backend):
    """Returns fixed observations and records calls."""

    name = "recording"

    def __init__(self, obs: dict[int, LayerObservation]) -> None:
        self.obs, self.attached, self.detached, self.calls = obs, 0, 0, []

    def attach(self, net: Network) -> None:
        self.attached += 1

    def observe(self, net, x, masks):
        self.calls.append((tuple(x.shape), dict(masks)))
        return self.obs

    def detach(self) -> None:
        self.detached += 1


def test_connect_sim_and_refusals() -> None:
    net = _net()
    assert isinstance(net.backend, SimBackend)
    assert net.connect("sim") is net and net.backend.name == "sim"
    with pytest.raises(TrainingError, match="cannot connect"):
        net.connect(object())
    with pytest.raises(TrainingError):
        net.connect("board")


def test_connect_calls_attach_and_detaches_the_previous_backend() -> None:
    net = _net()
    first, second = Recording({}), Recording({})
    net.connect(first)
    net.connect(second)
    assert (first.attached, first.detached, second.attached, second.detached) == (1, 1, 1, 0)
    net(_x())
    assert second.calls == [((20, 6, 10), {})] and first.calls == []


def test_measured_values_replace_the_model_but_gradients_flow_through_it() -> None:
    net, x = _net(), _x()
    y_sim, g_sim = _grads(net, x)
    # "measurements" that differ from the model: shifted membranes, other spikes
    g = torch.Generator().manual_seed(9)
    m_hidden = y_sim.membranes[0].detach() + 0.05
    z_hidden = (torch.rand(20, 6, 16, generator=g) < 0.1).float()
    m_out = y_sim.readout.detach() * 1.3
    net.connect(
        Recording({1: LayerObservation(z_hidden, m_hidden), 3: LayerObservation(None, m_out)})
    )
    y, grads = _grads(net, x)
    torch.testing.assert_close(y.membranes[0], m_hidden)
    torch.testing.assert_close(y.hidden_spikes[0], z_hidden)
    torch.testing.assert_close(y.readout, m_out)
    assert all(torch.isfinite(gr).all() for gr in grads)
    assert any(not torch.allclose(a, b) for a, b in zip(grads, g_sim, strict=True))


def test_observing_the_model_itself_changes_nothing() -> None:
    net, x = _net(), _x()
    y_sim, g_sim = _grads(net, x)
    net.connect(ModelBackend())
    y, grads = _grads(net, x)
    torch.testing.assert_close(y.readout, y_sim.readout)
    for a, b in zip(grads, g_sim, strict=True):
        torch.testing.assert_close(a, b)


def test_model_backend_with_detuned_neurons_reports_the_detuned_substrate() -> None:
    net, x = _net(), _x()
    g = torch.Generator().manual_seed(4)
    params = {i: nn.detuned(layer.params(), 0.3, generator=g) for i, layer in net.neuron_layers()}
    with torch.no_grad():
        truth = net.simulate(x, neuron_params=params)
    net.connect(ModelBackend(params))
    y, grads = _grads(net, x)
    torch.testing.assert_close(y.readout, truth.readout)
    torch.testing.assert_close(y.hidden_spikes[0], truth.hidden_spikes[0])
    assert float((truth.readout - net.simulate(x).readout).detach().abs().max()) > 1e-3
    assert all(torch.isfinite(gr).all() and gr.abs().sum() > 0 for gr in grads)


def test_model_backend_refuses_parameters_that_do_not_fit() -> None:
    net = _net()
    with pytest.raises(TrainingError, match="not neuron layers"):
        net.connect(ModelBackend({0: LIF(16).params()}))
    with pytest.raises(TrainingError, match="16"):
        net.connect(ModelBackend({1: LIF(5).params()}))


def test_bad_observations_are_refused() -> None:
    net, x = _net(), _x()
    net.connect(Recording({1: LayerObservation(membrane=torch.zeros(20, 6, 15))}))
    with pytest.raises(TrainingError, match=r"shape \(20, 6, 15\)"):
        net(x)
    net.connect(Recording({3: LayerObservation(spikes=torch.zeros(20, 6, 3))}))
    with pytest.raises(TrainingError, match="not a LIF"):
        net(x)


def test_backend_receives_the_dropout_masks_the_model_uses() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = Network(
        [Linear(10, 16, generator=g), LIF(16, dropout=0.5), Linear(16, 3, generator=g), LI(3)]
    )
    rec = Recording({})
    net.connect(rec)
    y = net(_x())
    ((_, masks),) = rec.calls
    assert set(masks) == {1}
    torch.testing.assert_close(masks[1], y.masks[1])


def test_in_the_loop_training_absorbs_a_detuned_substrate() -> None:
    """PNAS 2022's central claim, in software: with neurons detuned by sigma_d = 50 %, weights
    trained on the nominal model lose most of their accuracy, while training with the detuned
    substrate in the loop (its spikes and membranes in the forward pass, gradients through the
    nominal model) recovers it."""
    from training.data import load_digits_split
    from training.trainer import TrainConfig, evaluate, train

    train_set, test_set = load_digits_split()
    config = TrainConfig(epochs=8, lr=1e-2, batch_size=50, seed=1)
    sim = nn.pnas_network(64, 100, 10, seed=1)
    train(sim, PNASLoss(), train_set, None, config)
    g = torch.Generator().manual_seed(42)
    substrate = {i: nn.detuned(m.params(), 0.5, generator=g) for i, m in sim.neuron_layers()}
    nominal = evaluate(sim, PNASLoss(), test_set).accuracy
    deployed = evaluate(sim.connect(ModelBackend(substrate)), PNASLoss(), test_set).accuracy
    in_loop = nn.pnas_network(64, 100, 10, seed=1).connect(ModelBackend(substrate))
    train(in_loop, PNASLoss(), train_set, None, config)
    recovered = evaluate(in_loop, PNASLoss(), test_set).accuracy
    assert nominal >= 0.88
    assert deployed < nominal - 0.2
    assert recovered > deployed + 0.2
