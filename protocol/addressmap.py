"""The chip's 32-bit register address map (docs/chip.md is the human reference).

address = block << 24 | offset. Each register holds one 32-bit data word; unused high bits of a
register must be written as zero (the board answers VALUE_OUT_OF_RANGE otherwise).
Reset value of every read-write register is 0.
"""

from __future__ import annotations

from enum import IntEnum

BLOCK_SHIFT = 24
OFFSET_MASK = (1 << BLOCK_SHIFT) - 1

N_NEURONS = 512  # circuits: 0..255 top hemisphere, 256..511 bottom; column = circuit % 256
N_COLUMNS = 256
N_HEMISPHERES = 2
N_ROWS = 256  # synapse rows per hemisphere
N_DRIVERS = 128  # synapse drivers per hemisphere; driver d feeds rows 2d and 2d+1
N_BUSES = 4  # synapse-driver event buses per hemisphere; bus b serves drivers d with d % 4 == b
N_QUADRANTS = 4  # quadrant q = 2*hemisphere + (column >= 128)
N_BACKGROUND = 8
CAPMEM_MAX = 1022  # 10-bit cells; 1023 is reserved and refused


class Block(IntEnum):
    SYSTEM = 0x00  # offset: SystemReg
    CAPMEM_NEURON = 0x01  # offset = neuron << 5 | cell (NeuronCell); [9:0] code 0..1022
    CAPMEM_GLOBAL = 0x02  # offset = quadrant << 5 | cell (GlobalCell); [9:0] code 0..1022
    NEURON_CONFIG = 0x03  # offset = neuron << 1 | word (0, 1); bit layout NeuronConfigBits
    SYNAPSE = 0x04  # offset = hemisphere << 15 | row << 7 | column >> 1; two synapses / word
    DRIVER = 0x05  # offset = hemisphere << 7 | driver; bit layout DriverBits
    CROSSBAR = 0x06  # offset = input << 4 | output; [31] enable, [27:14] mask, [13:0] target
    SPIKE_COUNTER = 0x07  # offset = neuron; read-only [7:0] count, [8] overflow
    CADC_OFFSET = 0x08  # offset = channel (= neuron index); [7:0] signed offset (two's compl.)
    CADC_CONFIG = 0x09  # offset 0: [0] enable
    MADC_CONFIG = 0x0A  # offset 0: [8:0] neuron, [11:9] source (ReadoutSource), [12] enable,
    #                     [31:16] sample period in ticks (>= 4)
    BACKGROUND = 0x0B  # offset = source << 2 | word; BackgroundWords


class SystemReg(IntEnum):
    SERIAL_LO = 0x00  # read-only: low 32 bits of the 64-bit board serial (seed of the chip)
    SERIAL_HI = 0x01  # read-only
    FIRMWARE_VERSION = 0x02  # read-only: major << 16 | minor << 8 | patch
    CHIP_ID = 0x03  # read-only
    PROTOCOL_VERSION = 0x04  # read-only
    SCRATCH0 = 0x10  # 0x10..0x1F read-write scratch registers (link tests)


SCRATCH_COUNT = 16


class NeuronCell(IntEnum):
    """Per-circuit CapMem cells (offset low 5 bits). 24 cells, 13 spare."""

    V_LEAK = 0
    V_RESET = 1
    V_THRESHOLD = 2
    I_BIAS_LEAK = 3  # leak conductance: larger code -> shorter tau_mem
    I_BIAS_SYN_EXC_TAU = 4  # larger code -> shorter tau_syn_exc
    I_BIAS_SYN_INH_TAU = 5
    I_BIAS_SYN_EXC_GM = 6  # input strength (PSP amplitude per weight), exc
    I_BIAS_SYN_INH_GM = 7
    I_BIAS_ADAPT_A = 8  # subthreshold adaptation a
    I_BIAS_ADAPT_B = 9  # spike-triggered adaptation b
    I_BIAS_ADAPT_TAU = 10  # larger code -> shorter tau_w
    V_EXP = 11  # exponential term threshold V_T
    I_BIAS_EXP = 12  # slope factor Delta_T
    I_OFFSET = 13  # constant current into the membrane (0 = none)
    I_BIAS_READOUT = 14  # readout amplifier bias (no effect on dynamics)
    V_ADAPT_REF = 15  # reference potential of the adaptation term (E_L of tau_w eq.)


N_NEURON_CELLS = 32  # address slots per neuron; cells >= 24 are unmapped


class GlobalCell(IntEnum):
    I_BIAS_SYNAPSE_DAC = 0  # scales all synaptic weights of the quadrant
    V_SYNAPSE_REF = 1  # reserved reference voltage (no effect in the emulator)


