"""Flash control packets: golden bytes from docs/flash.md, round trips, strict decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.control import control_kind_name
from protocol.errors import ConfigError, DecodeError
from protocol.flash_packets import BODIES, MAX_WRITE_CHUNK, FlashKind, build_packet, parse_packet
from protocol.wire import FRAME_MAX_PAYLOAD

GOLDEN = [
    (FlashKind.INFO, {}, "40"),
    (FlashKind.ERASE, dict(slot=1, offset=0x1000, length=0x2000), "42 01 00100000 00200000"),
    (
        FlashKind.WRITE,
        dict(slot=0, offset=0x3000, data=b"\xaa\xbb"),
        "43 00 00300000 02000000 aabb",
    ),
    (FlashKind.READ_CRC, dict(slot=1, offset=0, length=0x30), "44 01 00000000 30000000"),
    (FlashKind.ACTIVATE, dict(slot=1), "45 01"),
    (FlashKind.POLL, {}, "46"),
    (FlashKind.FAULT, dict(fail_write=3), "4e 03000000"),
    (
        FlashKind.STATUS,
        dict(op=1, status=1, slot=1, done=0x1000, total=0x4000, value=1),
        "4f 01 01 01 00100000 00400000 01000000",
    ),
    (
        FlashKind.INFO_REPLY,
        dict(
            board_kind="emu",
            page_size=4096,
            slot_size=0x800000,
            max_chunk=0xF000,
            active_slot=0,
            boot_sequence=7,
            firmware_version=0x010000,
            n_slots=1,
            slots=[
                dict(state=1, firmware_version=0x010000, image_length=0x30, image_crc=0x12345678)
            ],
        ),
        "41 03656d75 00100000 00008000 00f00000 00 07000000 00000100 01"
        " 01 00000100 30000000 78563412",
    ),
]


@pytest.mark.parametrize("kind,fields,hexbytes", GOLDEN, ids=lambda x: getattr(x, "name", None))
def test_golden(kind, fields, hexbytes):
    raw = bytes.fromhex(hexbytes.replace(" ", ""))
    assert build_packet(kind, **fields) == raw
    got_kind, got = parse_packet(raw)
    assert got_kind == kind
    assert got == fields


def test_names_registered_with_control():
    assert control_kind_name(0x43) == "FLASH_WRITE"
    assert set(BODIES) == set(FlashKind)


def test_write_chunk_fits_one_frame():
    packet = build_packet(FlashKind.WRITE, slot=0, offset=0, data=bytes(MAX_WRITE_CHUNK))
    assert len(packet) <= FRAME_MAX_PAYLOAD


@given(
    slot=st.integers(0, 255),
    offset=st.integers(0, 2**32 - 1),
    data=st.binary(max_size=512),
)
def test_write_round_trip(slot, offset, data):
    kind, fields = parse_packet(build_packet(FlashKind.WRITE, slot=slot, offset=offset, data=data))
    assert (kind, fields) == (FlashKind.WRITE, dict(slot=slot, offset=offset, data=data))


@given(st.binary(min_size=1, max_size=64))
def test_fuzz_flash_kinds(tail):
    raw = bytes([0x40 + tail[0] % 16]) + tail[1:]
    try:
        parse_packet(raw)
    except DecodeError:
        pass


def test_trailing_and_short_packets_refused():
    with pytest.raises(DecodeError, match="trailing"):
        parse_packet(bytes.fromhex("4501ff"))
    with pytest.raises(DecodeError, match="malformed"):
        parse_packet(bytes.fromhex("4201"))
    # a WRITE whose length prefix claims more data than follows
    with pytest.raises(DecodeError):
        parse_packet(bytes.fromhex("43 00 00000000 05000000 aabb".replace(" ", "")))


def test_build_refuses_bad_fields():
    with pytest.raises(ConfigError, match="missing"):
        build_packet(FlashKind.ERASE, slot=0, offset=0)
    with pytest.raises(ConfigError):
        build_packet(FlashKind.ACTIVATE, slot=256)
