"""Layers and Network: exact dynamics, spikes and reset, quantisation, dropout, validation."""

from __future__ import annotations

import math

import pytest
import torch

from protocol.errors import ConfigError
from training import nn
from training.nn import LI, LIF, Linear, Network

DT = nn.DT


def _single_input_net(w: float, out: torch.nn.Module, n_steps: int = 20) -> Network:
    lin = Linear(1, 1)
    with torch.no_grad():
        lin.weight.fill_(w)
    return Network([lin, out], n_steps=n_steps)


def _spike_at(step: int, n_steps: int = 20) -> torch.Tensor:
    x = torch.zeros(n_steps, 1, 1)
    x[step] = 1.0
    return x


@pytest.mark.parametrize(("tau_mem", "tau_syn"), [(6e-6, 6e-6), (10e-6, 3e-6), (2e-6, 8e-6)])
def test_li_matches_continuous_psp(tau_mem: float, tau_syn: float) -> None:
    """The exact discretisation samples the continuous PSP at t = k dt (spike at step 2)."""
    w = 1.7
    net = _single_input_net(w, LI(1, tau_mem=tau_mem, tau_syn=tau_syn))
    v = net(_spike_at(2)).readout[:, 0, 0].double()
    t = (torch.arange(20, dtype=torch.float64) - 2) * DT
    if tau_mem == tau_syn:
        psp = w * t / tau_mem * torch.exp(-t / tau_mem)
    else:
        psp = (
            w * tau_syn / (tau_syn - tau_mem) * (torch.exp(-t / tau_syn) - torch.exp(-t / tau_mem))
        )
    psp = torch.where(t > 0, psp, torch.zeros_like(psp))
    torch.testing.assert_close(v, psp, rtol=1e-5, atol=1e-6)


def test_near_equal_time_constants_are_continuous() -> None:
    x = _spike_at(0)
    v_eq = _single_input_net(1.0, LI(1, tau_mem=6e-6, tau_syn=6e-6))(x).readout
    v_near = _single_input_net(1.0, LI(1, tau_mem=6e-6, tau_syn=6e-6 * (1 + 1e-9)))(x).readout
    torch.testing.assert_close(v_eq, v_near, rtol=1e-6, atol=1e-7)


def test_leak_is_the_resting_potential() -> None:
    net = _single_input_net(0.0, LI(1, v_leak=0.3))
    torch.testing.assert_close(net(torch.zeros(20, 2, 1)).readout, torch.full((20, 2, 1), 0.3))


def test_lif_spikes_resets_and_records_pre_reset_membrane() -> None:
    c = DT / 6e-6 * math.exp(-DT / 6e-6)  # membrane one step after a unit current jump
    w = 1.2 / c  # v_1 = 1.2 -> spike at step 1
    net = _single_input_net(w, LIF(1))
    y = net(_spike_at(0, 6))
    z, v = y.hidden_spikes[0][:, 0, 0].tolist(), y.membranes[0][:, 0, 0].tolist()
    assert z[:3] == [0.0, 1.0, 0.0]
    assert v[0] == 0.0 and v[1] == pytest.approx(1.2, rel=1e-5)
    a = b = math.exp(-DT / 6e-6)
    # after the reset to 0 the membrane restarts from 0 with the remaining current a*w
    assert v[2] == pytest.approx(c * a * w, rel=1e-5)
    assert v[3] == pytest.approx(b * v[2] + c * a * a * w, rel=1e-5)
    assert z[3] == float(v[3] > 1.0)


def test_lif_reset_to_v_reset_and_per_neuron_threshold() -> None:
    lin = Linear(1, 2)
    with torch.no_grad():
        lin.weight.fill_(10.0)
    lif = LIF(2, threshold=torch.tensor([1.0, 100.0]), v_reset=torch.tensor([-0.5, 0.0]))
    net = Network([lin, lif], n_steps=4)
    with torch.no_grad():
        y = net(_spike_at(0, 4))
    z = y.hidden_spikes[0][:, 0]
    assert z[:, 0].sum() >= 1 and z[:, 1].sum() == 0
    first = int(z[:, 0].nonzero()[0])
    c = DT / 6e-6 * math.exp(-DT / 6e-6)
    b = math.exp(-DT / 6e-6)
    a = b
    expected = b * -0.5 + c * 10.0 * a**first  # restarts from v_reset
    assert float(y.membranes[0][first + 1, 0, 0]) == pytest.approx(expected, rel=1e-5)


