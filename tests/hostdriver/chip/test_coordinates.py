"""Coordinates: range checks, golden addresses, address round trips, descriptions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostdriver.chip.coordinates import (
    BackgroundSourceCoord,
    BusCoord,
    CADCChannelCoord,
    CrossbarNodeCoord,
    DriverCoord,
    GlobalCellCoord,
    NeuronCellCoord,
    NeuronCoord,
    SynapseCoord,
    SynapseRowCoord,
    describe_address,
    event_label,
    label_address,
    label_row_select,
)
from protocol.addressmap import CrossbarInput, CrossbarOutput, GlobalCell, NeuronCell
from protocol.errors import ConfigError


def test_neuron_geometry():
    cases = {0: (0, 0, 0), 127: (0, 127, 0), 128: (0, 128, 1), 255: (0, 255, 1),
             256: (1, 0, 2), 383: (1, 127, 2), 384: (1, 128, 3), 511: (1, 255, 3)}
    for i, (h, c, q) in cases.items():
        n = NeuronCoord(i)
        assert (n.hemisphere, n.column, n.quadrant) == (h, c, q)
        assert n.crossbar_input == CrossbarInput(q)
        assert NeuronCoord.from_column(h, c) == n
    assert NeuronCoord(3).other_hemisphere == NeuronCoord(259)
    assert NeuronCoord(259).other_hemisphere == NeuronCoord(3)


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda: NeuronCoord(512), "NeuronCoord.index 512 out of range 0..511"),
        (lambda: NeuronCoord(-1), "NeuronCoord.index -1 out of range 0..511"),
        (lambda: NeuronCellCoord(0, 24), "NeuronCellCoord.cell 24 out of range 0..23"),
        (lambda: GlobalCellCoord(4, 0), "GlobalCellCoord.quadrant 4 out of range 0..3"),
        (lambda: SynapseCoord(0, 256, 0), "SynapseCoord.row 256 out of range 0..255"),
        (lambda: SynapseCoord(2, 0, 0), "SynapseCoord.hemisphere 2 out of range 0..1"),
        (lambda: DriverCoord(0, 128), "DriverCoord.driver 128 out of range 0..127"),
        (lambda: BusCoord(0, 4), "BusCoord.bus 4 out of range 0..3"),
        (lambda: CrossbarNodeCoord(0, 9), "CrossbarNodeCoord.output 9 out of range 0..8"),
        (lambda: BackgroundSourceCoord(8), "BackgroundSourceCoord.index 8 out of range 0..7"),
        (lambda: CADCChannelCoord(512), "CADCChannelCoord.index 512 out of range 0..511"),
        (lambda: NeuronCoord(1.5), "NeuronCoord.index must be an integer"),
    ],
)
def test_range_errors_name_coordinate_field_and_range(make, text):
    with pytest.raises(ConfigError, match=text.replace(".", r"\.")):
        make()


def test_golden_addresses():
    # hand-computed from the address map: block << 24 | offset
    assert NeuronCellCoord(17, NeuronCell.V_LEAK).address == 0x0100_0220
    assert NeuronCellCoord(511, 23).address == 0x0100_3FF7
    assert GlobalCellCoord(3, GlobalCell.V_SYNAPSE_REF).address == 0x0200_0061
    assert NeuronCoord(300).config_addresses == (0x0300_0258, 0x0300_0259)
    assert SynapseCoord(1, 3, 5).address == 0x0400_8182 and SynapseCoord(1, 3, 5).half == 1
    assert SynapseCoord(1, 3, 4).address == 0x0400_8182 and SynapseCoord(1, 3, 4).half == 0
    assert DriverCoord(1, 5).address == 0x0500_0085
    assert CrossbarNodeCoord(CrossbarInput.FPGA, CrossbarOutput.FPGA_RECORD).address == 0x0600_0048
    assert NeuronCoord(7).spike_counter_address == 0x0700_0007
    assert CADCChannelCoord(300).offset_address == 0x0800_012C
    assert BackgroundSourceCoord(2).addresses == (0x0B00_0008, 0x0B00_0009, 0x0B00_000A)
    assert BackgroundSourceCoord(2).crossbar_input == 10


@given(st.integers(0, 511), st.integers(0, 23))
def test_neuron_cell_round_trip(n, c):
    coord = NeuronCellCoord(n, c)
    assert NeuronCellCoord.from_address(coord.address) == coord


@given(st.integers(0, 1), st.integers(0, 255), st.integers(0, 255))
def test_synapse_round_trip(h, r, c):
    s = SynapseCoord(h, r, c)
    assert SynapseCoord.from_address(s.address, s.half) == s
    assert s.neuron == NeuronCoord(256 * h + c)
    assert s.row_coord.driver == DriverCoord(h, r // 2)


def test_other_round_trips_and_wrong_blocks():
    assert GlobalCellCoord.from_address(GlobalCellCoord(2, 7).address) == GlobalCellCoord(2, 7)
    assert DriverCoord.from_address(DriverCoord(1, 127).address) == DriverCoord(1, 127)
    node = CrossbarNodeCoord(15, 8)
    assert CrossbarNodeCoord.from_address(node.address) == node
    assert BackgroundSourceCoord.from_address(0x0B00_001E) == BackgroundSourceCoord(7)
    assert CADCChannelCoord.from_address(0x0800_01FF) == CADCChannelCoord(511)
    assert NeuronCoord.from_address(0x0300_0259) == NeuronCoord(300)
    with pytest.raises(ConfigError, match="not in block CAPMEM_NEURON"):
        NeuronCellCoord.from_address(0x0200_0000)
    with pytest.raises(ConfigError, match="unmapped word 3"):
        BackgroundSourceCoord.from_address(0x0B00_0003)
    with pytest.raises(ConfigError, match="out of range"):
        CrossbarNodeCoord.from_address(0x0600_000F)


def test_drivers_buses_rows_and_labels():
    d = DriverCoord(1, 45)
    assert d.bus == BusCoord(1, 1) and d.bus.crossbar_output == 5
    assert d.row_select == 11
    assert d.rows == (SynapseRowCoord(1, 90), SynapseRowCoord(1, 91))
    assert SynapseRowCoord(1, 91).row_in_driver == 1
    assert len(BusCoord(0, 2).drivers) == 32 and BusCoord(0, 2).drivers[1] == DriverCoord(0, 6)
    lab = d.event_label(37, high=5)
    assert lab == 5 << 11 | 11 << 6 | 37
    assert int(label_row_select(lab)) == 11 and int(label_address(lab)) == 37
    with pytest.raises(ConfigError, match="synapse_address 64 out of range 0..63"):
        event_label(0, 64)
    assert list(event_label([1, 2], [3, 4])) == [67, 132]


def test_describe_address_covers_every_block():
    assert describe_address(0x0000_0002) == "0x00000002 SYSTEM FIRMWARE_VERSION"
    assert describe_address(0x0000_0013) == "0x00000013 SYSTEM SCRATCH3"
    assert describe_address(0x0100_0220) == (
        "0x01000220 CAPMEM_NEURON NeuronCell.V_LEAK of neuron 17"
    )
    assert "CELL20" in describe_address(NeuronCellCoord(0, 20).address)
    assert describe_address(0x0100_0018).endswith("(CAPMEM_NEURON, unmapped offset 0x000018)")
    assert "GlobalCell.I_BIAS_SYNAPSE_DAC of quadrant 1" in describe_address(0x0200_0020)
    assert describe_address(0x0300_0259) == "0x03000259 NEURON_CONFIG neuron 300 word 1"
    assert describe_address(0x0400_8182) == "0x04008182 SYNAPSE hemisphere 1 row 3 columns 4..5"
    assert describe_address(0x0500_0085) == "0x05000085 DRIVER hemisphere 1 driver 5"
    assert describe_address(0x0600_0048) == "0x06000048 CROSSBAR node input 4 -> output 8"
    assert describe_address(0x0700_0001) == "0x07000001 SPIKE_COUNTER neuron 1"
    assert describe_address(0x0800_0005) == "0x08000005 CADC_OFFSET channel 5"
    assert describe_address(0x0900_0000) == "0x09000000 CADC_CONFIG"
    assert describe_address(0x0A00_0001).endswith("unmapped offset 0x000001)")
    assert describe_address(0x0B00_0009) == "0x0b000009 BACKGROUND source 2 word 1"
    assert describe_address(0x2000_0000) == "0x20000000 (unmapped block 0x20)"
