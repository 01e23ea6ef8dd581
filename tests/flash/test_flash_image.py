"""Firmware image format: golden header bytes from the docs table, round trips, every refusal."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import FlashError
from protocol.firmware_image import (
    HEADER_SIZE,
    build_header,
    make_image,
    pack_version,
    parse_header,
    parse_image,
    unpack_version,
)


def golden_header(payload: bytes, version: int, kind: bytes) -> bytes:
    """The header written straight from the table in docs/flash.md, without the codec."""
    raw = bytearray(
        struct.pack(
            "<4sBB2sIIII24s",
            b"STFW",
            1,
            48,
            b"\0\0",
            0,
            version,
            len(payload),
            zlib.crc32(payload),
            kind,
        )
    )
    raw[8:12] = struct.pack("<I", zlib.crc32(raw))
    return bytes(raw)


def test_header_matches_golden_bytes():
    payload = b"hello board"
    img = make_image(payload, version="1.2.3", board_kind="emulator")
    expected = golden_header(payload, 0x010203, b"emulator")
    assert len(expected) == HEADER_SIZE
    assert img.data == expected + payload
    # pinned hex, so a change of the table itself shows up here too
    assert expected.hex() == (
        "5354465701300000436ef28f030201000b000000812b6b6f"
        "656d756c61746f7200000000000000000000000000000000"
    )


@given(
    payload=st.binary(max_size=4096),
    version=st.tuples(*[st.integers(0, 255)] * 3),
    kind=st.from_regex(r"[A-Za-z0-9._-]{1,24}", fullmatch=True),
)
def test_round_trip(payload, version, kind):
    text = ".".join(map(str, version))
    img = make_image(payload, version=text, board_kind=kind)
    back = parse_image(img.data)
    assert back == img
    assert back.header.version_text == text
    assert back.header.board_kind == kind
    assert back.crc == zlib.crc32(img.data)


@given(data=st.binary(max_size=200))
def test_parse_garbage_raises_flash_error_only(data):
    try:
        parse_image(data)
    except FlashError:
        pass


def test_whole_image_crc_sees_header_changes():
    # A trailing header CRC would make the whole-image CRC blind to header edits (CRC residue).
    a = make_image(b"x" * 1000, version="1.2.3", board_kind="emulator")
    b = make_image(b"x" * 1000, version="1.2.4", board_kind="emulator")
    assert a.crc != b.crc


def test_wrong_payload_crc():
    data = bytearray(make_image(b"payload" * 100, version="1.0.0", board_kind="emulator").data)
    data[-1] ^= 0x01
    with pytest.raises(FlashError, match="payload corrupted"):
        parse_image(bytes(data))


def test_truncated_image():
    data = make_image(b"p" * 1000, version="1.0.0", board_kind="emulator").data
    with pytest.raises(
        FlashError, match="truncated: header announces 1000 payload bytes, file holds 999"
    ):
        parse_image(data[:-1])
    with pytest.raises(FlashError, match="shorter than the 48-byte header"):
        parse_image(data[:20])


def test_trailing_bytes():
    data = make_image(b"p" * 10, version="1.0.0", board_kind="emulator").data
    with pytest.raises(FlashError, match="3 trailing bytes"):
        parse_image(data + b"abc")


def test_header_corruption_and_magic():
    data = bytearray(make_image(b"p", version="1.0.0", board_kind="emulator").data)
    data[13] ^= 0x40
    with pytest.raises(FlashError, match="header corrupted"):
        parse_image(bytes(data))
    with pytest.raises(FlashError, match="not a firmware image"):
        parse_image(b"ELF\x7f" + bytes(100))


def test_unsupported_format_version():
    img = make_image(b"p", version="1.0.0", board_kind="emulator")
    header = bytearray(build_header(img.header))
    header[4] = 2
    header[8:12] = bytes(4)
    header[8:12] = struct.pack("<I", zlib.crc32(header))
    with pytest.raises(FlashError, match="format version 2 not supported"):
        parse_header(bytes(header))


def test_too_big_for_slot():
    data = make_image(b"p" * 100, version="1.0.0", board_kind="emulator").data
    with pytest.raises(FlashError, match="does not fit"):
        parse_image(data, max_length=100)
    assert parse_image(data, max_length=148).header.payload_length == 100


def test_board_kind_check():
    img = make_image(b"p", version="1.0.0", board_kind="bss2-kind-v1")
    img.check_board_kind("bss2-kind-v1")
    with pytest.raises(
        FlashError, match="built for board kind 'bss2-kind-v1', the board is 'emulator'"
    ):
        img.check_board_kind("emulator")


@pytest.mark.parametrize("bad", ["", "a b", "x" * 25, "caf\u00e9"])
def test_bad_board_kind_names(bad):
    with pytest.raises(FlashError, match="board kind"):
        make_image(b"", version="1.0.0", board_kind=bad)


def test_versions():
    assert pack_version("1.2.3") == 0x010203
    assert unpack_version(0x0A0B0C) == "10.11.12"
    for bad in ["1.2", "1.2.3.4", "256.0.0", "a.b.c", ""]:
        with pytest.raises(FlashError, match="not X.Y.Z"):
            pack_version(bad)
