"""strobe protocol layer: the wire contract, sans-I/O (no threads, no sockets, no clocks).

Submodules: wire (constants), addressmap, errors, frames, link (ARQ), control (CONTROL packets).
"""

from protocol.control import (
    FLASH_KINDS,
    ControlErrorCode,
    ControlKind,
    decode_control,
    encode_control,
    register_control_packet,
)
from protocol.errors import (
    BoardError,
    CRCError,
    DecodeError,
    FrameError,
    LinkError,
    ProtocolError,
    StrobeError,
)
from protocol.frames import Frame, FrameDecoder, decode_frame, encode_frame
from protocol.link import Link, LinkState, LinkStats
from protocol.wire import PROTOCOL_VERSION, Channel, ErrorCode, FrameType, Instr, Rec, SystemOp

__all__ = [
    "FLASH_KINDS",
    "PROTOCOL_VERSION",
    "BoardError",
    "CRCError",
    "Channel",
    "ControlErrorCode",
    "ControlKind",
    "DecodeError",
    "ErrorCode",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameType",
    "Instr",
    "Link",
    "LinkError",
    "LinkState",
    "LinkStats",
    "ProtocolError",
    "Rec",
    "StrobeError",
    "SystemOp",
    "decode_control",
    "decode_frame",
    "encode_control",
    "encode_frame",
    "register_control_packet",
]
