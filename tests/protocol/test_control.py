"""Control packets: round trips, golden bytes, strict errors, flash registration."""

from __future__ import annotations

import math

import construct as cs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.control import (
    FLASH_KINDS,
    ControlKind,
    control_body,
    decode_control,
    encode_control,
    register_control_packet,
)
from protocol.errors import ConfigError, DecodeError, StrobeError


def test_golden_hello_reply():
    raw = encode_control(
        ControlKind.HELLO_REPLY,
        protocol_version=1,
        serial=0x0123456789ABCDEF,
        firmware_version=0x000102,
        chip_id=0x2A,
        board_kind="emu",
    )
    assert raw == bytes.fromhex("02" "01" "efcdab8967452301" "02010000" "2a000000" "03" "656d75")


def test_golden_error_and_ack():
    raw = encode_control(ControlKind.ERROR, request=0x03, code=0x0102, message="no")
    assert raw == bytes.fromhex("11" "03" "0201" "0200" "6e6f")
    assert encode_control(ControlKind.ACK, request=4) == b"\x10\x04"
    assert encode_control(ControlKind.HELLO, protocol_version=1) == b"\x01\x01"
    assert encode_control(ControlKind.CHIP_RESET) == b"\x04"


def test_set_faults_float32_fields():
    raw = encode_control(
        ControlKind.SET_FAULTS, drop=0.5, corrupt=0.25, duplicate=0.0, reorder=1.0, delay=0.125,
        delay_s=2.0, seed=7,
    )
    assert raw == bytes.fromhex("03" "0000003f" "0000803e" "00000000" "0000803f" "0000003e"
                                "00000040" "07000000")
    kind, f = decode_control(raw)
    assert kind is ControlKind.SET_FAULTS and f["reorder"] == 1.0 and f["seed"] == 7


@settings(deadline=None)
@given(
    serial=st.integers(0, 2**64 - 1),
    fw=st.integers(0, 2**32 - 1),
    chip=st.integers(0, 2**32 - 1),
    board=st.text(max_size=60).filter(lambda s: len(s.encode()) < 256),
)
def test_hello_reply_roundtrip(serial, fw, chip, board):
    fields = dict(protocol_version=1, serial=serial, firmware_version=fw, chip_id=chip,
                  board_kind=board)
    assert decode_control(encode_control(ControlKind.HELLO_REPLY, **fields)) == (
        ControlKind.HELLO_REPLY, fields)


@settings(deadline=None)
@given(probs=st.lists(st.floats(0, 1, width=32), min_size=6, max_size=6),
       seed=st.integers(0, 2**32 - 1))
def test_set_faults_roundtrip(probs, seed):
    names = ["drop", "corrupt", "duplicate", "reorder", "delay", "delay_s"]
    fields = dict(zip(names, probs, strict=True), seed=seed)
    kind, got = decode_control(encode_control(ControlKind.SET_FAULTS, **fields))
    assert got == fields


def test_encode_errors_name_the_field():
    with pytest.raises(ConfigError, match="missing \\['chip_id'"):
        encode_control(ControlKind.HELLO_REPLY, protocol_version=1, serial=1,
                       firmware_version=1, board_kind="x")
    with pytest.raises(ConfigError, match="unexpected \\['bogus'\\]"):
        encode_control(ControlKind.HELLO, protocol_version=1, bogus=2)
    with pytest.raises(ConfigError):
        encode_control(ControlKind.HELLO, protocol_version=256)
    with pytest.raises(ConfigError):
        encode_control(0x7F)


def test_decode_errors():
    with pytest.raises(DecodeError, match="empty"):
        decode_control(b"")
    with pytest.raises(DecodeError, match="unknown") as e:
        decode_control(b"\x7f")
    assert e.value.offset == 0 and e.value.got == 0x7F
    with pytest.raises(DecodeError, match="trailing") as e:
        decode_control(b"\x01\x01\x00")
    assert e.value.offset == 2
    with pytest.raises(DecodeError, match="malformed"):
        decode_control(b"\x02\x01\x00")
    with pytest.raises(DecodeError):
        decode_control(bytes.fromhex("1101000002ff"))  # truncated string
    with pytest.raises(DecodeError):
        decode_control(bytes.fromhex("11010000" "0200" "ffff"))  # invalid utf-8


def test_flash_kind_registration():
    from protocol import control as control_module

    # a kind the flash packets leave free, so this test holds whatever was imported before it
    kind = next(k for k in FLASH_KINDS if k not in control_module._BODIES)
    body = cs.Struct("offset" / cs.Int32ul)
    try:
        register_control_packet(kind, "TEST_FLASH_PROBE", body)
        register_control_packet(kind, "TEST_FLASH_PROBE", body)  # idempotent
        assert kind in FLASH_KINDS and control_body(kind) is body
        assert decode_control(encode_control(kind, offset=9)) == (kind, {"offset": 9})
        with pytest.raises(ConfigError):
            register_control_packet(kind, "OTHER", cs.Struct())
        with pytest.raises(ConfigError):
            register_control_packet(0x20, "OUTSIDE", body)
    finally:
        control_module._BODIES.pop(kind, None)
        control_module._NAMES.pop(kind, None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_decode_control(data):
    try:
        kind, fields = decode_control(data)
    except StrobeError:
        return
    # a valid packet re-encodes to the same bytes (NaN payloads aside)
    if not any(isinstance(v, float) and math.isnan(v) for v in fields.values()):
        assert encode_control(kind, **fields) == data


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([b"\x01\x01", b"\x10\x04", bytes.fromhex("1103020102006e6f")]),
       st.integers(0, 15), st.integers(0, 255))
def test_fuzz_mutated_control(data, pos, value):
    raw = bytearray(data)
    raw[pos % len(raw)] = value
    try:
        decode_control(bytes(raw))
    except StrobeError:
        pass
