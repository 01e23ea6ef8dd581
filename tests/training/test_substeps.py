"""Sub-step input timing (Network(substeps=K), Encoding(substeps=K)): exact against the
continuous system, identical to the coarse model where spikes sit on the grid, and on the chip."""

from __future__ import annotations

import math

import pytest
import torch

from protocol.errors import ConfigError
from training import nn
from training.data import Encoding, SpikeDataset, latency_bins, latency_times


def _li_net(tau_mem: float, tau_syn: float, substeps: int, n: int = 1) -> nn.Network:
    net = nn.Network([nn.Linear(1, n), nn.LI(n, tau_mem=tau_mem, tau_syn=tau_syn)],
                     substeps=substeps)
    with torch.no_grad():
        net.layers[0].weight.fill_(1.0)
    return net


def _psp(t: torch.Tensor, s: float, tm: float, ts: float) -> torch.Tensor:
    """LI membrane of a unit current jump at time s (tau_m dv/dt = -v + i, i decays with ts)."""
    tau = (t - s).clamp(min=0).double()
    v = ts / (tm - ts) * (torch.exp(-tau / tm) - torch.exp(-tau / ts))
    return torch.where(t > s, v, torch.zeros_like(v))


@pytest.mark.parametrize("k,j", [(1, 1), (2, 3), (4, 7), (4, 1), (8, 13), (4, 76)])
def test_a_sub_step_spike_gives_the_continuous_membrane_at_every_sample(k: int, j: int) -> None:
    tm, ts = 6e-6, 4e-6
    x = torch.zeros(nn.N_STEPS * k, 1, 1)
    x[j] = 1.0
    v = _li_net(tm, ts, k)(x).readout[:, 0, 0].detach().double()
    t = torch.arange(nn.N_STEPS, dtype=torch.float64) * nn.DT
    ref = _psp(t, j * nn.DT / k, tm, ts)
    assert torch.allclose(v, ref, atol=2e-6)
    assert float(v.abs().max()) > 0 or j >= (nn.N_STEPS - 1) * k  # the last step lands later


def test_spikes_on_the_grid_give_the_coarse_model() -> None:
    torch.manual_seed(0)
    coarse = nn.pnas_network(16, 12, 3, seed=0)
    fine = nn.pnas_network(16, 12, 3, seed=0, substeps=4)
    x = (torch.rand(nn.N_STEPS, 5, 16) < 0.1).float()
    xf = torch.zeros(nn.N_STEPS * 4, 5, 16)
    xf[::4] = x
    a, b = coarse(x), fine(xf)
    assert torch.allclose(a.readout, b.readout, atol=1e-5)
    assert torch.equal(a.traces[0].spikes, b.traces[0].spikes)
    assert fine.describe()["substeps"] == 4 and "substeps" not in coarse.describe()


def test_per_neuron_time_constants_match_one_network_per_neuron() -> None:
    tms, tss = [5e-6, 7e-6, 6e-6], [3e-6, 6e-6, 8e-6]
    x = torch.zeros(nn.N_STEPS * 4, 2, 1)
    x[5, 0] = x[10, 1] = x[11, 1] = 1.0
    mixed = _li_net(torch.tensor(tms), torch.tensor(tss), 4, n=3)(x).readout  # type: ignore[arg-type]
    for n, (tm, ts) in enumerate(zip(tms, tss, strict=True)):
        alone = _li_net(tm, ts, 4)(x).readout[:, :, 0]
        assert torch.allclose(mixed[:, :, n], alone, atol=1e-6)


def test_gradients_reach_the_weights_through_sub_step_inputs() -> None:
    net = nn.pnas_network(16, 12, 3, seed=0, substeps=4)
    x = (torch.rand(nn.N_STEPS * 4, 5, 16, generator=torch.Generator().manual_seed(1)) < 0.05)
    y = net(x.float())
    y.readout.max(0).values.sum().backward()
    g = net.layers[0].weight.grad
    assert g is not None and torch.isfinite(g).all() and float(g.abs().sum()) > 0


def test_inputs_must_come_in_whole_steps() -> None:
    net = nn.pnas_network(16, 12, 3, substeps=4)
    for steps in (nn.N_STEPS, nn.N_STEPS * 4 - 4, nn.N_STEPS * 4 + 1):
        with pytest.raises(ConfigError, match="takes 20 steps of 4 substeps"):
            net(torch.zeros(steps, 2, 16))
    with pytest.raises(ConfigError, match="substeps"):
        nn.pnas_network(16, 12, 3, substeps=0)
    with pytest.raises(ConfigError, match="substeps"):
        Encoding(substeps=0)


def test_the_encoding_keeps_spike_times_to_a_quarter_step() -> None:
    x = torch.tensor([[1.0, 0.6, 0.3, 0.21, 0.1]])
    enc = Encoding(substeps=4)
    bins = latency_bins(x, enc)
    t = latency_times(x)
    fine = enc.dt / 4
    for b, tt in zip(bins[0].tolist(), t[0].tolist(), strict=True):
        if math.isfinite(tt) and tt < enc.n_steps * enc.dt:
            assert b * fine <= tt < (b + 1) * fine
        else:
            assert b == -1
    ds = SpikeDataset(x.expand(3, 5), torch.tensor([0, 1, 2]), enc)
    batch = ds.__getitems__([0, 2])
    assert batch.spikes.shape == (enc.input_steps, 2, 5) == (80, 2, 5)
    assert torch.equal(batch.spikes.sum(0)[0], torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0]))
    # one step = four sub-steps: the coarse code is the fine one divided by 4
    coarse = latency_bins(x, Encoding())
    assert torch.equal(torch.where(bins >= 0, bins // 4, bins), coarse)


def test_training_refuses_data_of_another_sub_step_grid() -> None:
    from training.loss import PNASLoss
    from training.trainer import TrainConfig, train

    x = torch.rand(6, 16)
    ds = SpikeDataset(x, torch.arange(6) % 3, Encoding(substeps=4))
    net = nn.pnas_network(16, 8, 3)
    with pytest.raises(ConfigError, match="4 substeps per step, the network takes 1"):
        train(net, PNASLoss(), ds, None, TrainConfig(epochs=1))
    net4 = nn.pnas_network(16, 8, 3, substeps=4)
    result = train(net4, PNASLoss(), ds, ds, TrainConfig(epochs=1, batch_size=3))
    assert result.last is not None and result.last.test_accuracy is not None
