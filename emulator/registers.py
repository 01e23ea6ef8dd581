"""The chip's register file as numpy arrays, with the board's access rules (protocol/addressmap).

Reads return what was written; values with bits outside a register's valid mask are refused
(VALUE_OUT_OF_RANGE, nothing stored), unmapped offsets give UNMAPPED_ADDRESS, writes to read-only
registers READ_ONLY_ADDRESS. Bulk access (`write_array` / `read_array`) is vectorised: addresses are
grouped by block and each block is one fancy-indexing operation, so a 65536-word synapse upload
costs a few numpy calls, not a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocol.addressmap import (
    BLOCK_SHIFT,
    CAPMEM_MAX,
    CROSSBAR_ENABLE_BIT,
    N_BACKGROUND,
    N_CROSSBAR_INPUTS,
    N_DRIVERS,
    N_GLOBAL_CELLS,
    N_HEMISPHERES,
    N_NEURON_CELLS,
    N_NEURONS,
    N_QUADRANTS,
    N_ROWS,
    OFFSET_MASK,
    SCRATCH_COUNT,
    WORD0_VALID_MASK,
    WORD1_VALID_MASK,
    Block,
    DriverBits,
    GlobalCell,
    NeuronCell,
    SynapseBits,
    SystemReg,
)
from protocol.wire import PROTOCOL_VERSION, ErrorCode

N_MAPPED_NEURON_CELLS = 24  # cells >= 24 of a neuron's 32 slots are unmapped
N_MAPPED_GLOBAL_CELLS = 16  # cells >= 16 of a quadrant's 32 slots are unmapped
N_CROSSBAR_MAPPED_OUTPUTS = 9  # outputs 0..8 (8 = FPGA_RECORD); 9..15 unmapped
N_BACKGROUND_MAPPED_WORDS = 3  # words 0..2 per source; word 3 unmapped
N_SYSTEM_SLOTS = 0x10 + SCRATCH_COUNT
N_SYSTEM_RO = int(SystemReg.PROTOCOL_VERSION) + 1

SPIKE_COUNT_MAX = 0xFF
SPIKE_COUNTER_OVERFLOW = 1 << 8
CROSSBAR_VALID_MASK = (1 << CROSSBAR_ENABLE_BIT) | (0x3FFF << 14) | 0x3FFF
MADC_VALID_MASK = 0xFFFF0000 | 0x1FFF
BACKGROUND_WORD0_MASK = (0x3FFF << 16) | 0x3
CADC_CONFIG_MASK = 0x1
CADC_OFFSET_MASK = 0xFF
SPIKE_COUNTER_MASK = SPIKE_COUNTER_OVERFLOW | SPIKE_COUNT_MAX

assert len(NeuronCell) <= N_MAPPED_NEURON_CELLS <= N_NEURON_CELLS
assert len(GlobalCell) <= N_MAPPED_GLOBAL_CELLS <= N_GLOBAL_CELLS

_OK = 0
_UNMAPPED = int(ErrorCode.UNMAPPED_ADDRESS)
_READ_ONLY = int(ErrorCode.READ_ONLY_ADDRESS)
_RANGE = int(ErrorCode.VALUE_OUT_OF_RANGE)


@dataclass(frozen=True)
class _BlockSpec:
    """How one block's offsets map onto a flat numpy view, and what may be written there."""

    flat: np.ndarray  # 1-d view into the block's storage; slot index = offset - base
    base: int  # offset of slot 0
    mapped: np.ndarray  # bool per slot
    read_only: np.ndarray  # bool per slot
    mask: np.ndarray  # u32 valid bits per slot
    max_value: int  # values above are refused even if inside the mask (CapMem 1023)


def firmware_word(version: tuple[int, int, int]) -> int:
    """FIRMWARE_VERSION register value: major << 16 | minor << 8 | patch."""
    major, minor, patch = (int(v) for v in version)
    if not (0 <= major <= 0xFFFF and 0 <= minor <= 0xFF and 0 <= patch <= 0xFF):
        raise ValueError(f"firmware version {version} does not fit major16.minor8.patch8")
    return major << 16 | minor << 8 | patch


