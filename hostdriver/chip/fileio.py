"""Chip configuration files: readable, versioned JSON, written atomically.

Layout (schema 1; docs/chip.md, "Configuration files"):

    {"format": "strobe-chip-config", "schema_version": 1, "software_version": "0.1.0",
     "note": "...",
     "containers": {
       "neuron_capmem": {"V_LEAK": [512 codes], ..., "CELL23": [512 codes]},
       "global_capmem": {"I_BIAS_SYNAPSE_DAC": [4 codes], ..., "CELL15": [4 codes]},
       "neurons": {"enable_fire": [512 x 0/1], ..., "output_label": [512], ...},
       "synapses": {"weights": [[[...256...] x 256] x 2], "addresses": ...},
       "drivers": {"row_modes": [[256] x 2], "enable": [[128] x 2]},
       "crossbar": {"enable": [[9] x 16], "mask": ..., "target": ...},
       "cadc": {"enable": 0, "offsets": [512 signed]},
       "madc": {"enable": 0, "neuron": 0, "source": 0, "period": 0},
       "background": {"enable": [8], "poisson": [8], "label": [8], "period": [8], "seed": [8]}}}

Arrays are nested lists with one innermost row per line. A path ending in ".gz" is gzip-compressed.
Loading checks format, schema version, every container and field (missing or unknown ones are
refused), shapes and ranges: a ConfigError names the file and the field.
"""

from __future__ import annotations

import gzip
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from hostdriver.atomic import write_atomic
from protocol.errors import ConfigError

from .config import CONTAINERS, ChipConfig
from .containers import Container, GlobalCapMem, NeuronCapMem
from .coordinates import N_MAPPED_GLOBAL_CELLS, N_MAPPED_NEURON_CELLS, cell_name, global_cell_name
from .values import config_error

__all__ = ["FORMAT", "SCHEMA_VERSION", "load_config", "save_config"]

FORMAT = "strobe-chip-config"
SCHEMA_VERSION = 1


def _software_version() -> str:
    try:
        return metadata.version("strobe")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _render(arr: np.ndarray, indent: int) -> str:
    """Nested JSON list of an int array, one innermost row per line."""
    if arr.ndim == 0:
        return str(int(arr))
    if arr.ndim == 1:
        return "[" + ", ".join(str(int(x)) for x in arr.tolist()) + "]"
    pad = " " * (indent + 1)
    inner = (",\n" + pad).join(_render(a, indent + 1) for a in arr)
    return "[" + inner + "]"


def _fields(name: str, c: Container) -> dict[str, np.ndarray]:
    if isinstance(c, NeuronCapMem):
        return {cell_name(i): c.codes[:, i] for i in range(N_MAPPED_NEURON_CELLS)}
    if isinstance(c, GlobalCapMem):
        return {global_cell_name(i): c.codes[:, i] for i in range(N_MAPPED_GLOBAL_CELLS)}
    return {k: v.astype(np.int64) for k, v in c.arrays().items()}


def dumps(config: ChipConfig, *, note: str | None = None) -> str:
    """The file text of config (validated first)."""
    config.validate()
    head = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "software_version": _software_version(),
        "note": note,
    }
    lines = ["{"]
    lines += [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append('  "containers": {')
    blocks = []
    for name, c in config.containers().items():
        items = []
        for key, arr in _fields(name, c).items():
            items.append(f"      {json.dumps(key)}: {_render(np.asarray(arr), 6)}")
        blocks.append(f"    {json.dumps(name)}: {{\n" + ",\n".join(items) + "\n    }")
    lines.append(",\n".join(blocks))
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_config(
    config: ChipConfig, path: str | os.PathLike[str], *, note: str | None = None
) -> None:
    """Write config to path atomically (temp file in the same directory + os.replace)."""
    path = Path(path)
    data = dumps(config, note=note).encode()
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    write_atomic(path, data)


def loads(text: str | bytes, *, source: str = "<string>") -> ChipConfig:
    """Parse file text; ConfigError naming source and the offending field."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise config_error(f"{source}: not a chip config file (invalid JSON: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise config_error(f"{source}: not a chip config file (format {got!r}, want {FORMAT!r})")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise config_error(f"{source}: invalid schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise config_error(
            f"{source}: schema_version {version} is newer than this software supports "
            f"({SCHEMA_VERSION}); upgrade strobe"
        )
    blocks = doc.get("containers")
    if not isinstance(blocks, dict):
        raise config_error(f"{source}: missing 'containers' object")
    unknown = sorted(set(blocks) - set(CONTAINERS))
    missing = [n for n in CONTAINERS if n not in blocks]
    if unknown or missing:
        raise config_error(f"{source}: containers missing {missing}, unknown {unknown}")
    config = ChipConfig()
    for name, c in config.containers().items():
        _load_container(source, name, c, blocks[name])
    return config


def _load_container(source: str, name: str, c: Container, data: Any) -> None:
    if not isinstance(data, dict):
        raise config_error(f"{source}: containers.{name} must be an object")
    expect = _fields(name, c)
    unknown = sorted(set(data) - set(expect))
    missing = [k for k in expect if k not in data]
    if unknown or missing:
        raise config_error(
            f"{source}: containers.{name}: fields missing {missing}, unknown {unknown}"
        )
    for key, ref in expect.items():
        try:
            try:
                arr = np.asarray(data[key])
            except ValueError:
                raise config_error(f"ragged nested lists, expected shape {ref.shape}") from None
            if arr.dtype == object or arr.shape != ref.shape:
                raise config_error(f"shape {arr.shape}, expected {ref.shape}")
            if isinstance(c, NeuronCapMem | GlobalCapMem):
                c[_cell_index(c, key)] = arr
            else:
                setattr(c, key, arr)
        except ConfigError as e:
            raise config_error(f"{source}: containers.{name}.{key}: {e}") from None
    try:
        c.validate()
    except ConfigError as e:
        raise config_error(f"{source}: containers.{name}: {e}") from None


def _cell_index(c: Container, key: str) -> int:
    names = (
        [cell_name(i) for i in range(N_MAPPED_NEURON_CELLS)]
        if isinstance(c, NeuronCapMem)
        else [global_cell_name(i) for i in range(N_MAPPED_GLOBAL_CELLS)]
    )
    return names.index(key)


def load_config(path: str | os.PathLike[str]) -> ChipConfig:
    """Read a file written by save_config (gzip if it ends in .gz)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise config_error(f"{path}: cannot read chip config file: {e.strerror}") from None
    if path.suffix == ".gz" or data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise config_error(f"{path}: corrupt gzip chip config file: {e}") from None
    return loads(data, source=str(path))
