"""CADC (8 bit, all 512 channels) and MADC (10 bit, one circuit) conversion.

Voltage -> code maps (before per-channel mismatch):
  CADC: code = (V - 300 mV) / 3 mV   (300 mV -> 0, 1065 mV -> 255; 600..800 mV -> 100..167)
  MADC: code = (V - 300 mV) / 0.75 mV (same window, 4x finer)
Synaptic-input and adaptation sources go through a readout buffer:
  V = 500 mV + 2 mV/nA * current + per-circuit buffer offset.
"""

from __future__ import annotations

import numpy as np

CADC_V0_MV = 300.0
CADC_MV_PER_LSB = 3.0
CADC_MAX = 255
MADC_V0_MV = 300.0
MADC_MV_PER_LSB = 0.75
MADC_MAX = 1023


def cadc_code(v_mv: np.ndarray, gain: np.ndarray, offset: np.ndarray, reg_offset: np.ndarray,
              noise_lsb: np.ndarray) -> np.ndarray:
    """[C, 512] potentials -> u8 codes (gain/offset per channel, signed offset register added)."""
    x = gain * ((v_mv - CADC_V0_MV) / CADC_MV_PER_LSB) + offset + reg_offset + noise_lsb
    return np.clip(np.rint(x), 0, CADC_MAX).astype(np.uint8)


def madc_code(v_mv: np.ndarray, gain: float, offset: float, noise_lsb: np.ndarray) -> np.ndarray:
    x = gain * ((v_mv - MADC_V0_MV) / MADC_MV_PER_LSB) + offset + noise_lsb
    return np.clip(np.rint(x), 0, MADC_MAX).astype(np.uint16)


def signed8(raw: np.ndarray) -> np.ndarray:
    """CADC_OFFSET register [7:0] two's complement -> -128..127."""
    r = np.asarray(raw, np.int64) & 0xFF
    return np.where(r >= 128, r - 256, r)
