"""BoardBackend: a Network's forward pass on the (emulated) chip, observed for the identity trick.

    board = hostdriver.connect("emu://")
    cal = calibration.calibrate(board, training_targets())     # or calibration.load(path)
    net.connect(BoardBackend(board, calibration=cal))          # place, route, write the config
    y = net(x)                                                 # one board program per batch

attach: places the network (training/mapping.py), builds the chip configuration (nominal codes
for the targets, then the calibration's codes, then enables, routing and weights), writes it,
and measures every neuron's resting CADC level (one short program). It refuses an
uncalibrated board unless allow_uncalibrated=True.

Weight scale: the chip realises integer weight k of a projection as a PSP of
k / 63 * S / members CADC LSB (S: calibrated strength of one weight-63 event on one circuit,
members: circuits per neuron), i.e. k * S / (63 * members * (threshold - leak)) in the model's
normalised units. The model's PSP of a weight w is w * peak(tau_mem, tau_syn), so the chip's
weight scale is S / (63 * members * gap * peak). scales="adopt" (default) sets each quantised
Linear's scale to it (the model's weights, in model units, stay; their integers change);
scales="check" raises TrainingError where they differ by more than 5 %.

observe (per batch): writes the weights as a minimal config diff, then one program of B
independent episodes (EPISODE_START resets every neuron). Input spikes of model step k go out
at k * dt (the grid time of their bin: data keeps only bins; with Network.substeps K the input
grid is dt / K and input step j goes out at j * dt / K, rounded to the FPGA's 8 ns tick:
1.7 us = 212 ticks, so K in 1, 2, 4 is exact); CADC samples at
delay + t * dt (t = 0..T-1), where delay is the crossbar-to-synapse delay (1.024 us on the
emulator), so sample t sees inputs of steps < t exactly as the model does. Hidden spikes are
binned so that a spike between samples t-1 and t belongs to step t; where one was recorded the
membrane is reported as the threshold (1, the pre-reset value). Membranes are normalised per
neuron: v = (cadc - leak_n) / (threshold_n - leak_n), leak_n measured at attach, threshold_n
from the calibration (LIF); LI readouts use the target gap (their PSPs are calibrated in LSB).
Dropout: one mask per batch (LIF dropout_scope="batch"), realised by writing zero weights on
the silenced neurons' outgoing synapses for that batch; per-sample masks would need one program
per sample, so they raise.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hostdriver.chip import ChipConfig, GlobalCell, NeuronCell, believed
from hostdriver.program import CADCSchedule, Program, SpikeInput
from protocol.addressmap import N_NEURONS
from protocol.errors import TrainingError
from protocol.wire import TICKS_PER_US
from training.backend import Backend, LayerObservation, Observations
from training.mapping import Mapping, place, specs_of

__all__ = [
    "DEFAULT_DELAY_US",
    "REQUIRED_PARAMETERS",
    "BoardBackend",
    "calibration_reference",
    "psp_peak",
    "training_targets",
]

DEFAULT_DELAY_US = 1.024  # the emulator's crossbar -> synapse delay (SimConfig.route_delay_ticks)
REQUIRED_PARAMETERS = (
    "cadc_offset", "leak", "reset", "threshold", "tau_mem", "tau_syn_exc", "tau_syn_inh",
    "synaptic_strength", "synaptic_strength_inh",
)
SCALE_TOLERANCE = 0.05
BASELINE_EPISODES = 4
I_BIAS_READOUT = 500  # readout amplifier bias, as calibration.setup uses
TAIL_US = 0.5  # episode time after the last CADC sample


def training_targets(strength: float = 14.0, **overrides: Any) -> Any:
    """Calibration targets that realise the PNAS model: leak = reset = 80, threshold = 150 CADC
    (gap 70 LSB), tau_mem = tau_syn = 6 us, refractory 1.024 us (one emulator step), and a
    weight-63 event of `strength` LSB on one circuit with the quadrant synapse DAC at full
    scale. The gm mismatch limits a few circuits of an emulated chip to 13..16 LSB, so 14 LSB is
    the largest strength (nearly) every circuit reaches (calibrate with clamp=True for the rest);
    it makes the largest PSP 0.2 (one circuit) or 0.1 (two merged circuits) of the leak-threshold
    gap."""
    from calibration import Targets

    kw: dict[str, Any] = dict(
        leak=80.0, reset=80.0, threshold=150.0, tau_mem=6.0, tau_syn_exc=6.0, tau_syn_inh=6.0,
        synaptic_strength=strength, synaptic_strength_inh=strength, refractory=1.024,
        synapse_dac=1022,
    )
    kw.update(overrides)
    return Targets(**kw)


def psp_peak(tau_mem: float, tau_syn: float) -> float:
    """Peak of the normalised membrane after a unit current jump (tau_m dv/dt = -v + i, i decays
    with tau_syn): tau_s / (tau_s - tau_m) (e^-tp/tau_s - e^-tp/tau_m); 1/e for equal taus."""
    tm, ts = float(tau_mem), float(tau_syn)
    if abs(tm - ts) < 1e-9 * tm:
        return math.exp(-1.0)
    tp = math.log(ts / tm) * ts * tm / (ts - tm)
    return ts / (ts - tm) * (math.exp(-tp / ts) - math.exp(-tp / tm))


def calibration_reference(result: Any) -> dict[str, Any] | None:
    """Plain data identifying a calibration (stored in checkpoints): serial + a hash of its
    codes and targets. None for None."""
    if result is None:
        return None
    h = hashlib.sha256()
    h.update(result.targets.key().encode())
    for name in sorted(result.parameters):
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.asarray(result.parameters[name].codes, np.int64)))
    return {"serial": int(result.serial), "codes": h.hexdigest()[:16]}


def _load_calibration(calibration: Any) -> Any:
    if calibration is None:
        return None
    if isinstance(calibration, str | Path):
        import calibration as cal_pkg

        return cal_pkg.load(calibration)
    if not hasattr(calibration, "apply") or not hasattr(calibration, "parameters"):
        raise TrainingError(
            f"calibration must be a calibration.CalibrationResult, a path to a calibration "
            f"file or None, got {type(calibration).__name__}"
        )
    return calibration


@dataclass
class _LayerReadout:
    """How to turn CADC codes of one neuron layer into model units."""

    index: int
    channel: torch.Tensor  # [n] CADC channel read (the neuron's first circuit)
    leak: torch.Tensor  # [n] resting CADC level (measured)
    gap: torch.Tensor  # [n] threshold - leak in CADC LSB
    spiking: bool
    lookup: np.ndarray | None  # [16384] label -> neuron (spiking layers)


class BoardBackend(Backend):
    """Runs a Network's forward pass on a board (module doc).

    board: a hostdriver Board. calibration: CalibrationResult, path of a calibration file, or
    None (refused unless allow_uncalibrated: then the chip runs at the nominal codes for
    `targets`, default training_targets()). merge: placement option (training/mapping.py).
    scales: "adopt" or "check" (module doc). delay_us: input-to-synapse delay the CADC schedule
    is shifted by. timeout: seconds one batch program may take on the board (None: the link's
    default).
    """

    name = "board"

    def __init__(
        self,
        board: Any,
        *,
        calibration: Any = None,
        allow_uncalibrated: bool = False,
        targets: Any = None,
        merge: str = "auto",
        scales: str = "adopt",
        delay_us: float = DEFAULT_DELAY_US,
        timeout: float | None = None,
    ) -> None:
        if scales not in ("adopt", "check"):
            raise TrainingError(f"scales must be 'adopt' or 'check', got {scales!r}")
        if delay_us < 0:
            raise TrainingError(f"delay_us must be >= 0, got {delay_us}")
        self.board = board
        self.calibration = _load_calibration(calibration)
        self.allow_uncalibrated = allow_uncalibrated
        self._targets = targets
        self.merge, self.scales, self.delay_us, self.timeout = merge, scales, delay_us, timeout
        self.mapping: Mapping | None = None
        self.config: ChipConfig | None = None
        self.readouts: list[_LayerReadout] = []
        self.programs = 0  # batch programs run
        self.words_written = 0  # weight words written by observe

    # ------------------------------------------------------------------ properties
    @property
    def targets(self) -> Any:
        if self.calibration is not None:
            return self.calibration.targets
        return self._targets if self._targets is not None else training_targets()

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    @property
    def serial(self) -> int:
        return int(self.board.info.serial)

    def reference(self) -> dict[str, Any]:
        """What checkpoints store about this board's calibration."""
        ref = calibration_reference(self.calibration)
        return ref if ref is not None else {"serial": self.serial, "uncalibrated": True}

    # ------------------------------------------------------------------ attach
    def attach(self, net: Any) -> None:
        self._check_calibration()
        for i, lin in net.linear_layers():
            if not lin.quantize:
                raise TrainingError(
                    f"layer {i} (Linear) must have quantize=True on the board: the chip's "
                    "weights are 6-bit integers +-63 (build it with Linear(..., quantize=True))"
                )
            if isinstance(lin.scale, torch.nn.Parameter):
                raise TrainingError(
                    f"layer {i} (Linear) learns its scale, but the chip's weight scale is fixed "
                    "by the calibration: build it with learn_scale=False"
                )
        specs, n_in = specs_of(net)
        mapping = place(specs, n_in, merge=self.merge)
        t = self.targets
        self._check_time_constants(net, t)
        scales = self._chip_scales(net, mapping, t)
        pairs = list(zip(net.linear_layers(), scales, strict=True))
        for (i, lin), s in pairs:  # check every layer before changing any
            cur = float(lin.scale)
            if self.scales == "check" and abs(cur / s - 1.0) > SCALE_TOLERANCE:
                raise TrainingError(
                    f"layer {i} (Linear) has weight scale {cur:.5g} but this calibration "
                    f"realises {s:.5g} per integer weight on the chip; build it with "
                    f"scale={s:.5g} or connect with scales='adopt'"
                )
        with torch.no_grad():
            for (_, lin), s in pairs:
                lin.scale.fill_(s)
        net.clamp_weights_()
        cfg = self._base_config()
        mapping.configure(cfg)
        for i, lin in net.linear_layers():
            mapping.write_weights(cfg, i + 1, lin.integer_weights().cpu().numpy())
        cfg.validate()
        cfg.write(self.board, timeout=self.timeout)
        self.mapping, self.config = mapping, cfg
        leak = self._measure_rest(net)
        self.readouts = []
        thr = self._threshold_cadc()
        gap_target = float(np.median(t.per_neuron("threshold") - t.per_neuron("leak")))
        for lp in mapping.layers:
            ch = lp.circuit
            lk = leak[ch]
            if lp.spiking:
                gap = thr[ch] - lk
                if np.any(gap <= 5.0):
                    bad = ch[gap <= 5.0][:8].tolist()
                    raise TrainingError(
                        f"neurons on circuits {bad} rest within 5 CADC LSB of (or above) their "
                        "threshold: recalibrate the board (leak/threshold)"
                    )
            else:
                gap = np.full(lp.size, gap_target)
            self.readouts.append(
                _LayerReadout(
                    lp.index,
                    torch.from_numpy(ch.astype(np.int64)),
                    torch.from_numpy(lk.astype(np.float32)),
                    torch.from_numpy(np.asarray(gap, np.float32)),
                    lp.spiking,
                    mapping.label_lookup(lp.index) if lp.spiking else None,
                )
            )

    def _check_calibration(self) -> None:
        if self.calibration is None:
            if not self.allow_uncalibrated:
                raise TrainingError(
                    f"board serial {self.serial} is uncalibrated: pass calibration= (a "
                    "CalibrationResult or a calibration file of this chip; make one with "
                    "`python -m tools.calibrate` or calibration.calibrate(board, "
                    "training.board.training_targets())), or allow_uncalibrated=True to run at "
                    "the nominal codes (every neuron differs: expect worse accuracy)"
                )
            return
        self.calibration.check_serial(self.serial, source="calibration")
        missing = [p for p in REQUIRED_PARAMETERS if p not in self.calibration.parameters]
        if missing:
            raise TrainingError(
                f"the calibration lacks {missing}; training needs {list(REQUIRED_PARAMETERS)} "
                "(run the full calibration.calibrate)"
            )

    def _check_time_constants(self, net: Any, t: Any) -> None:
        for i, layer in net.neuron_layers():
            for name, tname in (("tau_mem", "tau_mem"), ("tau_syn", "tau_syn_exc"),
                                ("tau_syn", "tau_syn_inh")):
                model = float(torch.median(getattr(layer, name))) * 1e6
                chip = float(np.median(t.per_neuron(tname)))
                if abs(model / chip - 1.0) > 0.1:
                    raise TrainingError(
                        f"layer {i} has {name} = {model:.3g} us but the board is calibrated to "
                        f"{tname} = {chip:.3g} us: calibrate to the model's time constants or "
                        "build the model with the calibrated ones"
                    )

    def _chip_scales(self, net: Any, mapping: Mapping, t: Any) -> list[float]:
        """Model weight per integer weight each Linear gets on the chip (module doc)."""
        strength = 0.5 * (t.per_neuron("synaptic_strength") + t.per_neuron("synaptic_strength_inh"))
        gap = t.per_neuron("threshold") - t.per_neuron("leak")
        out = []
        for (i, _), lp in zip(net.linear_layers(), mapping.layers, strict=True):
            layer = net.layers[i + 1]
            peak = psp_peak(float(torch.median(layer.tau_mem)), float(torch.median(layer.tau_syn)))
            members = 2 if lp.merged else 1
            ch = lp.circuit
            s = float(np.median(strength[ch] / (63.0 * members * gap[ch] * peak)))
            out.append(s)
        return out

    def _base_config(self) -> ChipConfig:
        """Nominal codes for the targets on every circuit, then the calibration's codes."""
        from calibration.routines.refractory import counter_codes
        from calibration.setup import nominal_codes

        t = self.targets
        cfg = ChipConfig()
        caps = cfg.neuron_capmem
        for cell, code in nominal_codes(t).items():
            caps[cell] = code
        caps[NeuronCell.I_BIAS_READOUT] = I_BIAS_READOUT
        cfg.global_capmem[GlobalCell.I_BIAS_SYNAPSE_DAC] = t.synapse_dac
        count, clock = counter_codes(np.full(N_NEURONS, t.scalar("refractory")))
        cfg.neurons.refractory_count = count
        cfg.neurons.refractory_clock = clock
        if self.calibration is not None:
            self.calibration.apply(cfg)
        return cfg

    def _threshold_cadc(self) -> np.ndarray:
        """[512] threshold of each circuit in CADC LSB: measured by the calibration where it has
        a finite value, else the target."""
        t = self.targets.per_neuron("threshold")
        if self.calibration is None:
            return t
        after = np.asarray(self.calibration["threshold"].after, np.float64)
        return np.where(np.isfinite(after), after, t)

    def _measure_rest(self, net: Any) -> np.ndarray:
        """[512] resting CADC level of every channel (no input; a few episodes, averaged)."""
        steps = int(net.n_steps)
        p = Program()
        duration, cadc = self._timing(steps, float(net.dt))
        tk = p.episodes(BASELINE_EPISODES, duration, cadc=cadc, unit="ticks")
        data = p.run(self.board, timeout=self.timeout)[tk]
        s = data.cadc.samples.astype(np.float64)  # [E, T, 512]
        rest = s.mean(axis=(0, 1))
        used = self.mapping.used_circuits() if self.mapping is not None else np.arange(N_NEURONS)
        clipped = used[(s[:, :, used] <= 0).any(axis=(0, 1)) | (s[:, :, used] >= 255).any(
            axis=(0, 1))]
        if clipped.size:
            raise TrainingError(
                f"{clipped.size} neuron circuit(s) (e.g. {clipped[:8].tolist()}) read 0 or 255 "
                "on the CADC at rest: the leak is outside the CADC range; recalibrate the board"
            )
        return rest

    def _timing(self, steps: int, dt: float) -> tuple[int, CADCSchedule]:
        """(episode duration, CADC schedule) in ticks: samples at delay + t * dt, t < steps.
        dt in seconds; inputs use the same whole-tick step as the samples (1.7 us -> 212)."""
        dt_ticks, delay = self._ticks(dt)
        duration = delay + (steps - 1) * dt_ticks + int(round(TAIL_US * TICKS_PER_US))
        return duration, CADCSchedule(interval=dt_ticks, count=steps, start=delay)

    def _ticks(self, dt: float) -> tuple[int, int]:
        return int(round(dt * 1e6 * TICKS_PER_US)), int(round(self.delay_us * TICKS_PER_US))

    # ------------------------------------------------------------------ observe
    def observe(
        self, net: Any, x: torch.Tensor, masks: dict[int, torch.Tensor]
    ) -> Observations:
        if self.mapping is None or self.config is None:
            raise TrainingError("the board backend is not attached: call net.connect(backend)")
        silenced = self._batch_masks(masks)
        substeps = int(net.substeps)
        steps, batch = int(x.shape[0]) // substeps, int(x.shape[1])
        xs = x.detach()
        if bool(((xs != 0) & (xs != 1)).any()):
            raise TrainingError("board input spikes must be 0 or 1 per step and input")
        # weights: minimal diff against what the host believes the board holds
        cfg = self.config
        for i, lin in net.linear_layers():
            w = lin.integer_weights().cpu().numpy()
            if i - 1 in silenced:  # dropout: the silenced neurons' outgoing synapses read 0
                w = w * silenced[i - 1][None, :]
            self.mapping.write_weights(cfg, i + 1, w)
        program = Program()
        self.words_written += program.write_config(cfg, believed(self.board))
        s, e, i = torch.nonzero(xs.cpu(), as_tuple=True)
        labels = self.mapping.input_labels[i.numpy()]
        dt_ticks, _ = self._ticks(float(net.dt))
        ticks = np.rint(s.numpy() * (dt_ticks / substeps)).astype(np.int64)
        spikes = SpikeInput(e.numpy(), ticks, labels)
        duration, cadc = self._timing(steps, float(net.dt))
        ticket = program.episodes(batch, duration, spikes=spikes, cadc=cadc, unit="ticks")
        data = program.run(self.board, timeout=self.timeout)[ticket]
        self.programs += 1
        return self._observations(data, steps, batch, x)

    @staticmethod
    def _batch_masks(masks: dict[int, torch.Tensor]) -> dict[int, np.ndarray]:
        """Dropout masks as one 0/1 int vector per layer. A board program runs the whole batch
        with one configuration, so a mask must be the same for every sample (LIF
        dropout_scope="batch"); it is realised by zeroing the silenced neurons' outgoing
        weights, while their own spikes and membranes are still recorded."""
        out = {}
        for i, m in masks.items():
            if m.shape[0] and not bool((m == m[:1]).all()):
                raise TrainingError(
                    f"layer {i}: dropout masks differ between samples, which the board cannot "
                    "realise in one program; build the LIF layer with dropout_scope='batch'"
                )
            out[i] = m[0].detach().cpu().numpy().astype(np.int16)
        return out

    def _observations(self, data: Any, steps: int, batch: int, like: torch.Tensor) -> Observations:
        samples = torch.from_numpy(data.cadc.samples).permute(1, 0, 2)  # [T, E, 512] uint8
        # spike step: sample t-1 < time <= sample t (same schedule in every episode)
        sample_t = data.cadc.rel_time[0]
        step = np.searchsorted(sample_t, data.spikes.rel_time, side="left")
        out: Observations = {}
        for r in self.readouts:
            v = (samples[:, :, r.channel].to(torch.float32) - r.leak) / r.gap
            z = None
            if r.spiking:
                nrn = r.lookup[data.spikes.label]  # type: ignore[index]
                ok = (nrn >= 0) & (step < steps)
                dense = torch.zeros(steps * batch * r.channel.numel(), dtype=torch.float32)
                flat = (step[ok] * batch + data.spikes.episode[ok]) * r.channel.numel() + nrn[ok]
                dense[torch.from_numpy(flat)] = 1.0
                z = dense.view(steps, batch, -1)
                v = torch.where(z > 0, torch.ones_like(v), v)
                z = z.to(device=like.device, dtype=like.dtype)
            out[r.index] = LayerObservation(spikes=z, membrane=v.to(device=like.device,
                                                                     dtype=like.dtype))
        return out

    def detach(self) -> None:
        self.mapping, self.config, self.readouts = None, None, []


def board_backend(target: Any, **kwargs: Any) -> BoardBackend:
    """A BoardBackend for a hostdriver Board (what Network.connect(board) uses)."""
    return BoardBackend(target, **kwargs)


def is_board(target: Any) -> bool:
    """Is target a hostdriver Board (without importing hostdriver where it is not needed)?"""
    from hostdriver.board import Board

    return isinstance(target, Board)


def describe(backend: BoardBackend) -> dict[str, Any]:
    """Plain data about an attached backend (for tools and reports)."""
    if backend.mapping is None:
        return {"attached": False}
    return {
        "attached": True,
        "serial": backend.serial,
        "calibrated": backend.calibrated,
        "mapping": backend.mapping.summary(),
        "rest_cadc": [float(r.leak.mean()) for r in backend.readouts],
        "gap_cadc": [float(r.gap.mean()) for r in backend.readouts],
    }
