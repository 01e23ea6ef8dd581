"""What a calibration produces: per parameter the codes per neuron and the spread before/after.

`ParameterResult` keeps, for one parameter, the target, the chosen codes, and two independent
measurements of all 512 neurons: `before` (the uncalibrated chip: every neuron at the same
nominal code) and `after` (at the calibrated codes), in the target's unit; `physical_scale`
converts them to the physical unit for reports (3 mV per CADC LSB for potentials).

`CalibrationResult` bundles the parameters of one chip (serial) and writes them into a
ChipConfig (`apply`): CapMem codes of the calibrated cells, CADC offsets, refractory counters,
the quadrant synapse DAC. It leaves everything else of the config (enables, weights, routing)
to its owner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from hostdriver.chip import ChipConfig, GlobalCell, NeuronCell
from protocol.errors import CalibrationError

from .targets import PARAMETERS, Targets

__all__ = ["CELLS", "ROUTINES_REVISION", "CalibrationResult", "ParameterResult",
           "software_version"]

# Revision of the calibration routines' results. BUMP IT whenever a change to a routine (its
# measurement, fit, search, tolerance or stimulus) can change the codes or values it produces:
# the cache (calibration.cache) keys its files by it, so calibrations made by an older routine
# are measured again instead of being served. The package version alone does not do this (it
# only changes at releases). History:
#   1  (files cached without a revision in their name: every routine up to 2026-11-27)
#   2  threshold: trajectory slowed for fast membranes, off-target neurons reported;
#      tau_syn / tau_mem: one CADC schedule per band of targets (sub-us targets were unfit
#      or biased long), off-target neurons reported (2026-11-27)
ROUTINES_REVISION = 2

# parameter -> what its codes are: a NeuronCell, or a special kind
CELLS: dict[str, str] = {
    "cadc_offset": "CADC_OFFSET",
    "leak": "V_LEAK",
    "reset": "V_RESET",
    "threshold": "V_THRESHOLD",
    "tau_mem": "I_BIAS_LEAK",
    "tau_syn_exc": "I_BIAS_SYN_EXC_TAU",
    "tau_syn_inh": "I_BIAS_SYN_INH_TAU",
    "synaptic_strength": "I_BIAS_SYN_EXC_GM",
    "synaptic_strength_inh": "I_BIAS_SYN_INH_GM",
    "refractory": "REFRACTORY",  # codes = count | clock << 8 (NEURON_CONFIG word 1 layout)
}


def software_version() -> str:
    try:
        return metadata.version("strobe")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _std(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(np.std(x)) if x.size > 1 else float("nan")


@dataclass
class ParameterResult:
    """One calibrated parameter of all 512 neuron circuits (arrays are [512])."""

    name: str
    target: np.ndarray  # float64, target unit
    codes: np.ndarray  # int64 (CapMem code, CADC offset or refractory word)
    before: np.ndarray  # float64 measured at the nominal code (uncalibrated), target unit
    after: np.ndarray  # float64 measured at `codes`, target unit
    runs: int = 0  # board programs this parameter's routine ran
    seconds: float = 0.0
    clamped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # neuron indices
    note: str = ""

    @property
    def unit(self) -> str:
        return PARAMETERS[self.name][0]

    @property
    def physical_unit(self) -> str:
        return PARAMETERS[self.name][1]

    @property
    def physical_scale(self) -> float:
        return PARAMETERS[self.name][2]

    @property
    def residual(self) -> np.ndarray:
        return self.after - self.target

    @property
    def std_before(self) -> float:
        """Spread across neurons of the uncalibrated chip, physical unit."""
        return _std(self.before) * self.physical_scale

    @property
    def std_after(self) -> float:
        """Spread of the calibrated neurons around their targets, physical unit (the residual's
        std: with one target for all neurons this is the spread of the values)."""
        return _std(self.residual) * self.physical_scale

    @property
    def ratio(self) -> float | None:
        b, a = self.std_before, self.std_after
        if not np.isfinite(b) or not np.isfinite(a) or b <= 0:
            return None
        return a / b

    def summary(self) -> dict[str, Any]:
        r = self.ratio
        return {"std_before": _round(self.std_before), "std_after": _round(self.std_after),
                "ratio": None if r is None else _round(r), "unit": self.physical_unit}


def _round(x: float) -> float | None:
    return float(f"{x:.6g}") if np.isfinite(x) else None


@dataclass
class CalibrationResult:
    """The calibration of one chip: parameters by name, plus what the file keeps about it."""

    serial: int
    targets: Targets
    parameters: dict[str, ParameterResult] = field(default_factory=dict)
    software_version: str = field(default_factory=software_version)
    created: float = field(default_factory=time.time)  # unix time
    seconds: float = 0.0  # wall time the calibration took
    from_cache: bool = False  # loaded from the cache instead of measured (not stored in files)

    def __getitem__(self, name: str) -> ParameterResult:
        try:
            return self.parameters[name]
        except KeyError:
            raise KeyError(f"no parameter {name!r} in this calibration "
                           f"(has {sorted(self.parameters)})") from None

    def __contains__(self, name: object) -> bool:
        return name in self.parameters

    def add(self, p: ParameterResult) -> None:
        self.parameters[p.name] = p

    def merge(self, other: CalibrationResult) -> CalibrationResult:
        """This result with other's parameters added (other wins); serials must agree."""
        if other.serial != self.serial:
            raise CalibrationError(
                f"cannot merge calibrations of chip serial {other.serial:#x} into one of "
                f"serial {self.serial:#x}")
        out = CalibrationResult(self.serial, other.targets, dict(self.parameters),
                                self.software_version, self.created, self.seconds + other.seconds)
        out.parameters.update(other.parameters)
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """{name: {std_before, std_after, ratio, unit}} of every parameter with a spread."""
        return {n: p.summary() for n, p in self.parameters.items() if n != "refractory"}

    # ------------------------------------------------------------------ config
    def apply(self, config: ChipConfig) -> ChipConfig:
        """Write the calibrated codes into config (in place; returned for chaining)."""
        caps = config.neuron_capmem
        for name, p in self.parameters.items():
            cell = CELLS[name]
            codes = np.asarray(p.codes, np.int64)
            if cell == "CADC_OFFSET":
                config.cadc.offsets = codes
            elif cell == "REFRACTORY":
                config.neurons.refractory_count = codes & 0xFF
                config.neurons.refractory_clock = (codes >> 8) & 0xF
            else:
                caps[NeuronCell[cell]] = codes
        if any(CELLS[n].startswith("I_BIAS_SYN") and "GM" in CELLS[n] for n in self.parameters):
            config.global_capmem[GlobalCell.I_BIAS_SYNAPSE_DAC] = self.targets.synapse_dac
        return config

    def check_serial(self, serial: int, *, force: bool = False, source: str = "calibration"
                     ) -> None:
        """CalibrationError naming both serials when this calibration belongs to another chip."""
        if int(serial) != int(self.serial) and not force:
            raise CalibrationError(
                f"{source} was made for chip serial {self.serial} (0x{self.serial:016X}), this "
                f"board's chip is serial {int(serial)} (0x{int(serial):016X}); every chip has its "
                "own fixed-pattern noise: calibrate this board, or pass force=True / --force")

    def apply_to_board(self, board: Any, config: ChipConfig | None = None, *,
                       force: bool = False) -> ChipConfig:
        """Apply to config (default: the config the host believes the board holds, else the
        reset config) and write it to the board as a diff; returns the written config."""
        from hostdriver.chip import believed

        self.check_serial(board.info.serial, force=force)
        cfg = (config.copy() if config is not None else believed(board) or ChipConfig())
        self.apply(cfg)
        cfg.write(board)
        return cfg
