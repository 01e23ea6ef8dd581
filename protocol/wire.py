"""Wire constants: the single source of truth for frame and word layouts.

Every number here is documented in docs/protocol.md; the golden-vector tests pin them, so a
change here is a protocol version change.
"""

from __future__ import annotations

from enum import IntEnum

PROTOCOL_VERSION = 1

# ---------------------------------------------------------------- frames (link layer)
FRAME_MAGIC = 0x5354  # bytes b"TS" on the wire (u16 little-endian) -- "ST"robe
FRAME_HEADER_SIZE = 16  # magic u16, version u8, type u8, channel u8, flags u8, seq u16,
#                         ack u16, window u16, length u32
FRAME_CRC_SIZE = 4  # CRC-32 (IEEE 802.3, zlib.crc32) over header + payload, u32 little-endian
FRAME_MAX_PAYLOAD = 65536  # bytes; a receiver rejects a longer length field as garbage
SEQ_MODULUS = 1 << 16


class FrameType(IntEnum):
    DATA = 1  # reliable: carries seq, delivered in order exactly once
    ACK = 2  # unreliable: cumulative ack only (ack = next expected seq)
    SYN = 3  # link (re)start: both sides reset seq/ack state to 0
    SYN_ACK = 4


class Channel(IntEnum):
    PLAYBACK = 0  # host -> FPGA: playback program words; FPGA -> host: trace words
    CONTROL = 1  # control packets (construct-declared): hello, info, faults, flash, reset
    LOOPBACK = 2  # the board echoes each message back unchanged on the same channel


class FrameFlag(IntEnum):
    END_OF_MESSAGE = 0x01  # last fragment of a message


# ---------------------------------------------------------------- 64-bit words
# Every instruction and trace record is one little-endian u64; bits 63..56 are the opcode.
OPCODE_SHIFT = 56
TIMESTAMP_BITS = 42  # 8 ns ticks; low 42 bits in records (9.77 h), TIME_SYNC gives the rest
TIMESTAMP_MASK = (1 << TIMESTAMP_BITS) - 1
LABEL_BITS = 14
LABEL_MASK = (1 << LABEL_BITS) - 1
TICK_NS = 8  # 125 MHz FPGA clock
TICKS_PER_US = 125


class Instr(IntEnum):
    """Playback instructions, host -> FPGA (docs/protocol.md, 'Playback instructions')."""

    TIMER_RESET = 0x80  # playback timer := 0; FPGA emits TIME_SYNC(0)
    WAIT_UNTIL = 0x81  # [55:0] absolute playback time in ticks
    WRITE = 0x82  # [31:0] address; followed by exactly one DATA word
    DATA = 0x83  # [31:0] data word of WRITE / WRITE_BLOCK
    WRITE_BLOCK = 0x84  # [55:32] count N (1..2^24-1), [31:0] first address; N DATA words follow
    READ = 0x85  # [55:32] count N, [31:0] first address; N READ_DATA records answer, in order
    SPIKE1 = 0x86  # [55:42] label0
    SPIKE2 = 0x87  # [55:42] label0, [41:28] label1
    SPIKE3 = 0x88  # + [27:14] label2
    SPIKE4 = 0x89  # + [13:0] label3
    CADC_TRIGGER = 0x8A  # one CADC sample of all 512 channels now
    CADC_SCHEDULE = 0x8B  # [55:42] count, [41:0] interval ticks: count samples, first one now
    MADC_RECORD = 0x8C  # [55:32] number of samples at the configured MADC period, from now
    EPISODE_START = 0x8D  # [55:42] episode index: global neuron reset, episode marker record
    BARRIER = 0x8E  # wait until all preceding operations (writes, ADC) completed
    HALT = 0x8F  # end of program: FPGA emits HALT and flushes the trace
    SYSTEM = 0x90  # [7:0] system op (SystemOp)
    FLASH = 0x91  # reserved for flash playback ops (flash uses CONTROL packets, see docs)


class SystemOp(IntEnum):
    NOP = 0
    CHIP_RESET = 1  # all chip registers to reset values (zero)
    CLEAR_SPIKE_COUNTERS = 2


class Rec(IntEnum):
    """Trace records, FPGA -> host (docs/protocol.md, 'Trace records')."""

    TIME_SYNC = 0x01  # [55:0] full playback time; emitted at TIMER_RESET and on 2^42 wrap
    SPIKE = 0x02  # [55:42] label, [41:0] time
    CADC_HEAD = 0x03  # [55:42] sample index within episode, [41:0] time; 74 CADC_DATA follow
    CADC_DATA = 0x04  # [55:0] 7 samples: channel 7k+j at bits [8j+7:8j]
    MADC = 0x05  # [51:42] 10-bit value, [55:52] source, [41:0] time
    READ_DATA = 0x06  # [55:32] read index within program (mod 2^24), [31:0] data
    EPISODE = 0x07  # [55:42] episode index, [41:0] time of the episode start
    HALT = 0x08  # [55:42] status (0 ok), [41:0] time
    ERROR = 0x09  # [55:48] ErrorCode, [47:32] info16, [31:0] info32 (e.g. the address)


CADC_CHANNELS = 512
CADC_SAMPLES_PER_WORD = 7
CADC_DATA_WORDS = 74  # ceil(512 / 7); the 6 unused slots of the last word are zero


class ErrorCode(IntEnum):
    """Codes of ERROR trace records. info16/info32 meaning per code in docs/protocol.md."""

    UNMAPPED_ADDRESS = 1  # info32 = address
    READ_ONLY_ADDRESS = 2  # info32 = address
    VALUE_OUT_OF_RANGE = 3  # info32 = address, info16 = low 16 bits of the offending value
    BAD_INSTRUCTION = 4  # info32 = word index in program, info16 = opcode
    TRUNCATED_PROGRAM = 5  # info32 = word index where a DATA word was missing / no HALT
    TIME_IN_PAST = 6  # WAIT_UNTIL earlier than now; info32 = word index
    OVERFLOW = 7  # trace buffer overflow; info32 = records dropped (never silent)
    FLASH_FAILURE = 8  # info32 = flash byte offset
