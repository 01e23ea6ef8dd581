"""Training loop: digits accuracy in sim mode, checkpoints, bit-exact resume, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from protocol.errors import ConfigError, TrainingError
from training import nn
from training.data import SpikeDataset, load_digits_split
from training.loss import PNASLoss
from training.trainer import (
    TrainConfig,
    evaluate,
    load_checkpoint,
    load_into,
    save_checkpoint,
    train,
)


@pytest.fixture(scope="module")
def digits() -> tuple[SpikeDataset, SpikeDataset]:
    return load_digits_split()


def test_digits_sim_training_reaches_90_percent(digits) -> None:
    train_set, test_set = digits
    net = nn.pnas_network(64, 100, 10, seed=1)
    before = evaluate(net, PNASLoss(), test_set)
    seen = []
    result = train(
        net,
        PNASLoss(),
        train_set,
        test_set,
        TrainConfig(epochs=10, lr=1e-2, batch_size=50, seed=1),
        on_epoch=seen.append,
    )
    last = result.last
    assert last is not None and len(result.history) == 10 and seen == result.history
    assert before.accuracy < 0.5
    assert last.test_accuracy >= 0.90
    assert last.train_loss < result.history[0].train_loss
    assert last.hidden_spikes_per_sample > 0 and last.samples_per_s > 0
    assert [round(h.lr / 1e-2, 6) for h in result.history[:3]] == [1.0, 0.97, 0.9409]
    again = evaluate(net, PNASLoss(), test_set)
    assert again.accuracy == pytest.approx(last.test_accuracy)
    assert again.samples == len(test_set)


def _small(seed: int = 0, dropout: float = 0.3) -> nn.Network:
    return nn.pnas_network(64, 20, 10, seed=seed, dropout=dropout)


def _subset(ds: SpikeDataset, n: int) -> SpikeDataset:
    out = SpikeDataset.__new__(SpikeDataset)
    out.enc, out.bins, out.labels = ds.enc, ds.bins[:n], ds.labels[:n]
    return out


def test_resume_continues_bit_for_bit(digits, tmp_path: Path) -> None:
    train_set, test_set = _subset(digits[0], 300), _subset(digits[1], 100)
    config = TrainConfig(epochs=3, lr=5e-3, batch_size=50, seed=7)
    straight = _small()
    full = train(straight, PNASLoss(rho=1e-3), train_set, test_set, config)

    interrupted = _small()
    ckpt = tmp_path / "ckpt"
    part = train(
        interrupted,
        PNASLoss(rho=1e-3),
        train_set,
        test_set,
        TrainConfig(epochs=2, lr=5e-3, batch_size=50, seed=7),
        checkpoint_dir=ckpt,
        calibration={"serial": 17},
    )
    assert len(part.history) == 2 and (ckpt / "last.pt").is_file()
    assert [p.name for p in ckpt.iterdir()] == ["last.pt"]  # no temp files left behind

    resumed_net = _small(seed=99)  # different initial weights: must be overwritten
    torch.manual_seed(12345)  # and a disturbed global RNG: restored from the checkpoint
    resumed = train(
        resumed_net,
        PNASLoss(rho=1e-3),
        train_set,
        test_set,
        config,
        checkpoint_dir=ckpt,
        resume=True,
        calibration={"serial": 17},
    )
    assert resumed.start_epoch == 2 and len(resumed.history) == 3
    for a, b in zip(straight.state_dict().values(), resumed_net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    strip = [
        {k: v for k, v in vars(h).items() if k not in ("seconds", "samples_per_s")}
        for h in full.history
    ]
    assert strip == [
        {k: v for k, v in vars(h).items() if k not in ("seconds", "samples_per_s")}
        for h in resumed.history
    ]
    state = load_checkpoint(ckpt / "last.pt")
    assert state["epoch"] == 3 and state["calibration"] == {"serial": 17}
    # resuming a finished run trains nothing more
    done = train(
        _small(),
        PNASLoss(rho=1e-3),
        train_set,
        None,
        config,
        checkpoint_dir=ckpt,
        resume=True,
        calibration={"serial": 17},
    )
    assert done.start_epoch == 3 and len(done.history) == 3


def test_resume_refusals(digits, tmp_path: Path) -> None:
    train_set = _subset(digits[0], 100)
    config = TrainConfig(epochs=1, batch_size=50)
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(_small(), PNASLoss(), train_set, None, config, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError):
        train(_small(), PNASLoss(), train_set, None, config, resume=True)
    train(
        _small(),
        PNASLoss(),
        train_set,
        None,
        config,
        checkpoint_dir=tmp_path,
        calibration={"serial": 1},
    )
    with pytest.raises(TrainingError, match="calibration"):
        train(
            _small(),
            PNASLoss(),
            train_set,
            None,
            TrainConfig(epochs=2, batch_size=50),
            checkpoint_dir=tmp_path,
            resume=True,
            calibration={"serial": 2},
        )
    other = nn.pnas_network(64, 21, 10)
    with pytest.raises(TrainingError, match="holds network"):
        train(
            other,
            PNASLoss(),
            train_set,
            None,
            TrainConfig(epochs=2, batch_size=50),
            checkpoint_dir=tmp_path,
            resume=True,
            calibration={"serial": 1},
        )


def test_checkpoint_round_trip_and_damaged_files(tmp_path: Path) -> None:
    net = _small(seed=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.ones(20, 2, 64)).readout.sum().backward()
    opt.step()
    path = save_checkpoint(
        tmp_path / "sub" / "c.pt",
        net=net,
        optimizer=opt,
        epoch=4,
        history=[{"epoch": 4}],
        calibration={"file": "cal.json"},
    )
    state = load_checkpoint(path)
    assert state["epoch"] == 4 and state["history"] == [{"epoch": 4}]
    fresh = _small(seed=4)
    load_into(fresh, state, path)
    for a, b in zip(net.state_dict().values(), fresh.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    opt2 = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == 1

    raw = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TrainingError, match="cannot be read"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"something": 1}, tmp_path / "foreign.pt")
    with pytest.raises(TrainingError, match="not a strobe training checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({**state, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(TrainingError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(TrainingError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    net = _small()
    path = save_checkpoint(tmp_path / "c.pt", net=net, epoch=1)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, net=net, epoch=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_bad_config_refused() -> None:
    with pytest.raises(ConfigError):
        TrainConfig(lr=0.0)
    with pytest.raises(ConfigError):
        TrainConfig(lr_decay=1.0)
    with pytest.raises(ConfigError):
        TrainConfig(batch_size=0)


def test_threads_setting_applies_during_training_only(digits) -> None:
    torch.set_num_threads(2)
    during = []
    train(
        _small(),
        PNASLoss(),
        _subset(digits[0], 100),
        None,
        TrainConfig(epochs=1, batch_size=50, threads=1),
        progress=lambda *args: during.append(torch.get_num_threads()),
    )
    assert during == [1, 1] and torch.get_num_threads() == 2
    with pytest.raises(ConfigError):
        TrainConfig(threads=0)


def test_cosine_schedule_anneals_per_batch_and_resumes_bit_for_bit(digits, tmp_path) -> None:
    import math

    train_set = _subset(digits[0], 200)  # 4 batches of 50 per epoch
    config = TrainConfig(epochs=4, lr=1e-2, batch_size=50, seed=3, schedule="cosine",
                         lr_floor=0.1)
    seen: list[float] = []
    straight = _small()
    full = train(straight, PNASLoss(), train_set, None, config,
                 progress=lambda *a: seen.append(0.0))
    total = 16
    expected = [1e-2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 * e / total)))
                for e in range(4)]
    assert [h.lr for h in full.history] == pytest.approx(expected)
    assert len(seen) == total

    # interrupt the same 4-epoch run at the start of its third epoch (after two checkpoints)
    part_dir = tmp_path / "part"
    net = _small()

    class Stop(Exception):
        pass

    def stop_after_two(epoch: int, b: int, n: int, running: dict) -> None:
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(net, PNASLoss(), train_set, None, config, checkpoint_dir=part_dir,
              progress=stop_after_two)
    resumed_net = _small(seed=5)
    resumed = train(resumed_net, PNASLoss(), train_set, None, config,
                    checkpoint_dir=part_dir, resume=True)
    assert resumed.start_epoch == 2
    assert [h.lr for h in resumed.history] == pytest.approx(expected)
    for a, b in zip(straight.state_dict().values(), resumed_net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_schedule_refused() -> None:
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(ConfigError):
        TrainConfig(schedule="cosine", lr_floor=1.5)
    with pytest.raises(ConfigError):
        TrainConfig(schedule="cosine", warmup=-1)
