"""Sans-I/O selective-repeat ARQ: the same state machine runs on host and board.

Modelled on BrainScaleS-2's HostARQ (sliding window, cumulative acks, fixed retransmission
timeout, delayed acks). Go-back-N is not enough on a lossy link, so the receiver keeps frames that
arrive out of order within its window and acks cumulatively (plus an immediate stand-alone ACK
for every frame that shows a gap, even in two-way traffic); the sender retransmits only the
oldest unacked frame: on timeout, after three duplicate acks, or at once on a partial ack after
a fast retransmit (TCP NewReno). No I/O and no clock of its own:
the caller passes `now` and moves the bytes (docs/protocol.md, "Link layer").
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass
from enum import Enum

from protocol.errors import ConfigError, LinkError
from protocol.frames import Frame, FrameDecoder, data_frame_parts, encode_frame_parts
from protocol.wire import (
    FRAME_CRC_SIZE,
    FRAME_HEADER_SIZE,
    FRAME_MAX_PAYLOAD,
    SEQ_MODULUS,
    FrameFlag,
    FrameType,
)

_M = SEQ_MODULUS
_EOM = int(FrameFlag.END_OF_MESSAGE)
_DUP_ACK_THRESHOLD = 3
_FRAME_OVERHEAD = FRAME_HEADER_SIZE + FRAME_CRC_SIZE
SYN_NONCE_SIZE = 4  # bytes of the session nonce a SYN carries and its SYN_ACK echoes
DEFAULT_MAX_MESSAGE = 512 << 20  # bytes: the largest message either end sends or reassembles


@dataclass
class LinkStats:
    """Counters of one Link; crc_errors / garbage_bytes mirror its frame decoder."""

    frames_sent: int = 0
    frames_received: int = 0
    retransmits: int = 0  # every retransmitted DATA frame (timeouts and fast retransmits)
    fast_retransmits: int = 0  # the subset triggered by duplicate or partial acks
    duplicates: int = 0  # DATA frames received again (already delivered or already buffered)
    out_of_order: int = 0  # DATA frames buffered ahead of a gap
    beyond_window: int = 0  # DATA frames too far ahead to buffer (dropped; resent later)
    crc_errors: int = 0
    garbage_bytes: int = 0
    acks_sent: int = 0  # stand-alone ACK frames, gap ACKs included (piggy-backs not counted)
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    resets: int = 0  # link state resets caused by a peer's SYN
    oversized: int = 0  # received messages dropped for exceeding max_message
    stall_resyncs: int = 0  # partial frames abandoned after stalling (corrupted length field)


class LinkState(Enum):
    ESTABLISHED = "established"  # also the implicit state of a fresh link: seq 0 on both sides
    SYN_SENT = "syn_sent"  # connect() called, waiting for the matching SYN_ACK


class _Outgoing:
    __slots__ = ("channel", "flags", "payload", "sent_at", "retries", "fast")

    def __init__(self, channel: int, flags: int, payload: bytes | memoryview,
                 sent_at: float) -> None:
        self.channel = channel
        self.flags = flags
        self.payload = payload
        self.sent_at = sent_at
        self.retries = 0
        self.fast = False  # a fast retransmit is due / was done for this frame


class Link:
    """One end of a reliable, ordered, message-oriented link over an unreliable byte pipe.

    window: frames this end buffers out of order and grants the peer (<= 2^15 so that sequence
    numbers mod 2^16 stay unambiguous); the sender keeps at most min(own, peer's) unacked.
    rto: retransmission timeout in seconds. max_payload: fragment size of long messages.
    max_retries: retransmissions of one frame (or SYNs) before poll() raises LinkError;
    None retries for ever (the caller bounds time itself). ack_delay: how long an in-order
    frame may wait for a piggy-back before a stand-alone ACK goes out (default rto / 5).
    max_message: largest message in bytes that send() accepts and receive() reassembles; a
    peer's message beyond it is dropped and receive() raises LinkError (the buffer of a message
    whose END_OF_MESSAGE never comes cannot grow without bound).
    """

    def __init__(
        self,
        *,
        window: int = 64,
        rto: float = 0.05,
        max_payload: int = 16384,
        max_retries: int | None = None,
        ack_delay: float | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        if not 1 <= window <= _M // 2:
            raise ConfigError(f"link window must be 1..{_M // 2} frames, got {window}")
        if not rto > 0:
            raise ConfigError(f"link rto must be > 0 seconds, got {rto}")
        if not 1 <= max_payload <= FRAME_MAX_PAYLOAD:
            raise ConfigError(
                f"max_payload must be 1..{FRAME_MAX_PAYLOAD} bytes, got {max_payload}"
            )
        if max_retries is not None and max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0 or None, got {max_retries}")
        if max_message < 1:
            raise ConfigError(f"max_message must be >= 1 byte, got {max_message}")
        if ack_delay is None:
            ack_delay = rto / 5
        if not 0 <= ack_delay < rto:
            raise ConfigError(f"ack_delay must be in [0, rto), got {ack_delay}")
        self.window = window
        self.rto = rto
        self.max_payload = max_payload
        self.max_retries = max_retries
        self.ack_delay = ack_delay
        self.max_message = int(max_message)
        self.stall_timeout = 4 * rto  # a partial frame older than this is abandoned
        self.stats = LinkStats()
        self._decoder = FrameDecoder(views=True)  # payloads copied once, in _deliver
        self._state = LinkState.ESTABLISHED
        self._my_nonce = b""  # nonce of our own connect()
        self._peer_nonce: bytes | None = None  # nonce of the last SYN we accepted
        self._syn_due = 0.0
        self._syn_retries = 0
        self._syn_acks: list[bytes] = []  # SYN_ACKs to emit at the next poll
        self._partial_since: float | None = None
        self._now = 0.0
        self._oversized: list[tuple[int, int]] = []  # (channel, bytes) dropped in this receive()
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        """Sequence state of both directions back to 0; queued and partial data dropped."""
        self._next_seq = 0
        self._base = 0
        self._unacked: dict[int, _Outgoing] = {}
        self._queue: deque[tuple[int, int, bytes | memoryview]] = deque()
        self._dup_acks = 0
        self._recover: int | None = None  # next_seq when the last fast retransmit went out
        self._peer_window = self.window
        self._expected = 0
        self._ooo: dict[int, Frame] = {}
        self._parts: dict[int, list[bytes]] = {}
        self._part_bytes: dict[int, int] = {}  # bytes reassembled so far per channel
        self._discarding: set[int] = set()  # channels dropping an oversized message up to EOM
        self._ack_due: float | None = None
        self._rx_since_ack = 0
        self._gap_acks = 0  # stand-alone ACKs owed at once: frames that arrived out of order

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def idle(self) -> bool:
        """Everything sent was acked (and the link is established)."""
        return self._state is LinkState.ESTABLISHED and not self._queue and not self._unacked

    @property
    def in_flight(self) -> int:
        """DATA frames sent and not yet acked."""
        return len(self._unacked)

    def connect(self, now: float, nonce: bytes | None = None) -> None:
        """(Re)start the link: drop all state, send SYN until the peer's matching SYN_ACK.

        Messages passed to send() afterwards wait until the link is established. `nonce`
        (4 bytes) tells sessions apart; a random one by default.
        """
        if nonce is None:
            nonce = secrets.token_bytes(SYN_NONCE_SIZE)
        if len(nonce) != SYN_NONCE_SIZE:
            raise ConfigError(f"SYN nonce must be {SYN_NONCE_SIZE} bytes, got {len(nonce)}")
        self._reset()
        self._state = LinkState.SYN_SENT
        self._my_nonce = bytes(nonce)
        self._syn_due = now
        self._syn_retries = 0
        self._now = now

    # ------------------------------------------------------------------ sending
    def send(self, channel: int, message: bytes | memoryview, now: float) -> None:
        """Queue one message; it is cut into frames of max_payload, the last one flagged EOM.
        bytes and read-only byte views are sent as they are (no copy), anything else copied."""
        if not 0 <= channel <= 255:
            raise ConfigError(f"channel must be 0..255, got {channel}")
        if isinstance(message, memoryview) and message.readonly and message.format == "B" and (
                message.contiguous):
            data: bytes | memoryview = message
        else:
            data = bytes(message)
        if len(data) > self.max_message:
            raise ConfigError(
                f"message of {len(data)} bytes on channel {channel} exceeds the link's "
                f"max_message of {self.max_message} bytes"
            )
        mp = self.max_payload
        if len(data) <= mp:
            self._queue.append((channel, _EOM, data))
        else:  # fragments are views of the (immutable) message: no copy until the frame
            view = memoryview(data)
            last = (len(data) - 1) // mp * mp
            for i in range(0, last, mp):
                self._queue.append((channel, 0, view[i : i + mp]))
            self._queue.append((channel, _EOM, view[last:]))
        self.stats.messages_sent += 1
        self._now = now

    def _emit(self, out: list[bytes | memoryview], frame: Frame) -> None:
        # header, payload, trailer: poll() joins all frames at once (one copy of the payloads)
        parts = encode_frame_parts(frame)
        out.extend(parts)
        self.stats.frames_sent += 1
        self.stats.bytes_sent += len(parts[0]) + len(parts[1]) + len(parts[2])

    def _emit_data(self, out: list[bytes | memoryview], seq: int, o: _Outgoing) -> None:
        # (every field is in range by construction: no Frame to build and check per fragment)
        out.extend(data_frame_parts(o.channel, o.flags, seq, self._expected, self.window,
                                    o.payload))
        stats = self.stats
        stats.frames_sent += 1
        stats.bytes_sent += _FRAME_OVERHEAD + len(o.payload)
        self._ack_due = None  # the ack rides along
        self._rx_since_ack = 0

    def poll(self, now: float) -> bytes:
        """Wire bytes to transmit now: SYN/SYN_ACK, due retransmission, new frames, ack.

        Raises LinkError when a frame (or SYN) was retransmitted max_retries times unanswered.
        """
        return b"".join(self.poll_parts(now))

    def poll_parts(self, now: float) -> list[bytes | memoryview]:
        """poll() not yet joined: (header, payload, CRC trailer) of each frame in turn, whose
        concatenation is poll()'s bytes. An in-process pipe hands them on as they are, and the
        peer's receive_parts() copies each payload once, into its message (a 2.7 MB trace is
        then copied once instead of twice). Payloads may be read-only views of sent messages.
        """
        self._now = now
        out: list[bytes | memoryview] = []
        for nonce in self._syn_acks:
            self._emit(out, Frame(FrameType.SYN_ACK, window=self.window, payload=nonce))
        self._syn_acks.clear()
        if self._state is LinkState.SYN_SENT:
            if now >= self._syn_due:
                if self.max_retries is not None and self._syn_retries > self.max_retries:
                    raise LinkError(
                        f"peer did not answer SYN after {self._syn_retries} tries "
                        f"({self.rto:g} s apart)"
                    )
                self._emit(out, Frame(FrameType.SYN, window=self.window, payload=self._my_nonce))
                self._syn_retries += 1
                self._syn_due = now + self.rto
            return out
        # gap reports go out as stand-alone ACKs even when DATA follows: only those count as
        # duplicate acks at the peer (a piggy-backed ack repeats naturally), and the peer
        # needs them to fast-retransmit in two-way traffic
        for _ in range(min(self._gap_acks, _DUP_ACK_THRESHOLD)):
            self._emit_ack(out)
        self._gap_acks = 0
        if self._unacked:
            o = self._unacked[self._base]
            fast_due = o.fast and o.retries == 0
            if fast_due or now >= o.sent_at + self.rto:
                if self.max_retries is not None and o.retries >= self.max_retries:
                    raise LinkError(
                        f"no ack for frame seq {self._base} after {o.retries} retransmissions "
                        f"(rto {self.rto:g} s): peer dead or link broken"
                    )
                o.retries += 1
                o.sent_at = now
                self.stats.retransmits += 1
                if fast_due:
                    self.stats.fast_retransmits += 1
                    self._recover = self._next_seq
                self._emit_data(out, self._base, o)
        limit = min(self.window, self._peer_window)
        queue = self._queue
        while queue and len(self._unacked) < limit:
            channel, flags, payload = queue.popleft()
            o = _Outgoing(channel, flags, payload, now)
            seq = self._next_seq
            self._unacked[seq] = o
            self._next_seq = (seq + 1) % _M
            self._emit_data(out, seq, o)
        if self._ack_due is not None and now >= self._ack_due:
            self._emit_ack(out)
        return out

    def _emit_ack(self, out: list[bytes | memoryview]) -> None:
        self._emit(out, Frame(FrameType.ACK, ack=self._expected, window=self.window))
        self.stats.acks_sent += 1
        self._ack_due = None
        self._rx_since_ack = 0

    def keepalive(self, now: float) -> None:
        """Send a stand-alone ACK at the next poll unless a DATA frame carries the ack first.

        A board busy computing calls this periodically so that the waiting host, which counts
        silence, can tell a long computation from a dead board (docs/protocol.md, 4.7).
        """
        self._now = now
        if self._state is LinkState.ESTABLISHED and (self._ack_due is None or self._ack_due > now):
            self._ack_due = now

    def next_deadline(self) -> float | None:
        """When poll() must be called next; None when nothing is pending."""
        now = self._now
        times: list[float] = []
        if self._syn_acks:
            times.append(now)
        if self._state is LinkState.SYN_SENT:
            times.append(self._syn_due)
            return min(times)
        if self._unacked:
            o = self._unacked[self._base]
            times.append(now if (o.fast and o.retries == 0) else o.sent_at + self.rto)
        if self._queue and len(self._unacked) < min(self.window, self._peer_window):
            times.append(now)
        if self._ack_due is not None:
            times.append(self._ack_due)
        if self._gap_acks:
            times.append(now)
        return min(times) if times else None

    # ------------------------------------------------------------------ receiving
    def receive(self, data: bytes, now: float) -> list[tuple[int, bytes]]:
        """Feed received wire bytes; returns complete messages (channel, bytes), in order, once."""
        self.stats.bytes_received += len(data)
        return self._receive_frames(self._decoder.feed(data), now)

    def receive_parts(self, parts: list[bytes | memoryview], now: float) -> list[tuple[int, bytes]]:
        """receive(b"".join(parts), now) without the join: `parts` as poll_parts() of the peer
        makes them (frames whole, one part per header, payload and trailer) are decoded in
        place; anything else is joined and fed as receive() would. Views among the parts must
        be read-only views of buffers nobody changes (a message is copied out of them on
        delivery; fragments of one not yet complete keep referring to them)."""
        self.stats.bytes_received += sum(map(len, parts))
        return self._receive_frames(self._decoder.feed_parts(parts), now)

    def _receive_frames(self, frames: list[Frame], now: float) -> list[tuple[int, bytes]]:
        self._now = now
        dec = self._decoder
        if dec.pending_frame:
            if frames or self._partial_since is None:
                self._partial_since = now
            elif now - self._partial_since >= self.stall_timeout:
                # a corrupted length field claims bytes that will never come: rescan behind it
                self.stats.stall_resyncs += 1
                frames = dec.skip_pending()
                self._partial_since = now if dec.pending_frame else None
        else:
            self._partial_since = None
        messages: list[tuple[int, bytes]] = []
        handle = self._handle
        for frame in frames:
            handle(frame, now, messages)
        self.stats.crc_errors = dec.crc_errors
        self.stats.garbage_bytes = dec.garbage_bytes
        if self._oversized:
            self._raise_oversized(messages)
        return messages

    def _raise_oversized(self, messages: list[tuple[int, bytes]]) -> None:
        """LinkError for messages dropped in this receive(); the link itself stays consistent,
        and the messages that did complete ride along as `exc.messages` (nothing lost)."""
        dropped, self._oversized = self._oversized, []
        what = ", ".join(f"channel {ch} after {n} bytes" for ch, n in dropped)
        exc = LinkError(
            f"peer sent a message longer than max_message ({self.max_message} bytes): dropped "
            f"({what}); raise max_message on both ends if such messages are intended"
        )
        exc.messages = messages  # type: ignore[attr-defined]
        raise exc

    def _handle(self, f: Frame, now: float, messages: list[tuple[int, bytes]]) -> None:
        self.stats.frames_received += 1
        ftype = f.type
        if ftype is FrameType.SYN:
            nonce = bytes(f.payload)
            if nonce != self._peer_nonce:  # a new session; a repeated SYN only re-answers
                self._reset()
                self._peer_nonce = nonce
                self.stats.resets += 1
            self._peer_window = max(1, f.window)
            self._syn_acks.append(nonce)
            return
        if ftype is FrameType.SYN_ACK:
            if self._state is LinkState.SYN_SENT and f.payload == self._my_nonce:
                self._state = LinkState.ESTABLISHED
                self._peer_window = max(1, f.window)
            return
        if self._state is LinkState.SYN_SENT:
            return  # left over from the previous session
        self._peer_window = max(1, f.window)
        self._on_ack(f.ack, ftype is FrameType.ACK)
        if ftype is FrameType.DATA:
            self._on_data(f, now, messages)

    def _on_ack(self, ack: int, pure: bool) -> None:
        outstanding = (self._next_seq - self._base) % _M
        d = (ack - self._base) % _M
        if d == 0:
            # only stand-alone ACKs count as duplicates: data frames repeat acks naturally
            if pure and outstanding:
                self._dup_acks += 1
                if self._dup_acks == _DUP_ACK_THRESHOLD:
                    self._unacked[self._base].fast = True
            return
        if d > outstanding:
            return  # stale (reordered) or bogus ack
        unacked = self._unacked
        base = self._base
        for i in range(d):
            del unacked[(base + i) % _M]
        self._base = ack
        self._dup_acks = 0
        recover = self._recover
        if recover is not None:
            if unacked and 0 < (recover - ack) % _M <= len(unacked):
                # partial ack after a fast retransmit: the retransmission filled one gap and
                # the peer now waits for a frame sent before it, so that one is lost as well
                unacked[ack].fast = True
            else:
                self._recover = None

    def _on_data(self, f: Frame, now: float, messages: list[tuple[int, bytes]]) -> None:
        d = (f.seq - self._expected) % _M
        if d == 0:
            self._deliver(f, messages)
            filled = False
            while self._expected in self._ooo:
                self._deliver(self._ooo.pop(self._expected), messages)
                filled = True
            self._rx_since_ack += 1
            if filled or self._rx_since_ack >= max(1, min(self.window, self._peer_window) // 4):
                self._ack_due = now
            elif self._ack_due is None:
                self._ack_due = now + self.ack_delay
        elif d < self.window:
            if f.seq in self._ooo:
                self.stats.duplicates += 1
            else:
                self._ooo[f.seq] = f
                self.stats.out_of_order += 1
            self._gap_acks += 1  # tell the sender about the gap at once
        elif d >= _M // 2:
            self.stats.duplicates += 1  # already delivered: our ack was probably lost
            self._gap_acks += 1
        else:
            self.stats.beyond_window += 1  # sender does not know our window yet: drop, ack
            self._gap_acks += 1

    def _deliver(self, f: Frame, messages: list[tuple[int, bytes]]) -> None:
        self._expected = (self._expected + 1) % _M
        ch = f.channel
        eom = f.flags & _EOM
        if ch in self._discarding:  # the tail of a message dropped as oversized
            if eom:
                self._discarding.discard(ch)
            return
        size = self._part_bytes.get(ch, 0) + len(f.payload)
        if size > self.max_message:
            self._parts.pop(ch, None)
            self._part_bytes.pop(ch, None)
            if not eom:
                self._discarding.add(ch)
            self.stats.oversized += 1
            self._oversized.append((ch, size))
            return
        if eom:
            parts = self._parts.pop(ch, None)
            self._part_bytes.pop(ch, None)
            if parts is None:  # (the decoder's payloads may be views of the received bytes)
                messages.append((ch, bytes(f.payload)))
            else:
                parts.append(f.payload)
                messages.append((ch, b"".join(parts)))
            self.stats.messages_received += 1
        elif f.payload:  # empty fragments add nothing (and must not grow the list)
            self._parts.setdefault(ch, []).append(f.payload)
            self._part_bytes[ch] = size
