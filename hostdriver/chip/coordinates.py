"""Coordinates: *where* something is on the chip (halco style), separate from *what* it holds.

Every coordinate is a small frozen dataclass, range-checked on construction (ConfigError naming the
coordinate, the value and the valid range), convertible to its register address(es) from
protocol/addressmap.py and back (`from_address`). Vectorised address arithmetic for whole arrays
lives with the containers; these are for naming single things and for error messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocol.addressmap import (
    BLOCK_SHIFT,
    N_BACKGROUND,
    N_BUSES,
    N_COLUMNS,
    N_CROSSBAR_INPUTS,
    N_DRIVERS,
    N_HEMISPHERES,
    N_NEURONS,
    N_QUADRANTS,
    N_ROWS,
    OFFSET_MASK,
    Block,
    CrossbarInput,
    CrossbarOutput,
    GlobalCell,
    NeuronCell,
    SystemReg,
    address,
)
from protocol.errors import ConfigError

from .values import config_error

__all__ = [
    "N_CROSSBAR_MAPPED_OUTPUTS",
    "N_MAPPED_GLOBAL_CELLS",
    "N_MAPPED_NEURON_CELLS",
    "BackgroundSourceCoord",
    "BusCoord",
    "CADCChannelCoord",
    "CrossbarNodeCoord",
    "DriverCoord",
    "GlobalCellCoord",
    "NeuronCellCoord",
    "NeuronCoord",
    "SynapseCoord",
    "SynapseRowCoord",
    "cell_name",
    "describe_address",
    "event_label",
    "global_cell_name",
    "label_address",
    "label_row_select",
]

N_MAPPED_NEURON_CELLS = 24  # CapMem cells 0..23 of each neuron's 32 address slots exist
N_MAPPED_GLOBAL_CELLS = 16  # global cells 0..15 of each quadrant's 32 slots exist
N_CROSSBAR_MAPPED_OUTPUTS = 9  # crossbar outputs 0..8 (8 = FPGA_RECORD); 9..15 unmapped
N_BACKGROUND_WORDS = 3  # words 0..2 of each background source; word 3 unmapped


def _check(coord: str, name: str, value: object, size: int) -> int:
    """value as int in 0..size-1, or ConfigError naming coordinate, field and range."""
    try:
        v = int(value)  # type: ignore[arg-type]
        if v != value and not isinstance(value, np.integer):
            raise ValueError
    except (TypeError, ValueError):
        raise config_error(
            f"{coord}.{name} must be an integer, got {value!r}", field=f"{coord}.{name}"
        ) from None
    if not 0 <= v < size:
        raise config_error(
            f"{coord}.{name} {v} out of range 0..{size - 1}",
            field=f"{coord}.{name}",
            value=v,
            valid=f"0..{size - 1}",
        )
    return v


def cell_name(cell: int) -> str:
    """NeuronCell name of a CapMem cell index ('V_LEAK'); spare cells are 'CELL16'..'CELL23'."""
    try:
        return NeuronCell(cell).name
    except ValueError:
        return f"CELL{int(cell)}"


def global_cell_name(cell: int) -> str:
    """GlobalCell name of a global CapMem cell index; spare cells are 'CELL2'..'CELL15'."""
    try:
        return GlobalCell(cell).name
    except ValueError:
        return f"CELL{int(cell)}"


def _split(addr: int, block: Block, coord: str) -> int:
    addr = int(addr)
    if addr >> BLOCK_SHIFT != block:
        raise config_error(
            f"address 0x{addr:08x} is not in block {block.name} (0x{int(block):02x}) of {coord}"
        )
    return addr & OFFSET_MASK


@dataclass(frozen=True, order=True)
class NeuronCoord:
    """One of the 512 neuron circuits: 0..255 top hemisphere, 256..511 bottom."""

    index: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", _check("NeuronCoord", "index", self.index, N_NEURONS))

    @classmethod
    def from_column(cls, hemisphere: int, column: int) -> NeuronCoord:
        h = _check("NeuronCoord", "hemisphere", hemisphere, N_HEMISPHERES)
        return cls(h * N_COLUMNS + _check("NeuronCoord", "column", column, N_COLUMNS))

    @property
    def hemisphere(self) -> int:
        return self.index // N_COLUMNS

    @property
    def column(self) -> int:
        return self.index % N_COLUMNS

    @property
    def quadrant(self) -> int:
        """2 * hemisphere + (column >= 128); also the crossbar input of its spikes."""
        return 2 * self.hemisphere + (self.column >= N_COLUMNS // 2)

    @property
    def other_hemisphere(self) -> NeuronCoord:
        """The circuit of the same column in the other hemisphere (its possible compartment)."""
        return NeuronCoord((self.index + N_COLUMNS) % N_NEURONS)

    @property
    def crossbar_input(self) -> CrossbarInput:
        return CrossbarInput(self.quadrant)

    @property
    def config_addresses(self) -> tuple[int, int]:
        """NEURON_CONFIG word 0 and word 1."""
        base = address(Block.NEURON_CONFIG, self.index << 1)
        return base, base + 1

    @property
    def spike_counter_address(self) -> int:
        return address(Block.SPIKE_COUNTER, self.index)

    @property
    def cadc_channel(self) -> CADCChannelCoord:
        return CADCChannelCoord(self.index)

    def cell(self, cell: int) -> NeuronCellCoord:
        return NeuronCellCoord(self.index, cell)

    @classmethod
    def from_address(cls, addr: int) -> NeuronCoord:
        """The neuron of a NEURON_CONFIG, SPIKE_COUNTER or CADC_OFFSET address."""
        block, offset = int(addr) >> BLOCK_SHIFT, int(addr) & OFFSET_MASK
        if block == Block.NEURON_CONFIG:
            return cls(offset >> 1) if offset < 2 * N_NEURONS else cls(N_NEURONS)
        if block in (Block.SPIKE_COUNTER, Block.CADC_OFFSET):
            return cls(offset)
        raise config_error(f"address 0x{int(addr):08x} does not belong to a neuron circuit")


@dataclass(frozen=True, order=True)
class NeuronCellCoord:
    """A per-circuit CapMem cell: neuron 0..511, cell 0..23 (NeuronCell names 0..15)."""

    neuron: int
    cell: int

    def __post_init__(self) -> None:
        n = self.neuron.index if isinstance(self.neuron, NeuronCoord) else self.neuron
        object.__setattr__(self, "neuron", _check("NeuronCellCoord", "neuron", n, N_NEURONS))
        c = _check("NeuronCellCoord", "cell", self.cell, N_MAPPED_NEURON_CELLS)
        object.__setattr__(self, "cell", c)

    @property
    def address(self) -> int:
        return address(Block.CAPMEM_NEURON, self.neuron << 5 | self.cell)

    @classmethod
    def from_address(cls, addr: int) -> NeuronCellCoord:
        off = _split(addr, Block.CAPMEM_NEURON, "NeuronCellCoord")
        return cls(off >> 5, off & 0x1F)

    def __str__(self) -> str:
        return f"NeuronCell.{cell_name(self.cell)} of neuron {self.neuron}"


@dataclass(frozen=True, order=True)
class GlobalCellCoord:
    """A global CapMem cell: quadrant 0..3, cell 0..15 (GlobalCell names)."""

    quadrant: int
    cell: int

    def __post_init__(self) -> None:
        q = _check("GlobalCellCoord", "quadrant", self.quadrant, N_QUADRANTS)
        object.__setattr__(self, "quadrant", q)
        c = _check("GlobalCellCoord", "cell", self.cell, N_MAPPED_GLOBAL_CELLS)
        object.__setattr__(self, "cell", c)

    @property
    def address(self) -> int:
        return address(Block.CAPMEM_GLOBAL, self.quadrant << 5 | self.cell)

    @classmethod
    def from_address(cls, addr: int) -> GlobalCellCoord:
        off = _split(addr, Block.CAPMEM_GLOBAL, "GlobalCellCoord")
        return cls(off >> 5, off & 0x1F)

    def __str__(self) -> str:
        return f"GlobalCell.{global_cell_name(self.cell)} of quadrant {self.quadrant}"


@dataclass(frozen=True, order=True)
class BusCoord:
    """Synapse-driver event bus b of hemisphere h: crossbar output 4h + b; serves drivers d%4==b."""

    hemisphere: int
    bus: int

    def __post_init__(self) -> None:
        h = _check("BusCoord", "hemisphere", self.hemisphere, N_HEMISPHERES)
        object.__setattr__(self, "hemisphere", h)
        object.__setattr__(self, "bus", _check("BusCoord", "bus", self.bus, N_BUSES))

    @property
    def crossbar_output(self) -> int:
        """Crossbar output index 4h + b (CrossbarOutput names only BUS_TOP0 / BUS_BOTTOM0)."""
        return int(CrossbarOutput.BUS_TOP0) + N_BUSES * self.hemisphere + self.bus

    @property
    def drivers(self) -> tuple[DriverCoord, ...]:
        return tuple(DriverCoord(self.hemisphere, d) for d in range(self.bus, N_DRIVERS, N_BUSES))


@dataclass(frozen=True, order=True)
class DriverCoord:
    """Synapse driver d (0..127) of hemisphere h: feeds rows 2d and 2d+1, listens on bus d % 4
    and answers events with label[10:6] == d >> 2 (row select)."""

    hemisphere: int
    driver: int

    def __post_init__(self) -> None:
        h = _check("DriverCoord", "hemisphere", self.hemisphere, N_HEMISPHERES)
        object.__setattr__(self, "hemisphere", h)
        object.__setattr__(self, "driver", _check("DriverCoord", "driver", self.driver, N_DRIVERS))

    @property
    def address(self) -> int:
        return address(Block.DRIVER, self.hemisphere << 7 | self.driver)

    @property
    def bus(self) -> BusCoord:
        return BusCoord(self.hemisphere, self.driver % N_BUSES)

    @property
    def row_select(self) -> int:
        return self.driver >> 2

    @property
    def rows(self) -> tuple[SynapseRowCoord, SynapseRowCoord]:
        return (
            SynapseRowCoord(self.hemisphere, 2 * self.driver),
            SynapseRowCoord(self.hemisphere, 2 * self.driver + 1),
        )

    def event_label(self, synapse_address: int, high: int = 0) -> int:
        """The label an event needs on this driver's bus to reach synapses with that address."""
        return event_label(self.row_select, synapse_address, high)

    @classmethod
    def from_address(cls, addr: int) -> DriverCoord:
        off = _split(addr, Block.DRIVER, "DriverCoord")
        return cls(off >> 7, off & 0x7F) if off < 1 << 8 else cls(N_HEMISPHERES, 0)


