"""Per-chip fixed-pattern noise, drawn deterministically from the board serial.

Every array comes from its own PCG64 stream seeded with (serial low, serial high, crc32(name)), so
one serial always gives the same chip, two serials give two chips, and adding a new parameter
later never changes the ones already drawn. Sigmas are configurable (MismatchConfig); the defaults
are CHIP.md's and are listed in docs/emulator.md.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, fields

import numpy as np

from protocol.addressmap import (
    N_COLUMNS,
    N_GLOBAL_CELLS,
    N_HEMISPHERES,
    N_NEURON_CELLS,
    N_NEURONS,
    N_QUADRANTS,
    N_ROWS,
)
from protocol.errors import ConfigError


@dataclass(frozen=True)
class MismatchConfig:
    """Spreads of the fixed-pattern noise (1 sigma) and of the temporal noise.

    Set a field to 0 to switch that mismatch off (tests of the ideal model use `ideal()`).
    """

    capmem_voltage_offset_mv: float = 40.0  # per voltage cell: V = offset + gain * code * 1200/1022
    capmem_voltage_gain: float = 0.05
    capmem_current_gain: float = 0.20  # per bias-current cell, log-normal, clipped (see below)
    current_gain_clip: tuple[float, float] = (0.4, 2.5)  # keeps every cell inside its range
    threshold_offset_mv: float = 20.0  # comparator offset
    reset_offset_mv: float = 20.0
    synapse_dac_gain: float = 0.05  # per synapse weight DAC
    cadc_offset_lsb: float = 8.0  # per CADC channel
    cadc_gain: float = 0.03
    cadc_read_noise_lsb: float = 0.5  # temporal, per sample
    madc_offset_lsb: float = 4.0  # the single MADC converter
    madc_gain: float = 0.02
    madc_read_noise_lsb: float = 1.0
    readout_offset_mv: float = 10.0  # per circuit, synaptic-input / adaptation readout buffers
    membrane_noise_mv: float = 1.5  # temporal membrane noise, stationary rms

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            vals = v if isinstance(v, tuple) else (v,)
            if any(not np.isfinite(x) or x < 0 for x in vals):
                raise ConfigError(f"MismatchConfig.{f.name} must be finite and >= 0, got {v!r}")
        lo, hi = self.current_gain_clip
        if not 0 < lo <= 1 <= hi:
            raise ConfigError(
                f"MismatchConfig.current_gain_clip must satisfy 0 < lo <= 1 <= hi, got {lo, hi}"
            )

    @staticmethod
    def ideal() -> MismatchConfig:
        """No fixed-pattern and no temporal noise: every circuit is the nominal one."""
        zero = {f.name: 0.0 for f in fields(MismatchConfig) if f.name != "current_gain_clip"}
        return MismatchConfig(**zero)


def _rng(serial: int, name: str) -> np.random.Generator:
    seq = np.random.SeedSequence([serial & 0xFFFFFFFF, serial >> 32, zlib.crc32(name.encode())])
    return np.random.Generator(np.random.PCG64(seq))


@dataclass(frozen=True)
class ChipMismatch:
    """The drawn fixed-pattern noise of one chip (float64 arrays)."""

    v_offset: np.ndarray  # [512, 32] mV, neuron CapMem voltage cells
    v_gain: np.ndarray  # [512, 32]
    i_gain: np.ndarray  # [512, 32], neuron CapMem current cells
    global_v_offset: np.ndarray  # [4, 32] mV
    global_v_gain: np.ndarray  # [4, 32]
    global_i_gain: np.ndarray  # [4, 32]
    threshold_offset: np.ndarray  # [512] mV
    reset_offset: np.ndarray  # [512] mV
    synapse_gain: np.ndarray  # [2, 256 rows, 256 columns]
    cadc_offset: np.ndarray  # [512] LSB
    cadc_gain: np.ndarray  # [512]
    madc_offset: float  # LSB
    madc_gain: float
    readout_offset: np.ndarray  # [512, 4] mV per ReadoutSource (membrane entry unused: 0)

    @staticmethod
    def draw(serial: int, cfg: MismatchConfig) -> ChipMismatch:
        serial = int(serial)
        if not 0 <= serial < 1 << 64:
            raise ConfigError(f"serial must be a 64-bit unsigned integer, got {serial}")

        def normal(name: str, shape: tuple[int, ...], sigma: float) -> np.ndarray:
            return _rng(serial, name).standard_normal(shape) * sigma

        lo, hi = cfg.current_gain_clip

        def lognormal(name: str, shape: tuple[int, ...]) -> np.ndarray:
            return np.clip(np.exp(normal(name, shape, cfg.capmem_current_gain)), lo, hi)

        nn, ng = (N_NEURONS, N_NEURON_CELLS), (N_QUADRANTS, N_GLOBAL_CELLS)
        ro = normal("readout_offset", (N_NEURONS, 4), cfg.readout_offset_mv)
        ro[:, 0] = 0.0
        return ChipMismatch(
            v_offset=normal("v_offset", nn, cfg.capmem_voltage_offset_mv),
            v_gain=1.0 + normal("v_gain", nn, cfg.capmem_voltage_gain),
            i_gain=lognormal("i_gain", nn),
            global_v_offset=normal("global_v_offset", ng, cfg.capmem_voltage_offset_mv),
            global_v_gain=1.0 + normal("global_v_gain", ng, cfg.capmem_voltage_gain),
            global_i_gain=lognormal("global_i_gain", ng),
            threshold_offset=normal("threshold_offset", (N_NEURONS,), cfg.threshold_offset_mv),
            reset_offset=normal("reset_offset", (N_NEURONS,), cfg.reset_offset_mv),
            synapse_gain=np.maximum(
                1.0 + normal("synapse_gain", (N_HEMISPHERES, N_ROWS, N_COLUMNS),
                             cfg.synapse_dac_gain), 0.0),
            cadc_offset=normal("cadc_offset", (N_NEURONS,), cfg.cadc_offset_lsb),
            cadc_gain=1.0 + normal("cadc_gain", (N_NEURONS,), cfg.cadc_gain),
            madc_offset=float(normal("madc_offset", (1,), cfg.madc_offset_lsb)[0]),
            madc_gain=float(1.0 + normal("madc_gain", (1,), cfg.madc_gain)[0]),
            readout_offset=ro,
        )
