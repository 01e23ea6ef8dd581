"""The link's unchecked DATA frame encoder writes the bytes of the checked one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.frames import Frame, FrameDecoder, data_frame_parts, encode_frame, encode_frame_parts
from protocol.wire import FrameType


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.sampled_from([0, 1]), st.integers(0, 65535),
       st.integers(0, 65535), st.integers(0, 65535), st.binary(max_size=300), st.booleans())
def test_data_frame_parts_equal_encode_frame_parts(channel, flags, seq, ack, window, payload,
                                                   view):
    body = memoryview(payload) if view else payload
    frame = Frame(FrameType.DATA, channel, flags, seq, ack, window, payload)
    got = data_frame_parts(channel, flags, seq, ack, window, body)
    assert [bytes(p) for p in got] == [bytes(p) for p in encode_frame_parts(frame)]
    assert got[1] is body  # the payload is passed through, not copied
    wire = b"".join(got)
    assert wire == encode_frame(frame)
    assert FrameDecoder().feed(wire) == [frame]


def test_an_oversized_payload_is_refused_as_by_encode_frame_parts():
    from protocol.errors import FrameError
    from protocol.wire import FRAME_MAX_PAYLOAD

    payload = bytes(FRAME_MAX_PAYLOAD + 1)
    with pytest.raises(FrameError) as want:
        encode_frame_parts(Frame(FrameType.DATA, 1, 0, 0, 0, 1, payload))
    with pytest.raises(FrameError) as got:
        data_frame_parts(1, 0, 0, 0, 1, payload)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("field", ["channel", "window", "seq"])
def test_a_field_out_of_its_slot_is_refused_as_by_encode_frame_parts(field):
    from protocol.errors import FrameError

    args = {"channel": 1, "flags": 0, "seq": 0, "ack": 0, "window": 1}
    args[field] = 1 << 16  # Link.window is public: set past 2^16 after construction
    with pytest.raises(FrameError) as want:
        encode_frame_parts(Frame(FrameType.DATA, payload=b"x", **args))
    with pytest.raises(FrameError) as got:
        data_frame_parts(args["channel"], args["flags"], args["seq"], args["ack"],
                         args["window"], b"x")
    assert str(got.value) == str(want.value)
