"""The chip's *nominal* transfer curves (docs/chip.md section 5, docs/emulator.md), host side.

Calibration never trusts these for a result: they give the uncalibrated chip's codes (every
neuron at the same code, the "before" of every routine), first guesses for the searches and the
size of stimuli. The searches then measure each neuron. Units: mV, us, nA, CADC LSB.
"""

from __future__ import annotations

import numpy as np

from protocol.addressmap import CAPMEM_MAX

V_PER_CODE_MV = 1200.0 / CAPMEM_MAX  # voltage cells: 0 -> 1200 mV
CADC_V0_MV = 300.0  # CADC code 0
CADC_MV_PER_LSB = 3.0  # CADC: 300 mV -> 0, 1065 mV -> 255
MADC_V0_MV = 300.0
MADC_MV_PER_LSB = 0.75  # MADC: same window as the CADC, 4x finer (10 bit)
MADC_PER_CADC = CADC_MV_PER_LSB / MADC_MV_PER_LSB
CADC_MAX = 255
CADC_RELIABLE = (30.0, 210.0)  # BSS-2 calix: codes the CADC converts reliably
LSB_PER_CODE = V_PER_CODE_MV / CADC_MV_PER_LSB  # a voltage cell's step in CADC LSB (0.39)

TAU_MEM_RANGE_US = (160.0, 0.16)  # I_BIAS_LEAK code 0 -> 1022, log-linear
TAU_SYN_RANGE_US = (80.0, 0.10)  # I_BIAS_SYN_*_TAU
SYN_READOUT_BASE_MV = 500.0  # SYN_EXC / SYN_INH readout: 500 mV + 2 mV/nA * current
SYN_READOUT_MV_PER_NA = 2.0
GM_FULL_NA = 2.0  # I_BIAS_SYN_*_GM: current per weight LSB at code 1022 (times the DAC factor)
I_OFFSET_FULL_NA = 150.0
C_MEM_PF = 2.4  # membrane capacitance of one circuit (docs/emulator.md)


def log_tau_per_code(tau_range: tuple[float, float]) -> float:
    """|d ln(tau) / d code| of a rate cell mid-range (the soft saturation steepens the middle
    of the log-linear curve by k / (2 tanh(k / 2)) = 1.31 for k = 2, docs/emulator.md)."""
    t0, t1 = tau_range
    return float(np.log(t0 / t1) / CAPMEM_MAX * 1.31)


def mv_to_cadc(mv: np.ndarray | float) -> np.ndarray:
    return (np.asarray(mv, np.float64) - CADC_V0_MV) / CADC_MV_PER_LSB


def cadc_to_mv(code: np.ndarray | float) -> np.ndarray:
    return CADC_V0_MV + np.asarray(code, np.float64) * CADC_MV_PER_LSB


def voltage_code(mv: np.ndarray | float) -> np.ndarray:
    """Nominal voltage-cell code for a potential (clipped to 0..1022)."""
    c = np.rint(np.asarray(mv, np.float64) / V_PER_CODE_MV)
    return np.clip(c, 0, CAPMEM_MAX).astype(np.int64)


def voltage_code_for_cadc(cadc: np.ndarray | float) -> np.ndarray:
    """Nominal voltage-cell code whose potential reads `cadc` on a nominal CADC channel."""
    return voltage_code(cadc_to_mv(cadc))


def tau_code(tau_us: np.ndarray | float, tau_range: tuple[float, float]) -> np.ndarray:
    """Nominal rate-cell code for a time constant (log-linear between the range ends)."""
    t0, t1 = tau_range
    x = np.log(t0 / np.asarray(tau_us, np.float64)) / np.log(t0 / t1)
    return np.clip(np.rint(x * CAPMEM_MAX), 0, CAPMEM_MAX).astype(np.int64)


def lin(x: np.ndarray | float) -> np.ndarray:
    """Linear current cells (gm, offset current, DAC): output / full scale at code/1022 = x."""
    x = np.asarray(x, np.float64)
    return 1.2 * x - 0.2 * x**3


def lin_inverse(fraction: np.ndarray | float) -> np.ndarray:
    """x in [0, 1] with lin(x) = fraction (lin is monotone on [0, 1]; Newton from the linear
    guess)."""
    f = np.clip(np.asarray(fraction, np.float64), 0.0, 1.0)
    x = f / 1.2
    for _ in range(8):
        x = np.clip(x - (lin(x) - f) / (1.2 - 0.6 * x * x), 0.0, 1.0)
    return x


def current_code(fraction: np.ndarray | float) -> np.ndarray:
    """Nominal linear-cell code giving `fraction` of full scale."""
    return np.clip(np.rint(lin_inverse(fraction) * CAPMEM_MAX), 0, CAPMEM_MAX).astype(np.int64)


def log_lin_code(code: np.ndarray) -> np.ndarray:
    """log(lin(code / 1022)): a linear current cell's output is gain * lin(code / 1022), so the
    log of the output is linear in this with slope 1 (code_transform of ModelSearch)."""
    c = np.maximum(np.asarray(code, np.float64), 0.5)
    return np.log(lin(c / CAPMEM_MAX))


def log_lin_code_inverse(x: np.ndarray) -> np.ndarray:
    return lin_inverse(np.exp(np.asarray(x, np.float64))) * CAPMEM_MAX


def psp_peak_per_na(tau_syn: float, tau_mem: float) -> float:
    """Peak membrane deflection (mV) of a current-based synapse per nA of current jump:
    (1 / C) tau_s tau_m / (tau_m - tau_s) (exp(-tp / tau_m) - exp(-tp / tau_s)) at the peak tp
    (tau_s = tau_m: tau / C * e^-1)."""
    ts, tm = float(tau_syn), float(tau_mem)
    if abs(tm - ts) < 1e-9 * tm:
        return tm / C_MEM_PF * float(np.exp(-1.0))
    tp = np.log(tm / ts) * ts * tm / (tm - ts)
    return ts * tm / (tm - ts) * float(np.exp(-tp / tm) - np.exp(-tp / ts)) / C_MEM_PF


def gm_code_for_psp(psp_lsb: float, weight: int, dac_code: int, tau_syn: float,
                    tau_mem: float) -> int:
    """Nominal I_BIAS_SYN_*_GM code whose weight-`weight` input event gives a PSP of psp_lsb."""
    per_na = psp_peak_per_na(tau_syn, tau_mem) / CADC_MV_PER_LSB  # LSB per nA
    full = weight * GM_FULL_NA * float(lin(dac_code / CAPMEM_MAX)) * per_na  # LSB at gm 1022
    return int(current_code(psp_lsb / full))