N_GLOBAL_CELLS = 32  # address slots per quadrant; cells >= 16 are unmapped


class NeuronConfigBits:
    """NEURON_CONFIG word 0 / word 1 bit positions."""

    # word 0
    ENABLE_FIRE = 0  # threshold comparator active (off = LI neuron, never spikes)
    ENABLE_LEAK = 1
    ENABLE_SYN_EXC = 2
    ENABLE_SYN_INH = 3
    ENABLE_ADAPTATION = 4
    ENABLE_EXPONENTIAL = 5
    CONNECT_OTHER_HEMISPHERE = 6  # merge with the other circuit of this column (multicompartment)
    SPIKE_OUTPUT = 7  # emit events into the crossbar
    READOUT_SOURCE_SHIFT = 8  # [10:8] ReadoutSource for CADC/MADC of this circuit
    READOUT_SOURCE_MASK = 0x7
    ENABLE_READOUT = 11
    OUTPUT_LABEL_SHIFT = 16  # [29:16] 14-bit event label emitted on a spike
    OUTPUT_LABEL_MASK = 0x3FFF
    # word 1
    REFRACTORY_COUNT_SHIFT = 0  # [7:0] refractory counter reload value
    REFRACTORY_COUNT_MASK = 0xFF
    REFRACTORY_CLOCK_SHIFT = 8  # [11:8] refractory clock: one count = 2**clock ticks (8 ns)
    REFRACTORY_CLOCK_MASK = 0xF


WORD0_VALID_MASK = 0x3FFF0FFF  # bits that may be set in NEURON_CONFIG word 0
WORD1_VALID_MASK = 0x00000FFF


class ReadoutSource(IntEnum):
    MEMBRANE = 0
    SYN_EXC = 1
    SYN_INH = 2
    ADAPTATION = 3


class SynapseBits:
    """SYNAPSE word: even column in [15:0], odd column in [31:16]; per half: [5:0] weight,
    [13:8] 6-bit address (bits 6, 7, 14, 15 must be zero)."""

    WEIGHT_MASK = 0x3F
    ADDRESS_SHIFT = 8
    ADDRESS_MASK = 0x3F
    HALF_VALID_MASK = 0x3F3F


class RowMode(IntEnum):
    DISABLED = 0
    EXCITATORY = 1
    INHIBITORY = 2


class DriverBits:
    """DRIVER word: [1:0] RowMode of row 2d, [3:2] RowMode of row 2d+1, [4] enable.
    The driver listens on bus d % 4 and answers an event whose label[10:6] == d >> 2 (row select);
    label[5:0] is the 6-bit address that synapses compare with their own."""

    ROW0_MODE_SHIFT = 0
    ROW1_MODE_SHIFT = 2
    ENABLE = 4
    VALID_MASK = 0x1F


class CrossbarInput(IntEnum):
    """Crossbar inputs (rows of the node matrix)."""

    NEURONS_TOP_LEFT = 0  # circuits 0..127
    NEURONS_TOP_RIGHT = 1  # circuits 128..255
    NEURONS_BOTTOM_LEFT = 2  # circuits 256..383
    NEURONS_BOTTOM_RIGHT = 3  # circuits 384..511
    FPGA = 4  # spikes injected by playback SPIKEn instructions
    BACKGROUND0 = 8  # background sources 0..7 are inputs 8..15


N_CROSSBAR_INPUTS = 16


class CrossbarOutput(IntEnum):
    """Crossbar outputs: synapse-driver buses (hemisphere h, bus b) = 4h + b, and recording."""

    BUS_TOP0 = 0  # ... BUS_TOP3 = 3
    BUS_BOTTOM0 = 4  # ... BUS_BOTTOM3 = 7
    FPGA_RECORD = 8  # events reaching it appear as SPIKE trace records


N_CROSSBAR_OUTPUTS = 16  # outputs 9..15 unmapped
CROSSBAR_ENABLE_BIT = 31
CROSSBAR_MASK_SHIFT = 14


class BackgroundWords:
    """BACKGROUND source s: word 0 [0] enable, [1] poisson (else periodic), [29:16] label;
    word 1 period in ticks (periodic) or mean interval in ticks (poisson), >= 1;
    word 2 seed (poisson). Word 3 unmapped."""

    ENABLE = 0
    POISSON = 1
    LABEL_SHIFT = 16


def address(block: int, offset: int) -> int:
    """Compose a register address (no range check: see hostdriver's coordinates for that)."""
    return (int(block) << BLOCK_SHIFT) | int(offset)


def split(addr: int) -> tuple[int, int]:
    return addr >> BLOCK_SHIFT, addr & OFFSET_MASK
