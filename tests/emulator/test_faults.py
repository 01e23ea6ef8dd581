"""Fault injector: each knob does what it says to whole frames, repeatably from a seed."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.faults import FaultConfig, FaultInjector
from protocol.errors import ConfigError
from protocol.frames import Frame, FrameDecoder, encode_frame
from protocol.wire import Channel, FrameType


def frames(n: int, size: int = 40) -> list[bytes]:
    rng = np.random.default_rng(n)
    return [
        encode_frame(Frame(FrameType.DATA, Channel.LOOPBACK, 1, i % 65536, 0, 64,
                           rng.bytes(size)))
        for i in range(n)
    ]


def seqs(data: bytes) -> list[int]:
    return [f.seq for f in FrameDecoder().feed(data)]


@pytest.mark.parametrize(
    "kwargs",
    [dict(drop=-0.1), dict(corrupt=1.5), dict(reorder=float("nan")), dict(delay_s=-1.0),
     dict(delay_s=float("inf")), dict(seed=-1), dict(duplicate="0.1")],
)
def test_config_refuses_bad_values(kwargs) -> None:
    with pytest.raises(ConfigError):
        FaultConfig(**kwargs)


def test_uniform_config() -> None:
    c = FaultConfig.uniform(0.01, seed=4)
    assert (c.drop, c.corrupt, c.duplicate, c.reorder, c.delay, c.seed) == (
        0.01, 0.01, 0.01, 0.01, 0.0, 4)
    assert c.active and not FaultConfig().active


def test_inactive_injector_passes_bytes_unchanged() -> None:
    inj = FaultInjector()
    assert inj.process(b"\x00garbage and half a frame", 0.0) == b"\x00garbage and half a frame"
    assert inj.next_deadline() is None


def test_drop_all_and_none() -> None:
    data = b"".join(frames(50))
    inj = FaultInjector(FaultConfig(drop=1.0))
    assert inj.process(data, 0.0) == b""
    assert inj.stats.dropped == 50
    inj.configure(FaultConfig(drop=0.0, duplicate=0.0, delay_s=0.5))
    assert inj.process(data, 0.0) == data


def test_drop_rate_and_seed_repeatability() -> None:
    data = b"".join(frames(4000, 8))
    out1 = FaultInjector(FaultConfig(drop=0.1, seed=1)).process(data, 0.0)
    out2 = FaultInjector(FaultConfig(drop=0.1, seed=1)).process(data, 0.0)
    out3 = FaultInjector(FaultConfig(drop=0.1, seed=2)).process(data, 0.0)
    assert out1 == out2 != out3
    kept = seqs(out1)
    assert 3500 < len(kept) < 3700  # ~10 % dropped
    assert kept == sorted(kept)  # dropping does not reorder


def test_streams_differ() -> None:
    data = b"".join(frames(500, 8))
    cfg = FaultConfig(drop=0.5, seed=3)
    assert FaultInjector(cfg, stream=1).process(data, 0) != FaultInjector(cfg, stream=2).process(
        data, 0)


def test_corrupt_flips_bits_so_crc_fails() -> None:
    fs = frames(200)
    data = b"".join(fs)
    inj = FaultInjector(FaultConfig(corrupt=1.0, seed=5))
    out = inj.process(data, 0.0)
    assert len(out) == len(data) and out != data
    diff = np.unpackbits(np.frombuffer(out, np.uint8) ^ np.frombuffer(data, np.uint8))
    assert 200 <= int(diff.sum()) <= 600  # 1..3 bits per frame
    dec = FrameDecoder()
    assert dec.feed(out) == []  # no corrupted frame passes as intact


def test_duplicate() -> None:
    data = b"".join(frames(10))
    out = FaultInjector(FaultConfig(duplicate=1.0)).process(data, 0.0)
    assert seqs(out) == [i for i in range(10) for _ in range(2)]


def test_reorder_swaps_with_next_frame() -> None:
    data = b"".join(frames(6))
    inj = FaultInjector(FaultConfig(reorder=1.0, delay_s=0.2))
    assert seqs(inj.process(data, 0.0)) == [1, 0, 3, 2, 5, 4]
    # a lone frame waits for a successor, at most delay_s
    one = frames(1)[0]
    assert inj.process(one, 1.0) == b""
    assert inj.next_deadline() == pytest.approx(1.2)
    assert inj.release(1.1) == b""
    assert inj.release(1.2) == one


def test_delay_holds_frames_back_in_due_order() -> None:
    data = b"".join(frames(30))
    inj = FaultInjector(FaultConfig(delay=1.0, delay_s=0.05, seed=2))
    assert inj.process(data, 10.0) == b""
    due = inj.next_deadline()
    assert 10.0 < due <= 10.05
    assert inj.release(due - 1e-9) == b""
    first = inj.release(due)
    assert len(seqs(first)) >= 1
    rest = inj.release(10.05)
    assert sorted(seqs(first + rest)) == list(range(30))
    assert seqs(first + rest) != list(range(30))  # random delays reorder
    assert inj.next_deadline() is None and inj.stats.delayed == 30


def test_chunked_stream_is_reassembled_into_frames() -> None:
    fs = frames(40)
    data = b"".join(fs)
    inj = FaultInjector(FaultConfig(duplicate=1.0))
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(len(data), 100, replace=False))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    out = b"".join(inj.process(p, 0.0) for p in pieces)
    assert out == b"".join(f + f for f in fs)


def test_held_frames_survive_reconfiguration() -> None:
    inj = FaultInjector(FaultConfig(delay=1.0, delay_s=0.01))
    inj.process(b"".join(frames(3)), 0.0)
    inj.configure(FaultConfig())
    assert inj.active  # still holding
    assert seqs(inj.release(1.0)) and not inj.active


def test_garbage_length_field_does_not_stall_the_stream() -> None:
    fs = frames(3)
    bogus = bytearray(fs[0])
    bogus[12:16] = (60000).to_bytes(4, "little")  # claims 60000 payload bytes that never come
    inj = FaultInjector(FaultConfig(duplicate=1e-9))
    assert inj.process(bytes(bogus) + fs[1], 0.0) == b""  # hidden behind the bogus header
    assert inj.process(fs[2], 0.1) == b""
    out = inj.process(b"", 0.5)  # stalled long enough: rescanned
    assert seqs(out) == [1, 2]
