"""Weight averaging (training/averaging.py, TrainConfig.average): the arithmetic, the swap for
the test pass, checkpoints and a bit-exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from protocol.errors import ConfigError
from training import nn
from training.averaging import WeightAverage
from training.data import SpikeDataset, load_digits_split
from training.loss import PNASLoss
from training.trainer import TrainConfig, evaluate, load_checkpoint, load_into, train


def _net(seed: int = 0) -> nn.Network:
    return nn.pnas_network(64, 20, 10, seed=seed)


def _subset(ds: SpikeDataset, n: int) -> SpikeDataset:
    out = SpikeDataset.__new__(SpikeDataset)
    out.enc, out.bins, out.labels = ds.enc, ds.bins[:n], ds.labels[:n]
    return out


@pytest.fixture(scope="module")
def digits() -> tuple[SpikeDataset, SpikeDataset]:
    train_set, test_set = load_digits_split()
    return _subset(train_set, 300), _subset(test_set, 100)


def test_the_average_moves_by_one_minus_decay_and_swaps_back() -> None:
    net = _net()
    avg = WeightAverage(net, 0.75)
    start = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    avg.update(net)
    for s, p0 in zip(avg.shadow, start, strict=True):
        torch.testing.assert_close(s, p0 + 0.25, rtol=0, atol=1e-6)
    raw = [p.detach().clone() for p in net.parameters()]
    with avg.applied(net):
        for s, p in zip(avg.shadow, net.parameters(), strict=True):
            assert torch.equal(p, s)
    for r, p in zip(raw, net.parameters(), strict=True):
        assert torch.equal(p, r)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ConfigError, match="decay"):
            WeightAverage(net, bad)
    with pytest.raises(ConfigError, match="another network"):
        avg.load_state_dict(WeightAverage(nn.pnas_network(64, 21, 10), 0.5).state_dict())
    with pytest.raises(ConfigError, match="average"):
        TrainConfig(average=1.0)


def test_the_test_pass_and_the_trained_network_use_the_average(digits, tmp_path: Path) -> None:
    train_set, test_set = digits
    config = TrainConfig(epochs=2, lr=5e-3, batch_size=50, seed=3, average=0.9)
    net = _net()
    result = train(net, PNASLoss(), train_set, test_set, config, checkpoint_dir=tmp_path)
    ev = evaluate(net, PNASLoss(), test_set)  # net ends with the averaged weights
    assert result.last is not None and ev.accuracy == pytest.approx(result.last.test_accuracy)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["average"]["decay"] == 0.9
    raw, averaged = _net(seed=5), _net(seed=6)
    load_into(raw, state, averaged=False)
    load_into(averaged, state)
    for a, b in zip(averaged.parameters(), net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(raw.layers[0].weight, averaged.layers[0].weight)
    plain = _net()
    train(plain, PNASLoss(), train_set, None, TrainConfig(epochs=2, lr=5e-3, batch_size=50,
                                                          seed=3))
    assert torch.equal(plain.layers[0].weight, raw.layers[0].weight)  # averaging only watches


def test_resume_with_an_average_continues_bit_for_bit(digits, tmp_path: Path) -> None:
    train_set, test_set = digits
    config = TrainConfig(epochs=3, lr=5e-3, batch_size=50, seed=7, average=0.95)
    straight = _net()
    full = train(straight, PNASLoss(), train_set, test_set, config)
    part_config = TrainConfig(epochs=2, lr=5e-3, batch_size=50, seed=7, average=0.95)
    train(_net(), PNASLoss(), train_set, test_set, part_config, checkpoint_dir=tmp_path)
    resumed_net = _net(seed=99)
    resumed = train(resumed_net, PNASLoss(), train_set, test_set, config, checkpoint_dir=tmp_path,
                    resume=True)
    for a, b in zip(straight.parameters(), resumed_net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [h.test_accuracy for h in full.history] == [h.test_accuracy for h in resumed.history]
