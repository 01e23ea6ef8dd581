"""Containers: *what* the chip's registers hold, as numpy arrays over the whole chip.

Each container covers one kind of register for every coordinate at once (all 512 neurons, all
131,072 synapses), knows its register addresses (`register_addresses()`, ascending), encodes
itself into 32-bit words (`encode()`, aligned with the addresses) and decodes from them
(`decode(words)`), vectorised. Fields are plain numpy arrays you may slice and assign
(`caps.codes[:, cell] = x`); assigning a whole field (`syn.weights = w`) checks the range at once,
element writes are checked by `validate()`, which `encode()` calls. Single items read and write
through coordinates (`neurons[NeuronCoord(3)] = NeuronConfig(...)`,
`synapses[SynapseCoord(0, 1, 2)]`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum
from functools import cache
from typing import Any, ClassVar

import numpy as np

from protocol.addressmap import (
    BLOCK_SHIFT,
    CROSSBAR_ENABLE_BIT,
    CROSSBAR_MASK_SHIFT,
    N_BACKGROUND,
    N_COLUMNS,
    N_CROSSBAR_INPUTS,
    N_DRIVERS,
    N_HEMISPHERES,
    N_NEURONS,
    N_QUADRANTS,
    N_ROWS,
    BackgroundWords,
    Block,
    DriverBits,
    ReadoutSource,
    RowMode,
)
from protocol.addressmap import NeuronConfigBits as NB
from protocol.addressmap import SynapseBits as SB

from .coordinates import (
    N_BACKGROUND_WORDS,
    N_CROSSBAR_MAPPED_OUTPUTS,
    N_MAPPED_GLOBAL_CELLS,
    N_MAPPED_NEURON_CELLS,
    BackgroundSourceCoord,
    CrossbarNodeCoord,
    GlobalCellCoord,
    NeuronCellCoord,
    NeuronCoord,
    SynapseCoord,
    SynapseRowCoord,
    cell_name,
    global_cell_name,
)
from .values import (
    BackgroundPeriod,
    CADCOffset,
    CapMemValue,
    Label,
    LabelMask,
    MADCPeriod,
    NeuronIndex,
    RangedInt,
    RefractoryClock,
    RefractoryCount,
    Seed,
    SynapseAddress,
    Weight,
    check_enum_array,
    config_error,
    enum_value,
)

__all__ = [
    "BackgroundSource",
    "BackgroundSources",
    "CADCConfig",
    "Container",
    "Crossbar",
    "CrossbarNode",
    "GlobalCapMem",
    "MADCConfig",
    "NeuronCapMem",
    "NeuronConfig",
    "NeuronConfigs",
    "Synapse",
    "SynapseArray",
    "SynapseDrivers",
]

Kind = type[RangedInt] | type[IntEnum] | type[bool]
Describe = Callable[[tuple[int, ...]], str]


def _addr(block: Block, offsets: np.ndarray) -> np.ndarray:
    return ((int(block) << BLOCK_SHIFT) | np.asarray(offsets, np.int64)).astype(np.uint32)


def _u32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.int64).astype(np.uint32)


@dataclass(frozen=True)
class Field:
    """One array of a container: its shape, value kind (range), storage dtype and a function that
    names the coordinate of an element for error messages."""

    shape: tuple[int, ...]
    kind: Kind
    describe: Describe
    dtype: Any = np.int32

    def coerce(self, value: object) -> np.ndarray:
        """value broadcast to shape, range-checked; ConfigError names the first offender."""
        try:
            arr = np.broadcast_to(np.asarray(value), self.shape)
        except ValueError:
            raise config_error(
                f"shape {np.shape(value)} does not fit {self.shape} for {self.describe(())}"
            ) from None
        return self.check(arr).astype(self.dtype)

    def check(self, arr: np.ndarray) -> np.ndarray:
        if self.kind is bool:
            a = np.asarray(arr)
            if a.dtype != bool and not np.isin(a, (0, 1)).all():
                raise config_error(f"{self.describe(())} must be booleans (0/1)")
            return a.astype(bool)
        if issubclass(self.kind, RangedInt):
            return self.kind.check_array(arr, self.describe)
        return check_enum_array(self.kind, arr, self.describe)


class _FieldAttr:
    """Descriptor: reading gives the stored array (or a Python scalar for 0-d fields); assigning
    broadcasts and range-checks into the stored array."""

    def __init__(self, name: str, spec: Field) -> None:
        self.name, self.spec = name, spec

    def __get__(self, obj: Container | None, owner: type) -> Any:
        if obj is None:
            return self
        arr = obj._arrays[self.name]
        if arr.ndim == 0:
            v = arr[()]
            return bool(v) if arr.dtype == bool else int(v)
        return arr

    def __set__(self, obj: Container, value: object) -> None:
        obj._arrays[self.name][...] = self.spec.coerce(value)


class Container:
    """Base of the array containers: fields from FIELDS, addresses, encode/decode, equality."""

    FIELDS: ClassVar[dict[str, Field]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        for name, spec in cls.FIELDS.items():
            setattr(cls, name, _FieldAttr(name, spec))

    def __init__(self, **values: object) -> None:
        self._arrays: dict[str, np.ndarray] = {
            name: np.zeros(spec.shape, spec.dtype) for name, spec in self.FIELDS.items()
        }
        for name, value in values.items():
            if name not in self.FIELDS:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            setattr(self, name, value)

    # -- to be provided by subclasses
    @classmethod
    def register_addresses(cls) -> np.ndarray:
        """u32 register addresses of this container, ascending (read-only cached array)."""
        raise NotImplementedError

    def _encode(self) -> np.ndarray:
        raise NotImplementedError

    def _decode(self, words: np.ndarray) -> None:
        raise NotImplementedError

    def _cross_check(self) -> None:
        """Checks that span fields (e.g. period 0 only while disabled)."""

    # -- generic
    def validate(self) -> None:
        """ConfigError naming the first out-of-range value, its coordinate and the valid range."""
        for name, spec in self.FIELDS.items():
            spec.check(self._arrays[name])
        self._cross_check()

    def encode(self) -> np.ndarray:
        """u32 words aligned with register_addresses(); validates first."""
        self.validate()
        words = self._encode()
        assert words.shape == self.register_addresses().shape
        return words

    @classmethod
    def decode(cls, words: object) -> Container:
        """The container whose encode() gives words (one per register address, in order)."""
        w = np.asarray(words, np.int64).reshape(-1)
        n = cls.register_addresses().size
        if w.size != n:
            raise config_error(f"{cls.__name__} decodes {n} words, got {w.size}")
        if w.size and (w.min() < 0 or w.max() > 0xFFFFFFFF):
            raise config_error(f"{cls.__name__}: words must be unsigned 32-bit")
        obj = cls()
        obj._decode(w.astype(np.uint32).astype(np.int64))
        return obj

    def copy(self) -> Container:
        new = type(self)()
        for name, arr in self._arrays.items():
            new._arrays[name][...] = arr
        return new

    def arrays(self) -> dict[str, np.ndarray]:
        """The stored field arrays by name (the live arrays, not copies)."""
        return dict(self._arrays)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(np.array_equal(a, other._arrays[k]) for k, a in self._arrays.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = []
        for name, arr in self._arrays.items():
            if arr.ndim == 0:
                parts.append(f"{name}={arr[()]!r}")
            else:
                parts.append(f"{name}={arr.shape} nonzero={int(np.count_nonzero(arr))}")
        return f"{type(self).__name__}({', '.join(parts)})"


# ============================================================================ CapMem
def _neuron_cell_where(idx: tuple[int, ...]) -> str:
    return f"NeuronCell.{cell_name(idx[1])} of neuron {idx[0]}" if idx else "neuron CapMem codes"


def _global_cell_where(idx: tuple[int, ...]) -> str:
    if not idx:
        return "global CapMem codes"
    return f"GlobalCell.{global_cell_name(idx[1])} of quadrant {idx[0]}"


class NeuronCapMem(Container):
    """Per-circuit CapMem codes [512 neurons, 24 cells]; index by NeuronCell for a [512] column.

    ``caps[NeuronCell.V_LEAK] = codes`` (scalar or [512]) range-checks and names neuron + cell.
    """

    FIELDS = {"codes": Field((N_NEURONS, N_MAPPED_NEURON_CELLS), CapMemValue, _neuron_cell_where)}
    codes: np.ndarray

    @classmethod
    @cache
    def register_addresses(cls) -> np.ndarray:
        n, c = np.meshgrid(np.arange(N_NEURONS), np.arange(N_MAPPED_NEURON_CELLS), indexing="ij")
        a = _addr(Block.CAPMEM_NEURON, (n << 5 | c).reshape(-1))
        a.flags.writeable = False
        return a

    def _encode(self) -> np.ndarray:
        return _u32(self.codes.reshape(-1))

    def _decode(self, words: np.ndarray) -> None:
        self.codes[...] = (words & 0x3FF).reshape(self.codes.shape)

    def __getitem__(self, key: int | NeuronCellCoord) -> Any:
        if isinstance(key, NeuronCellCoord):
            return CapMemValue(int(self.codes[key.neuron, key.cell]))
        return self.codes[:, _cell(key)]

    def __setitem__(self, key: int | NeuronCellCoord, value: object) -> None:
        if isinstance(key, NeuronCellCoord):
            self.codes[key.neuron, key.cell] = CapMemValue(value, str(key))
            return
        c = _cell(key)
        col = np.broadcast_to(np.asarray(value), (N_NEURONS,))
        self.codes[:, c] = CapMemValue.check_array(
            col, lambda i: _neuron_cell_where((i[0], c) if i else (0, c))
        )


def _cell(key: object) -> int:
    c = int(key)  # type: ignore[arg-type]
    if not 0 <= c < N_MAPPED_NEURON_CELLS:
        raise config_error(f"NeuronCell {c} out of range 0..{N_MAPPED_NEURON_CELLS - 1}")
    return c


class GlobalCapMem(Container):
    """Global CapMem codes [4 quadrants, 16 cells]; index by GlobalCell for a [4] column."""

    FIELDS = {"codes": Field((N_QUADRANTS, N_MAPPED_GLOBAL_CELLS), CapMemValue, _global_cell_where)}
    codes: np.ndarray

    @classmethod
    @cache
    def register_addresses(cls) -> np.ndarray:
        q, c = np.meshgrid(np.arange(N_QUADRANTS), np.arange(N_MAPPED_GLOBAL_CELLS), indexing="ij")
        a = _addr(Block.CAPMEM_GLOBAL, (q << 5 | c).reshape(-1))
        a.flags.writeable = False
        return a

    def _encode(self) -> np.ndarray:
        return _u32(self.codes.reshape(-1))

    def _decode(self, words: np.ndarray) -> None:
        self.codes[...] = (words & 0x3FF).reshape(self.codes.shape)

    def __getitem__(self, key: int | GlobalCellCoord) -> Any:
        if isinstance(key, GlobalCellCoord):
            return CapMemValue(int(self.codes[key.quadrant, key.cell]))
        return self.codes[:, GlobalCellCoord(0, key).cell]

    def __setitem__(self, key: int | GlobalCellCoord, value: object) -> None:
        if isinstance(key, GlobalCellCoord):
            self.codes[key.quadrant, key.cell] = CapMemValue(value, str(key))
            return
        c = GlobalCellCoord(0, key).cell
        col = np.broadcast_to(np.asarray(value), (N_QUADRANTS,))
        self.codes[:, c] = CapMemValue.check_array(
            col, lambda i: _global_cell_where((i[0], c) if i else (0, c))
        )


# ============================================================================ neuron config
def _neuron_where(field: str) -> Describe:
    return lambda i: f"NeuronConfig.{field} of neuron {i[0]}" if i else f"NeuronConfig.{field}"


_NEURON_BITS = {  # bool fields of word 0 and their bit
    "enable_fire": NB.ENABLE_FIRE,
    "enable_leak": NB.ENABLE_LEAK,
    "enable_syn_exc": NB.ENABLE_SYN_EXC,
    "enable_syn_inh": NB.ENABLE_SYN_INH,
    "enable_adaptation": NB.ENABLE_ADAPTATION,
    "enable_exponential": NB.ENABLE_EXPONENTIAL,
    "connect_other_hemisphere": NB.CONNECT_OTHER_HEMISPHERE,
    "spike_output": NB.SPIKE_OUTPUT,
    "enable_readout": NB.ENABLE_READOUT,
}


@dataclass(frozen=True)
class NeuronConfig:
    """Digital config of one neuron circuit (both NEURON_CONFIG words), range-checked."""

    enable_fire: bool = False
    enable_leak: bool = False
    enable_syn_exc: bool = False
    enable_syn_inh: bool = False
    enable_adaptation: bool = False
    enable_exponential: bool = False
    connect_other_hemisphere: bool = False
    spike_output: bool = False
    readout_source: ReadoutSource = ReadoutSource.MEMBRANE
    enable_readout: bool = False
    output_label: int = 0
    refractory_count: int = 0
    refractory_clock: int = 0

    def __post_init__(self) -> None:
        for name in _NEURON_BITS:
            object.__setattr__(self, name, bool(getattr(self, name)))
        rs = enum_value(ReadoutSource, self.readout_source, "NeuronConfig.readout_source")
        object.__setattr__(self, "readout_source", rs)
        for name, kind in (
            ("output_label", Label),
            ("refractory_count", RefractoryCount),
            ("refractory_clock", RefractoryClock),
        ):
            object.__setattr__(self, name, kind(getattr(self, name), f"NeuronConfig.{name}"))

    @property
    def refractory_ticks(self) -> int:
        """Refractory time in 8 ns ticks: count * 2**clock."""
        return self.refractory_count << self.refractory_clock

    def encode(self) -> tuple[int, int]:
        """(word0, word1) of this neuron."""
        block = NeuronConfigs()
        block[0] = self
        w = block.encode()
        return int(w[0]), int(w[1])

    @classmethod
    def decode(cls, word0: int, word1: int) -> NeuronConfig:
        words = np.zeros(2 * N_NEURONS, np.int64)
        words[:2] = word0, word1
        return NeuronConfigs.decode(words)[0]


class NeuronConfigs(Container):
    """NEURON_CONFIG of all 512 circuits as [512] arrays, one per NeuronConfig field."""

    FIELDS = {
        **{name: Field((N_NEURONS,), bool, _neuron_where(name), bool) for name in _NEURON_BITS},
        "readout_source": Field((N_NEURONS,), ReadoutSource, _neuron_where("readout_source")),
        "output_label": Field((N_NEURONS,), Label, _neuron_where("output_label")),
        "refractory_count": Field((N_NEURONS,), RefractoryCount, _neuron_where("refractory_count")),
        "refractory_clock": Field((N_NEURONS,), RefractoryClock, _neuron_where("refractory_clock")),
    }
    enable_fire: np.ndarray
    enable_leak: np.ndarray
    enable_syn_exc: np.ndarray
    enable_syn_inh: np.ndarray
    enable_adaptation: np.ndarray
    enable_exponential: np.ndarray
    connect_other_hemisphere: np.ndarray
    spike_output: np.ndarray
    readout_source: np.ndarray
    enable_readout: np.ndarray
    output_label: np.ndarray
    refractory_count: np.ndarray
    refractory_clock: np.ndarray

    @classmethod
    @cache
    def register_addresses(cls) -> np.ndarray:
        a = _addr(Block.NEURON_CONFIG, np.arange(2 * N_NEURONS))
        a.flags.writeable = False
        return a

    def _encode(self) -> np.ndarray:
        w0 = np.zeros(N_NEURONS, np.int64)
        for name, bit in _NEURON_BITS.items():
            w0 |= self._arrays[name].astype(np.int64) << bit
        w0 |= self.readout_source.astype(np.int64) << NB.READOUT_SOURCE_SHIFT
        w0 |= self.output_label.astype(np.int64) << NB.OUTPUT_LABEL_SHIFT
        w1 = self.refractory_count.astype(np.int64) << NB.REFRACTORY_COUNT_SHIFT
        w1 |= self.refractory_clock.astype(np.int64) << NB.REFRACTORY_CLOCK_SHIFT
        return _u32(np.stack([w0, w1], axis=1).reshape(-1))

    def _decode(self, words: np.ndarray) -> None:
        w0, w1 = words[0::2], words[1::2]
        for name, bit in _NEURON_BITS.items():
            self._arrays[name][...] = (w0 >> bit) & 1
        self.readout_source[...] = (w0 >> NB.READOUT_SOURCE_SHIFT) & NB.READOUT_SOURCE_MASK
        self.output_label[...] = (w0 >> NB.OUTPUT_LABEL_SHIFT) & NB.OUTPUT_LABEL_MASK
        self.refractory_count[...] = (w1 >> NB.REFRACTORY_COUNT_SHIFT) & NB.REFRACTORY_COUNT_MASK
        self.refractory_clock[...] = (w1 >> NB.REFRACTORY_CLOCK_SHIFT) & NB.REFRACTORY_CLOCK_MASK

    def __getitem__(self, key: int | NeuronCoord) -> NeuronConfig:
        n = key.index if isinstance(key, NeuronCoord) else NeuronCoord(key).index
        return NeuronConfig(**{name: self._arrays[name][n] for name in self.FIELDS})

    def __setitem__(self, key: int | NeuronCoord, value: NeuronConfig) -> None:
        n = key.index if isinstance(key, NeuronCoord) else NeuronCoord(key).index
        if not isinstance(value, NeuronConfig):
            raise TypeError(f"expected a NeuronConfig, got {type(value).__name__}")
        for f in fields(NeuronConfig):
            self._arrays[f.name][n] = getattr(value, f.name)

    def compartment_partner_mismatch(self) -> np.ndarray:
        """Columns (0..255) whose two circuits disagree on connect_other_hemisphere."""
        c = self.connect_other_hemisphere
        return np.flatnonzero(c[:N_COLUMNS] != c[N_COLUMNS:])


# ============================================================================ synapses
def _synapse_where(field: str) -> Describe:
    def where(i: tuple[int, ...]) -> str:
        if not i:
            return f"synapse {field}s"
        return f"synapse {field} of {SynapseCoord(*i)}"

    return where


@dataclass(frozen=True)
class Synapse:
    """One synapse: 6-bit weight and 6-bit address."""

    weight: int = 0
    address: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", Weight(self.weight, "Synapse.weight"))
        object.__setattr__(self, "address", SynapseAddress(self.address, "Synapse.address"))


_SYN_SHAPE = (N_HEMISPHERES, N_ROWS, N_COLUMNS)


class SynapseArray(Container):
    """Synapse SRAM of both hemispheres: weights and addresses [2, 256 rows, 256 columns].

    Packed two synapses per SYNAPSE word: even column in bits [15:0], odd in [31:16]; per half
    [5:0] weight, [13:8] address. encode/decode are pure numpy over all 131,072 synapses.
    """

    FIELDS = {
        "weights": Field(_SYN_SHAPE, Weight, _synapse_where("weight"), np.int16),
        "addresses": Field(_SYN_SHAPE, SynapseAddress, _synapse_where("address"), np.int16),
    }
    weights: np.ndarray
    addresses: np.ndarray  # the 6-bit synapse addresses (register addresses: register_addresses)

    @classmethod
    @cache
    def register_addresses(cls) -> np.ndarray:
        a = _addr(Block.SYNAPSE, np.arange(N_HEMISPHERES * N_ROWS * (N_COLUMNS // 2)))
        a.flags.writeable = False
        return a

    def _encode(self) -> np.ndarray:
        half = self.weights.astype(np.uint32) | (
            self.addresses.astype(np.uint32) << SB.ADDRESS_SHIFT
        )
        half = half.reshape(N_HEMISPHERES, N_ROWS, N_COLUMNS // 2, 2)
        return (half[..., 0] | (half[..., 1] << 16)).reshape(-1)

    def _decode(self, words: np.ndarray) -> None:
        w = words.reshape(N_HEMISPHERES, N_ROWS, N_COLUMNS // 2)
        halves = np.stack([w & 0xFFFF, w >> 16], axis=-1).reshape(_SYN_SHAPE)
        self.weights[...] = halves & SB.WEIGHT_MASK
        self.addresses[...] = (halves >> SB.ADDRESS_SHIFT) & SB.ADDRESS_MASK

    def __getitem__(self, key: SynapseCoord) -> Synapse:
        i = (key.hemisphere, key.row, key.column)
        return Synapse(int(self.weights[i]), int(self.addresses[i]))

    def __setitem__(self, key: SynapseCoord, value: Synapse) -> None:
        if not isinstance(value, Synapse):
            raise TypeError(f"expected a Synapse, got {type(value).__name__}")
        i = (key.hemisphere, key.row, key.column)
        self.weights[i] = value.weight
        self.addresses[i] = value.address


def _row_where(i: tuple[int, ...]) -> str:
    if not i:
        return "synapse row modes"
    return f"row mode of synapse row {i[1]} (hemisphere {i[0]}, driver {i[1] // 2})"


class SynapseDrivers(Container):
    """Synapse drivers: row mode per row [2, 256] (RowMode) and enable per driver [2, 128].

    DRIVER word of driver d: [1:0] mode of row 2d, [3:2] mode of row 2d+1, [4] enable.
    """

    FIELDS = {
        "row_modes": Field((N_HEMISPHERES, N_ROWS), RowMode, _row_where),
        "enable": Field(
            (N_HEMISPHERES, N_DRIVERS),
            bool,
            lambda i: f"enable of driver {i[1]} (hemisphere {i[0]})" if i else "driver enables",
            bool,
        ),
    }
    row_modes: np.ndarray
    enable: np.ndarray

    @classmethod
    @cache
    def register_addresses(cls) -> np.ndarray:
        a = _addr(Block.DRIVER, np.arange(N_HEMISPHERES * N_DRIVERS))
        a.flags.writeable = False
        return a

    def _encode(self) -> np.ndarray:
        m = self.row_modes.astype(np.int64).reshape(N_HEMISPHERES, N_DRIVERS, 2)
        w = m[..., 0] << DriverBits.ROW0_MODE_SHIFT | m[..., 1] << DriverBits.ROW1_MODE_SHIFT
        w |= self.enable.astype(np.int64) << DriverBits.ENABLE
        return _u32(w.reshape(-1))

    def _decode(self, words: np.ndarray) -> None:
        w = words.reshape(N_HEMISPHERES, N_DRIVERS)
        modes = np.stack(
            [(w >> DriverBits.ROW0_MODE_SHIFT) & 3, (w >> DriverBits.ROW1_MODE_SHIFT) & 3], axis=-1
        )
        self.row_modes[...] = modes.reshape(N_HEMISPHERES, N_ROWS)
        self.enable[...] = (w >> DriverBits.ENABLE) & 1

    def __getitem__(self, key: SynapseRowCoord) -> RowMode:
        return RowMode(int(self.row_modes[key.hemisphere, key.row]))

    def __setitem__(self, key: SynapseRowCoord, mode: object) -> None:
        self.row_modes[key.hemisphere, key.row] = enum_value(
            RowMode, mode, _row_where((key.hemisphere, key.row))
        )


# ============================================================================ crossbar
def _node_where(field: str) -> Describe:
    def where(i: tuple[int, ...]) -> str:
        return f"crossbar node {i[0]} -> {i[1]} {field}" if i else f"crossbar {field}"

    return where


_XBAR_SHAPE = (N_CROSSBAR_INPUTS, N_CROSSBAR_MAPPED_OUTPUTS)


@dataclass(frozen=True)
class CrossbarNode:
    """A crossbar node passes an event iff enable and (label & mask) == target."""

    enable: bool = False
    mask: int = 0
    target: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "enable", bool(self.enable))
        object.__setattr__(self, "mask", LabelMask(self.mask, "CrossbarNode.mask"))
        object.__setattr__(self, "target", Label(self.target, "CrossbarNode.target"))


class Crossbar(Container):
    """Routing crossbar nodes [16 inputs, 9 outputs]: enable, mask, target.

    CROSSBAR word: [31] enable, [27:14] mask, [13:0] target. Outputs 9..15 are unmapped.
    """

    FIELDS = {
        "enable": Field(_XBAR_SHAPE, bool, _node_where("enable"), bool),
        "mask": Field(_XBAR_SHAPE, LabelMask, _node_where("mask")),
        "target": Field(_XBAR_SHAPE, Label, _node_where("target")),
    }
    enable: np.ndarray
    mask: np.ndarray
    target: np.ndarray

    @classmethod
    @cache
    def register_addresses(cls) -> np.ndarray:
        i, o = np.meshgrid(
            np.arange(N_CROSSBAR_INPUTS), np.arange(N_CROSSBAR_MAPPED_OUTPUTS), indexing="ij"
        )
        a = _addr(Block.CROSSBAR, (i << 4 | o).reshape(-1))
        a.flags.writeable = False
        return a

    def _encode(self) -> np.ndarray:
        w = self.enable.astype(np.int64) << CROSSBAR_ENABLE_BIT
        w |= self.mask.astype(np.int64) << CROSSBAR_MASK_SHIFT
        w |= self.target.astype(np.int64)
        return _u32(w.reshape(-1))

    def _decode(self, words: np.ndarray) -> None:
        w = words.reshape(_XBAR_SHAPE)
        self.enable[...] = (w >> CROSSBAR_ENABLE_BIT) & 1
        self.mask[...] = (w >> CROSSBAR_MASK_SHIFT) & 0x3FFF
        self.target[...] = w & 0x3FFF

    def __getitem__(self, key: CrossbarNodeCoord) -> CrossbarNode:
        i = (key.input, key.output)
        return CrossbarNode(bool(self.enable[i]), int(self.mask[i]), int(self.target[i]))

    def __setitem__(self, key: CrossbarNodeCoord, value: CrossbarNode) -> None:
        if not isinstance(value, CrossbarNode):
            raise TypeError(f"expected a CrossbarNode, got {type(value).__name__}")
        i = (key.input, key.output)
        self.enable[i], self.mask[i], self.target[i] = value.enable, value.mask, value.target


# ============================================================================ background
def _bg_where(field: str) -> Describe:
    return lambda i: f"background source {i[0]} {field}" if i else f"background {field}"


@dataclass(frozen=True)
class BackgroundSource:
    """One background spike source: periodic or Poisson events with a fixed label."""

    enable: bool = False
    poisson: bool = False
    label: int = 0
    period: int = 0  # ticks (periodic) or mean interval in ticks (poisson); >= 1 when enabled
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "enable", bool(self.enable))
        object.__setattr__(self, "poisson", bool(self.poisson))
        object.__setattr__(self, "label", Label(self.label, "BackgroundSource.label"))
        object.__setattr__(self, "period", BackgroundPeriod(self.period, "BackgroundSource.period"))
        object.__setattr__(self, "seed", Seed(self.seed, "BackgroundSource.seed"))
        if self.enable and self.period == 0:
            raise config_error("BackgroundSource.period 0 out of range 1..4294967295 when enabled")


class BackgroundSources(Container):
    """The 8 background sources as [8] arrays. Words: 0 [0] enable [1] poisson [29:16] label;
    1 period; 2 seed."""

    FIELDS = {
        "enable": Field((N_BACKGROUND,), bool, _bg_where("enable"), bool),
        "poisson": Field((N_BACKGROUND,), bool, _bg_where("poisson"), bool),
        "label": Field((N_BACKGROUND,), Label, _bg_where("label")),
        "period": Field((N_BACKGROUND,), BackgroundPeriod, _bg_where("period"), np.int64),
        "seed": Field((N_BACKGROUND,), Seed, _bg_where("seed"), np.int64),
    }
    enable: np.ndarray
    poisson: np.ndarray
    label: np.ndarray
    period: np.ndarray
    seed: np.ndarray

    @classmethod
    @cache
    def register_addresses(cls) -> np.ndarray:
        s, w = np.meshgrid(np.arange(N_BACKGROUND), np.arange(N_BACKGROUND_WORDS), indexing="ij")
        a = _addr(Block.BACKGROUND, (s << 2 | w).reshape(-1))
        a.flags.writeable = False
        return a

    def _cross_check(self) -> None:
        bad = np.flatnonzero(self.enable & (self.period == 0))
        if bad.size:
            raise config_error(
                f"BackgroundPeriod 0 out of range 1..4294967295 for background source "
                f"{int(bad[0])} period (enabled sources need a period)",
                field=f"background source {int(bad[0])} period",
                value=0,
                valid="1..4294967295",
            )

    def _encode(self) -> np.ndarray:
        w0 = self.enable.astype(np.int64) << BackgroundWords.ENABLE
        w0 |= self.poisson.astype(np.int64) << BackgroundWords.POISSON
        w0 |= self.label.astype(np.int64) << BackgroundWords.LABEL_SHIFT
        return _u32(np.stack([w0, self.period, self.seed], axis=1).reshape(-1))

    def _decode(self, words: np.ndarray) -> None:
        w = words.reshape(N_BACKGROUND, N_BACKGROUND_WORDS)
        self.enable[...] = (w[:, 0] >> BackgroundWords.ENABLE) & 1
        self.poisson[...] = (w[:, 0] >> BackgroundWords.POISSON) & 1
        self.label[...] = (w[:, 0] >> BackgroundWords.LABEL_SHIFT) & 0x3FFF
        self.period[...] = w[:, 1]
        self.seed[...] = w[:, 2]

    def __getitem__(self, key: int | BackgroundSourceCoord) -> BackgroundSource:
        s = (
            key.index
            if isinstance(key, BackgroundSourceCoord)
            else BackgroundSourceCoord(key).index
        )
        return BackgroundSource(**{name: self._arrays[name][s] for name in self.FIELDS})

    def __setitem__(self, key: int | BackgroundSourceCoord, value: BackgroundSource) -> None:
        s = (
            key.index
            if isinstance(key, BackgroundSourceCoord)
            else BackgroundSourceCoord(key).index
        )
        if not isinstance(value, BackgroundSource):
            raise TypeError(f"expected a BackgroundSource, got {type(value).__name__}")
        for name in self.FIELDS:
            self._arrays[name][s] = getattr(value, name)


# ============================================================================ readout
class CADCConfig(Container):
    """CADC: global enable (CADC_CONFIG [0]) and signed per-channel offsets [512] (CADC_OFFSET
    [7:0], two's complement), added to each channel's raw sample on the chip."""

    FIELDS = {
        "enable": Field((), bool, lambda i: "CADCConfig.enable", bool),
        "offsets": Field(
            (N_NEURONS,),
            CADCOffset,
            lambda i: f"CADC offset of channel {i[0]}" if i else "CADC offsets",
        ),
    }
    enable: bool
    offsets: np.ndarray

    @classmethod
    @cache
    def register_addresses(cls) -> np.ndarray:
        a = np.concatenate(
            [_addr(Block.CADC_OFFSET, np.arange(N_NEURONS)), _addr(Block.CADC_CONFIG, [0])]
        )
        a.flags.writeable = False
        return a

    def _encode(self) -> np.ndarray:
        offs = self.offsets.astype(np.int64) & 0xFF
        return _u32(np.concatenate([offs, [int(self.enable)]]))

    def _decode(self, words: np.ndarray) -> None:
        raw = words[:N_NEURONS] & 0xFF
        self.offsets[...] = np.where(raw >= 128, raw - 256, raw)
        self._arrays["enable"][...] = words[N_NEURONS] & 1


class MADCConfig(Container):
    """MADC: one selected neuron, its readout source, enable, sample period in ticks (>= 4).

    MADC_CONFIG word: [8:0] neuron, [11:9] source, [12] enable, [31:16] period.
    """

    FIELDS = {
        "enable": Field((), bool, lambda i: "MADCConfig.enable", bool),
        "neuron": Field((), NeuronIndex, lambda i: "MADCConfig.neuron"),
        "source": Field((), ReadoutSource, lambda i: "MADCConfig.source"),
        "period": Field((), MADCPeriod, lambda i: "MADCConfig.period"),
    }
    enable: bool
    neuron: int
    source: int
    period: int

    @classmethod
    @cache
    def register_addresses(cls) -> np.ndarray:
        a = _addr(Block.MADC_CONFIG, [0])
        a.flags.writeable = False
        return a

    def _cross_check(self) -> None:
        if self.enable and self.period == 0:
            raise config_error(
                "MADCPeriod 0 out of range 4..65535 for MADCConfig.period (enabled MADC)",
                field="MADCConfig.period",
                value=0,
                valid="4..65535",
            )

    def _encode(self) -> np.ndarray:
        w = self.neuron | self.source << 9 | int(self.enable) << 12 | self.period << 16
        return _u32([w])

    def _decode(self, words: np.ndarray) -> None:
        w = int(words[0])
        a = self._arrays
        a["neuron"][...] = w & 0x1FF
        a["source"][...] = (w >> 9) & 0x7
        a["enable"][...] = (w >> 12) & 1
        a["period"][...] = (w >> 16) & 0xFFFF

