"""CONTROL channel packets, declared with construct: a u8 `kind`, then that kind's fields.

Control traffic is small and rare (handshake, board info, fault knobs, resets, flash), so the
readable construct declaration is also the codec. Kinds 0x40..0x4F are reserved for the flash
packets of protocol/flash_packets.py, which registers them with `register_control_packet`.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import construct as cs

from protocol.errors import ConfigError, DecodeError


class ControlKind(IntEnum):
    HELLO = 0x01  # host -> board: the protocol version the host speaks
    HELLO_REPLY = 0x02  # board -> host: version, serial, firmware, chip id, board kind
    SET_FAULTS = 0x03  # host -> board: fault injection knobs of the board's link (emulator)
    CHIP_RESET = 0x04  # host -> board: all chip registers to their reset values
    ACK = 0x10  # board -> host: request `request` done
    ERROR = 0x11  # board -> host: request `request` refused, with code and message


FLASH_KINDS = range(0x40, 0x50)  # reserved for protocol/flash_packets.py


class ControlErrorCode(IntEnum):
    """`code` of an ERROR reply. Codes below 0x100 are trace ErrorCode values (wire.py)."""

    UNKNOWN_KIND = 0x100  # the board does not know this packet kind
    MALFORMED = 0x101  # the packet does not decode
    VERSION_MISMATCH = 0x102  # HELLO with a protocol version the board does not speak
    UNSUPPORTED = 0x103  # known kind, but this board cannot do it (e.g. faults on hardware)
    BUSY = 0x104  # refused now (e.g. a flash operation in progress); retry later


_STR8 = cs.PascalString(cs.Int8ul, "utf8")
_STR16 = cs.PascalString(cs.Int16ul, "utf8")

# body declarations, in wire order, all little-endian; each must consume the packet exactly
_BODIES: dict[int, cs.Construct] = {
    ControlKind.HELLO: cs.Struct("protocol_version" / cs.Int8ul),
    ControlKind.HELLO_REPLY: cs.Struct(
        "protocol_version" / cs.Int8ul,
        "serial" / cs.Int64ul,
        "firmware_version" / cs.Int32ul,  # major << 16 | minor << 8 | patch
        "chip_id" / cs.Int32ul,
        "board_kind" / _STR8,  # e.g. "emulator", "bss2-kind-v1"
    ),
    ControlKind.SET_FAULTS: cs.Struct(
        "drop" / cs.Float32l,  # probabilities per frame, each direction
        "corrupt" / cs.Float32l,
        "duplicate" / cs.Float32l,
        "reorder" / cs.Float32l,
        "delay" / cs.Float32l,
        "delay_s" / cs.Float32l,  # maximum extra delay of a delayed frame, seconds
        "seed" / cs.Int32ul,
    ),
    ControlKind.CHIP_RESET: cs.Struct(),
    ControlKind.ACK: cs.Struct("request" / cs.Int8ul),
    ControlKind.ERROR: cs.Struct(
        "request" / cs.Int8ul,  # kind of the refused request (0 if it did not decode)
        "code" / cs.Int16ul,
        "message" / _STR16,
    ),
}
_NAMES: dict[int, str] = {int(k): k.name for k in ControlKind}


def register_control_packet(kind: int, name: str, body: cs.Construct) -> None:
    """Declare a flash packet kind (0x40..0x4F). Registering the same declaration twice is ok."""
    if kind not in FLASH_KINDS:
        raise ConfigError(f"control kind 0x{kind:02x} not in the flash range 0x40..0x4F")
    old = _BODIES.get(kind)
    if old is not None and (old is not body or _NAMES.get(kind) != name):
        raise ConfigError(f"control kind 0x{kind:02x} already registered as {_NAMES[kind]}")
    _BODIES[kind] = body
    _NAMES[kind] = name


def control_kind_name(kind: int) -> str:
    return _NAMES.get(kind, f"0x{kind:02x}")


def control_body(kind: int) -> cs.Construct:
    """The construct declaration of a kind's fields (the readable spec)."""
    try:
        return _BODIES[kind]
    except KeyError:
        raise ConfigError(f"unknown control packet kind 0x{int(kind):02x}") from None


def _field_names(body: cs.Construct) -> list[str]:
    return [sc.name for sc in body.subcons if sc.name is not None]


def encode_control(kind: int, **fields: Any) -> bytes:
    """Bytes of one control packet. Raises ConfigError naming a missing/extra/bad field."""
    body = control_body(kind)
    names = _field_names(body)
    missing = [n for n in names if n not in fields]
    extra = [n for n in fields if n not in names]
    if missing or extra:
        raise ConfigError(
            f"{control_kind_name(kind)} packet fields are {names}; missing {missing}, "
            f"unexpected {extra}"
        )
    try:
        return bytes([int(kind)]) + body.build(fields)
    except (cs.ConstructError, ValueError, TypeError, OverflowError, UnicodeError) as e:
        raise ConfigError(f"cannot encode {control_kind_name(kind)} packet: {e}") from e


def decode_control(data: bytes) -> tuple[int, dict[str, Any]]:
    """(kind, fields) of one control packet; DecodeError on unknown kind or wrong length."""
    data = bytes(data)
    if not data:
        raise DecodeError("empty control packet", offset=0, expected="kind byte", got=b"")
    kind = data[0]
    body = _BODIES.get(kind)
    if body is None:
        raise DecodeError(
            "unknown control packet kind", offset=0, expected=sorted(_NAMES), got=kind
        )
    try:
        parsed = cs.Struct(*body.subcons, "_size" / cs.Tell).parse(data[1:])
    except (cs.ConstructError, UnicodeError, ValueError, OverflowError) as e:
        raise DecodeError(
            f"malformed {control_kind_name(kind)} packet: {type(e).__name__}",
            offset=1,
            expected=f"{control_kind_name(kind)} fields {_field_names(body)}",
            got=data[1:].hex(),
        ) from e
    if 1 + parsed._size != len(data):
        raise DecodeError(
            f"trailing bytes after {control_kind_name(kind)} packet",
            offset=1 + parsed._size,
            expected=f"{1 + parsed._size} bytes",
            got=len(data),
        )
    fields = {k: v for k, v in parsed.items() if not k.startswith("_")}
    try:
        kind_out: int = ControlKind(kind)
    except ValueError:
        kind_out = kind
    return kind_out, fields

