"""Link ARQ driven through a seeded lossy channel with a virtual clock."""

from __future__ import annotations

import heapq
import random
import struct

import pytest

from protocol.errors import ConfigError, LinkError
from protocol.frames import Frame, FrameDecoder, encode_frame
from protocol.link import DEFAULT_MAX_MESSAGE, Link, LinkState
from protocol.wire import FrameType


def split_frames(data: bytes) -> list[bytes]:
    """Cut a poll() output into its frames (valid bytes, so the length field is trusted)."""
    out = []
    off = 0
    while off < len(data):
        (n,) = struct.unpack_from("<I", data, off + 12)
        out.append(data[off : off + 20 + n])
        off += 20 + n
    return out


class LossyChannel:
    """One direction of a datagram channel: drops, bit-flips, duplicates, reorders, delays."""

    def __init__(
        self,
        rng: random.Random,
        *,
        latency: float = 0.001,
        drop: float = 0.0,
        corrupt: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.0,
    ) -> None:
        self.rng = rng
        self.latency = latency
        self.p = {"drop": drop, "corrupt": corrupt, "dup": duplicate, "reorder": reorder,
                  "delay": delay}
        self.heap: list[tuple[float, int, bytes]] = []
        self.n = 0
        self.dropped = self.corrupted = self.duplicated = 0

    def push(self, data: bytes, now: float) -> None:
        rng = self.rng
        for frame in split_frames(data):
            if rng.random() < self.p["drop"]:
                self.dropped += 1
                continue
            copies = 2 if rng.random() < self.p["dup"] else 1
            self.duplicated += copies - 1
            for _ in range(copies):
                raw = bytearray(frame)
                if rng.random() < self.p["corrupt"]:
                    self.corrupted += 1
                    for _ in range(rng.randrange(1, 4)):
                        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
                t = now + self.latency
                if rng.random() < self.p["reorder"]:
                    t += rng.uniform(0, 4 * self.latency)  # later frames overtake this one
                if rng.random() < self.p["delay"]:
                    t += rng.uniform(0, 0.2)
                self.n += 1
                heapq.heappush(self.heap, (t, self.n, bytes(raw)))

    def next_time(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def pop_due(self, now: float) -> list[bytes]:
        out = []
        while self.heap and self.heap[0][0] <= now:
            out.append(heapq.heappop(self.heap)[2])
        return out


def run_pair(a: Link, b: Link, ab: LossyChannel, ba: LossyChannel, until, t0: float = 0.0,
             max_steps: int = 2_000_000):
    """Event-driven virtual-time loop; returns messages received by a and by b."""
    got_a: list[tuple[int, bytes]] = []
    got_b: list[tuple[int, bytes]] = []
    t = t0
    for _ in range(max_steps):
        ab.push(a.poll(t), t)
        ba.push(b.poll(t), t)
        for raw in ab.pop_due(t):
            got_b += b.receive(raw, t)
        for raw in ba.pop_due(t):
            got_a += a.receive(raw, t)
        if until(got_a, got_b):
            return got_a, got_b, t
        times = [x for x in (a.next_deadline(), b.next_deadline(), ab.next_time(),
                             ba.next_time()) if x is not None]
        assert times, "deadlock: nothing pending but not done"
        t = max(t, min(times))
    raise AssertionError("did not converge")


def _messages(rng: random.Random, n: int, max_len: int) -> list[tuple[int, bytes]]:
    return [(rng.randrange(3), rng.randbytes(rng.randrange(0, max_len))) for _ in range(n)]


@pytest.mark.parametrize("seed", [1, 2])
def test_exactly_once_in_order_through_faults(seed):
    rng = random.Random(seed)
    faults = dict(drop=0.1, corrupt=0.05, duplicate=0.05, reorder=0.1, delay=0.02)
    ab = LossyChannel(random.Random(seed * 10 + 1), **faults)
    ba = LossyChannel(random.Random(seed * 10 + 2), **faults)
    a = Link(window=16, rto=0.02, max_payload=64)
    b = Link(window=16, rto=0.02, max_payload=64)
    msgs_a = _messages(rng, 3000, 200)
    msgs_b = _messages(rng, 2000, 300)
    for ch, m in msgs_a:
        a.send(ch, m, 0.0)
    for ch, m in msgs_b:
        b.send(ch, m, 0.0)
    got_a, got_b, _ = run_pair(
        a, b, ab, ba, lambda ga, gb: len(ga) >= len(msgs_b) and len(gb) >= len(msgs_a)
    )
    assert got_b == msgs_a
    assert got_a == msgs_b
    for link in (a, b):
        s = link.stats
        assert s.retransmits > 0 and s.duplicates > 0 and s.out_of_order > 0
        assert s.crc_errors + s.garbage_bytes > 0
    assert ab.dropped and ab.corrupted and ab.duplicated
    assert a.stats.messages_received == len(msgs_b)


def test_clean_channel_no_retransmits_and_idle():
    ab = LossyChannel(random.Random(1))
    ba = LossyChannel(random.Random(2))
    a, b = Link(), Link()
    msg = bytes(range(256)) * 300  # 76800 bytes: 5 fragments of 16384
    a.send(2, msg, 0.0)
    _, got_b, t = run_pair(a, b, ab, ba, lambda ga, gb: len(gb) == 1)
    assert got_b == [(2, msg)]
    assert a.stats.frames_sent >= 5 and a.stats.retransmits == 0
    # the delayed ack arrives and the sender becomes idle
    run_pair(a, b, ab, ba, lambda ga, gb: a.idle, t0=t)
    assert a.idle and b.idle
    assert b.stats.acks_sent >= 1 and b.stats.duplicates == 0


def test_window_limits_frames_in_flight():
    a = Link(window=4, max_payload=10)
    a.send(0, bytes(100), 0.0)  # 10 fragments
    data = a.poll(0.0)
    assert len(split_frames(data)) == 4 and a.in_flight == 4
    assert a.poll(0.001) == b""  # window full, no timeout yet
    # peer grants a smaller window: limit shrinks after the ack
    b = Link(window=2)
    ack = b.receive(data, 0.0)
    assert len(ack) == 0  # fragments only, no complete message
    ack_bytes = b.poll(0.0)  # 4 in-order frames with window 2 -> immediate ack
    a.receive(ack_bytes, 0.002)
    assert a.in_flight == 0
    assert len(split_frames(a.poll(0.002))) == 2


def test_retransmits_oldest_on_timeout_and_max_retries():
    a = Link(rto=0.1, max_retries=2)
    a.send(0, b"x", 0.0)
    a.send(0, b"y", 0.0)
    assert len(split_frames(a.poll(0.0))) == 2
    assert a.next_deadline() == pytest.approx(0.1)
    assert a.poll(0.05) == b""
    frames = FrameDecoder().feed(a.poll(0.1))
    assert [f.seq for f in frames] == [0]  # only the oldest is retransmitted
    a.poll(0.2)
    with pytest.raises(LinkError, match="seq 0"):
        a.poll(0.31)
    assert a.stats.retransmits == 2


def test_fast_retransmit_after_three_duplicate_acks():
    a = Link(rto=10.0)
    b = Link()
    for i in range(6):
        a.send(0, bytes([i]), 0.0)
    frames = split_frames(a.poll(0.0))
    got = []
    for raw in frames[1:5]:  # frame 0 lost: b buffers 1..4 and sends duplicate acks at once
        got += b.receive(raw, 0.001)
        a.receive(b.poll(0.001), 0.002)
    assert got == [] and b.stats.out_of_order == 4
    re = FrameDecoder().feed(a.poll(0.002))
    assert [f.seq for f in re] == [0]
    assert a.stats.fast_retransmits == 1
    got = b.receive(encode_frame(re[0]), 0.003)
    assert got == [(0, bytes([i])) for i in range(5)]


def test_fast_retransmit_in_two_way_traffic():
    """The gap report must reach the sender even when the receiver has data of its own to send:
    a piggy-backed ack never counts as a duplicate, so the receiver adds a stand-alone ACK."""
    a = Link(rto=10.0)
    b = Link(rto=10.0)
    for i in range(6):
        a.send(0, bytes([i]), 0.0)
    frames = split_frames(a.poll(0.0))
    t = 0.001
    for raw in frames[1:5]:  # frame 0 lost; b answers every frame with data (an echo stream)
        b.send(0, b"echo", t)
        assert b.receive(raw, t) == []
        back = b.poll(t)
        assert FrameType.DATA in [f.type for f in FrameDecoder().feed(back)]
        a.receive(back, t + 0.001)
        t += 0.002
    re = [f for f in FrameDecoder().feed(a.poll(t)) if f.type is FrameType.DATA]
    assert [f.seq for f in re] == [0]  # long before the 10 s rto
    assert a.stats.fast_retransmits == 1
    assert b.receive(encode_frame(re[0]), t) == [(0, bytes([i])) for i in range(5)]


def test_partial_ack_after_fast_retransmit_resends_the_next_hole_at_once():
    """Two frames of one window lost: once the fast retransmission fills the first hole, the
    cumulative ack stops at the second, which is then resent without waiting for the rto."""
    a, b = Link(rto=10.0), Link(rto=10.0)
    for i in range(10):
        a.send(0, bytes([i]), 0.0)
    frames = split_frames(a.poll(0.0))
    for i, raw in enumerate(frames):
        if i not in (0, 3):
            b.receive(raw, 0.001)
            a.receive(b.poll(0.001), 0.002)
    re = [f for f in FrameDecoder().feed(a.poll(0.002)) if f.type is FrameType.DATA]
    assert [f.seq for f in re] == [0]
    assert b.receive(encode_frame(re[0]), 0.003) == [(0, bytes([i])) for i in range(3)]
    a.receive(b.poll(0.003), 0.004)  # ack 3: partial, frames up to 9 were out before the resend
    re = [f for f in FrameDecoder().feed(a.poll(0.004)) if f.type is FrameType.DATA]
    assert [f.seq for f in re] == [3]
    assert b.receive(encode_frame(re[0]), 0.005) == [(0, bytes([i])) for i in range(3, 10)]
    a.receive(b.poll(0.005), 0.006)
    assert a.idle and a.stats.retransmits == 2


def test_in_order_data_sends_no_extra_acks():
    """Stand-alone gap ACKs are only for gaps and duplicates: in-order two-way traffic rides on
    piggy-backed acks alone."""
    a, b = Link(), Link()
    t = 0.0
    for i in range(50):
        a.send(0, bytes([i]), t)
        b.send(0, bytes([i]), t)
        b.receive(a.poll(t), t)
        a.receive(b.poll(t), t)
        t += 0.001
    assert a.stats.acks_sent == 0 and b.stats.acks_sent == 0


def test_duplicate_acks_are_counted_once_per_gap_report():
    """Three stand-alone ACKs that do not advance trigger one fast retransmit, not more."""
    a = Link(rto=10.0)
    for i in range(3):
        a.send(0, bytes([i]), 0.0)
    a.poll(0.0)
    dup = encode_frame(Frame(FrameType.ACK, ack=0, window=64))
    for _ in range(10):
        a.receive(dup, 0.001)
    assert len(FrameDecoder().feed(a.poll(0.001))) == 1
    assert a.poll(0.002) == b"" and a.stats.fast_retransmits == 1


def test_piggy_backed_ack_replaces_standalone_ack():
    a, b = Link(), Link()
    a.send(0, b"ping", 0.0)
    assert b.receive(a.poll(0.0), 0.0) == [(0, b"ping")]
    b.send(0, b"pong", 0.001)
    frames = FrameDecoder().feed(b.poll(0.001))
    assert [f.type for f in frames] == [FrameType.DATA] and frames[0].ack == 1
    assert b.poll(0.04) == b"" and b.stats.acks_sent == 0  # ack delay passed, no ACK
    a.receive(encode_frame(frames[0]), 0.002)
    assert a.idle


def test_delayed_ack_timing():
    a, b = Link(rto=0.05), Link(rto=0.05, ack_delay=0.01)
    a.send(0, b"m", 0.0)
    b.receive(a.poll(0.0), 0.0)
    assert b.next_deadline() == pytest.approx(0.01)
    assert b.poll(0.005) == b""
    frames = FrameDecoder().feed(b.poll(0.01))
    assert [(f.type, f.ack) for f in frames] == [(FrameType.ACK, 1)]


def test_sequence_wraps_mod_2_16():
    ab = LossyChannel(random.Random(3), drop=0.05, reorder=0.05)
    ba = LossyChannel(random.Random(4), drop=0.05)
    a = Link(window=256, rto=0.01, max_payload=1)
    b = Link(window=256, rto=0.01)
    msg = random.Random(5).randbytes(70000)  # 70000 one-byte frames: seq wraps once
    a.send(1, msg, 0.0)
    _, got_b, _ = run_pair(a, b, ab, ba, lambda ga, gb: len(gb) == 1)
    assert got_b == [(1, msg)]


def test_syn_resets_peer_and_link_starts():
    ab = LossyChannel(random.Random(1), drop=0.3)
    ba = LossyChannel(random.Random(2), drop=0.3)
    host, board = Link(rto=0.01), Link(rto=0.01)
    # board carries state from an earlier session
    board._next_seq = board._base = 5000  # noqa: SLF001 (simulate a long-running board)
    board._expected = 7000  # noqa: SLF001
    host.connect(0.0, nonce=b"\x01\x02\x03\x04")
    assert host.state is LinkState.SYN_SENT and not host.idle
    host.send(0, b"hello", 0.0)
    board_msgs = []

    def done(ga, gb):
        board_msgs.extend(gb)
        gb.clear()
        return bool(board_msgs)

    got_host, _, t = run_pair(host, board, ab, ba, done)
    assert board_msgs == [(0, b"hello")]
    assert host.state is LinkState.ESTABLISHED
    assert board.stats.resets == 1
    board.send(0, b"world", t)
    got_host, _, _ = run_pair(host, board, ab, ba, lambda ga, gb: bool(ga), t0=t)
    assert got_host == [(0, b"world")]
    assert board.stats.resets == 1  # repeated SYNs of the same session did not reset again


def test_delayed_duplicate_syn_does_not_reset_established_session():
    host, board = Link(), Link()
    host.connect(0.0, nonce=b"abcd")
    syn = host.poll(0.0)
    host.receive(board.receive(syn, 0.0) or board.poll(0.0), 0.001)
    assert host.state is LinkState.ESTABLISHED
    host.send(0, b"a", 0.002)
    assert board.receive(host.poll(0.002), 0.002) == [(0, b"a")]
    board.receive(syn, 0.003)  # the same SYN again, late
    host.send(0, b"b", 0.004)
    assert board.receive(host.poll(0.004), 0.004) == [(0, b"b")]
    assert board.stats.resets == 1


def test_syn_without_answer_raises_after_max_retries():
    a = Link(rto=0.01, max_retries=1)
    a.connect(0.0)
    a.poll(0.0)
    a.poll(0.01)
    with pytest.raises(LinkError, match="SYN"):
        a.poll(0.02)


def test_stalled_partial_frame_is_abandoned():
    """A corrupted length field must not hold later frames hostage for ever."""
    a = Link(rto=0.01)
    b = Link(rto=0.01)
    a.send(0, b"first", 0.0)
    a.send(0, b"second", 0.0)
    f1, f2 = split_frames(a.poll(0.0))
    bad = bytearray(f1)
    struct.pack_into("<I", bad, 12, 50000)
    assert b.receive(bytes(bad), 0.0) == []
    assert b.receive(f2, 0.001) == []  # held behind the bogus header
    # the sender retransmits frame 0 after rto; once the stall timeout passed, b rescans
    re = a.poll(0.011)
    got = b.receive(re, 0.05)
    assert got == [(0, b"first"), (0, b"second")]
    assert b.stats.stall_resyncs == 1


def test_bad_config_rejected():
    with pytest.raises(ConfigError):
        Link(window=0)
    with pytest.raises(ConfigError):
        Link(window=40000)
    with pytest.raises(ConfigError):
        Link(max_payload=70000)
    with pytest.raises(ConfigError):
        Link(rto=0)
    with pytest.raises(ConfigError):
        Link().send(256, b"", 0.0)


def test_garbage_input_never_raises():
    link = Link()
    rng = random.Random(0)
    for _ in range(200):
        assert link.receive(rng.randbytes(rng.randrange(100)), 0.0) == []
    link.receive(encode_frame(Frame(FrameType.ACK, ack=123, window=0)), 0.0)
    assert link.stats.garbage_bytes > 0


def test_frames_beyond_the_window_are_dropped_then_resent():
    a = Link(window=8, max_payload=1, rto=0.01)
    b = Link(window=2)
    a.send(0, bytes(range(8)), 0.0)
    frames = split_frames(a.poll(0.0))
    got = b.receive(b"".join(frames[1:]), 0.0)  # frame 0 lost; b buffers 1 frame past the gap
    assert got == [] and b.stats.out_of_order == 1
    assert b.stats.beyond_window == 6 and b.stats.duplicates == 0
    t = 0.0
    for _ in range(100):
        t += 0.011
        a.receive(b.poll(t), t)
        got += b.receive(a.poll(t), t)
        if got:
            break
    assert got == [(0, bytes(range(8)))]
    assert a.stats.retransmits >= 7


def _fragment(seq: int, payload: bytes, *, channel: int = 0, eom: bool = False) -> bytes:
    return encode_frame(Frame(FrameType.DATA, channel, int(eom), seq, 0, 64, payload))


def test_reassembly_is_bounded_by_max_message():
    """A peer that never sends END_OF_MESSAGE must not make the receiver buffer grow forever."""
    b = Link(max_message=1000)
    seq = 0
    for _ in range(3):  # 300 bytes: within the bound
        assert b.receive(_fragment(seq, bytes(100)), 0.0) == []
        seq += 1
    with pytest.raises(LinkError, match="max_message") as info:
        for _ in range(20):
            b.receive(_fragment(seq, bytes(100)), 0.0)
            seq += 1
    assert seq == 10  # raised at the fragment that crossed 1000 bytes (it was consumed)
    assert b.stats.oversized == 1 and info.value.messages == []
    seq += 1
    # the rest of that message is discarded, however long it goes on, without raising again
    for _ in range(500):
        assert b.receive(_fragment(seq, bytes(100)), 0.0) == []
        seq += 1
    assert sum(map(len, b._parts.values())) == 0  # noqa: SLF001 (nothing buffered)
    assert b.receive(_fragment(seq, b"tail", eom=True), 0.0) == []  # its end
    # the link goes on: the next message on that channel is whole and on time
    assert b.receive(_fragment(seq + 1, b"next", eom=True), 0.0) == [(0, b"next")]
    assert b.stats.oversized == 1


def test_oversized_message_error_carries_the_messages_of_the_same_batch():
    b = Link(max_message=150)
    batch = (_fragment(0, b"a", channel=1, eom=True) + _fragment(1, bytes(100))
             + _fragment(2, bytes(100)) + _fragment(3, b"b", channel=2, eom=True))
    with pytest.raises(LinkError) as info:
        b.receive(batch, 0.0)
    assert info.value.messages == [(1, b"a"), (2, b"b")]
    assert b.receive(_fragment(4, b"c", eom=True), 0.0) == []  # END of the dropped message
    assert b.receive(_fragment(5, b"d", eom=True), 0.0) == [(0, b"d")]


def test_many_empty_fragments_hold_nothing():
    b = Link(max_message=10)
    for seq in range(1000):
        assert b.receive(_fragment(seq, b""), 0.0) == []
    assert sum(map(len, b._parts.values())) == 0  # noqa: SLF001
    assert b.receive(_fragment(1000, b"x" * 10, eom=True), 0.0) == [(0, b"x" * 10)]


def test_send_refuses_messages_over_max_message():
    a = Link(max_message=100, max_payload=10)
    a.send(0, bytes(100), 0.0)  # exactly the bound: 10 fragments
    with pytest.raises(ConfigError, match="max_message"):
        a.send(0, bytes(101), 0.0)
    assert Link().max_message == DEFAULT_MAX_MESSAGE == 512 << 20
    with pytest.raises(ConfigError):
        Link(max_message=0)


def test_keepalive_sends_one_ack_unless_data_carries_it():
    a, b = Link(), Link()
    a.send(0, b"m", 0.0)
    b.receive(a.poll(0.0), 0.0)
    b.poll(1.0)  # the delayed ack is out: nothing pending
    assert b.poll(1.1) == b"" and b.next_deadline() is None
    b.keepalive(2.0)
    assert b.next_deadline() == 2.0
    frames = FrameDecoder().feed(b.poll(2.0))
    assert [(f.type, f.ack) for f in frames] == [(FrameType.ACK, 1)]
    assert b.poll(2.1) == b""  # one per call
    b.keepalive(3.0)
    b.send(0, b"data", 3.0)
    assert [f.type for f in FrameDecoder().feed(b.poll(3.0))] == [FrameType.DATA]
    c = Link()
    c.connect(0.0, nonce=b"abcd")
    c.poll(0.0)
    c.keepalive(0.01)  # not established: no ACK to send
    assert c.poll(0.01) == b""


def test_read_only_views_go_out_uncopied_and_writable_buffers_are_copied():
    ab = LossyChannel(random.Random(1))
    ba = LossyChannel(random.Random(2))
    a, b = Link(), Link()
    ro = bytes(range(256)) * 100
    view = memoryview(bytearray(ro)).toreadonly()
    a.send(1, view, 0.0)
    assert a._queue[0][2].obj is view.obj  # fragments are views of the caller's buffer
    buf = bytearray(b"abc" * 10)
    a.send(2, buf, 0.0)
    buf[:3] = b"xyz"  # changed after send: the link sent its own copy
    _, got_b, _ = run_pair(a, b, ab, ba, lambda ga, gb: len(gb) == 2)
    assert got_b == [(1, ro), (2, b"abc" * 10)]


def test_delivered_messages_are_bytes_and_the_wire_unchanged():
    # the receiving decoder hands out views of the wire bytes: each message is copied once,
    # into bytes (one frame or many), and the sender's joined frames match encode_frame's
    a, b = Link(max_payload=1000), Link(max_payload=1000)
    big = bytes(range(256)) * 20  # 5 frames
    a.send(3, big, 0.0)
    a.send(4, b"small", 0.0)
    a.send(5, memoryview(big).toreadonly()[:700], 0.0)
    wire = a.poll(0.0)
    frames = FrameDecoder().feed(wire)
    assert b"".join(encode_frame(f) for f in frames) == wire
    got = b.receive(wire, 0.0)
    assert got == [(3, big), (4, b"small"), (5, big[:700])]
    assert all(type(m) is bytes for _, m in got)
