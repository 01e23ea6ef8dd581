"""CONTROL-channel packets that update a board's flash (kinds 0x40..0x4F), declared as data.

Why a request/status scheme rather than one big "flash this" packet: every step is small and
checkable, slow steps (erase) report progress and can be polled, and the board re-checks the image
itself before it makes a slot active, so a host bug cannot make a board unbootable.
The bodies are registered with protocol/control.py, so `encode_control` / `decode_control` speak
them like every other control packet. Byte tables and the state machine: docs/flash.md.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import construct as cs

from protocol.control import decode_control, encode_control, register_control_packet
from protocol.wire import FRAME_MAX_PAYLOAD


class FlashKind(IntEnum):
    """First byte of every flash control packet."""

    INFO = 0x40  # host -> board: geometry, boot record, slot summary
    INFO_REPLY = 0x41  # board -> host
    ERASE = 0x42  # host -> board: start erasing pages of a slot (slow; POLL for progress)
    WRITE = 0x43  # host -> board: program bytes into erased pages of a slot
    READ_CRC = 0x44  # host -> board: CRC-32 of a slot range, computed on the board
    ACTIVATE = 0x45  # host -> board: check the slot's image, then switch the boot record to it
    POLL = 0x46  # host -> board: progress of the running / last operation
    FAULT = 0x4E  # host -> board: inject a flash program failure (test knob)
    STATUS = 0x4F  # board -> host: answer to ERASE, WRITE, READ_CRC, ACTIVATE, POLL, FAULT


class FlashOp(IntEnum):
    """Which operation a STATUS packet is about."""

    NONE = 0
    ERASE = 1
    WRITE = 2
    READ_CRC = 3
    ACTIVATE = 4
    FAULT = 5


class FlashStatus(IntEnum):
    """Result codes in STATUS packets; `value` carries the detail named here."""

    OK = 0  # value: READ_CRC -> the CRC; ACTIVATE -> packed firmware version now active
    BUSY = 1  # an erase is running: POLL until OK; value = the running FlashOp
    BAD_REQUEST = 2  # slot / offset / length out of range or misaligned; value = offending offset
    NOT_ERASED = 3  # write to a page not erased since its last program; value = page offset
    WRITE_FAILED = 4  # the flash reported a program failure; value = slot offset of the page
    BAD_IMAGE = 5  # ACTIVATE: header or CRC of the slot's image is wrong; value = slot offset
    WRONG_BOARD = 6  # ACTIVATE: image built for another board kind
    SLOT_ACTIVE = 7  # erase / write of the slot the board boots from is refused; value = slot


class SlotState(IntEnum):
    """What the board found in a slot (INFO_REPLY)."""

    EMPTY = 0  # no image header (erased or partly written)
    VALID = 1  # header, board kind and payload CRC check out: bootable
    INVALID = 2  # a header is there but the image does not check out


NO_SLOT = 0xFF  # INFO_REPLY active_slot when no slot holds a bootable image

# Largest FLASH_WRITE data a board accepts: the packet must fit one 65536-byte frame payload.
WRITE_OVERHEAD = 1 + 1 + 4 + 4  # kind, slot, offset, length prefix
MAX_WRITE_CHUNK = 60 * 1024
assert MAX_WRITE_CHUNK + WRITE_OVERHEAD <= FRAME_MAX_PAYLOAD

SlotInfo = cs.Struct(
    "state" / cs.Int8ul,  # SlotState
    "firmware_version" / cs.Int32ul,  # packed X.Y.Z of the header, 0 when EMPTY
    "image_length" / cs.Int32ul,  # header + payload bytes, 0 unless VALID
    "image_crc" / cs.Int32ul,  # CRC-32 of the whole image, 0 unless VALID
)

# Bodies after the kind byte, in wire order, all little-endian.
BODIES: dict[FlashKind, cs.Struct] = {
    FlashKind.INFO: cs.Struct(),
    FlashKind.INFO_REPLY: cs.Struct(
        "board_kind" / cs.PascalString(cs.Int8ul, "ascii"),  # as in HELLO_REPLY
        "page_size" / cs.Int32ul,
        "slot_size" / cs.Int32ul,
        "max_chunk" / cs.Int32ul,  # largest WRITE data the board accepts
        "active_slot" / cs.Int8ul,  # slot the board runs, NO_SLOT if none is bootable
        "boot_sequence" / cs.Int32ul,  # sequence number of the boot record in force (0: none)
        "firmware_version" / cs.Int32ul,  # packed version the board runs (active slot's header)
        "n_slots" / cs.Int8ul,
        "slots" / cs.Array(cs.this.n_slots, SlotInfo),
    ),
    FlashKind.ERASE: cs.Struct(
        "slot" / cs.Int8ul,
        "offset" / cs.Int32ul,  # page-aligned, within the slot
        "length" / cs.Int32ul,  # whole pages
    ),
    FlashKind.WRITE: cs.Struct(
        "slot" / cs.Int8ul,
        "offset" / cs.Int32ul,  # page-aligned, within the slot
        "data" / cs.Prefixed(cs.Int32ul, cs.GreedyBytes),  # 1..max_chunk bytes
    ),
    FlashKind.READ_CRC: cs.Struct(
        "slot" / cs.Int8ul,
        "offset" / cs.Int32ul,
        "length" / cs.Int32ul,
    ),
    FlashKind.ACTIVATE: cs.Struct("slot" / cs.Int8ul),
    FlashKind.POLL: cs.Struct(),
    FlashKind.FAULT: cs.Struct(
        "fail_write" / cs.Int32ul,  # the n-th next page program fails (1 = the next); 0 = off
    ),
    FlashKind.STATUS: cs.Struct(
        "op" / cs.Int8ul,  # FlashOp
        "status" / cs.Int8ul,  # FlashStatus
        "slot" / cs.Int8ul,
        "done" / cs.Int32ul,  # bytes processed so far (progress)
        "total" / cs.Int32ul,  # bytes the operation covers
        "value" / cs.Int32ul,  # see FlashStatus
    ),
}

REQUEST_KINDS = frozenset(
    {
        FlashKind.INFO,
        FlashKind.ERASE,
        FlashKind.WRITE,
        FlashKind.READ_CRC,
        FlashKind.ACTIVATE,
        FlashKind.POLL,
        FlashKind.FAULT,
    }
)

for _kind, _body in BODIES.items():
    register_control_packet(int(_kind), f"FLASH_{_kind.name}", _body)


def build_packet(kind: FlashKind, **fields: Any) -> bytes:
    """Bytes of one flash packet (ConfigError names a missing or out-of-range field)."""
    return encode_control(int(kind), **fields)


def parse_packet(data: bytes) -> tuple[int, dict[str, Any]]:
    """(kind, fields) of one control packet; DecodeError if it does not decode exactly."""
    return decode_control(data)
