"""Transport: a byte pipe to a board, and nothing more (python-can's BusABC is the pattern).

The public methods are template methods: they check the pipe is open and turn every OS or
library failure into LinkError, so the link driver above never sees a transport-specific error.
Subclasses implement `_write`, `_read` and `_close`.
"""

from __future__ import annotations

import abc
from types import TracebackType

from protocol.errors import LinkError


class Transport(abc.ABC):
    """A bidirectional byte pipe. Not thread-safe: one driver owns it."""

    #: the board URL this pipe was opened from (for messages)
    url: str = ""

    def __init__(self, url: str = "") -> None:
        self.url = url
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, data: bytes) -> None:
        """Send all of `data` (blocks at most a bounded time); LinkError on a dead pipe."""
        self._check_open()
        if not data:
            return
        try:
            self._write(bytes(data))
        except LinkError:
            raise
        except (OSError, ValueError) as exc:
            raise LinkError(f"{self.url or type(self).__name__}: write failed: {exc}") from exc

    def write_parts(self, parts: list[bytes | memoryview]) -> None:
        """write(b"".join(parts)): a pipe in this process overrides it to hand the link's
        frames on unjoined (read-only parts, left unchanged afterwards)."""
        self.write(b"".join(parts))

    def read(self, timeout: float) -> bytes:
        """Bytes received within `timeout` seconds: b"" on timeout; LinkError on a dead pipe.

        Returns as soon as some bytes are there; never waits longer than `timeout`.
        """
        self._check_open()
        try:
            return self._read(max(0.0, float(timeout)))
        except LinkError:
            raise
        except (OSError, ValueError) as exc:
            raise LinkError(f"{self.url or type(self).__name__}: read failed: {exc}") from exc

    def read_parts(self, timeout: float) -> list[bytes | memoryview]:
        """read() as a list of parts whose concatenation is the bytes read ([] on timeout).

        A pipe in this process overrides it to hand on the peer's frames unjoined (read-only
        parts; protocol.link.Link.receive_parts decodes them in place); others return
        [read()].
        """
        data = self.read(timeout)
        return [data] if data else []

    def close(self) -> None:
        """Release the pipe; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._close()

    def _check_open(self) -> None:
        if self._closed:
            raise LinkError(f"{self.url or type(self).__name__}: transport is closed")

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.url!r} {state}>"

    @abc.abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def _read(self, timeout: float) -> bytes: ...

    @abc.abstractmethod
    def _close(self) -> None: ...
