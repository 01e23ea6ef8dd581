"""Firmware image format: a fixed header that lets host and board refuse a bad image early.

An image is ``header || payload``. The header names the target board kind and firmware version and
carries the payload's length and CRC-32, so a truncated, corrupted or foreign image is refused by
the host before it touches the board, and again by the board before it boots it (docs/flash.md).

Header, 48 bytes, integers little-endian:

| offset | size | field            | meaning |
|-------:|-----:|------------------|---------|
| 0  | 4  | magic            | b"STFW" |
| 4  | 1  | format_version   | IMAGE_FORMAT_VERSION (1) |
| 5  | 1  | header_size      | 48 |
| 6  | 2  | reserved         | zero |
| 8  | 4  | header_crc       | CRC-32 of the 48 header bytes with this field zero |
| 12 | 4  | firmware_version | major << 16 | minor << 8 | patch (as SystemReg.FIRMWARE_VERSION) |
| 16 | 4  | payload_length   | bytes of payload that follow the header |
| 20 | 4  | payload_crc      | CRC-32 (zlib.crc32) of the payload |
| 24 | 24 | board_kind       | ASCII name as HELLO_REPLY reports it ("emulator"), NUL-padded |

The header CRC sits inside the header, not at its end: a CRC directly followed by the data it
covers would make the CRC of the whole image blind to header changes (CRC residue property), and
the board's read-back check uses the CRC of the whole image.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from construct import Bytes, Const, ConstructError, Int8ul, Int32ul, PaddedString, Struct

from protocol.errors import FlashError

IMAGE_MAGIC = b"STFW"
IMAGE_FORMAT_VERSION = 1
HEADER_SIZE = 48
BOARD_KIND_SIZE = 24
MAX_PAYLOAD = (1 << 32) - 1
EMULATOR_BOARD_KIND = "emulator"  # what the emulator's HELLO_REPLY reports

# The header as data: readable spec and the only encoder/decoder of the header bytes.
HeaderBody = Struct(
    "magic" / Const(IMAGE_MAGIC),
    "format_version" / Int8ul,
    "header_size" / Int8ul,
    "reserved" / Bytes(2),
    "header_crc" / Int32ul,
    "firmware_version" / Int32ul,
    "payload_length" / Int32ul,
    "payload_crc" / Int32ul,
    "board_kind" / PaddedString(BOARD_KIND_SIZE, "ascii"),
)
assert HeaderBody.sizeof() == HEADER_SIZE
_HEADER_CRC_AT = slice(8, 12)

_VERSION_RE = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
_KIND_RE = re.compile(rf"^[A-Za-z0-9._-]{{1,{BOARD_KIND_SIZE}}}$")


def pack_version(text: str) -> int:
    """'X.Y.Z' -> X << 16 | Y << 8 | Z, the layout of the FIRMWARE_VERSION register."""
    m = _VERSION_RE.match(text.strip())
    if not m or any(int(p) > 255 for p in m.groups()):
        raise FlashError(f"firmware version {text!r} is not X.Y.Z with each part 0..255")
    major, minor, patch = (int(p) for p in m.groups())
    return major << 16 | minor << 8 | patch


def unpack_version(value: int) -> str:
    """X << 16 | Y << 8 | Z -> 'X.Y.Z'."""
    return f"{(value >> 16) & 0xFF}.{(value >> 8) & 0xFF}.{value & 0xFF}"


def check_board_kind_name(kind: str) -> str:
    """A board kind name fit for the header: 1..24 of A-Z a-z 0-9 . _ -"""
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise FlashError(
            f"board kind {kind!r} must be 1..{BOARD_KIND_SIZE} characters of A-Z a-z 0-9 . _ -"
        )
    return kind


@dataclass(frozen=True)
class ImageHeader:
    """The decoded header of a firmware image."""

    board_kind: str
    firmware_version: int  # packed, see pack_version
    payload_length: int
    payload_crc: int
    format_version: int = IMAGE_FORMAT_VERSION

    @property
    def version_text(self) -> str:
        return unpack_version(self.firmware_version)

    @property
    def image_length(self) -> int:
        return HEADER_SIZE + self.payload_length


def build_header(header: ImageHeader) -> bytes:
    """Encode a header (HEADER_SIZE bytes) including its own CRC."""
    fields = dict(
        format_version=header.format_version,
        header_size=HEADER_SIZE,
        reserved=bytes(2),
        header_crc=0,
        firmware_version=header.firmware_version,
        payload_length=header.payload_length,
        payload_crc=header.payload_crc,
        board_kind=header.board_kind,
    )
    raw = bytearray(HeaderBody.build(fields))
    raw[_HEADER_CRC_AT] = zlib.crc32(raw).to_bytes(4, "little")
    return bytes(raw)


def parse_header(data: bytes) -> ImageHeader:
    """Decode and check the first HEADER_SIZE bytes of an image; FlashError names what is wrong."""
    if len(data) < HEADER_SIZE:
        raise FlashError(
            f"image truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    raw = bytearray(data[:HEADER_SIZE])
    if raw[:4] != IMAGE_MAGIC:
        raise FlashError(
            f"not a firmware image: magic {bytes(raw[:4])!r}, expected {IMAGE_MAGIC!r}"
        )
    stored = int.from_bytes(raw[_HEADER_CRC_AT], "little")
    raw[_HEADER_CRC_AT] = bytes(4)
    actual = zlib.crc32(raw)
    if stored != actual:
        raise FlashError(
            f"image header corrupted: header CRC {stored:#010x}, computed {actual:#010x}"
        )
    try:
        fields = HeaderBody.parse(bytes(raw))
    except (ConstructError, UnicodeError) as exc:
        raise FlashError(f"image header does not decode: {exc}") from exc
    if fields.format_version != IMAGE_FORMAT_VERSION:
        raise FlashError(
            f"image format version {fields.format_version} not supported "
            f"(this tool reads version {IMAGE_FORMAT_VERSION})"
        )
    if fields.header_size != HEADER_SIZE or fields.reserved != bytes(2):
        raise FlashError(
            f"image header size {fields.header_size} / reserved {fields.reserved.hex()}, "
            f"expected {HEADER_SIZE} / 0000"
        )
    return ImageHeader(
        board_kind=fields.board_kind,
        firmware_version=fields.firmware_version,
        payload_length=fields.payload_length,
        payload_crc=fields.payload_crc,
        format_version=fields.format_version,
    )


@dataclass(frozen=True)
class FirmwareImage:
    """A checked image: header plus the payload it describes."""

    header: ImageHeader
    payload: bytes = field(repr=False)

    @property
    def data(self) -> bytes:
        """The image bytes as written to a flash slot."""
        return build_header(self.header) + self.payload

    @property
    def crc(self) -> int:
        """CRC-32 of the whole image (header + payload): what the board's read-back must match."""
        return zlib.crc32(self.payload, zlib.crc32(build_header(self.header)))

    def check_board_kind(self, board_kind: str) -> None:
        """Refuse an image built for another board kind."""
        if self.header.board_kind != board_kind:
            raise FlashError(
                f"image is built for board kind {self.header.board_kind!r}, "
                f"the board is {board_kind!r}"
            )


