"""In-process transport: the emulator's BoardEndpoint in this process, still fed wire bytes.

Synchronous: write() hands the bytes to the endpoint (which may execute a whole program before
returning), read() collects what it transmits. Time is the monotonic clock, so the emulator's
own timers (delayed acks, retransmissions, injected delays) run in real time as on a board.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from hostdriver.transports.base import Transport
from protocol.errors import LinkError


class Endpoint(Protocol):
    """The board side: emulator.endpoint.BoardEndpoint satisfies it."""

    def receive(self, data: bytes, now: float) -> Any: ...
    # optional: def receive_parts(self, parts: list[bytes | memoryview], now: float) -> Any
    def transmit(self, now: float) -> bytes: ...
    # optional: def transmit_parts(self, now: float) -> list[bytes | memoryview]
    def next_deadline(self) -> float | None: ...


class InProcessTransport(Transport):
    """Byte pipe into an emulator endpoint living in this process."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        url: str = "emu://",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(url)
        self.endpoint = endpoint
        self._clock = clock
        self._sleep = sleep

    def _write(self, data: bytes) -> None:
        self.endpoint.receive(data, self._clock())

    def write_parts(self, parts: list[bytes | memoryview]) -> None:
        """The parts to the endpoint's receive_parts() where it has one (no join of a long
        program); otherwise write(b"".join(parts))."""
        receive_parts = getattr(self.endpoint, "receive_parts", None)
        if receive_parts is None:
            super().write_parts(parts)
            return
        self._check_open()
        if not any(map(len, parts)):  # nothing to write, as write(b"") (the endpoint not called)
            return
        try:
            receive_parts(list(parts), self._clock())
        except LinkError:
            raise
        except (OSError, ValueError) as exc:
            raise LinkError(f"{self.url or type(self).__name__}: write failed: {exc}") from exc

    def read_parts(self, timeout: float) -> list[bytes | memoryview]:
        """The endpoint's transmit_parts() as they are (no join of a megabyte trace), where
        it has one; otherwise [read()]."""
        transmit_parts = getattr(self.endpoint, "transmit_parts", None)
        if transmit_parts is None:
            return super().read_parts(timeout)
        self._check_open()
        try:
            return self._wait(max(0.0, float(timeout)), transmit_parts)
        except LinkError:
            raise
        except (OSError, ValueError) as exc:
            raise LinkError(f"{self.url or type(self).__name__}: read failed: {exc}") from exc

    def _read(self, timeout: float) -> bytes:
        out = self._wait(timeout, self.endpoint.transmit)
        return bytes(out) if out else b""

    def _wait(self, timeout: float, transmit: Callable[[float], Any]) -> Any:
        """transmit(now) until it gives something (returned) or `timeout` passes (b"" or [])."""
        now = self._clock()
        limit = now + timeout
        while True:
            out = transmit(now)
            if out:
                return out
            if now >= limit:
                return out
            due = self.endpoint.next_deadline()
            wake = limit if due is None else min(due, limit)
            # a deadline already due that produced nothing must not make this loop spin
            self._sleep(max(wake - now, 1e-4))
            now = self._clock()

    def _close(self) -> None:
        close = getattr(self.endpoint, "close", None)
        if callable(close):
            close()
