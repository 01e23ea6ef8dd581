"""Golden vectors written by hand from the tables of docs/protocol.md (not produced by the code).

Each word is given as the u64 value (opcode = first two hex digits) and, where it matters, as the
little-endian wire bytes. The frame's header bytes are hand-written; only its CRC is computed,
independently of protocol/, with binascii.crc32.
"""

from __future__ import annotations

import binascii

import numpy as np
import pytest

from protocol import instructions as I
from protocol import spec
from protocol.control import ControlKind, decode_control, encode_control
from protocol.frames import Frame, FrameDecoder, decode_frame, encode_frame
from protocol.records import decode_trace, encode_trace
from protocol.wire import Channel, FrameType, Instr, Rec, SystemOp

GOLDEN_INSTRUCTIONS = [
    (I.timer_reset(), [0x8000000000000000]),
    (I.wait_until(0x123456789ABC), [0x8100123456789ABC]),
    (I.write(0x01000020, 0xDEADBEEF), [0x8200000001000020, 0x83000000DEADBEEF]),
    (I.write_block(0x04000100, [1, 2]),
     [0x8400000204000100, 0x8300000000000001, 0x8300000000000002]),
    (I.read(0x00000010, 3), [0x8500000300000010]),
    (I.spikes([0x40] * 5, [1, 2, 3, 4, 5]),
     [0x8100000000000040, 0x890004002000C004, 0x8600140000000000]),
    (I.spikes([7, 7], [0x3FFF, 1]), [0x8100000000000007, 0x87FFFC0010000000]),
    (I.spikes([9, 9, 9], [1, 2, 3]), [0x8100000000000009, 0x880004002000C000]),
    (I.cadc_trigger(), [0x8A00000000000000]),
    (I.cadc_schedule(212, 20), [0x8B005000000000D4]),
    (I.madc_record(100), [0x8C00006400000000]),
    (I.episode_start(3), [0x8D000C0000000000]),
    (I.barrier(), [0x8E00000000000000]),
    (I.halt(), [0x8F00000000000000]),
    (I.system(SystemOp.CHIP_RESET), [0x9000000000000001]),
]


@pytest.mark.parametrize(("built", "golden"), GOLDEN_INSTRUCTIONS)
def test_instruction_words(built, golden):
    assert built.tolist() == golden
    raw = np.array(golden, dtype="<u8").tobytes()
    assert I.decode_program(raw)["word"].tolist() == golden
    assert len(spec.parse_instructions(raw)) == len(golden)  # the construct spec agrees


def test_instruction_wire_bytes_are_little_endian():
    assert I.program_bytes(I.read(0x10, 3)) == bytes.fromhex("1000000003000085")
    assert I.program_bytes(I.wait_until(0x123456789ABC)) == bytes.fromhex("bc9a785634120081")


# hand-written trace: (word, what it means)
GOLDEN_TRACE = [
    0x0100000000000000,  # TIME_SYNC time 0
    0x07000C0000000100,  # EPISODE index 3, time 0x100
    0x0200A80000000123,  # SPIKE label 0x2A, time 0x123
    0x0300040000000130,  # CADC_HEAD index 1, time 0x130
    0x0407060504030201,  # CADC_DATA channels 0..6 = 1..7
    *[0x0400000000000000] * 72,  # CADC_DATA channels 7..510 = 0
    0x04000000000000FF,  # CADC_DATA channel 511 = 0xFF, 6 unused slots 0
    0x0525540000000140,  # MADC source 2, value 0x155, time 0x140
    0x06000007CAFEBABE,  # READ_DATA index 7, data 0xCAFEBABE
    0x090100000C000000,  # ERROR code 1 (UNMAPPED_ADDRESS), info16 0, info32 0x0C000000
    0x0100040000000000,  # TIME_SYNC time 2^42 (epoch 1)
    0x0200A80000000005,  # SPIKE label 0x2A, time 2^42 + 5
    0x0800000000000200,  # HALT status 0, time 2^42 + 0x200
]


def test_trace_decodes_to_hand_values():
    tr = decode_trace(np.array(GOLDEN_TRACE, dtype="<u8").tobytes())
    assert tr.syncs.tolist() == [0, 1 << 42]
    assert tr.episodes.tolist() == [(3, 0x100)]
    assert tr.spikes.tolist() == [(0x123, 0x2A, 3), ((1 << 42) + 5, 0x2A, 3)]
    assert tr.cadc.tolist() == [(0x130, 3, 1)]
    expected = np.zeros(512, np.uint8)
    expected[:7] = [1, 2, 3, 4, 5, 6, 7]
    expected[511] = 0xFF
    assert tr.cadc_samples.tolist() == [expected.tolist()]
    assert tr.madc.tolist() == [(0x140, 0x155, 2, 3)]
    assert tr.reads.tolist() == [(7, 0xCAFEBABE)]
    assert tr.errors.tolist() == [(1, 0, 0x0C000000)]
    assert tr.halt.tolist() == [(0, (1 << 42) + 0x200)]
    assert spec.oracle_decode_trace(np.array(GOLDEN_TRACE, dtype="<u8").tobytes()).equals(tr)