def make_image(payload: bytes, *, version: str | int, board_kind: str) -> FirmwareImage:
    """Wrap a payload into an image for `board_kind` with firmware `version` ('X.Y.Z')."""
    packed = pack_version(version) if isinstance(version, str) else version
    if not 0 <= packed < 1 << 24:
        raise FlashError(f"packed firmware version {packed:#x} out of range 0..0xFFFFFF")
    if len(payload) > MAX_PAYLOAD:
        raise FlashError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    header = ImageHeader(
        board_kind=check_board_kind_name(board_kind),
        firmware_version=packed,
        payload_length=len(payload),
        payload_crc=zlib.crc32(payload),
    )
    return FirmwareImage(header, bytes(payload))


def parse_image(data: bytes, *, max_length: int | None = None) -> FirmwareImage:
    """Check a whole image (header, length, payload CRC); FlashError says exactly what is wrong.

    max_length: the largest image the target can hold (its slot size), if known.
    """
    header = parse_header(data)
    got = len(data) - HEADER_SIZE
    if got < header.payload_length:
        raise FlashError(
            f"image truncated: header announces {header.payload_length} payload bytes, "
            f"file holds {got}"
        )
    if got > header.payload_length:
        raise FlashError(
            f"image has {got - header.payload_length} trailing bytes after the "
            f"{header.payload_length}-byte payload"
        )
    if max_length is not None and header.image_length > max_length:
        raise FlashError(
            f"image of {header.image_length} bytes does not fit the board's "
            f"{max_length}-byte flash slot"
        )
    payload = bytes(data[HEADER_SIZE:])
    crc = zlib.crc32(payload)
    if crc != header.payload_crc:
        raise FlashError(
            f"image payload corrupted: header CRC {header.payload_crc:#010x}, "
            f"payload CRC {crc:#010x}"
        )
    return FirmwareImage(header, payload)
