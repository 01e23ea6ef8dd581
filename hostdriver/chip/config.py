"""ChipConfig: the whole chip's configuration as arrays, written as a minimal diff.

One object holds every read-write chip register (CapMem, neuron config, synapse SRAM, drivers,
crossbar, CADC, MADC, background sources): 79,850 words. It encodes to (addresses, words) in a few
milliseconds, diffs against another config word by word, writes the diff to a board as one
program, reads the whole chip back with one program and verifies it. System registers (serial,
scratch) and the read-only spike counters are not configuration and are not included.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from . import state
from .containers import (
    BackgroundSources,
    CADCConfig,
    Container,
    Crossbar,
    GlobalCapMem,
    MADCConfig,
    NeuronCapMem,
    NeuronConfigs,
    SynapseArray,
    SynapseDrivers,
)
from .coordinates import describe_address
from .values import config_error

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["BELIEVED", "CONTAINERS", "ChipConfig"]

# Attribute name -> container class, in ascending address order (blocks 1..0x0B).
CONTAINERS: dict[str, type[Container]] = {
    "neuron_capmem": NeuronCapMem,
    "global_capmem": GlobalCapMem,
    "neurons": NeuronConfigs,
    "synapses": SynapseArray,
    "drivers": SynapseDrivers,
    "crossbar": Crossbar,
    "cadc": CADCConfig,
    "madc": MADCConfig,
    "background": BackgroundSources,
}


class _Believed:
    def __repr__(self) -> str:
        return "BELIEVED"


BELIEVED: Any = _Believed()  # default `previous`: what the host believes the board holds


@cache
def _layout() -> tuple[np.ndarray, dict[str, slice]]:
    parts, slices, at = [], {}, 0
    for name, cls in CONTAINERS.items():
        a = cls.register_addresses()
        parts.append(a)
        slices[name] = slice(at, at + a.size)
        at += a.size
    addrs = np.concatenate(parts)
    assert bool(np.all(addrs[1:] > addrs[:-1])), "container addresses must ascend"
    addrs.flags.writeable = False
    return addrs, slices


class ChipConfig:
    """The chip's whole configuration. Attributes (containers, see containers.py):

    neuron_capmem [512, 24] codes, global_capmem [4, 16] codes, neurons (NeuronConfigs: [512]
    enables, readout, label, refractory), synapses (weights / addresses [2, 256, 256]), drivers
    (row_modes [2, 256], enable [2, 128]), crossbar (enable / mask / target [16, 9]), cadc (enable,
    offsets [512]), madc (enable, neuron, source, period), background ([8] sources).

    ``ChipConfig()`` is the reset state (every register 0).
    """

    neuron_capmem: NeuronCapMem
    global_capmem: GlobalCapMem
    neurons: NeuronConfigs
    synapses: SynapseArray
    drivers: SynapseDrivers
    crossbar: Crossbar
    cadc: CADCConfig
    madc: MADCConfig
    background: BackgroundSources

    def __init__(self, **containers: Container) -> None:
        for name, cls in CONTAINERS.items():
            object.__setattr__(self, name, cls())
        for name, value in containers.items():
            setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        cls = CONTAINERS.get(name)
        if cls is None:
            raise AttributeError(f"ChipConfig has no container {name!r} ({', '.join(CONTAINERS)})")
        if type(value) is not cls:
            raise TypeError(f"ChipConfig.{name} must be a {cls.__name__}, got {type(value)!r}")
        object.__setattr__(self, name, value)

    def containers(self) -> dict[str, Container]:
        return {name: getattr(self, name) for name in CONTAINERS}

    # ------------------------------------------------------------------ words
    @staticmethod
    def register_addresses() -> np.ndarray:
        """u32 addresses of every configuration register, ascending (read-only array)."""
        return _layout()[0]

    @staticmethod
    def is_config_address(addrs: object) -> np.ndarray:
        """bool per address: is it one of register_addresses()?"""
        all_addrs = _layout()[0]
        a = np.asarray(addrs, np.int64).reshape(-1)
        pos = np.clip(np.searchsorted(all_addrs, a), 0, all_addrs.size - 1)
        return all_addrs[pos] == a

    def validate(self) -> None:
        """ConfigError naming the first out-of-range value, its coordinate and the valid range."""
        for c in self.containers().values():
            c.validate()

    def to_words(self) -> tuple[np.ndarray, np.ndarray]:
        """(addresses u32, words u32) of every configuration register, ascending; validates."""
        return _layout()[0].copy(), self._words()

    def _words(self) -> np.ndarray:
        return np.concatenate([c.encode() for c in self.containers().values()])

    @classmethod
    def from_words(
        cls, addrs: object, values: object, base: ChipConfig | None = None
    ) -> ChipConfig:
        """base (default: reset) with words written at addrs; a later duplicate address wins.
        An address that is not a configuration register raises ConfigError naming it."""
        all_addrs, slices = _layout()
        a = np.asarray(addrs, np.int64).reshape(-1)
        v = np.asarray(values, np.int64).reshape(-1)
        if a.shape != v.shape:
            raise config_error(f"{a.size} addresses but {v.size} values")
        if v.size and (v.min() < 0 or v.max() > 0xFFFFFFFF):
            bad = int(np.flatnonzero((v < 0) | (v > 0xFFFFFFFF))[0])
            raise config_error(
                f"word {int(v[bad])} for {describe_address(int(a[bad]))} is not unsigned 32-bit"
            )
        known = cls.is_config_address(a)
        if not known.all():
            bad = int(a[np.argmin(known)])
            raise config_error(
                f"{describe_address(bad)} is not a chip configuration register "
                f"({int((~known).sum())} such addresses)"
            )
        words = (base if base is not None else cls())._words().astype(np.int64)
        words[np.searchsorted(all_addrs, a)] = v  # numpy: the last of duplicate indices wins
        out = cls.__new__(cls)
        for name, c in CONTAINERS.items():
            object.__setattr__(out, name, c.decode(words[slices[name]]))
        return out

    def diff(self, previous: ChipConfig | None) -> tuple[np.ndarray, np.ndarray]:
        """(addresses, words of self) that differ from previous: what to write to turn a chip
        holding previous into self. previous None: every word."""
        addrs, words = self.to_words()
        if previous is None:
            return addrs, words
        changed = words != previous._words()
        return addrs[changed], words[changed]

    def differences(self, other: ChipConfig) -> list[str]:
        """Human lines 'address name: self 0x.. other 0x..' for every differing word."""
        addrs, mine = self.to_words()
        theirs = other._words()
        idx = np.flatnonzero(mine != theirs)
        return [
            f"{describe_address(int(addrs[i]))}: 0x{int(mine[i]):08x} vs 0x{int(theirs[i]):08x}"
            for i in idx
        ]

    def copy(self) -> ChipConfig:
        out = ChipConfig.__new__(ChipConfig)
        for name in CONTAINERS:
            object.__setattr__(out, name, getattr(self, name).copy())
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChipConfig):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in CONTAINERS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        syn = self.synapses
        return (
            f"ChipConfig(spiking neurons={int(self.neurons.enable_fire.sum())}, "
            f"nonzero weights={int(np.count_nonzero(syn.weights))}, "
            f"enabled drivers={int(self.drivers.enable.sum())}, "
            f"crossbar nodes={int(self.crossbar.enable.sum())})"
        )

    # ------------------------------------------------------------------ board I/O
    def write(self, board: Any, previous: Any = BELIEVED, *, timeout: float | None = None) -> int:
        """Write this config to board as one program; returns the number of register words written.

        previous: the config the board holds (only differing words are written); BELIEVED (the
        default) uses what the host believes this board object holds, or writes every word when
        that is unknown; None writes every word. Afterwards the belief is this config.
        """
        from hostdriver.program import Program

        if previous is BELIEVED:
            previous = state.believed(board)
        elif previous is not None and not isinstance(previous, ChipConfig):
            raise TypeError(f"previous must be a ChipConfig, None or BELIEVED, got {previous!r}")
        program = Program()
        n = program.write_config(self, previous)
        if n:
            program.run(board, timeout=timeout)
        else:
            self.validate()
            state.remember(board, self)
        return n

    @classmethod
    def read(cls, board: Any, *, timeout: float | None = None) -> ChipConfig:
        """Read every configuration register of board (one program of READ blocks)."""
        from hostdriver.program import Program

        program = Program()
        ticket = program.read_config()
        return program.run(board, timeout=timeout)[ticket]

    def verify(self, board: Any, *, timeout: float | None = None) -> None:
        """Read board back; ConfigError naming the first differing addresses if it differs."""
        held = ChipConfig.read(board, timeout=timeout)
        addrs, mine = self.to_words()
        theirs = held._words()
        idx = np.flatnonzero(mine != theirs)
        if idx.size:
            lines = [
                f"{describe_address(int(addrs[i]))}: expected 0x{int(mine[i]):08x}, "
                f"board holds 0x{int(theirs[i]):08x}"
                for i in idx[:8]
            ]
            more = f"\n  ... and {idx.size - 8} more" if idx.size > 8 else ""
            err = config_error(
                f"board config differs from the expected config in {idx.size} words:\n  "
                + "\n  ".join(lines)
                + more
            )
            err.addresses = addrs[idx]
            raise err

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str], *, note: str | None = None) -> None:
        """Write a readable, versioned JSON file atomically (see fileio.py)."""
        from .fileio import save_config

        save_config(self, path, note=note)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ChipConfig:
        from .fileio import load_config

        return load_config(path)

    # ------------------------------------------------------------------ helpers
    def label_map(self) -> np.ndarray:
        """[16384] int32: neuron circuit emitting each label (spike_output on), -1 for none.
        Where several circuits share a label the lowest index wins."""
        out = np.full(1 << 14, -1, np.int32)
        n = np.flatnonzero(self.neurons.spike_output)[::-1]
        out[self.neurons.output_label[n]] = n  # reversed: the lowest index is written last
        return out

    @staticmethod
    def read_runs() -> Sequence[tuple[int, int]]:
        """(first address, count) of the contiguous register runs, ascending (for READ blocks)."""
        return _runs()


@cache
def _runs() -> tuple[tuple[int, int], ...]:
    addrs = _layout()[0].astype(np.int64)
    breaks = np.flatnonzero(np.diff(addrs) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [addrs.size]])
    return tuple((int(addrs[s]), int(e - s)) for s, e in zip(starts, ends, strict=True))