def test_trace_encodes_to_hand_words():
    samples = np.zeros((1, 512), np.uint8)
    samples[0, :7] = [1, 2, 3, 4, 5, 6, 7]
    samples[0, 511] = 0xFF
    words = encode_trace(
        episodes={"time": [0x100], "index": [3]},
        spikes={"time": [0x123, (1 << 42) + 5], "label": [0x2A, 0x2A]},
        cadc={"time": [0x130], "index": [1]},
        cadc_samples=samples,
        madc={"time": [0x140], "value": [0x155], "source": [2]},
        reads={"time": [0x141], "index": [7], "data": [0xCAFEBABE]},
        errors={"time": [0x142], "code": [1], "info16": [0], "info32": [0x0C000000]},
        halt={"time": [(1 << 42) + 0x200], "status": [0]},
        sync=0,
    )
    assert [hex(w) for w in words.tolist()] == [hex(w) for w in GOLDEN_TRACE]


def test_single_record_words():
    assert spec.build_record(Rec.TIME_SYNC, time=(1 << 42) + 5) == bytes.fromhex(
        "0500000000040001")
    assert spec.build_record(Rec.MADC, source=2, value=0x155, time=0x20) == (
        0x0525540000000020).to_bytes(8, "little")
    assert spec.build_record(Rec.ERROR, code=1, info16=0, info32=0x0C000000) == (
        0x090100000C000000).to_bytes(8, "little")


# DATA frame on PLAYBACK, END_OF_MESSAGE, seq 0x0102, ack 0x0304, window 64, payload: HALT word
GOLDEN_FRAME_HEADER = bytes.fromhex("5453" "01" "01" "00" "01" "0201" "0403" "4000" "08000000")
GOLDEN_FRAME_PAYLOAD = bytes.fromhex("000000000000008f")
GOLDEN_ACK = bytes.fromhex("5453" "01" "02" "00" "00" "0000" "0500" "4000" "00000000")


def _with_crc(data: bytes) -> bytes:
    return data + binascii.crc32(data).to_bytes(4, "little")


def test_frame_golden():
    raw = _with_crc(GOLDEN_FRAME_HEADER + GOLDEN_FRAME_PAYLOAD)
    halt = I.program_bytes(I.halt())
    frame = Frame(FrameType.DATA, Channel.PLAYBACK, 1, 0x0102, 0x0304, 64, halt)
    assert encode_frame(frame) == raw
    assert decode_frame(raw) == frame
    assert FrameDecoder().feed(b"\x00garbage" + raw) == [frame]
    ack = _with_crc(GOLDEN_ACK)
    assert encode_frame(Frame(FrameType.ACK, ack=5, window=64)) == ack
    assert decode_frame(ack).type is FrameType.ACK


def test_documented_frame_crc():
    """The CRC printed in docs/protocol.md's worked example."""
    raw = _with_crc(GOLDEN_FRAME_HEADER + GOLDEN_FRAME_PAYLOAD)
    assert raw.hex(" ") == ("54 53 01 01 00 01 02 01 04 03 40 00 08 00 00 00 "
                            "00 00 00 00 00 00 00 8f 30 89 b1 c3")
    assert _with_crc(GOLDEN_ACK).hex(" ") == ("54 53 01 02 00 00 00 00 05 00 40 00 00 00 00 00 "
                                              "c8 11 dc d5")


def test_control_golden():
    assert encode_control(ControlKind.HELLO, protocol_version=1) == bytes.fromhex("0101")
    assert decode_control(bytes.fromhex("1004")) == (ControlKind.ACK, {"request": 4})
    assert encode_control(ControlKind.CHIP_RESET) == bytes.fromhex("04")


def test_opcode_values_pinned():
    assert [int(i) for i in Instr] == list(range(0x80, 0x92))
    assert [int(r) for r in Rec] == list(range(0x01, 0x0A))


# docs/protocol.md, section 11.2 / 11.3 (the worked example), copied by hand
DOC_PROGRAM = [0x8000000000000000, 0x8200000000000010, 0x8300000012345678, 0x8500000100000010,
               0x8D00000000000000, 0x810000000000007D, 0x8700140060000000, 0x8A00000000000000,
               0x8F00000000000000]
DOC_TRACE = [0x0100000000000000, 0x0600000012345678, 0x0700000000000000, 0x020014000000007D,
             0x020018000000007D, 0x030000000000007D, *[0x0480808080808080] * 73,
             0x0400000000000080, 0x080000000000007D]


def test_documented_worked_example():
    prog = I.program(I.timer_reset(), I.write(0x10, 0x12345678), I.read(0x10),
                     I.episode_start(0), I.spikes([125, 125], [5, 6]), I.cadc_trigger(),
                     I.halt())
    assert prog.tolist() == DOC_PROGRAM
    assert I.program_bytes(prog)[48:56].hex(" ") == "00 00 00 60 00 14 00 87"
    tr = decode_trace(np.array(DOC_TRACE, dtype="<u8").tobytes())
    assert tr.spikes.tolist() == [(125, 5, 0), (125, 6, 0)]
    assert tr.cadc.tolist() == [(125, 0, 0)]
    assert (tr.cadc_samples == 0x80).all() and tr.cadc_samples.shape == (1, 512)
    assert tr.reads.tolist() == [(0, 0x12345678)]
    assert tr.episodes.tolist() == [(0, 0)] and tr.halt.tolist() == [(0, 125)]
    assert tr.syncs.tolist() == [0]
