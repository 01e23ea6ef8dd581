"""strobe protocol layer: the wire contract, sans-I/O (no threads, no sockets, no clocks).

Submodules: wire (constants), addressmap, errors, frames, link (ARQ), control (CONTROL packets),
instructions (playback program builders / decoder), records (Trace, trace encode / decode),
spec (the construct declarations: readable spec and test oracle), codec (shared helpers).
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
from protocol.instructions import (
    PROGRAM_DTYPE,
    decode_program,
    program,
    program_bytes,
)
from protocol.link import Link, LinkState, LinkStats
from protocol.records import Trace, decode_trace, encode_trace
from protocol.wire import PROTOCOL_VERSION, Channel, ErrorCode, FrameType, Instr, Rec, SystemOp

__all__ = [
    "FLASH_KINDS",
    "PROGRAM_DTYPE",
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
    "Trace",
    "decode_control",
    "decode_frame",
    "decode_program",
    "decode_trace",
    "encode_control",
    "encode_frame",
    "encode_trace",
    "program",
    "program_bytes",
    "register_control_packet",
]
