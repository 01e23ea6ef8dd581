"""Calibration files: versioned JSON, one chip, written atomically, checked on load.

Layout (schema 1, docs/calibration.md):

    {"format": "strobe-calibration", "schema_version": 1,
     "serial": 1, "serial_hex": "0000000000000001",
     "software_version": "0.1.0", "created": "2026-01-01T12:00:00Z", "created_unix": 1767268800.0,
     "seconds": 23.4,
     "targets": {"leak": 80.0, ..., "tau_mem": [512 floats] or 6.0, ...},
     "parameters": {
        "leak": {"cell": "V_LEAK", "unit": "LSB", "physical_unit": "mV", "physical_scale": 3.0,
                 "codes": [512 ints], "target": [512], "before": [512], "after": [512],
                 "residual": [512], "std_before": .., "std_after": .., "ratio": ..,
                 "runs": 5, "seconds": 0.8, "clamped": [], "note": ""},
        "cadc_offset": {... "codes": the 512 signed CADC offsets ...},
        "refractory": {... "codes": count | clock << 8 ...}, ...},
     "checksum": "sha256 of the canonical JSON of everything above"}

NaN (a neuron without a measurement) is written as null. The checksum makes truncation, bit rot
and hand edits a clear CalibrationError instead of a silently different chip setup; every code is
range-checked on load as well.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from hostdriver.atomic import write_atomic
from protocol.addressmap import CAPMEM_MAX, N_NEURONS
from protocol.errors import CalibrationError, ConfigError

from .result import CELLS, CalibrationResult, ParameterResult
from .targets import PARAMETERS, Targets

__all__ = ["FORMAT", "SCHEMA_VERSION", "dumps", "load", "loads", "save"]

FORMAT = "strobe-calibration"
SCHEMA_VERSION = 1

_CODE_RANGE = {"CADC_OFFSET": (-128, 127), "REFRACTORY": (0, 0xFFF)}


def _floats(a: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(x) else float(x) for x in np.asarray(a, np.float64)]


def _body(result: CalibrationResult) -> dict[str, Any]:
    params = {}
    for name, p in result.parameters.items():
        s = p.summary()
        params[name] = {
            "cell": CELLS[name], "unit": p.unit, "physical_unit": p.physical_unit,
            "physical_scale": p.physical_scale,
            "codes": [int(x) for x in np.asarray(p.codes, np.int64)],
            "target": _floats(p.target), "before": _floats(p.before), "after": _floats(p.after),
            "residual": _floats(p.residual), "std_before": s["std_before"],
            "std_after": s["std_after"], "ratio": s["ratio"], "runs": int(p.runs),
            "seconds": float(p.seconds), "clamped": [int(x) for x in p.clamped],
            "note": p.note,
        }
    return {
        "format": FORMAT, "schema_version": SCHEMA_VERSION, "serial": int(result.serial),
        "serial_hex": f"{int(result.serial):016X}", "software_version": result.software_version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.created)),
        "created_unix": float(result.created), "seconds": float(result.seconds),
        "targets": result.targets.to_dict(), "parameters": params,
    }


def _checksum(body: dict[str, Any]) -> str:
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def _render(value: Any, indent: int) -> str:
    """JSON with objects indented and every array on one line (512 codes = one line)."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        pad = " " * (indent + 1)
        items = [f"{pad}{json.dumps(k)}: {_render(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    return json.dumps(value, allow_nan=False)


def dumps(result: CalibrationResult) -> str:
    body = _body(result)
    body["checksum"] = _checksum(body)
    return _render(body, 0) + "\n"


def save(result: CalibrationResult, path: str | os.PathLike[str]) -> Path:
    """Write result to path atomically (temp file in the same directory, fsync, os.replace): a
    crash or a disconnected board never leaves a partial file behind."""
    return write_atomic(path, dumps(result).encode())


def _bad(source: str, what: str) -> CalibrationError:
    return CalibrationError(f"{source}: corrupted or invalid calibration file: {what}")


def _array(source: str, where: str, value: Any, *, integer: bool = False) -> np.ndarray:
    if not isinstance(value, list) or len(value) != N_NEURONS:
        n = len(value) if isinstance(value, list) else type(value).__name__
        raise _bad(source, f"{where} must be a list of {N_NEURONS} numbers, got {n}")
    if integer:
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            raise _bad(source, f"{where} must hold integers")
        return np.asarray(value, np.int64)
    if not all(x is None or (isinstance(x, int | float) and not isinstance(x, bool))
               for x in value):
        raise _bad(source, f"{where} must hold numbers or null")
    return np.asarray([np.nan if x is None else x for x in value], np.float64)


class _NonFinite(ValueError):
    """A number the file format never writes (NaN, infinity, or one that overflows a float)."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"number {text[:20]!r} is not finite")
    return value


def _no_constant(name: str) -> float:
    raise _NonFinite(f"{name} is not a valid number in a calibration file")


def loads(text: str | bytes, *, source: str = "<string>") -> CalibrationResult:
    """Parse a calibration file; CalibrationError saying what is wrong where."""
    try:
        doc = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _bad(source, f"not valid JSON ({e})") from None
    except _NonFinite as e:
        raise _bad(source, str(e)) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise _bad(source, f"format {got!r}, expected {FORMAT!r}")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise _bad(source, f"schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise CalibrationError(f"{source}: calibration schema_version {version} is newer than "
                               f"this software reads ({SCHEMA_VERSION}); upgrade strobe")
    want = doc.pop("checksum", None)
    if want != _checksum(doc):
        raise _bad(source, "checksum mismatch (the file was truncated, damaged or edited)")
    serial = doc.get("serial")
    if not isinstance(serial, int) or not 0 <= serial < 1 << 64:
        raise _bad(source, f"serial {serial!r}")
    try:
        targets = Targets.from_dict(doc.get("targets"), source=f"{source}: targets")
    except ConfigError as e:
        raise _bad(source, str(e)) from None
    params = doc.get("parameters")
    if not isinstance(params, dict):
        raise _bad(source, "missing 'parameters' object")
    result = CalibrationResult(serial, targets, software_version=str(doc.get("software_version")),
                               created=float(doc.get("created_unix", 0.0)),
                               seconds=float(doc.get("seconds", 0.0)))
    for name, p in params.items():
        if name not in PARAMETERS:
            raise _bad(source, f"unknown parameter {name!r}")
        if not isinstance(p, dict) or p.get("cell") != CELLS[name]:
            raise _bad(source, f"parameters.{name}.cell must be {CELLS[name]!r}")
        where = f"parameters.{name}"
        codes = _array(source, f"{where}.codes", p.get("codes"), integer=True)
        lo, hi = _CODE_RANGE.get(CELLS[name], (0, CAPMEM_MAX))
        if codes.min() < lo or codes.max() > hi:
            i = int(np.flatnonzero((codes < lo) | (codes > hi))[0])
            raise _bad(source, f"{where}.codes[{i}] = {int(codes[i])} outside {lo}..{hi}")
        clamped = p.get("clamped", [])
        if not isinstance(clamped, list) or not all(isinstance(x, int) for x in clamped):
            raise _bad(source, f"{where}.clamped must be a list of neuron indices")
        result.add(ParameterResult(
            name, _array(source, f"{where}.target", p.get("target")), codes,
            _array(source, f"{where}.before", p.get("before")),
            _array(source, f"{where}.after", p.get("after")), runs=int(p.get("runs", 0)),
            seconds=float(p.get("seconds", 0.0)), clamped=np.asarray(clamped, np.int64),
            note=str(p.get("note", ""))))
    return result


def load(path: str | os.PathLike[str]) -> CalibrationResult:
    """Read a calibration file (CalibrationError if unreadable, corrupted or invalid)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CalibrationError(f"{p}: cannot read calibration file: {e.strerror}") from None
    return loads(data, source=str(p))
