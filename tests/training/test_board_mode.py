"""BoardBackend on the emulated chip (emu://): refusals, routing, observations, identity trick."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import calibration
import hostdriver
from protocol.errors import CalibrationError, TrainingError
from training import nn
from training.board import BoardBackend, psp_peak, training_targets
from training.data import load_digits_split, make_loader
from training.loss import PNASLoss
from training.trainer import TrainConfig, evaluate, train


@pytest.fixture(scope="module")
def board() -> Iterator[hostdriver.Board]:
    b = hostdriver.connect("emu://")
    yield b
    b.close()


@pytest.fixture(scope="module")
def cal(board):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calibration.calibrate(board, training_targets(), cache=False, clamp=True)


def _net(n_in: int = 64, n_hidden: int = 30, n_out: int = 10, seed: int = 0) -> nn.Network:
    return nn.pnas_network(n_in, n_hidden, n_out, quantize=True, seed=seed)


class Capturing(BoardBackend):
    """Keeps the last observations it returned."""

    def observe(self, net, x, masks):
        self.last = super().observe(net, x, masks)
        return self.last


def _x(steps: int, batch: int, n: int, seed: int = 0, p: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, n, generator=g) < p).float()


def test_uncalibrated_board_is_refused_unless_allowed(board) -> None:
    net = _net()
    with pytest.raises(TrainingError, match="uncalibrated.*allow_uncalibrated"):
        net.connect(board)  # resolve_backend turns a Board into a BoardBackend
    assert net.backend.name == "sim"
    backend = BoardBackend(board, allow_uncalibrated=True)
    net.connect(backend)
    assert net.backend is backend and not backend.calibrated
    assert backend.reference() == {"serial": 1, "uncalibrated": True}
    y = net(_x(20, 4, 64))
    assert y.readout.shape == (20, 4, 10)


def test_calibration_must_belong_to_the_chip_and_be_complete(cal) -> None:
    with hostdriver.connect("emu://?seed=2") as other:
        with pytest.raises(CalibrationError, match="serial"):
            _net().connect(BoardBackend(other, calibration=cal))
    partial = calibration.CalibrationResult(cal.serial, cal.targets,
                                            {"leak": cal["leak"]})
    with hostdriver.connect("emu://") as b, pytest.raises(TrainingError, match="lacks"):
        _net().connect(BoardBackend(b, calibration=partial))


def test_calibration_file_path(board, cal, tmp_path) -> None:
    path = tmp_path / "chip.cal.json"
    calibration.save(cal, path)
    backend = BoardBackend(board, calibration=str(path))
    _net().connect(backend)
    assert backend.reference() == BoardBackend(board, calibration=cal).reference()
    with pytest.raises(TrainingError, match="CalibrationResult"):
        BoardBackend(board, calibration=42)


def test_models_the_chip_cannot_run_are_refused(board, cal) -> None:
    net = nn.pnas_network(64, 30, 10, quantize=False)
    with pytest.raises(TrainingError, match="quantize=True"):
        net.connect(BoardBackend(board, calibration=cal))
    net = nn.Network([nn.Linear(64, 30, quantize=True, learn_scale=True), nn.LIF(30),
                      nn.Linear(30, 10, quantize=True), nn.LI(10)])
    with pytest.raises(TrainingError, match="learn_scale"):
        net.connect(BoardBackend(board, calibration=cal))
    net = nn.Network([nn.Linear(64, 30, quantize=True), nn.LIF(30, tau_mem=12e-6),
                      nn.Linear(30, 10, quantize=True), nn.LI(10)])
    with pytest.raises(TrainingError, match="tau_mem"):
        net.connect(BoardBackend(board, calibration=cal))
    with pytest.raises(TrainingError, match="^columns:"):
        nn.pnas_network(256, 250, 10, quantize=True).connect(BoardBackend(board, calibration=cal))
    with pytest.raises(TrainingError, match="scales"):
        BoardBackend(board, calibration=cal, scales="guess")


def test_weight_scale_is_adopted_or_checked(board, cal) -> None:
    net = _net()
    net.connect(BoardBackend(board, calibration=cal))
    t = cal.targets
    gap = t.scalar("threshold") - t.scalar("leak")
    one = t.scalar("synaptic_strength") / (63 * gap * psp_peak(6e-6, 6e-6))
    hidden, readout = (float(lin.scale) for _, lin in net.linear_layers())
    assert hidden == pytest.approx(one, rel=0.05)  # one circuit per hidden neuron (fan-in 64)
    assert readout == pytest.approx(one, rel=0.05)  # fan-in 30: one circuit too
    wide = _net(n_hidden=200)
    wide.connect(BoardBackend(board, calibration=cal))
    assert float(wide.layers[2].scale) == pytest.approx(one / 2, rel=0.05)  # merged readout
    unfitted = _net()
    with pytest.raises(TrainingError, match="scale"):
        unfitted.connect(BoardBackend(board, calibration=cal, scales="check"))
    assert [float(lin.scale) for _, lin in unfitted.linear_layers()] == [1 / 16, 1 / 16]
    fitted = nn.pnas_network(64, 30, 10, quantize=True, scale=hidden)
    fitted.layers[2].scale.fill_(readout)
    fitted.connect(BoardBackend(board, calibration=cal, scales="check"))


def _routing_net(n_in: int, n_hidden: int, inputs: list[int], target: int,
                 sign: float = 1.0) -> nn.Network:
    net = nn.pnas_network(n_in, n_hidden, 2, quantize=True)
    with torch.no_grad():
        for _, lin in net.linear_layers():
            lin.weight.zero_()
    return net, inputs, target, sign


@pytest.mark.parametrize("n_in", [8, 200])  # one circuit per neuron / two merged circuits
def test_one_input_one_weight_moves_exactly_its_target(board, cal, n_in) -> None:
    net = nn.pnas_network(n_in, 6, 2, quantize=True)
    backend = Capturing(board, calibration=cal)
    net.connect(backend)
    src = n_in - 3  # with 200 inputs: a source on the bottom hemisphere's drivers
    with torch.no_grad():
        for _, lin in net.linear_layers():
            lin.weight.zero_()
        s = float(net.layers[0].scale)
        net.layers[0].weight[4, src] = 63 * s
        net.layers[0].weight[1, 0] = -63 * s
    x = torch.zeros(20, 2, n_in)
    x[1, 0, src] = 1.0  # episode 0: the positive input
    x[1, 1, 0] = 1.0  # episode 1: the negative one
    net(x)
    v = backend.last[1].membrane  # [T, B, 6]
    members = 2 if n_in > 128 else 1
    t = cal.targets
    psp = t.scalar("synaptic_strength") / (members * (t.scalar("threshold") - t.scalar("leak")))
    rise = v[:, 0].max(0).values
    assert 0.6 * psp < float(rise[4]) < 1.3 * psp  # S / gap (one circuit) or half (merged) ...
    others = [i for i in range(6) if i != 4]
    assert float(v[:, 0, others].abs().max()) < 0.06  # ... and no one else moves (noise only)
    assert int(v[:, 0, 4].argmax()) >= 4  # the PSP peaks ~ tau after the input, not before
    assert float(v[:2, 0, 4].abs().max()) < 0.06
    fall = v[:, 1].min(0).values
    assert -1.3 * psp < float(fall[1]) < -0.6 * psp
    assert float(v[:, 1, [0, 2, 3, 4, 5]].abs().max()) < 0.06
    assert float(backend.last[1].spikes.sum()) == 0.0


def test_hidden_spikes_reach_the_readout_on_chip(board, cal) -> None:
    net = nn.pnas_network(16, 4, 3, quantize=True)
    backend = Capturing(board, calibration=cal)
    net.connect(backend)
    with torch.no_grad():
        for _, lin in net.linear_layers():
            lin.weight.zero_()
        net.layers[0].weight[2, :] = 63 * float(net.layers[0].scale)  # all inputs -> hidden 2
        net.layers[2].weight[1, 2] = 63 * float(net.layers[2].scale)  # hidden 2 -> readout 1
    x = torch.zeros(20, 3, 16)
    x[2, :, :] = 1.0
    y = net(x)
    z = backend.last[1].spikes
    assert float(z[:, :, 2].sum()) >= 3 and float(z[:, :, [0, 1, 3]].sum()) == 0
    v = backend.last[3].membrane
    assert float(v[:, :, 1].max()) > 0.1 and float(v[:, :, [0, 2]].abs().max()) < 0.06
    first = int(torch.nonzero(z[:, 0, 2])[0])
    assert float(v[: first, 0, 1].abs().max()) < 0.06  # the readout moves only after the spike
    # where a spike was recorded the membrane is reported at the threshold (pre-reset)
    m = backend.last[1].membrane
    assert torch.equal(m[z > 0], torch.ones(int(z.sum())))
    assert torch.equal(y.traces[0].spikes.detach(), z)


def test_observations_replace_the_model_and_gradients_reach_the_weights(board, cal) -> None:
    train_set, _ = load_digits_split()
    x, labels = next(iter(make_loader(train_set, 16)))
    net = _net(n_hidden=40)
    backend = Capturing(board, calibration=cal)
    net.connect(backend)
    y = net(x)
    obs = backend.last
    # v_model + (v_measured - v_model).detach() is the measurement up to float rounding
    assert torch.allclose(y.readout.detach(), obs[3].membrane, atol=1e-6)
    assert torch.equal(y.traces[0].spikes.detach(), obs[1].spikes)
    assert torch.allclose(y.traces[0].membrane.detach(), obs[1].membrane, atol=1e-6)
    PNASLoss()(y, labels).backward()
    for w in net.weights():
        assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    # identity trick: the same observations injected into the model give the same graph
    again = net.simulate(x, observations=obs)
    assert torch.allclose(again.readout.detach(), y.readout.detach(), atol=1e-6)
    # the chip realises the model: spikes and readout close to the software run
    sim = net.simulate(x)
    board_spikes = float(y.spike_counts().detach().mean())
    sim_spikes = float(sim.spike_counts().detach().mean())
    assert sim_spikes > 1
    assert abs(board_spikes - sim_spikes) < 0.35 * sim_spikes
    pair = torch.stack([y.readout.detach().reshape(-1), sim.readout.detach().reshape(-1)])
    assert float(torch.corrcoef(pair)[0, 1]) > 0.8


def test_weight_updates_are_written_as_a_minimal_diff(board, cal) -> None:
    net = _net()
    backend = BoardBackend(board, calibration=cal)
    net.connect(backend)
    x = _x(20, 2, 64)
    net(x)
    before = backend.words_written
    net(x)
    assert backend.words_written == before  # nothing changed, nothing written
    with torch.no_grad():
        net.layers[0].weight[3, 5] = 10 * float(net.layers[0].scale)
        net.layers[0].weight[4, 5] = -10 * float(net.layers[0].scale)
    net(x)
    assert 1 <= backend.words_written - before <= 4
    assert backend.programs == 3


def test_bad_inputs_and_per_sample_dropout_are_refused(board, cal) -> None:
    net = nn.pnas_network(64, 30, 10, quantize=True, dropout=0.2)
    net.connect(BoardBackend(board, calibration=cal))
    with pytest.raises(TrainingError, match="dropout_scope='batch'"):
        net(_x(20, 2, 64))
    net.eval()  # no masks in evaluation
    assert net(_x(20, 2, 64)).readout.shape == (20, 2, 10)
    net = _net()
    net.connect(BoardBackend(board, calibration=cal))
    with pytest.raises(TrainingError, match="0 or 1"):
        net(2.0 * _x(20, 2, 64))
    backend = BoardBackend(board, calibration=cal)
    with pytest.raises(TrainingError, match="not attached"):
        backend.observe(net, _x(20, 2, 64), {})


def test_in_the_loop_training_learns_digits(board, cal) -> None:
    train_set, test_set = load_digits_split()
    net = nn.pnas_network(64, 60, 10, quantize=True, seed=0)
    net.connect(BoardBackend(board, calibration=cal))
    loss = PNASLoss(readout_scale=5.0)
    before = evaluate(net, loss, test_set)
    result = train(net, loss, train_set, test_set,
                   TrainConfig(epochs=2, lr=5e-3, batch_size=50, seed=0))
    assert before.accuracy < 0.4
    assert result.last.test_accuracy >= 0.6
    assert result.last.hidden_spikes_per_sample > 0
    assert np.isfinite(result.last.train_loss)


def test_batch_dropout_silences_the_hidden_layer_on_the_chip(board, cal) -> None:
    """A per-batch mask zeroes the silenced neurons' outgoing synapses for that program only:
    with every hidden neuron silenced the readout stays at rest while hidden neurons still
    spike (and are still recorded); the next batch without a mask drives the readout again."""
    net = nn.pnas_network(64, 30, 10, quantize=True, seed=0, dropout=0.5, dropout_scope="batch")
    with torch.no_grad():
        net.layers[0].weight.fill_(2.0)  # every hidden neuron fires
        net.layers[2].weight.fill_(2.0)  # and every readout feels it
    backend = Capturing(board, calibration=cal)
    net.connect(backend)
    x = _x(20, 3, 64, p=0.3)
    silent = backend.observe(net, x, {1: torch.zeros(3, 30)})
    live = backend.observe(net, x, {1: torch.ones(3, 30)})
    for obs in (silent, live):
        assert float(obs[1].spikes.sum()) > 3 * 30  # hidden spikes recorded either way
    assert float(silent[3].membrane.max()) < 0.1
    assert float(live[3].membrane.max()) > 0.5
    net.train()
    y = net(x)  # the model draws one mask for the batch and the board realises it
    mask = y.masks[1]
    assert bool((mask == mask[:1]).all()) and 0 < float(mask.mean()) < 1


def test_sub_step_input_times_reach_the_chip(board, cal) -> None:
    """Network(substeps=4): input spikes go out at a quarter step's resolution, and the chip's
    PSPs follow the model's exact sub-step response (which rounding to steps would miss)."""
    net = nn.pnas_network(16, 6, 2, quantize=True, substeps=4)
    backend = Capturing(board, calibration=cal)
    net.connect(backend)
    with torch.no_grad():
        for _, lin in net.linear_layers():
            lin.weight.zero_()
        net.layers[0].weight[3, 0] = 63 * float(net.layers[0].scale)
    x = torch.zeros(20 * 4, 3, 16)
    x[8, 0, 0] = 1.0  # step 2, on the grid
    x[11, 1, 0] = 1.0  # step 2 + 3/4
    x[9, 2, 0] = 1.0  # step 2 + 1/4
    y = net(x)
    measured = backend.last[1].membrane[:, :, 3]  # [T, 3]
    model = net.simulate(x).traces[0].membrane[:, :, 3].detach()
    peak = float(model.max())
    assert float((measured - model).abs().max()) < 0.25 * peak
    # later spikes rise later, on the chip as in the model: at sample 3 the order is strict
    assert float(measured[3, 0]) > float(measured[3, 2]) > float(measured[3, 1])
    # rounding every spike to its step would predict three equal traces: the chip disagrees
    spread = float(measured[3, 0] - measured[3, 1])
    assert spread > 0.5 * float(model[3, 0] - model[3, 1]) > 0.2 * peak
    assert torch.allclose(y.traces[0].membrane.detach(), backend.last[1].membrane, atol=1e-6)