def _reference(net: Network, x: torch.Tensor) -> list[torch.Tensor]:
    """Naive step-by-step simulation with explicit currents (the textbook recursion)."""
    h = x
    out = []
    for layer in net.layers:
        if isinstance(layer, Linear):
            h = h @ layer.weight.t()
            continue
        p = layer.params()
        a, b = torch.exp(-DT / p.tau_syn), torch.exp(-DT / p.tau_mem)
        c = p.tau_syn / (p.tau_syn - p.tau_mem) * (a - b)
        i = torch.zeros_like(h[0])
        v = p.v_leak.expand_as(h[0]).clone()
        vs, zs = [], []
        for t in range(h.shape[0]):
            v = p.v_leak + b * (v - p.v_leak) + c * i
            i = a * i + h[t]
            z = (v > p.threshold).float() if isinstance(layer, LIF) else torch.zeros_like(v)
            vs.append(v)
            zs.append(z)
            v = torch.where(z > 0, p.v_reset.expand_as(v), v)
        out.append(torch.stack(vs))
        h = torch.stack(zs) if isinstance(layer, LIF) else torch.stack(vs)
    return out


def test_network_matches_naive_reference_with_per_neuron_parameters() -> None:
    g = torch.Generator().manual_seed(3)
    net = Network(
        [Linear(12, 9, init_std=1.5, generator=g), LIF(9), Linear(9, 4, generator=g), LI(4)]
    )
    for _, layer in net.neuron_layers():  # distinct tau_mem / tau_syn per neuron: batched path
        p = nn.detuned(layer.params(), 0.3, generator=g)
        p.tau_syn = p.tau_mem * 0.7
        layer.set_params(p)
    x = (torch.rand(20, 5, 12, generator=g) < 0.2).float()
    with torch.no_grad():
        y = net(x)
        ref = _reference(net, x)
    assert float(y.hidden_spikes[0].sum()) > 0
    for got, want in zip(y.membranes, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_uniform_and_per_neuron_filter_paths_agree() -> None:
    g = torch.Generator().manual_seed(1)
    r = torch.rand(7, 1, generator=g).expand(7, 5).clone()
    u = torch.randn(7, 3, 5, generator=g)
    fast = nn._causal_filter(r, u)
    slow = torch.einsum("tkn,kbn->tbn", nn._toeplitz(r), u)
    torch.testing.assert_close(fast, slow)


def test_shapes_and_binary_spikes() -> None:
    net = Network([Linear(256, 246), LIF(246), Linear(246, 10), LI(10)])
    x = (torch.rand(20, 7, 256) < 0.05).float()
    y = net(x)
    assert y.readout.shape == (20, 7, 10)
    assert [s.shape for s in y.hidden_spikes] == [(20, 7, 246)]
    assert [m.shape for m in y.membranes] == [(20, 7, 246), (20, 7, 10)]
    assert set(torch.unique(y.hidden_spikes[0]).tolist()) <= {0.0, 1.0}
    assert y.spike_counts().shape == (7,)
    torch.testing.assert_close(y.spike_counts(), y.hidden_spikes[0].sum(dim=(0, 2)))
    assert [tr.index for tr in y.traces] == [1, 3]


def test_other_time_grids() -> None:
    net = Network([Linear(4, 3), LIF(3), Linear(3, 2), LI(2)], dt=1e-6, n_steps=7)
    assert net(torch.zeros(11, 2, 4)).readout.shape == (11, 2, 2)


@pytest.mark.parametrize(
    "layers",
    [
        [],
        [LIF(3)],
        [Linear(4, 3), Linear(3, 2)],
        [Linear(4, 3), LIF(2)],
        [Linear(4, 3), LIF(3), Linear(4, 2), LI(2)],
        [Linear(4, 3), LI(3), Linear(3, 2), LI(2)],
        [Linear(4, 3)],
    ],
)
def test_bad_layer_stacks_are_refused(layers: list) -> None:
    with pytest.raises(ConfigError):
        Network(layers)


def test_bad_inputs_and_parameters_are_refused() -> None:
    net = Network([Linear(4, 3), LIF(3), Linear(3, 2), LI(2)])
    with pytest.raises(ConfigError, match=r"\[time, batch, 4\]"):
        net(torch.zeros(20, 4))
    with pytest.raises(ConfigError):
        net(torch.zeros(20, 1, 5))
    with pytest.raises(ConfigError):
        LIF(3, tau_mem=torch.tensor([1e-6, -1e-6, 1e-6]))
    with pytest.raises(ConfigError):
        LIF(3, threshold=torch.ones(4))
    with pytest.raises(ConfigError):
        LIF(3, dropout=1.0)
    with pytest.raises(ConfigError):
        Linear(3, 2, scale=0.0)
    with pytest.raises(ConfigError):
        nn.detuned(LIF(3).params(), 0.1, fields=("tau_foo",))


def test_quantised_weights_are_multiples_of_scale_with_straight_through_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    lin = Linear(8, 5, quantize=True, scale=0.05, init_std=2.0, generator=g)
    wq = lin.effective_weight()
    steps = wq.detach() / 0.05
    torch.testing.assert_close(steps, torch.round(steps))
    assert float(steps.abs().max()) <= 63
    ints = lin.integer_weights()
    assert ints.dtype == torch.int8
    torch.testing.assert_close(ints.float() * 0.05, wq.detach())
    # straight through inside the range, zero gradient where clamped
    wq.sum().backward()
    inside = (lin.weight.abs() < 63 * 0.05).float()
    torch.testing.assert_close(lin.weight.grad, inside)
    assert (inside == 0).any()
    lin.clamp_()
    assert float(lin.weight.detach().abs().max()) <= 63 * 0.05 + 1e-7


def test_learned_scale_gets_a_gradient() -> None:
    lin = Linear(8, 5, quantize=True, scale=0.05, learn_scale=True)
    assert isinstance(lin.scale, torch.nn.Parameter)
    lin(torch.ones(1, 1, 8)).sum().backward()
    assert lin.scale.grad is not None and float(lin.scale.grad.abs()) > 0


def test_dropout_masks_silence_neurons_in_training_only() -> None:
    torch.manual_seed(0)
    net = Network([Linear(6, 50, init_std=3.0), LIF(50, dropout=0.5), Linear(50, 3), LI(3)])
    x = (torch.rand(20, 4, 6) < 0.5).float()
    y = net(x)
    mask = y.masks[1]
    assert mask.shape == (4, 50) and 0 < float(mask.mean()) < 1
    y.readout.sum().backward()
    # a silenced neuron's spikes never reach the readout, so its readout weights get no gradient
    grad = net.layers[2].weight.grad  # [3, 50]
    silenced_everywhere = mask.sum(0) == 0
    assert silenced_everywhere.any()
    assert float(grad[:, silenced_everywhere].abs().sum()) == 0.0
    net.eval()
    assert net(x).masks == {}


def test_batch_scope_dropout_shares_one_mask_per_batch() -> None:
    torch.manual_seed(0)
    net = Network([Linear(6, 50), LIF(50, dropout=0.5, dropout_scope="batch"), Linear(50, 3),
                   LI(3)])
    mask = net.sample_masks(8)[1]
    assert mask.shape == (8, 50) and bool((mask == mask[:1]).all())
    assert 0 < float(mask[0].mean()) < 1
    with pytest.raises(ConfigError, match="dropout_scope"):
        LIF(3, dropout=0.1, dropout_scope="neuron")


def test_detuned_parameters() -> None:
    p = LIF(20000).params()
    g = torch.Generator().manual_seed(0)
    d = nn.detuned(p, 0.3, generator=g)
    for f in ("tau_mem", "tau_syn", "threshold"):
        rel = getattr(d, f) / getattr(p, f) - 1
        assert float(rel.std()) == pytest.approx(0.3, rel=0.05)
        assert float((getattr(d, f) / getattr(p, f)).min()) >= 0.05 - 1e-7
    torch.testing.assert_close(d.v_leak, p.v_leak)
    d2 = nn.detuned(p, 0.3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(d.tau_mem, d2.tau_mem)
    torch.testing.assert_close(p.tau_mem, torch.full((20000,), 6e-6))  # original untouched


def test_float64_and_describe() -> None:
    net = Network([Linear(4, 3), LIF(3), Linear(3, 2), LI(2)]).double()
    y = net(torch.zeros(20, 1, 4))
    assert y.readout.dtype == torch.float64
    assert net.describe() == {
        "layers": [
            {"kind": "Linear", "n_in": 4, "n_out": 3, "quantize": False},
            {"kind": "LIF", "size": 3},
            {"kind": "Linear", "n_in": 3, "n_out": 2, "quantize": False},
            {"kind": "LI", "size": 2},
        ],
        "dt": DT,
        "n_steps": 20,
    }
