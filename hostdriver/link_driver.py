"""Drives the sans-I/O protocol.Link with a transport and a real clock.

protocol.Link decides what to send and when; this module moves its bytes over a Transport,
sleeps until the link's next deadline or until bytes arrive, and sorts received messages into
per-channel inboxes. Every wait is bounded: a board that sends no valid frame for `timeout`
seconds while the host waits for it raises LinkError (never a hang), as does a dead pipe.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import NoReturn

from hostdriver.transports.base import Transport
from protocol.errors import BoardError, LinkError
from protocol.link import Link, LinkState, LinkStats
from protocol.wire import FRAME_MAGIC, PROTOCOL_VERSION, Channel, FrameType

_MAX_WAIT = 0.05  # longest single blocking read, so deadlines are re-checked often enough
_SNIFF_BYTES = 4096
_FRAME_TYPES = {int(t) for t in FrameType}


def _foreign_version(data: bytes) -> int | None:
    """Protocol version of frame headers in `data` that are not ours (magic + known type)."""
    magic = FRAME_MAGIC.to_bytes(2, "little")
    i = data.find(magic)
    while 0 <= i <= len(data) - 4:
        version, ftype = data[i + 2], data[i + 3]
        if version != PROTOCOL_VERSION and ftype in _FRAME_TYPES:
            return version
        i = data.find(magic, i + 1)
    return None


def _channel_name(channel: int) -> str:
    try:
        return Channel(channel).name
    except ValueError:
        return str(channel)


class LinkDriver:
    """One link over one transport. Not thread-safe: a Board owns it.

    timeout: the longest the host waits without hearing a valid frame from the board before
    it declares the link dead (LinkError). Methods that wait accept a per-call override.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        timeout: float = 2.0,
        link: Link | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"link timeout must be > 0 seconds, got {timeout}")
        self.transport = transport
        self.timeout = float(timeout)
        self.link = link if link is not None else Link()
        self._clock = clock
        self._inbox: dict[int, deque[bytes]] = {}
        self._failure: LinkError | None = None
        self._sniff: bytearray | None = None  # raw bytes seen during the handshake

    # ------------------------------------------------------------------ state
    @property
    def stats(self) -> LinkStats:
        return self.link.stats

    @property
    def broken(self) -> bool:
        return self._failure is not None

    def pending(self, channel: int) -> int:
        """Messages received on `channel` and not yet taken by receive()."""
        box = self._inbox.get(channel)
        return len(box) if box else 0

    def close(self) -> None:
        self.transport.close()

    # ------------------------------------------------------------------ I/O
    def connect(self, timeout: float | None = None) -> None:
        """SYN handshake: (re)start both ends' sequence state; LinkError if the board is silent."""
        self._check()
        self._inbox.clear()
        self.link.connect(self._clock())
        limit = self.timeout if timeout is None else timeout
        deadline = self._clock() + limit
        self._sniff = bytearray()
        try:
            while self.link.state is not LinkState.ESTABLISHED:
                if self._clock() >= deadline:
                    self._handshake_failed(limit)
                self.pump(deadline - self._clock())
        finally:
            self._sniff = None

    def _handshake_failed(self, limit: float) -> NoReturn:
        """No SYN_ACK: tell a board speaking another protocol version from a silent one."""
        version = _foreign_version(bytes(self._sniff or b""))
        if version is not None:
            exc = BoardError(
                f"{self.transport.url}: the board speaks protocol version {version}, this host "
                f"speaks version {PROTOCOL_VERSION}: update the host software or the firmware"
            )
            self._failure = LinkError(str(exc))
            raise exc
        self._fail(
            f"{self.transport.url}: no answer to the link handshake (SYN) within "
            f"{limit:.3g} s: is a board (or a served emulator) on the other end?"
        )

    def send(self, channel: int, message: bytes, *, flush: bool = True) -> None:
        """Queue one message; with flush, hand what the window allows to the transport now."""
        self._check()
        self.link.send(channel, message, self._clock())
        if flush:
            self._flush()

    def receive(
        self, channel: int, timeout: float | None = None, max_seconds: float | None = None
    ) -> bytes:
        """The next message on `channel`, waiting while the board keeps talking.

        LinkError when no valid frame arrives for `timeout` seconds (default self.timeout), or
        when the message has not come within `max_seconds` in all (None: no overall bound; a
        busy board keeps the link alive with keepalives). After an overall time-out the
        connection is closed for use: a late answer could otherwise be taken for the next one.
        """
        self._check()
        box = self._inbox.get(channel)
        if box:
            return box.popleft()
        limit = self.timeout if timeout is None else float(timeout)
        heard = self.link.stats.frames_received
        quiet_since = started = self._clock()
        while True:
            self.pump(min(_MAX_WAIT, max(0.0, quiet_since + limit - self._clock())))
            box = self._inbox.get(channel)
            if box:
                return box.popleft()
            now = self._clock()
            if max_seconds is not None and now - started >= max_seconds:
                self._fail(
                    f"{self.transport.url}: no {_channel_name(channel)} answer within "
                    f"{max_seconds:.3g} s (the board is alive but still busy; allow more time)"
                )
            if self.link.stats.frames_received != heard:
                heard = self.link.stats.frames_received
                quiet_since = now
            elif now - quiet_since >= limit:
                self._fail(
                    f"{self.transport.url}: board silent for {limit:.3g} s while waiting for a "
                    f"{_channel_name(channel)} message ({self.link.in_flight} frames unacked)"
                )

    def request(
        self,
        channel: int,
        message: bytes,
        timeout: float | None = None,
        max_seconds: float | None = None,
    ) -> bytes:
        """Send one message and wait for the next message on the same channel."""
        self.send(channel, message)
        return self.receive(channel, timeout, max_seconds)

    def pump(self, wait: float) -> int:
        """One round: transmit what is due, read for up to `wait` s (less if the link has a
        deadline sooner), feed the link. Returns the number of messages that completed."""
        self._check()
        try:
            self._flush()
            now = self._clock()
            due = self.link.next_deadline()
            if due is not None:
                wait = min(wait, max(0.0, due - now))
            # parts, not one joined bytes object: an in-process board's frames go to the link
            # unjoined, and each payload is copied once, into its message
            parts = self.transport.read_parts(max(0.0, wait))
            if self._sniff is not None and len(self._sniff) < _SNIFF_BYTES:
                self._sniff += b"".join(parts)[:_SNIFF_BYTES]
            count = 0
            if parts:
                for channel, message in self.link.receive_parts(parts, self._clock()):
                    self._inbox.setdefault(channel, deque()).append(message)
                    count += 1
                self._flush()
            return count
        except LinkError as exc:  # dead pipe, or the link's own retry limit
            self._failure = exc
            raise

    def drain(self, timeout: float | None = None) -> None:
        """Wait until everything sent was acked (bounded like receive())."""
        limit = self.timeout if timeout is None else float(timeout)
        heard = self.link.stats.frames_received
        quiet_since = self._clock()
        while not self.link.idle:
            self.pump(min(_MAX_WAIT, max(0.0, quiet_since + limit - self._clock())))
            now = self._clock()
            if self.link.stats.frames_received != heard:
                heard, quiet_since = self.link.stats.frames_received, now
            elif now - quiet_since >= limit:
                self._fail(
                    f"{self.transport.url}: board silent for {limit:.3g} s with "
                    f"{self.link.in_flight} frames unacked"
                )

    # ------------------------------------------------------------------ internals
    def _flush(self) -> None:
        # frames unjoined: an in-process board decodes them in place (one copy of a program)
        parts = self.link.poll_parts(self._clock())
        if parts:
            self.transport.write_parts(parts)

    def _check(self) -> None:
        if self._failure is not None:
            raise LinkError(f"link is down after an earlier failure: {self._failure}")
        if self.transport.closed:
            raise LinkError(f"{self.transport.url}: connection is closed")

    def _fail(self, message: str, cause: BaseException | None = None) -> NoReturn:
        exc = LinkError(message)
        self._failure = exc
        if cause is not None:
            raise exc from cause
        raise exc
