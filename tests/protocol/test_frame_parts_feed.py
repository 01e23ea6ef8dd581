"""Frames handed on unjoined (Link.poll_parts -> FrameDecoder.feed_parts / Link.receive_parts)
decode exactly as their joined bytes do, damaged or cut differently included."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.frames import Frame, FrameDecoder, encode_frame
from protocol.link import Link
from protocol.wire import FrameType

_MUTATIONS = ("none", "flip", "split", "merge", "writable_payload", "bytearray_head",
              "garbage", "drop", "prefix_partial")


def _frames(frames: list[Frame]) -> list[tuple]:
    return [(f.type, f.channel, f.flags, f.seq, f.ack, f.window, bytes(f.payload))
            for f in frames]


def _counters(dec: FrameDecoder) -> tuple[int, int, int, int]:
    return dec.frames, dec.crc_errors, dec.garbage_bytes, dec.buffered


def _sender_parts(messages: list[bytes], max_payload: int, as_view: bool) -> list:
    link = Link(max_payload=max_payload, window=256)
    for i, m in enumerate(messages):
        link.send(i % 3, memoryview(m) if as_view else m, 0.0)
    return link.poll_parts(0.0)


def _mutate(parts: list, kind: str, j: int, k: int) -> list:
    parts = list(parts)
    j %= len(parts)
    if kind == "flip" and len(parts[j]):
        raw = bytearray(parts[j])
        raw[k % len(raw)] ^= 1 << (k % 8)
        parts[j] = bytes(raw)
    elif kind == "split" and len(parts[j]) > 1:
        cut = 1 + k % (len(parts[j]) - 1)
        raw = bytes(parts[j])
        parts[j : j + 1] = [raw[:cut], raw[cut:]]
    elif kind == "merge" and j + 1 < len(parts):
        parts[j : j + 2] = [bytes(parts[j]) + bytes(parts[j + 1])]
    elif kind == "writable_payload":
        j = 3 * (j // 3) + 1  # a payload part, as a view of a buffer that could change
        if j < len(parts):
            parts[j] = memoryview(bytearray(parts[j]))
    elif kind == "bytearray_head":
        j = 3 * (j // 3)
        parts[j] = bytearray(parts[j])
    elif kind == "garbage":
        parts.insert(j, bytes([k % 256]) * (1 + k % 7))
    elif kind == "drop":
        del parts[j]
    return parts


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=4), st.integers(1, 64),
       st.booleans(), st.sampled_from(_MUTATIONS), st.integers(0, 10_000),
       st.integers(0, 10_000), st.booleans())
def test_feed_parts_equals_feed_of_the_joined_bytes(messages, max_payload, as_view, kind, j,
                                                    k, views):
    parts = _mutate(_sender_parts(messages, max_payload, as_view), kind, j, k)
    a, b = FrameDecoder(views=views), FrameDecoder(views=views)
    if kind == "prefix_partial":  # bytes already buffered: the parts continue them
        head = encode_frame(Frame(FrameType.ACK, ack=5, window=9))[:7]
        assert a.feed(head) == b.feed(head) == []
    got = a.feed_parts(parts)
    want = b.feed(b"".join(parts))
    assert _frames(got) == _frames(want)
    assert _counters(a) == _counters(b)
    # the rest of the stream still decodes the same after whatever was buffered
    tail = encode_frame(Frame(FrameType.ACK, ack=7, window=3))
    assert _frames(a.feed(tail)) == _frames(b.feed(tail))
    assert _counters(a) == _counters(b)


def test_intact_parts_are_decoded_in_place_without_copies():
    trace = np.arange(50_000, dtype="<u8")
    trace.flags.writeable = False
    view = memoryview(trace).cast("B")
    sender = Link(max_payload=65535)
    sender.send(1, view, 0.0)
    parts = sender.poll_parts(0.0)
    dec = FrameDecoder(views=True)
    frames = dec.feed_parts(parts)
    assert len(frames) == len(parts) // 3 == 7
    assert all(f.payload is p for f, p in zip(frames, parts[1::3], strict=True))
    assert dec.garbage_bytes == dec.crc_errors == dec.buffered == 0


def test_a_bad_crc_falls_back_and_is_counted_as_feed_counts_it():
    sender = Link(max_payload=10)
    sender.send(2, bytes(range(35)), 0.0)
    parts = sender.poll_parts(0.0)
    parts[5] = bytes(4)  # the second frame's CRC trailer
    dec = FrameDecoder(views=True)
    frames = dec.feed_parts(parts)
    assert [f.seq for f in frames] == [0, 2, 3]  # the damaged frame only is lost
    assert dec.crc_errors == 1 and dec.garbage_bytes > 0


def test_a_decoder_without_views_gets_bytes_payloads():
    sender = Link(max_payload=8)
    sender.send(1, memoryview(bytes(range(20))), 0.0)
    frames = FrameDecoder().feed_parts(sender.poll_parts(0.0))
    assert [type(f.payload) for f in frames] == [bytes] * 3
    assert b"".join(f.payload for f in frames) == bytes(range(20))


def test_no_parts_is_feeding_nothing():
    dec = FrameDecoder(views=True)
    assert dec.feed_parts([]) == [] and dec.feed_parts([b"", b""]) == []
    assert _counters(dec) == (0, 0, 0, 0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=5), st.integers(1, 1000),
       st.sampled_from(_MUTATIONS[:4]), st.integers(0, 10_000), st.integers(0, 10_000))
def test_link_receive_parts_equals_receive(messages, max_payload, kind, j, k):
    parts = _mutate(_sender_parts(messages, max_payload, True), kind, j, k)
    a, b = Link(window=256), Link(window=256)
    got = a.receive_parts(parts, 1.0)
    want = b.receive(b"".join(parts), 1.0)
    assert got == want
    assert all(type(m) is bytes for _, m in got)
    assert dataclasses.asdict(a.stats) == dataclasses.asdict(b.stats)
    assert a.poll(1.0) == b.poll(1.0)  # the same acks owed
    if kind == "none":
        assert got == [(i % 3, m) for i, m in enumerate(messages)]


def test_delivered_messages_do_not_alias_the_sent_buffer():
    """The receiver copies each message out of the parts: a buffer reused afterwards (here:
    made writable and overwritten) leaves what was delivered unchanged."""
    for size in (100, 200_000):  # one frame; many frames
        buf = np.arange(size, dtype=np.uint8)
        buf.flags.writeable = False
        want = buf.tobytes()
        sender = Link(max_payload=65535)
        sender.send(4, memoryview(buf), 0.0)
        receiver = Link()
        [(channel, message)] = receiver.receive_parts(sender.poll_parts(0.0), 0.0)
        buf.flags.writeable = True
        buf[:] = 0
        assert channel == 4 and type(message) is bytes and message == want


def test_poll_is_poll_parts_joined():
    a, b = Link(max_payload=100), Link(max_payload=100)
    for link in (a, b):
        link.send(1, bytes(1000), 0.0)
        link.receive(encode_frame(Frame(FrameType.ACK, ack=0, window=64)), 0.0)
    assert a.poll(0.0) == b"".join(b.poll_parts(0.0))
    assert a.stats == b.stats


def test_a_writable_payload_view_is_not_kept():
    """A view of a buffer that may change is joined (copied) as feed() would, never kept."""
    sender = Link(max_payload=16)
    sender.send(1, bytes(range(40)), 0.0)
    parts = sender.poll_parts(0.0)
    backing = bytearray(parts[4])
    parts[4] = memoryview(backing)
    frames = FrameDecoder(views=True).feed_parts(parts)
    backing[:] = bytes(len(backing))
    assert b"".join(bytes(f.payload) for f in frames) == bytes(range(40))
    assert frames[0].payload is parts[1]  # the frames before it are still in place
