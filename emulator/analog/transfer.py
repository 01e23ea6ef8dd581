"""CapMem code -> physical value transfer curves (nominal shape x per-cell mismatch).

Units used throughout the analog core: time us, potential mV, current nA, capacitance pF,
conductance uS (pF * mV / us = nA, uS * mV = nA). docs/emulator.md tabulates every curve.

Three kinds of cell:
- voltage cells: V = offset + gain * code * 1200/1022 mV (linear, per-cell offset and gain);
- rate cells (leak, synaptic and adaptation time constants): a bias current that sets a
  conductance, log-linear in the code with soft saturation at both ends, times a per-cell gain:
  larger code -> larger current -> shorter time constant;
- linear current cells (input strength, offset current, adaptation a and b, exponential slope):
  gain * full_scale * lin(code / 1022), lin softly saturating at the top end, 0 at code 0.
"""

from __future__ import annotations

import numpy as np

from protocol.addressmap import CAPMEM_MAX

C_MEM_PF = 2.4  # membrane capacitance of one neuron circuit
V_PER_CODE_MV = 1200.0 / CAPMEM_MAX
SATURATION_K = 2.0  # steepness of the rate cells' soft saturation (slope at the ends ~0.42x)

# (time constant at code 0, time constant at code 1022), nominal circuit, us
TAU_MEM_RANGE_US = (160.0, 0.16)
TAU_SYN_RANGE_US = (80.0, 0.10)
TAU_ADAPT_RANGE_US = (1000.0, 2.0)

# full-scale values (code 1022, nominal gain) of the linear current cells
SYN_GM_FULL_NA = 2.0  # synaptic current jump per weight LSB (times the quadrant DAC factor)
SYNAPSE_DAC_FULL = 1.0  # dimensionless quadrant weight scale at code 1022
I_OFFSET_FULL_NA = 150.0
ADAPT_A_FULL_US = 1.0  # subthreshold adaptation conductance, uS
ADAPT_B_FULL_NA = 50.0  # spike-triggered adaptation increment
EXP_SLOPE_MIN_MV = 0.5
EXP_SLOPE_FULL_MV = 30.0


def voltage(code: np.ndarray, offset: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Voltage cell: mV."""
    return offset + gain * np.asarray(code, np.float64) * V_PER_CODE_MV


def soft_unit(x: np.ndarray) -> np.ndarray:
    """Monotonic map [0, 1] -> [0, 1] with reduced slope at both ends (soft saturation)."""
    k = SATURATION_K
    return 0.5 * (np.tanh(k * (x - 0.5)) / np.tanh(k / 2.0) + 1.0)


def rate(code: np.ndarray, gain: np.ndarray, tau_range: tuple[float, float]) -> np.ndarray:
    """Rate cell: 1 / time constant in 1/us (log-linear in the code, soft-saturating)."""
    tau0, tau1 = tau_range
    s = soft_unit(np.asarray(code, np.float64) / CAPMEM_MAX)
    return gain * (1.0 / tau0) * (tau0 / tau1) ** s


def lin(x: np.ndarray) -> np.ndarray:
    """Linear-cell shape: lin(0) = 0, lin(1) = 1, slope 1.2 at 0 falling to 0.6 at 1."""
    return 1.2 * x - 0.2 * x**3


def linear_current(code: np.ndarray, gain: np.ndarray, full: float) -> np.ndarray:
    """Linear current cell: gain * full * lin(code / 1022)."""
    return gain * full * lin(np.asarray(code, np.float64) / CAPMEM_MAX)


def exp_slope(code: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Exponential-term slope factor Delta_T in mV (never below EXP_SLOPE_MIN_MV)."""
    return EXP_SLOPE_MIN_MV + linear_current(code, gain, EXP_SLOPE_FULL_MV)


def inverse_rate(rate_per_us: np.ndarray, gain: np.ndarray,
                 tau_range: tuple[float, float]) -> np.ndarray:
    """Real-valued code giving `rate_per_us` (tests and docs; the host never sees this)."""
    tau0, tau1 = tau_range
    s = np.log(np.asarray(rate_per_us) * tau0 / gain) / np.log(tau0 / tau1)
    k = SATURATION_K
    x = 0.5 + np.arctanh(np.clip((2 * s - 1) * np.tanh(k / 2.0), -1 + 1e-12, 1 - 1e-12)) / k
    return x * CAPMEM_MAX