@dataclass(frozen=True, order=True)
class SynapseRowCoord:
    """Synapse row r (0..255) of hemisphere h, fed by driver r // 2."""

    hemisphere: int
    row: int

    def __post_init__(self) -> None:
        h = _check("SynapseRowCoord", "hemisphere", self.hemisphere, N_HEMISPHERES)
        object.__setattr__(self, "hemisphere", h)
        object.__setattr__(self, "row", _check("SynapseRowCoord", "row", self.row, N_ROWS))

    @property
    def driver(self) -> DriverCoord:
        return DriverCoord(self.hemisphere, self.row // 2)

    @property
    def row_in_driver(self) -> int:
        """0: mode in DRIVER bits [1:0]; 1: mode in bits [3:2]."""
        return self.row % 2


@dataclass(frozen=True, order=True)
class SynapseCoord:
    """The synapse at (hemisphere, row, column); column = the neuron circuit it feeds."""

    hemisphere: int
    row: int
    column: int

    def __post_init__(self) -> None:
        h = _check("SynapseCoord", "hemisphere", self.hemisphere, N_HEMISPHERES)
        object.__setattr__(self, "hemisphere", h)
        object.__setattr__(self, "row", _check("SynapseCoord", "row", self.row, N_ROWS))
        object.__setattr__(self, "column", _check("SynapseCoord", "column", self.column, N_COLUMNS))

    @property
    def address(self) -> int:
        """The SYNAPSE word holding this synapse and its neighbour column (column ^ 1)."""
        return address(Block.SYNAPSE, self.hemisphere << 15 | self.row << 7 | self.column >> 1)

    @property
    def half(self) -> int:
        """0: bits [15:0] of the word (even column); 1: bits [31:16] (odd column)."""
        return self.column & 1

    @property
    def row_coord(self) -> SynapseRowCoord:
        return SynapseRowCoord(self.hemisphere, self.row)

    @property
    def neuron(self) -> NeuronCoord:
        return NeuronCoord.from_column(self.hemisphere, self.column)

    @classmethod
    def from_address(cls, addr: int, half: int) -> SynapseCoord:
        off = _split(addr, Block.SYNAPSE, "SynapseCoord")
        half = _check("SynapseCoord", "half", half, 2)
        return cls(off >> 15, (off >> 7) & 0xFF, (off & 0x7F) << 1 | half)

    def __str__(self) -> str:
        return f"synapse (hemisphere {self.hemisphere}, row {self.row}, column {self.column})"


@dataclass(frozen=True, order=True)
class CrossbarNodeCoord:
    """Crossbar node input -> output: input 0..15 (CrossbarInput), output 0..8 (CrossbarOutput)."""

    input: int
    output: int

    def __post_init__(self) -> None:
        i = _check("CrossbarNodeCoord", "input", self.input, N_CROSSBAR_INPUTS)
        o = _check("CrossbarNodeCoord", "output", self.output, N_CROSSBAR_MAPPED_OUTPUTS)
        object.__setattr__(self, "input", i)
        object.__setattr__(self, "output", o)

    @property
    def address(self) -> int:
        return address(Block.CROSSBAR, self.input << 4 | self.output)

    @classmethod
    def from_address(cls, addr: int) -> CrossbarNodeCoord:
        off = _split(addr, Block.CROSSBAR, "CrossbarNodeCoord")
        return cls(off >> 4, off & 0xF) if off < 1 << 8 else cls(N_CROSSBAR_INPUTS, 0)


@dataclass(frozen=True, order=True)
class BackgroundSourceCoord:
    """Background spike source 0..7 (crossbar input 8 + index)."""

    index: int

    def __post_init__(self) -> None:
        i = _check("BackgroundSourceCoord", "index", self.index, N_BACKGROUND)
        object.__setattr__(self, "index", i)

    @property
    def addresses(self) -> tuple[int, int, int]:
        """Word 0 (enable, poisson, label), word 1 (period), word 2 (seed)."""
        base = address(Block.BACKGROUND, self.index << 2)
        return base, base + 1, base + 2

    @property
    def crossbar_input(self) -> int:
        return int(CrossbarInput.BACKGROUND0) + self.index

    @classmethod
    def from_address(cls, addr: int) -> BackgroundSourceCoord:
        off = _split(addr, Block.BACKGROUND, "BackgroundSourceCoord")
        if off & 3 >= N_BACKGROUND_WORDS:
            raise config_error(f"address 0x{int(addr):08x} is the unmapped word 3 of a source")
        return cls(off >> 2)


@dataclass(frozen=True, order=True)
class CADCChannelCoord:
    """CADC channel 0..511 = the neuron circuit it digitises (same index)."""

    index: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", _check("CADCChannelCoord", "index", self.index, 512))

    @property
    def offset_address(self) -> int:
        return address(Block.CADC_OFFSET, self.index)

    @property
    def neuron(self) -> NeuronCoord:
        return NeuronCoord(self.index)

    @classmethod
    def from_address(cls, addr: int) -> CADCChannelCoord:
        return cls(_split(addr, Block.CADC_OFFSET, "CADCChannelCoord"))


# ----------------------------------------------------------------------------- event labels
def event_label(row_select: object, synapse_address: object, high: object = 0) -> np.ndarray | int:
    """label = high << 11 | row_select << 6 | address (vectorised; ints in, int out).

    On a synapse-driver bus, label[10:6] selects the driver (4 * row_select + bus) and label[5:0]
    is compared with each synapse's address; label[13:11] is free for crossbar routing.
    """
    rs, ad, hi = (np.asarray(v, np.int64) for v in (row_select, synapse_address, high))
    for name, arr, size in (("row_select", rs, 32), ("synapse_address", ad, 64), ("high", hi, 8)):
        if arr.size and (arr.min() < 0 or arr.max() >= size):
            bad = int(arr[(arr < 0) | (arr >= size)].reshape(-1)[0])
            raise config_error(
                f"event label {name} {bad} out of range 0..{size - 1}",
                field=name,
                value=bad,
                valid=f"0..{size - 1}",
            )
    out = hi << 11 | rs << 6 | ad
    return int(out) if out.ndim == 0 else out


def label_row_select(label: object) -> np.ndarray:
    return (np.asarray(label, np.int64) >> 6) & 0x1F


def label_address(label: object) -> np.ndarray:
    return np.asarray(label, np.int64) & 0x3F


# ----------------------------------------------------------------------------- addresses -> text
def describe_address(addr: int) -> str:
    """Human name of any register address, e.g. '0x04001234 SYNAPSE hemisphere 0 row 36 columns
    104..105'. Never raises: unknown blocks and offsets say so."""
    addr = int(addr)
    block, off = addr >> BLOCK_SHIFT, addr & OFFSET_MASK
    head = f"0x{addr:08x}"
    try:
        b = Block(block)
    except ValueError:
        return f"{head} (unmapped block 0x{block:02x})"
    try:
        if b == Block.SYSTEM:
            try:
                return f"{head} SYSTEM {SystemReg(off).name}"
            except ValueError:
                if SystemReg.SCRATCH0 <= off < SystemReg.SCRATCH0 + 16:
                    return f"{head} SYSTEM SCRATCH{off - SystemReg.SCRATCH0}"
                raise
        if b == Block.CAPMEM_NEURON:
            return f"{head} CAPMEM_NEURON {NeuronCellCoord.from_address(addr)}"
        if b == Block.CAPMEM_GLOBAL:
            return f"{head} CAPMEM_GLOBAL {GlobalCellCoord.from_address(addr)}"
        if b == Block.NEURON_CONFIG:
            return (
                f"{head} NEURON_CONFIG neuron {NeuronCoord.from_address(addr).index} word {off & 1}"
            )
        if b == Block.SYNAPSE:
            s = SynapseCoord.from_address(addr, 0)
            return (
                f"{head} SYNAPSE hemisphere {s.hemisphere} row {s.row} "
                f"columns {s.column}..{s.column + 1}"
            )
        if b == Block.DRIVER:
            d = DriverCoord.from_address(addr)
            return f"{head} DRIVER hemisphere {d.hemisphere} driver {d.driver}"
        if b == Block.CROSSBAR:
            n = CrossbarNodeCoord.from_address(addr)
            return f"{head} CROSSBAR node input {n.input} -> output {n.output}"
        if b == Block.SPIKE_COUNTER:
            return f"{head} SPIKE_COUNTER neuron {NeuronCoord.from_address(addr).index}"
        if b == Block.CADC_OFFSET:
            return f"{head} CADC_OFFSET channel {CADCChannelCoord.from_address(addr).index}"
        if b in (Block.CADC_CONFIG, Block.MADC_CONFIG):
            if off != 0:
                raise ValueError
            return f"{head} {b.name}"
        if b == Block.BACKGROUND:
            s = BackgroundSourceCoord.from_address(addr)
            return f"{head} BACKGROUND source {s.index} word {off & 3}"
    except (ConfigError, ValueError):
        pass
    return f"{head} ({b.name}, unmapped offset 0x{off:06x})"