def default_chip_id(serial: int) -> int:
    """Chip id the emulator reports when none is given: 0xB5E0 in the high half, serial low 16."""
    return 0xB5E0_0000 | (int(serial) & 0xFFFF)


class RegisterFile:
    """All registers of one board: system registers (FPGA) and the chip's blocks.

    Attribute names and shapes are the contract of docs/interfaces.md; the analog core reads them
    directly. `version` increases on every write that stored something (and on reset), so the
    analog core can cache whatever it compiled from the registers; `block_versions[block]` does the
    same per block for finer caching.
    """

    def __init__(
        self,
        serial: int = 1,
        *,
        firmware_version: tuple[int, int, int] = (1, 0, 0),
        chip_id: int | None = None,
    ) -> None:
        serial = int(serial)
        if not 0 <= serial < 1 << 64:
            raise ValueError(f"serial must be a 64-bit unsigned integer, got {serial}")
        self.serial = serial
        self.firmware_version = tuple(int(v) for v in firmware_version)
        self.chip_id = default_chip_id(serial) if chip_id is None else int(chip_id) & 0xFFFFFFFF
        u32 = np.uint32
        self._system = np.zeros(N_SYSTEM_SLOTS, u32)
        self._system[SystemReg.SERIAL_LO] = serial & 0xFFFFFFFF
        self._system[SystemReg.SERIAL_HI] = serial >> 32
        self._system[SystemReg.FIRMWARE_VERSION] = firmware_word(self.firmware_version)
        self._system[SystemReg.CHIP_ID] = self.chip_id
        self._system[SystemReg.PROTOCOL_VERSION] = PROTOCOL_VERSION
        self.scratch = self._system[SystemReg.SCRATCH0 :]
        self.capmem_neuron = np.zeros((N_NEURONS, N_NEURON_CELLS), np.uint16)
        self.capmem_global = np.zeros((N_QUADRANTS, N_GLOBAL_CELLS), np.uint16)
        self.neuron_config = np.zeros((N_NEURONS, 2), u32)
        self.synapse = np.zeros((N_HEMISPHERES, N_ROWS, N_ROWS // 2), u32)
        self.driver = np.zeros((N_HEMISPHERES, N_DRIVERS), u32)
        self.crossbar = np.zeros((N_CROSSBAR_INPUTS, N_CROSSBAR_INPUTS), u32)
        self.spike_counter = np.zeros(N_NEURONS, u32)
        self.cadc_offset = np.zeros(N_NEURONS, u32)
        self.cadc_config = np.zeros((), u32)
        self.madc_config = np.zeros((), u32)
        self.background = np.zeros((N_BACKGROUND, 4), u32)
        self.version = 0
        self.block_versions = np.zeros(max(Block) + 1, np.int64)
        self._specs = self._build_specs()

    # ------------------------------------------------------------------ layout
    def _build_specs(self) -> dict[int, _BlockSpec]:
        def spec(arr, mask, *, mapped=None, ro=False, max_value=0xFFFFFFFF, base=0):
            flat = arr.reshape(-1)
            assert np.shares_memory(flat, arr)
            n = flat.size
            m = np.ones(n, bool) if mapped is None else np.asarray(mapped, bool).reshape(n)
            r = np.full(n, ro, bool) if np.isscalar(ro) else np.asarray(ro, bool)
            k = np.broadcast_to(np.asarray(mask, np.uint64), arr.shape).reshape(n).astype(np.uint32)
            return _BlockSpec(flat, base, m, r, k, max_value)

        sys_mapped = np.zeros(N_SYSTEM_SLOTS, bool)
        sys_mapped[:N_SYSTEM_RO] = True
        sys_mapped[SystemReg.SCRATCH0 :] = True
        sys_ro = np.zeros(N_SYSTEM_SLOTS, bool)
        sys_ro[:N_SYSTEM_RO] = True
        cell = np.arange(N_NEURON_CELLS)
        neuron_cells = np.broadcast_to(cell < N_MAPPED_NEURON_CELLS, self.capmem_neuron.shape)
        global_cells = np.broadcast_to(
            np.arange(N_GLOBAL_CELLS) < N_MAPPED_GLOBAL_CELLS, self.capmem_global.shape
        )
        crossbar_mapped = np.broadcast_to(
            np.arange(N_CROSSBAR_INPUTS) < N_CROSSBAR_MAPPED_OUTPUTS, self.crossbar.shape
        )
        bg_mapped = np.broadcast_to(np.arange(4) < N_BACKGROUND_MAPPED_WORDS, self.background.shape)
        bg_mask = np.array([BACKGROUND_WORD0_MASK, 0xFFFFFFFF, 0xFFFFFFFF, 0], np.uint64)
        half = SynapseBits.HALF_VALID_MASK
        return {
            Block.SYSTEM: spec(self._system, 0xFFFFFFFF, mapped=sys_mapped, ro=sys_ro),
            Block.CAPMEM_NEURON: spec(
                self.capmem_neuron, 0x3FF, mapped=neuron_cells, max_value=CAPMEM_MAX
            ),
            Block.CAPMEM_GLOBAL: spec(
                self.capmem_global, 0x3FF, mapped=global_cells, max_value=CAPMEM_MAX
            ),
            Block.NEURON_CONFIG: spec(
                self.neuron_config, np.array([WORD0_VALID_MASK, WORD1_VALID_MASK], np.uint64)
            ),
            Block.SYNAPSE: spec(self.synapse, half | half << 16),
            Block.DRIVER: spec(self.driver, DriverBits.VALID_MASK),
            Block.CROSSBAR: spec(self.crossbar, CROSSBAR_VALID_MASK, mapped=crossbar_mapped),
            Block.SPIKE_COUNTER: spec(self.spike_counter, SPIKE_COUNTER_MASK, ro=True),
            Block.CADC_OFFSET: spec(self.cadc_offset, CADC_OFFSET_MASK),
            Block.CADC_CONFIG: spec(self.cadc_config, CADC_CONFIG_MASK),
            Block.MADC_CONFIG: spec(self.madc_config, MADC_VALID_MASK),
            Block.BACKGROUND: spec(self.background, bg_mask, mapped=bg_mapped),
        }

    def _slots(self, spec: _BlockSpec, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slot index per offset (clipped) and whether the offset is a mapped register."""
        slot = offsets.astype(np.int64) - spec.base
        inside = (slot >= 0) & (slot < spec.flat.size)
        slot = np.where(inside, slot, 0)
        return slot, inside & spec.mapped[slot]

    # ------------------------------------------------------------------ vectorised access
    def write_array(self, addrs: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Write values[i] to addrs[i], in order (a later write to the same address wins).

        Returns a u8 array of ErrorCode per element (0 = stored). Refused elements change nothing.
        """
        addrs = np.asarray(addrs, np.uint64).reshape(-1)
        values = np.asarray(values, np.uint64).reshape(-1)
        if addrs.shape != values.shape:
            raise ValueError(f"{addrs.size} addresses but {values.size} values")
        codes = np.zeros(addrs.size, np.uint8)
        if addrs.size == 0:
            return codes
        blocks = addrs >> BLOCK_SHIFT
        offsets = addrs & OFFSET_MASK
        stored = False
        unique_blocks = np.unique(blocks).tolist()
        for block in unique_blocks:
            sel = slice(None) if len(unique_blocks) == 1 else np.flatnonzero(blocks == block)
            spec = self._specs.get(block)
            if spec is None:
                codes[sel] = _UNMAPPED
                continue
            slot, mapped = self._slots(spec, offsets[sel])
            val = values[sel]
            bad_value = ((val & ~spec.mask[slot].astype(np.uint64)) != 0) | (val > spec.max_value)
            code = np.where(
                ~mapped,
                _UNMAPPED,
                np.where(spec.read_only[slot], _READ_ONLY, np.where(bad_value, _RANGE, _OK)),
            ).astype(np.uint8)
            codes[sel] = code
            ok = code == _OK
            if not ok.any():
                continue
            ok_slots = slot[ok]
            ok_vals = val[ok]
            if ok_slots.size > 1 and not bool(np.all(ok_slots[1:] > ok_slots[:-1])):
                # keep the last write per slot: unique over the reversed order
                rev_unique, rev_first = np.unique(ok_slots[::-1], return_index=True)
                ok_slots = rev_unique
                ok_vals = ok_vals[::-1][rev_first]
            spec.flat[ok_slots] = ok_vals.astype(spec.flat.dtype)
            self.block_versions[block] += 1
            stored = True
        if stored:
            self.version += 1
        return codes

    def read_array(self, addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values (u32, 0 where refused) and ErrorCode per element (0 = ok) of addrs."""
        addrs = np.asarray(addrs, np.uint64).reshape(-1)
        values = np.zeros(addrs.size, np.uint32)
        codes = np.zeros(addrs.size, np.uint8)
        if addrs.size == 0:
            return values, codes
        blocks = addrs >> BLOCK_SHIFT
        offsets = addrs & OFFSET_MASK
        unique_blocks = np.unique(blocks).tolist()
        for block in unique_blocks:
            sel = slice(None) if len(unique_blocks) == 1 else np.flatnonzero(blocks == block)
            spec = self._specs.get(block)
            if spec is None:
                codes[sel] = _UNMAPPED
                continue
            slot, mapped = self._slots(spec, offsets[sel])
            values[sel] = np.where(mapped, spec.flat[slot], 0)
            codes[sel] = np.where(mapped, _OK, _UNMAPPED)
        return values, codes

    # ------------------------------------------------------------------ contract API
    def write(self, addr: int, value: int) -> ErrorCode | None:
        code = int(self.write_array(np.array([addr], np.uint64), np.array([value], np.uint64))[0])
        return None if code == _OK else ErrorCode(code)

    def read(self, addr: int) -> tuple[int, ErrorCode | None]:
        values, codes = self.read_array(np.array([addr], np.uint64))
        code = int(codes[0])
        return int(values[0]), None if code == _OK else ErrorCode(code)

    def write_many(self, addrs, values) -> list[tuple[int, ErrorCode]]:
        """Vectorised write; returns the (address, ErrorCode) of every refused element."""
        addrs = np.asarray(addrs, np.uint64).reshape(-1)
        codes = self.write_array(addrs, values)
        bad = np.flatnonzero(codes)
        return [(int(addrs[i]), ErrorCode(int(codes[i]))) for i in bad]

    def read_many(self, addrs) -> tuple[np.ndarray, list[tuple[int, ErrorCode]]]:
        """Vectorised read; values (0 where refused) and the (address, ErrorCode) failures."""
        addrs = np.asarray(addrs, np.uint64).reshape(-1)
        values, codes = self.read_array(addrs)
        bad = np.flatnonzero(codes)
        return values, [(int(addrs[i]), ErrorCode(int(codes[i]))) for i in bad]

    # ------------------------------------------------------------------ board-side updates
    def set_firmware_word(self, word: int) -> None:
        """FIRMWARE_VERSION as the board now reports it (it changes when flash boots another
        image); read-only to the host, so this is the only way it changes."""
        self._system[SystemReg.FIRMWARE_VERSION] = int(word) & 0xFFFFFFFF

    def add_spike_counts(self, counts: np.ndarray) -> None:
        """Add per-circuit spike counts: 8-bit counters saturate at 255 and set the overflow bit."""
        counts = np.asarray(counts, np.int64).reshape(-1)
        if counts.size != N_NEURONS:
            raise ValueError(f"spike counts must have {N_NEURONS} entries, got {counts.size}")
        old = self.spike_counter.astype(np.int64)
        total = (old & SPIKE_COUNT_MAX) + counts
        over = (old & SPIKE_COUNTER_OVERFLOW).astype(bool) | (total > SPIKE_COUNT_MAX)
        new = np.minimum(total, SPIKE_COUNT_MAX) | np.where(over, SPIKE_COUNTER_OVERFLOW, 0)
        self.spike_counter[:] = new.astype(np.uint32)

    def clear_spike_counters(self) -> None:
        self.spike_counter[:] = 0

    def chip_reset(self) -> None:
        """Every chip register (blocks 1..) to its reset value 0; FPGA system registers stay."""
        for block, spec in self._specs.items():
            if block != Block.SYSTEM:
                spec.flat[:] = 0
                self.block_versions[block] += 1
        self.version += 1
