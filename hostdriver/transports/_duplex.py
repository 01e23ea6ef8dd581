"""Full-duplex helpers for pipes backed by a file descriptor (sockets, ttys).

A plain blocking write can deadlock: host and board both fill the other's receive buffer and
wait for the other to read. `DuplexFd.write` keeps reading (into a buffer) while it waits to
write, so neither side can stall the other; a peer that accepts no byte for `write_timeout`
seconds is reported as a dead link.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable

from protocol.errors import LinkError

READ_CHUNK = 1 << 18


class DuplexFd:
    """Non-blocking send/recv on one fd with a receive buffer filled during writes."""

    def __init__(
        self,
        fileno: int,
        send: Callable[[memoryview], int],
        recv: Callable[[int], bytes],
        *,
        write_timeout: float,
        name: str,
    ) -> None:
        self.fileno = fileno
        self._send = send
        self._recv = recv
        self.write_timeout = write_timeout
        self.name = name
        self._rx = bytearray()

    def _recv_some(self) -> None:
        try:
            chunk = self._recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if not chunk:
            raise LinkError(f"{self.name}: the peer closed the connection")
        self._rx += chunk

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + self.write_timeout
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LinkError(
                    f"{self.name}: the peer accepted no data for {self.write_timeout:.3g} s "
                    f"({len(view)} of {len(data)} bytes unsent)"
                )
            r, w, _ = select.select([self.fileno], [self.fileno], [], left)
            if r:
                self._recv_some()
            if w:
                try:
                    n = self._send(view)
                except (BlockingIOError, InterruptedError):
                    n = 0
                if n:
                    view = view[n:]
                    deadline = time.monotonic() + self.write_timeout

    def read(self, timeout: float) -> bytes:
        if not self._rx:
            r, _, _ = select.select([self.fileno], [], [], timeout)
            if not r:
                return b""
        # drain what is there now, without waiting
        while True:
            r, _, _ = select.select([self.fileno], [], [], 0)
            if not r:
                break
            before = len(self._rx)
            self._recv_some()
            if len(self._rx) == before or len(self._rx) >= READ_CHUNK:
                break
        out = bytes(self._rx)
        self._rx.clear()
        return out
