"""TCP transport: a socket to a board (or a served emulator); TCP_NODELAY, full duplex."""

from __future__ import annotations

import socket

from hostdriver.transports._duplex import DuplexFd
from hostdriver.transports.base import Transport
from protocol.errors import LinkError


class TcpTransport(Transport):
    """Byte pipe over one TCP connection. A closed or reset connection raises LinkError."""

    def __init__(
        self, host: str, port: int, *, timeout: float = 2.0, url: str | None = None
    ) -> None:
        super().__init__(url or f"tcp://{host}:{port}")
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise LinkError(f"{self.url}: cannot connect: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self._sock = sock
        self._pipe = DuplexFd(
            sock.fileno(), sock.send, sock.recv, write_timeout=timeout, name=self.url
        )

    def _write(self, data: bytes) -> None:
        self._pipe.write(data)

    def _read(self, timeout: float) -> bytes:
        return self._pipe.read(timeout)

    def _close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
