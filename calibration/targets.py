"""Calibration targets: one value per parameter, a scalar or one value per neuron circuit.

Potentials are in CADC units (LSB of the calibrated CADC: 3 mV per LSB nominal, 0 = 300 mV),
time constants and the refractory time in us (hardware time), synaptic strength as the PSP
amplitude in CADC LSB that one weight-63 input event causes. Defaults follow hxtorch/calix for
the PNAS networks (leak = reset = 80, threshold 150, tau_mem = tau_syn = 6 us).

A targets file is JSON with any subset of the fields, each a number or a list of 512 numbers:
``{"threshold": 140, "tau_mem": [6.0, 6.1, ...]}``. The training issue's robustness experiments
detune per neuron: ``Targets().detuned(0.3, seed=1)`` (valid at any spread: values a wide draw
pushes out of range are clipped, ``Targets().detuning(0.5, seed=1).clipped`` counts them).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from protocol.addressmap import N_NEURONS
from protocol.errors import ConfigError

__all__ = ["DETUNED", "MIN_THRESHOLD_GAP", "PARAMETERS", "Detuning", "Targets"]

# parameter -> (unit of the target, physical unit, physical units per target unit)
PARAMETERS: dict[str, tuple[str, str, float]] = {
    "cadc_offset": ("LSB", "LSB", 1.0),
    "leak": ("LSB", "mV", 3.0),
    "reset": ("LSB", "mV", 3.0),
    "threshold": ("LSB", "mV", 3.0),
    "tau_mem": ("us", "us", 1.0),
    "tau_syn_exc": ("us", "us", 1.0),
    "tau_syn_inh": ("us", "us", 1.0),
    "synaptic_strength": ("LSB", "mV", 3.0),
    "synaptic_strength_inh": ("LSB", "mV", 3.0),
    "refractory": ("us", "us", 1.0),
}

# plausible ranges a target must lie in before any measurement (the chip's reach is checked
# by the routines themselves, neuron by neuron)
_VALID = {
    "leak": (20.0, 230.0),
    "reset": (20.0, 230.0),
    "threshold": (20.0, 230.0),
    "tau_mem": (0.2, 200.0),
    "tau_syn_exc": (0.1, 100.0),
    "tau_syn_inh": (0.1, 100.0),
    "synaptic_strength": (0.1, 200.0),
    "synaptic_strength_inh": (0.1, 200.0),
    "refractory": (0.0, 67000.0),
    "cadc_reference": (30.0, 210.0),
}


DETUNED = ("tau_mem", "tau_syn_exc", "tau_syn_inh", "threshold")  # what detuned() spreads
MIN_THRESHOLD_GAP = 10.0  # LSB: a detuned threshold stays at least this far above the leak


@dataclass(frozen=True)
class Targets:
    """What to calibrate to. Fields are floats or [512] float arrays (one per circuit)."""

    leak: Any = 80.0
    reset: Any = 80.0
    threshold: Any = 150.0
    tau_mem: Any = 6.0
    tau_syn_exc: Any = 6.0
    tau_syn_inh: Any = 6.0
    synaptic_strength: Any = 8.0
    synaptic_strength_inh: Any = 8.0
    refractory: Any = 2.0
    cadc_reference: float = 120.0  # CADC level at which all channels are made to agree
    synapse_dac: int = 800  # I_BIAS_SYNAPSE_DAC code of every quadrant (sets the weight scale)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "synapse_dac":
                v = self.synapse_dac
                if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 0 <= v <= 1022:
                    raise ConfigError(f"targets.synapse_dac must be a code 0..1022, got {v!r}")
                continue
            raw = getattr(self, f.name)
            try:
                arr = np.asarray(raw, np.float64)
            except (TypeError, ValueError):
                raise ConfigError(f"targets.{f.name} must be a number or 512 numbers, got "
                                  f"{raw!r}") from None
            if f.name == "cadc_reference" and arr.ndim:
                raise ConfigError("targets.cadc_reference must be one number")
            if arr.ndim not in (0, 1) or (arr.ndim == 1 and arr.size != N_NEURONS):
                raise ConfigError(f"targets.{f.name} must be a number or {N_NEURONS} numbers, "
                                  f"got shape {arr.shape}")
            lo, hi = _VALID[f.name]
            bad = ~np.isfinite(arr) | (arr < lo) | (arr > hi)
            if np.any(bad):
                idx = np.flatnonzero(np.atleast_1d(bad))
                what = f"neurons {idx[:8].tolist()}" if arr.ndim else "value"
                raise ConfigError(f"targets.{f.name}: {what} outside the valid range {lo}..{hi} "
                                  f"(got {np.atleast_1d(arr)[idx[:8]].tolist()})")
            if arr.ndim:
                arr = arr.copy()
                arr.flags.writeable = False
                object.__setattr__(self, f.name, arr)
            else:
                object.__setattr__(self, f.name, float(arr))

    def per_neuron(self, name: str) -> np.ndarray:
        """[512] float64 target of parameter name."""
        return np.broadcast_to(np.asarray(getattr(self, name), np.float64), (N_NEURONS,)).copy()

    def scalar(self, name: str) -> float:
        """Median target (the nominal operating point of an uncalibrated chip)."""
        return float(np.median(self.per_neuron(name)))

    # ------------------------------------------------------------------ detuning
    def detuned(self, sigma: float, *, seed: int = 0,
                names: tuple[str, ...] = DETUNED, min_gap: float = MIN_THRESHOLD_GAP) -> Targets:
        """Per-neuron targets with relative spread sigma (PNAS sigma_d): x * (1 + sigma * N(0,1));
        the threshold is detuned relative to the leak (threshold - leak). Valid at any sigma: the
        values a wide draw pushes out of range are clipped (see `detuning`, which also counts
        them)."""
        return self.detuning(sigma, seed=seed, names=names, min_gap=min_gap).targets

    def detuning(self, sigma: float, *, seed: int = 0, names: tuple[str, ...] = DETUNED,
                 min_gap: float = MIN_THRESHOLD_GAP) -> Detuning:
        """`detuned`'s targets and, per name, how many circuits were clipped at each end.

        One standard normal draw of 512 per name, in the order of `names` (so a draw does not
        depend on sigma: larger sigma scales the same pattern). Clipping, so that any sigma gives
        targets this class accepts:
        - every factor 1 + sigma z is at least 0.1 (a time constant stays positive);
        - every value is clipped into the valid range of its field (_VALID: e.g. threshold
          20..230 LSB, tau 0.2..200 us; at sigma 0.5 a few thresholds of the PNAS targets land
          above 230);
        - the threshold stays at least min_gap LSB above the leak (default 10: a circuit that
          rests within a few LSB of its threshold fires from noise alone, and
          training.board refuses it); where the leak lies within min_gap of the range top, the
          range top wins.
        Below the clipping the values are exactly the unclipped formula's.
        """
        if not np.isfinite(sigma) or sigma < 0:
            raise ConfigError(f"detuning sigma must be a number >= 0, got {sigma!r}")
        if not np.isfinite(min_gap) or min_gap < 0:
            raise ConfigError(f"detuning min_gap must be a number >= 0, got {min_gap!r}")
        unknown = [n for n in names if n not in _VALID or n == "cadc_reference"]
        if unknown:
            raise ConfigError(f"cannot detune {unknown}; per-neuron targets: "
                              f"{sorted(n for n in _VALID if n != 'cadc_reference')}")
        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        clipped: dict[str, dict[str, int]] = {}
        for name in names:
            f = 1.0 + sigma * rng.standard_normal(N_NEURONS)
            lo, hi = _VALID[name]
            if name == "threshold":
                leak = self.per_neuron("leak")
                gap = self.per_neuron("threshold") - leak
                raw, floored = leak + gap * f, leak + gap * np.maximum(f, 0.1)
                lo = np.maximum(leak + min_gap, lo)
            else:
                x = self.per_neuron(name)
                raw, floored = x * f, x * np.maximum(f, 0.1)
            value = np.minimum(np.maximum(floored, lo), hi)
            clipped[name] = {"low": int(np.count_nonzero(value > raw)),
                             "high": int(np.count_nonzero(value < raw))}
            out[name] = value
        return Detuning(replace(self, **out), clipped)

    # ------------------------------------------------------------------ files and keys
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "targets") -> Targets:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: targets must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown target(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Targets:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"{p}: cannot read targets file: {e.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: targets file is not valid JSON: {e}") from None
        return cls.from_dict(data, source=str(p))

    def key(self) -> str:
        """Stable hash of the targets (cache key part)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Detuning:
    """Targets.detuning's result: the targets and, per detuned name, the circuits clipped at the
    low end (factor floor, range bottom, threshold's minimum gap above the leak) and the high end
    (range top): {"threshold": {"low": 14, "high": 8}, ...}."""

    targets: Targets
    clipped: dict[str, dict[str, int]]

    @property
    def total_clipped(self) -> int:
        return sum(c["low"] + c["high"] for c in self.clipped.values())
