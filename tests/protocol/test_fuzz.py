"""Fuzzing every decoder: random and mutated bytes give a typed error or a valid result.

Never another exception, never a hang (hypothesis' deadline bounds each example).
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import instructions as I
from protocol import spec
from protocol.codec import words_to_bytes
from protocol.control import ControlKind, decode_control, encode_control
from protocol.errors import DecodeError, StrobeError
from protocol.frames import Frame, FrameDecoder, decode_frame, encode_frame
from protocol.link import Link
from protocol.records import Trace, decode_trace, encode_trace
from protocol.wire import FrameType

FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw, base: bytes, word_aligned: bool = False):
    """base with a few random edits: overwrite, flip, insert, delete, truncate."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "flip", "insert", "delete", "truncate"]))
        if word_aligned and kind in ("insert", "delete", "truncate"):
            kind = "set"
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if kind == "set":
            data[i] = draw(st.integers(0, 255))
        elif kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=9))
        elif kind == "delete":
            del data[i : i + draw(st.integers(1, 9))]
        else:
            del data[i:]
    return bytes(data)


_FRAMES = b"".join(
    encode_frame(f)
    for f in [
        Frame(FrameType.SYN, payload=b"\x01\x02\x03\x04", window=64),
        Frame(FrameType.DATA, 0, 1, 0, 0, 64, bytes(range(40))),
        Frame(FrameType.ACK, ack=1, window=64),
        Frame(FrameType.DATA, 2, 0, 1, 1, 64, b"TS" * 10),
    ]
)


def _check_frames(frames):
    for f in frames:
        assert isinstance(f, Frame)
        assert decode_frame(encode_frame(f)) == f  # whatever came out is a valid frame


@FUZZ
@given(st.one_of(st.binary(max_size=400), mutated(_FRAMES)), st.integers(1, 64))
def test_frame_decoder_never_raises(data, chunk):
    dec = FrameDecoder()
    out = []
    for i in range(0, len(data), chunk):
        out += dec.feed(data[i : i + chunk])
    while dec.pending_frame:
        out += dec.skip_pending()
    _check_frames(out)
    assert dec.frames == len(out)


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated(encode_frame(Frame(FrameType.DATA, 1, 1, 5, 6,
                                                                     7, b"payload")))))
def test_decode_frame_typed(data):
    try:
        f = decode_frame(data)
    except StrobeError:
        return
    assert encode_frame(f) == data


@FUZZ
@given(st.one_of(st.binary(max_size=400), mutated(_FRAMES)))
def test_link_receive_never_raises(data):
    link = Link()
    for i in range(0, len(data), 37):
        for ch, msg in link.receive(data[i : i + 37], 0.001 * i):
            assert 0 <= ch <= 255 and isinstance(msg, bytes)
    link.poll(1.0)


_PROGRAM = I.program_bytes(I.program(
    I.timer_reset(), I.write([1, 2], [3, 4]), I.write_block(16, [5, 6, 7]), I.read(32, 2),
    I.spikes([10, 10, 20], [1, 2, 3]), I.cadc_schedule(200, 3), I.madc_record(4),
    I.episode_start(1), I.barrier(), I.system(1), I.halt(),
))


@FUZZ
@given(st.one_of(st.binary(max_size=256), mutated(_PROGRAM), mutated(_PROGRAM, True)))
def test_decode_program_typed(data):
    try:
        d = I.decode_program(data)
    except StrobeError as e:
        assert isinstance(e, DecodeError) and e.offset is not None
        return
    assert words_to_bytes(d["word"]) == data
    spec.parse_instructions(data)  # valid for the fast decoder => valid for the construct spec


_rng = np.random.default_rng(3)
_TRACE = words_to_bytes(encode_trace(
    episodes={"time": [0, 500], "index": [0, 1]},
    spikes={"time": [5, 7, 600, (1 << 42) + 3], "label": [1, 2, 3, 4]},
    cadc={"time": [10, 510], "index": [0, 0]},
    cadc_samples=_rng.integers(0, 256, (2, 512), dtype=np.uint8),
    madc={"time": [11], "value": [9], "source": [1]},
    reads={"time": [12], "index": [0], "data": [77]},
    errors={"time": [13], "code": [1], "info16": [0], "info32": [5]},
    halt={"time": [(1 << 42) + 9], "status": [0]},
))


@FUZZ
@given(st.one_of(st.binary(max_size=300).map(lambda b: b[: len(b) // 8 * 8]),
                 st.binary(max_size=100), mutated(_TRACE), mutated(_TRACE, True)))
def test_decode_trace_typed_and_agrees_with_oracle(data):
    try:
        tr = decode_trace(data)
    except StrobeError as e:
        assert isinstance(e, DecodeError) and e.offset is not None
        fast_err = e
    else:
        fast_err = None
        assert isinstance(tr, Trace)
    try:
        ref = spec.oracle_decode_trace(data)
    except DecodeError as e:
        assert fast_err is not None, f"oracle rejects at word {e.offset}, fast decoder accepts"
        assert fast_err.offset == e.offset
        return
    assert fast_err is None, f"fast decoder rejects ({fast_err}), oracle accepts"
    assert tr.equals(ref)


@FUZZ
@given(st.one_of(
    st.binary(max_size=80),
    mutated(encode_control(ControlKind.HELLO_REPLY, protocol_version=1, serial=5,
                           firmware_version=1, chip_id=2, board_kind="emulator")),
    mutated(encode_control(ControlKind.ERROR, request=3, code=0x101, message="bad")),
))
def test_decode_control_typed(data):
    try:
        kind, fields = decode_control(data)
    except StrobeError as e:
        assert isinstance(e, DecodeError)
        return
    assert isinstance(fields, dict)
