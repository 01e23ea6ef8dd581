"""Serial transport via pyserial: a device path (/dev/ttyUSB0, a pty) or any pyserial URL.

Device paths are driven full duplex on their file descriptor (a pty buffer is a few KiB, so a
blocking write could deadlock against a board that is writing too). Other pyserial URLs
(loop://, socket://, spy://, ...) go through pyserial's own read/write with bounded timeouts.
"""

from __future__ import annotations

import os

import serial

from hostdriver.transports._duplex import DuplexFd
from hostdriver.transports.base import Transport
from protocol.errors import LinkError

DEFAULT_BAUDRATE = 115200


class SerialTransport(Transport):
    """Byte pipe over a pyserial port. A vanished device or closed pty raises LinkError."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        timeout: float = 2.0,
        url: str | None = None,
    ) -> None:
        super().__init__(url or f"serial:{port}")
        is_path = "://" not in port
        try:
            self._port = serial.serial_for_url(
                port,
                baudrate=baudrate,
                timeout=0,
                write_timeout=timeout,
                **({"exclusive": True} if is_path else {}),
            )
        except (OSError, ValueError) as exc:
            raise LinkError(f"{self.url}: cannot open serial port: {exc}") from exc
        self._timeout = timeout
        self._pipe: DuplexFd | None = None
        if is_path and isinstance(self._port, serial.Serial) and hasattr(self._port, "fd"):
            fd = self._port.fd
            self._pipe = DuplexFd(
                fd,
                lambda view: os.write(fd, view),
                lambda n: os.read(fd, n),
                write_timeout=timeout,
                name=self.url,
            )

    def _write(self, data: bytes) -> None:
        if self._pipe is not None:
            self._pipe.write(data)
            return
        try:
            self._port.write(data)
        except serial.SerialTimeoutException as exc:
            raise LinkError(
                f"{self.url}: the port accepted no data for {self._timeout:.3g} s"
            ) from exc

    def _read(self, timeout: float) -> bytes:
        if self._pipe is not None:
            return self._pipe.read(timeout)
        port = self._port
        port.timeout = timeout
        first = port.read(1)
        if not first:
            return b""
        waiting = port.in_waiting
        if not waiting:
            return first
        port.timeout = 0
        return first + port.read(waiting)

    def _close(self) -> None:
        try:
            self._port.close()
        except (OSError, ValueError):
            pass
