"""Register file: access rules of protocol/addressmap.py, vectorised bulk access."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.registers import RegisterFile, default_chip_id
from protocol.addressmap import Block, SystemReg, address
from protocol.wire import PROTOCOL_VERSION, ErrorCode

A = address


@pytest.fixture
def regs() -> RegisterFile:
    return RegisterFile(0x1234_5678_9ABC_DEF0, firmware_version=(2, 3, 4), chip_id=0xC0FFEE)


def test_system_registers_read_only(regs: RegisterFile) -> None:
    expected = {
        SystemReg.SERIAL_LO: 0x9ABCDEF0,
        SystemReg.SERIAL_HI: 0x12345678,
        SystemReg.FIRMWARE_VERSION: 0x020304,
        SystemReg.CHIP_ID: 0xC0FFEE,
        SystemReg.PROTOCOL_VERSION: PROTOCOL_VERSION,
    }
    for reg, value in expected.items():
        assert regs.read(A(Block.SYSTEM, reg)) == (value, None)
        assert regs.write(A(Block.SYSTEM, reg), 0) is ErrorCode.READ_ONLY_ADDRESS
        assert regs.read(A(Block.SYSTEM, reg)) == (value, None)
    assert regs.version == 0


def test_default_chip_id_from_serial() -> None:
    assert RegisterFile(7).chip_id == default_chip_id(7) != default_chip_id(8)


def test_scratch_read_write(regs: RegisterFile) -> None:
    for i in range(16):
        assert regs.write(A(Block.SYSTEM, SystemReg.SCRATCH0 + i), 0xFFFFFFFF - i) is None
    assert regs.scratch.tolist() == [0xFFFFFFFF - i for i in range(16)]
    assert regs.read(A(Block.SYSTEM, 0x15)) == (0xFFFFFFFF - 5, None)
    assert regs.version == 16


@pytest.mark.parametrize(
    "addr",
    [
        A(Block.SYSTEM, 0x05),
        A(Block.SYSTEM, 0x0F),
        A(Block.SYSTEM, 0x20),
        A(Block.CAPMEM_NEURON, 0 << 5 | 24),
        A(Block.CAPMEM_NEURON, 511 << 5 | 31),
        A(Block.CAPMEM_NEURON, 512 << 5),
        A(Block.CAPMEM_GLOBAL, 3 << 5 | 16),
        A(Block.CAPMEM_GLOBAL, 4 << 5),
        A(Block.NEURON_CONFIG, 1024),
        A(Block.SYNAPSE, 1 << 16),
        A(Block.DRIVER, 256),
        A(Block.CROSSBAR, 4 << 4 | 9),
        A(Block.CROSSBAR, 15 << 4 | 15),
        A(Block.CROSSBAR, 256),
        A(Block.SPIKE_COUNTER, 512),
        A(Block.CADC_OFFSET, 512),
        A(Block.CADC_CONFIG, 1),
        A(Block.MADC_CONFIG, 1),
        A(Block.BACKGROUND, 0 << 2 | 3),
        A(Block.BACKGROUND, 8 << 2),
        A(0x0C, 0),
        A(0xFF, 0xFFFFFF),
    ],
)
def test_unmapped(regs: RegisterFile, addr: int) -> None:
    assert regs.write(addr, 0) is ErrorCode.UNMAPPED_ADDRESS
    assert regs.read(addr) == (0, ErrorCode.UNMAPPED_ADDRESS)
    assert regs.version == 0


def test_capmem_range(regs: RegisterFile) -> None:
    a = A(Block.CAPMEM_NEURON, 37 << 5 | 2)
    assert regs.write(a, 1022) is None
    assert regs.capmem_neuron[37, 2] == 1022
    assert regs.write(a, 1023) is ErrorCode.VALUE_OUT_OF_RANGE
    assert regs.write(a, 1024) is ErrorCode.VALUE_OUT_OF_RANGE
    assert regs.read(a) == (1022, None)
    g = A(Block.CAPMEM_GLOBAL, 2 << 5 | 1)
    assert regs.write(g, 1023) is ErrorCode.VALUE_OUT_OF_RANGE
    assert regs.write(g, 5) is None
    assert regs.capmem_global[2, 1] == 5


@pytest.mark.parametrize(
    ("addr", "good", "bad", "attr", "index"),
    [
        (A(Block.NEURON_CONFIG, 5 << 1), 0x3FFF0FFF, 0x00001000, "neuron_config", (5, 0)),
        (A(Block.NEURON_CONFIG, 5 << 1 | 1), 0xFFF, 0x1000, "neuron_config", (5, 1)),
        (A(Block.SYNAPSE, 1 << 15 | 200 << 7 | 99), 0x3F3F3F3F, 0x40, "synapse", (1, 200, 99)),
        (A(Block.SYNAPSE, 0), 0x3F3F3F3F, 0x8000, "synapse", (0, 0, 0)),
        (A(Block.DRIVER, 1 << 7 | 127), 0x1F, 0x20, "driver", (1, 127)),
        (A(Block.CROSSBAR, 4 << 4 | 8), 0x8FFFFFFF, 0x40000000, "crossbar", (4, 8)),
        (A(Block.CADC_OFFSET, 511), 0xFF, 0x100, "cadc_offset", (511,)),
        (A(Block.CADC_CONFIG, 0), 1, 2, "cadc_config", ()),
        (A(Block.MADC_CONFIG, 0), 0xFFFF1FFF, 0x2000, "madc_config", ()),
        (A(Block.BACKGROUND, 7 << 2), 0x3FFF0003, 0x4, "background", (7, 0)),
        (A(Block.BACKGROUND, 7 << 2 | 1), 0xFFFFFFFF, 1 << 32, "background", (7, 1)),
        (A(Block.BACKGROUND, 7 << 2 | 2), 0xFFFFFFFF, 1 << 40, "background", (7, 2)),
    ],
)
def test_valid_bits(regs, addr, good, bad, attr, index) -> None:
    assert regs.write(addr, good) is None
    assert getattr(regs, attr)[index] == good
    assert regs.read(addr) == (good, None)
    assert regs.write(addr, bad) is ErrorCode.VALUE_OUT_OF_RANGE
    assert regs.read(addr) == (good, None)  # refused value not stored


def test_spike_counter_read_only_and_saturating(regs: RegisterFile) -> None:
    a = A(Block.SPIKE_COUNTER, 3)
    assert regs.write(a, 1) is ErrorCode.READ_ONLY_ADDRESS
    counts = np.zeros(512, np.int64)
    counts[3] = 200
    counts[4] = 7
    regs.add_spike_counts(counts)
    assert regs.read(a) == (200, None)
    regs.add_spike_counts(counts)
    assert regs.read(a) == (0x1FF, None)  # saturated at 255 with the overflow bit
    assert regs.read(A(Block.SPIKE_COUNTER, 4)) == (14, None)
    regs.clear_spike_counters()
    assert regs.read(a) == (0, None)
    with pytest.raises(ValueError):
        regs.add_spike_counts(np.zeros(3))


def test_write_many_vectorised_synapses(regs: RegisterFile) -> None:
    rng = np.random.default_rng(1)
    offsets = np.arange(1 << 16, dtype=np.uint64)
    values = rng.integers(0, 1 << 32, offsets.size, dtype=np.uint64) & 0x3F3F3F3F
    addrs = (int(Block.SYNAPSE) << 24) | offsets
    assert regs.write_many(addrs, values) == []
    assert np.array_equal(regs.synapse.reshape(-1), values.astype(np.uint32))
    got, failures = regs.read_many(addrs)
    assert failures == [] and np.array_equal(got, values)
    assert regs.version == 1


def test_write_many_mixed_blocks_and_failures(regs: RegisterFile) -> None:
    addrs = [
        A(Block.DRIVER, 3),
        A(Block.CAPMEM_NEURON, 1 << 5 | 30),
        A(Block.CAPMEM_NEURON, 1 << 5 | 3),
        A(Block.SYSTEM, SystemReg.CHIP_ID),
        A(Block.CAPMEM_NEURON, 2 << 5),
        A(Block.DRIVER, 3),  # same address again: the later write wins
    ]
    values = [1, 5, 700, 9, 1023, 0x11]
    failures = regs.write_many(addrs, values)
    assert failures == [
        (addrs[1], ErrorCode.UNMAPPED_ADDRESS),
        (addrs[3], ErrorCode.READ_ONLY_ADDRESS),
        (addrs[4], ErrorCode.VALUE_OUT_OF_RANGE),
    ]
    assert regs.driver[0, 3] == 0x11
    assert regs.capmem_neuron[1, 3] == 700
    assert regs.capmem_neuron[2, 0] == 0
    values_read, codes = regs.read_array(np.array(addrs, np.uint64))
    assert values_read.tolist() == [0x11, 0, 700, regs.chip_id, 0, 0x11]
    assert codes.tolist() == [0, ErrorCode.UNMAPPED_ADDRESS, 0, 0, 0, 0]


def test_write_many_length_mismatch(regs: RegisterFile) -> None:
    with pytest.raises(ValueError):
        regs.write_many([1, 2], [3])


def test_version_and_block_versions(regs: RegisterFile) -> None:
    regs.write(A(Block.DRIVER, 1), 1)
    regs.write(A(Block.DRIVER, 1), 0x40)  # refused: no version bump
    assert regs.version == 1
    assert regs.block_versions[Block.DRIVER] == 1
    assert regs.block_versions[Block.SYNAPSE] == 0


def test_chip_reset_keeps_system(regs: RegisterFile) -> None:
    regs.write(A(Block.SYSTEM, SystemReg.SCRATCH0), 42)
    regs.write(A(Block.CAPMEM_NEURON, 9), 100)
    regs.write(A(Block.MADC_CONFIG, 0), 0x10001000)
    regs.add_spike_counts(np.ones(512))
    v = regs.version
    regs.chip_reset()
    assert regs.version > v
    assert regs.capmem_neuron.sum() == 0 and int(regs.madc_config) == 0
    assert regs.spike_counter.sum() == 0
    assert regs.scratch[0] == 42
    assert regs.read(A(Block.SYSTEM, SystemReg.SERIAL_LO))[0] == 0x9ABCDEF0


def test_bad_constructor_args() -> None:
    with pytest.raises(ValueError):
        RegisterFile(-1)
    with pytest.raises(ValueError):
        RegisterFile(1, firmware_version=(1, 256, 0))


# every mapped register of a small model, as a reference oracle
def _oracle_rules(addr: int) -> tuple[str, int, int]:
    """(kind, mask, max) of an address from the addressmap comments, written independently."""
    block, off = addr >> 24, addr & 0xFFFFFF
    if block == Block.SYSTEM:
        if off <= 4:
            return "ro", 0, 0
        if 0x10 <= off <= 0x1F:
            return "rw", 0xFFFFFFFF, 0xFFFFFFFF
        return "unmapped", 0, 0
    if block == Block.CAPMEM_NEURON:
        return ("rw", 0x3FF, 1022) if off >> 5 < 512 and off & 31 < 24 else ("unmapped", 0, 0)
    if block == Block.CAPMEM_GLOBAL:
        return ("rw", 0x3FF, 1022) if off >> 5 < 4 and off & 31 < 16 else ("unmapped", 0, 0)
    if block == Block.DRIVER:
        return ("rw", 0x1F, 0x1F) if off < 256 else ("unmapped", 0, 0)
    if block == Block.CROSSBAR:
        ok = off >> 4 < 16 and off & 15 < 9
        return ("rw", 0x8FFFFFFF, 0x8FFFFFFF) if ok else ("unmapped", 0, 0)
    if block == Block.SPIKE_COUNTER:
        return ("ro", 0, 0) if off < 512 else ("unmapped", 0, 0)
    return "unmapped", 0, 0


_blocks = st.sampled_from(
    [Block.SYSTEM, Block.CAPMEM_NEURON, Block.CAPMEM_GLOBAL, Block.DRIVER, Block.CROSSBAR,
     Block.SPIKE_COUNTER, 0x0C, 0x80]
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_blocks, st.integers(0, 1 << 15), st.integers(0, (1 << 32) - 1)),
        min_size=1,
        max_size=40,
    )
)
def test_write_array_matches_oracle(ops) -> None:
    regs = RegisterFile(5)
    addrs = np.array([A(b, o) for b, o, _ in ops], np.uint64)
    values = np.array([v for _, _, v in ops], np.uint64)
    # small values too, so that valid writes actually happen
    values[::2] &= 0x1F
    codes = regs.write_array(addrs, values)
    model: dict[int, int] = {}
    for a, v, c in zip(addrs.tolist(), values.tolist(), codes.tolist(), strict=True):
        kind, mask, vmax = _oracle_rules(a)
        if kind == "unmapped":
            assert c == ErrorCode.UNMAPPED_ADDRESS
        elif kind == "ro":
            assert c == ErrorCode.READ_ONLY_ADDRESS
        elif v & ~mask or v > vmax:
            assert c == ErrorCode.VALUE_OUT_OF_RANGE
        else:
            assert c == 0
            model[a] = v
    got, rcodes = regs.read_array(np.array(sorted(model), np.uint64))
    assert not rcodes.any()
    assert got.tolist() == [model[a] for a in sorted(model)]
