"""Typed errors for every layer; each carries what a person needs to act on it.

They live in the bottom layer so that every layer above (and the emulator) can raise and catch
the same types without importing upward.
"""

from __future__ import annotations


class StrobeError(Exception):
    """Base of every error strobe raises on purpose."""


class ProtocolError(StrobeError):
    """Bytes that do not follow docs/protocol.md.

    offset: byte (or word, see `unit`) position in the input where decoding failed.
    expected / got: what the spec wants there and what was found.
    """

    def __init__(
        self,
        message: str,
        *,
        offset: int | None = None,
        expected: object = None,
        got: object = None,
        unit: str = "byte",
    ) -> None:
        self.offset = offset
        self.expected = expected
        self.got = got
        self.unit = unit
        details = []
        if offset is not None:
            details.append(f"at {unit} {offset}")
        if expected is not None or got is not None:
            details.append(f"expected {expected!r}, got {got!r}")
        super().__init__(message + (f" ({', '.join(details)})" if details else ""))


class FrameError(ProtocolError):
    """A frame header or trailer is invalid (magic, version, length)."""


class CRCError(FrameError):
    """A frame's CRC-32 does not match its contents."""


class DecodeError(ProtocolError):
    """Instruction or trace words that do not decode (unknown opcode, truncated record)."""


class LinkError(StrobeError):
    """The link to the board failed: dead transport, no answer within the timeout, window stuck."""


class BoardError(StrobeError):
    """The board answered, but with an error (error record, refused request, wrong version)."""


class ConfigError(StrobeError, ValueError):
    """A configuration value or coordinate out of range; names field, coordinate, valid range."""


class CalibrationError(StrobeError):
    """A calibration could not reach its targets, or a calibration file does not fit the board."""


class FlashError(StrobeError):
    """A firmware image is invalid, or writing it to the board failed."""


class TrainingError(StrobeError):
    """A network does not fit the chip, or training was asked to do something it must refuse."""
