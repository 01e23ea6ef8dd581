"""Frame encode/decode, strict errors, and stream resynchronisation."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from protocol import frames as frames_mod
from protocol.errors import CRCError, FrameError
from protocol.frames import Frame, FrameDecoder, decode_frame, encode_frame, encode_frame_parts
from protocol.wire import FRAME_MAX_PAYLOAD, FrameType


def _frames(n: int, seed: int = 1) -> list[Frame]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(
            Frame(
                FrameType.DATA,
                channel=rng.randrange(3),
                flags=rng.randrange(2),
                seq=i % 65536,
                ack=rng.randrange(65536),
                window=rng.randrange(65536),
                payload=rng.randbytes(rng.randrange(0, 300)),
            )
        )
    return out


def test_roundtrip_each_type():
    for ftype in FrameType:
        kw = {"channel": 2, "seq": 7} if ftype is FrameType.DATA else {}
        f = Frame(ftype, flags=1, ack=65535, window=64, payload=b"abc", **kw)
        raw = encode_frame(f)
        assert len(raw) == 16 + 3 + 4
        assert decode_frame(raw) == f
        assert FrameDecoder().feed(raw) == [f]


def test_encode_rejects_bad_fields():
    with pytest.raises(FrameError):
        encode_frame(Frame(FrameType.DATA, seq=65536))
    with pytest.raises(FrameError):
        encode_frame(Frame(FrameType.DATA, flags=2))
    with pytest.raises(FrameError):
        encode_frame(Frame(FrameType.ACK, channel=1))
    with pytest.raises(FrameError):
        encode_frame(Frame(FrameType.DATA, payload=bytes(FRAME_MAX_PAYLOAD + 1)))
    # the maximum payload itself is fine
    raw = encode_frame(Frame(FrameType.DATA, payload=bytes(FRAME_MAX_PAYLOAD)))
    assert decode_frame(raw).payload == bytes(FRAME_MAX_PAYLOAD)


def test_strict_decode_errors_carry_offsets():
    raw = bytearray(encode_frame(Frame(FrameType.DATA, seq=3, payload=b"hello")))
    bad = bytes(raw[:-1]) + bytes([raw[-1] ^ 1])
    with pytest.raises(CRCError) as e:
        decode_frame(bad)
    assert e.value.offset == 16 + 5
    bad_magic = b"XX" + bytes(raw[2:])
    with pytest.raises(FrameError) as e:
        decode_frame(bad_magic)
    assert e.value.offset == 0 and e.value.expected == 0x5354
    bad_version = bytes(raw[:2]) + b"\x02" + bytes(raw[3:])
    with pytest.raises(FrameError, match="version"):
        decode_frame(bad_version)
    with pytest.raises(FrameError, match="too short"):
        decode_frame(bytes(raw[:10]))
    with pytest.raises(FrameError, match="length"):
        decode_frame(bytes(raw) + b"\x00")


@pytest.mark.parametrize("views", [False, True])
def test_stream_decoder_any_chunking(views):
    frames = _frames(200)
    stream = b"".join(encode_frame(f) for f in frames)
    rng = random.Random(5)
    dec = FrameDecoder(views=views)
    got = []
    i = 0
    while i < len(stream):
        k = rng.randrange(1, 97)
        got += dec.feed(stream[i : i + k])
        i += k
    assert got == frames
    assert dec.garbage_bytes == 0 and dec.crc_errors == 0 and dec.frames == 200
    assert dec.buffered == 0


@pytest.mark.parametrize("views", [False, True])
def test_resync_after_garbage_and_corruption(views):
    frames = _frames(300, seed=2)
    rng = random.Random(9)
    stream = bytearray()
    expected = []
    for f in frames:
        raw = bytearray(encode_frame(f))
        r = rng.random()
        if r < 0.2:
            stream += rng.randbytes(rng.randrange(1, 50))  # garbage, may contain b"T"
            stream += b"TS"  # a false magic right before the real one
        if r > 0.85:
            pos = rng.randrange(len(raw))
            raw[pos] ^= 1 << rng.randrange(8)  # corrupted frame: must be dropped
        else:
            expected.append(f)
        stream += raw
    dec = FrameDecoder(views=views)
    got = []
    for i in range(0, len(stream), 1000):
        got += dec.feed(bytes(stream[i : i + 1000]))
    # every intact frame comes back; a frame with a corrupted length may hold the tail hostage
    # until skip_pending(), which the link calls after a stall
    while dec.pending_frame:
        got += dec.skip_pending()
    assert got == expected
    assert dec.garbage_bytes > 0


@pytest.mark.parametrize("views", [False, True])
def test_corrupted_length_recovers_with_skip_pending(views):
    good = _frames(5, seed=3)
    raw0 = bytearray(encode_frame(good[0]))
    struct.pack_into("<I", raw0, 12, 60000)  # claims 60000 bytes
    dec = FrameDecoder(views=views)
    got = dec.feed(bytes(raw0) + b"".join(encode_frame(f) for f in good[1:]))
    assert got == [] and dec.pending_frame
    got = dec.skip_pending()
    assert got == good[1:]
    assert not dec.pending_frame


@pytest.mark.parametrize("views", [False, True])
def test_crc_error_counts_and_next_frame_found(views):
    a, b = _frames(2, seed=4)
    ra = bytearray(encode_frame(a))
    ra[20] ^= 0x80 if len(ra) > 24 else 0
    ra[-1] ^= 0x01
    dec = FrameDecoder(views=views)
    assert dec.feed(bytes(ra) + encode_frame(b)) == [b]
    assert dec.crc_errors == 1


def test_golden_crc_matches_zlib():
    raw = encode_frame(Frame(FrameType.ACK, ack=5, window=64))
    assert struct.unpack("<I", raw[-4:])[0] == zlib.crc32(raw[:-4])


def test_crc_matches_zlib_on_any_data():
    # protocol.frames may use ISA-L's CRC-32: it must give zlib's values (golden vectors)
    rng = random.Random(11)
    for n in (0, 1, 7, 15, 16, 17, 64, 255, 4096, 65536 + 3, 300_000):
        data = rng.randbytes(n)
        start = rng.randrange(1 << 32)
        assert frames_mod._crc32(data) == zlib.crc32(data)
        assert frames_mod._crc32(data, start) == zlib.crc32(data, start)
        assert frames_mod._crc32(memoryview(data)[1:]) == zlib.crc32(data[1:])


def test_encode_parts_join_to_the_frame():
    for f in _frames(20, seed=6):
        head, payload, crc = encode_frame_parts(f)
        assert head + bytes(payload) + crc == encode_frame(f)
        assert len(head) == 16 and len(crc) == 4


def test_view_decoder_payloads_are_views_of_immutable_input_only():
    frames = _frames(30, seed=7)
    stream = b"".join(encode_frame(f) for f in frames)
    dec = FrameDecoder(views=True)
    cut = len(stream) - 10  # the last frame arrives in two pieces: its head is buffered
    got = dec.feed(stream[:cut])
    assert all(isinstance(f.payload, memoryview) and f.payload.readonly for f in got)
    assert dec.buffered > 0
    tail = dec.feed(stream[cut:])  # buffered bytes joined: the payload is a copy
    assert [type(f.payload) for f in tail] == [bytes]
    assert got + tail == frames and dec.buffered == 0
    dec = FrameDecoder(views=True)
    got = dec.feed(bytearray(stream))  # mutable input is never viewed
    assert got == frames and all(type(f.payload) is bytes for f in got)
    plain = FrameDecoder().feed(stream)
    assert plain == frames and all(type(f.payload) is bytes for f in plain)
