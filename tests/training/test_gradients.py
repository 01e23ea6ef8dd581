"""Surrogate gradients: the SuperSpike backward, gradcheck of the whole unrolled network with a
smooth spike function whose derivative is the surrogate, and a hand-derived spike gradient."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from training import nn
from training.loss import PNASLoss
from training.nn import LI, LIF, Linear, Network


def test_superspike_forward_is_heaviside_and_backward_is_the_surrogate() -> None:
    v = torch.linspace(0.0, 2.0, 41, dtype=torch.float64, requires_grad=True)
    theta = torch.ones(41, dtype=torch.float64)
    z = nn.superspike(v, theta, 50.0)
    assert z.tolist() == [1.0 if x > 1.0 else 0.0 for x in v.tolist()]
    g = torch.linspace(-1.0, 3.0, 41, dtype=torch.float64)
    (grad,) = torch.autograd.grad(z, v, g)
    torch.testing.assert_close(grad, g / (50.0 * (v.detach() - 1.0).abs() + 1.0) ** 2)


def test_superspike_backward_is_the_derivative_of_smooth_spike() -> None:
    v = torch.randn(200, dtype=torch.float64).mul(0.2).add(1.0).requires_grad_()
    theta = torch.full((200,), 1.0, dtype=torch.float64)
    (g_sur,) = torch.autograd.grad(nn.superspike(v, theta, 7.0).sum(), v)
    (g_smooth,) = torch.autograd.grad(nn.smooth_spike(v, theta, 7.0).sum(), v)
    torch.testing.assert_close(g_sur, g_smooth)
    assert torch.autograd.gradcheck(
        lambda u: nn.smooth_spike(u, theta[:5], 7.0), (v.detach()[:5].clone().requires_grad_(),)
    )


def test_superspike_threshold_gradient_is_minus_the_membrane_gradient() -> None:
    v = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    theta = torch.rand(3, dtype=torch.float64, requires_grad=True)
    gv, gt = torch.autograd.grad(nn.superspike(v, theta, 5.0).sum(), (v, theta))
    torch.testing.assert_close(gt, -gv.sum(0))


def _tiny_net(spike_fn, detach_reset: bool, seed: int = 0) -> Network:
    g = torch.Generator().manual_seed(seed)
    net = Network(
        [
            Linear(4, 3, init_std=3.0, generator=g),
            LIF(3, beta=2.0, spike_fn=spike_fn, detach_reset=detach_reset),
            Linear(3, 2, init_std=1.0, generator=g),
            LI(2, tau_mem=8e-6, tau_syn=4e-6),
        ],
        n_steps=6,
    )
    return net.double()


def test_gradcheck_whole_network_with_smooth_surrogate() -> None:
    """The backward of the unrolled model (kernels, per-step update, reset, loss) equals finite
    differences when the spike nonlinearity is the smooth function whose slope is the surrogate."""
    net = _tiny_net(nn.smooth_spike, detach_reset=False)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(6, 3, 4, generator=g) < 0.5).double()
    labels = torch.tensor([0, 1, 1])
    loss_fn = PNASLoss(readout_scale=2.0, rho=0.1, readout_penalty=0.05)
    names = [n for n, _ in net.named_parameters()]

    def loss_of(*weights: torch.Tensor) -> torch.Tensor:
        y = functional_call(net, dict(zip(names, weights, strict=True)), (x,))
        terms = loss_fn.terms(y, labels)
        return terms.total + 1e-3 * sum((w**2).sum() for w in weights)

    params = tuple(p.detach().clone().requires_grad_() for p in net.parameters())
    assert torch.autograd.gradcheck(loss_of, params, eps=1e-6, atol=1e-6)


def test_superspike_network_gradient_equals_straight_through_smooth_model() -> None:
    """With Heaviside spikes the gradient is that of a model whose forward is Heaviside and whose
    backward is the smooth function's slope evaluated at the membrane where the threshold test
    happens (pre-reset), i.e. the surrogate sits exactly at each spike decision."""

    def straight_through(v, theta, beta):
        s = nn.smooth_spike(v, theta, beta)
        return (v > theta).to(v.dtype) + (s - s.detach())

    g = torch.Generator().manual_seed(2)
    x = (torch.rand(6, 5, 4, generator=g) < 0.5).double()
    labels = torch.tensor([0, 1, 1, 0, 1])
    grads = []
    for fn in (nn.superspike, straight_through):
        net = _tiny_net(fn, detach_reset=True, seed=5)
        y = net(x)
        assert float(y.hidden_spikes[0].detach().sum()) > 0  # spikes do occur
        PNASLoss(readout_scale=2.0, rho=0.1)(y, labels).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    assert all(float(gr.abs().sum()) > 0 for gr in grads[0])


def test_hand_derived_spike_gradient() -> None:
    """One neuron, one input spike at step 0, loss = number of spikes.
    v_1 = c w spikes; the reset (detached) cuts the path to v_2 = c a w, so
    dL/dw = c s(c w - 1) + c a s(c a w - 1) with s(x) = 1 / (beta |x| + 1)^2."""
    beta = 50.0
    lin = Linear(1, 1)
    net = Network([lin, LIF(1, beta=beta)], n_steps=3).double()
    tau = float(net.layers[1].tau_mem[0])  # the stored (float32-rounded) value
    a = math.exp(-nn.DT / tau)
    c = nn.DT / tau * a
    w0 = 1.2 / c
    with torch.no_grad():
        lin.weight.fill_(w0)
    x = torch.zeros(3, 1, 1, dtype=torch.float64)
    x[0] = 1.0
    y = net(x)
    assert y.hidden_spikes[0][:, 0, 0].tolist() == [0.0, 1.0, 0.0]
    y.hidden_spikes[0].sum().backward()

    def s(u: float) -> float:
        return 1.0 / (beta * abs(u) + 1.0) ** 2

    expected = c * s(c * w0 - 1.0) + c * a * s(c * a * w0 - 1.0)
    assert float(net.layers[0].weight.grad) == pytest.approx(expected, rel=1e-9)
