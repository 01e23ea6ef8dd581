"""Transports: byte pipes to a board, one per board-URL scheme (see hostdriver.url)."""

from __future__ import annotations

from typing import Any

from hostdriver.transports.base import Transport
from hostdriver.url import BoardURL, EmuURL, SerialURL, TcpURL, UsbURL

__all__ = ["Transport", "open_transport"]


def _usb_backend(url: UsbURL) -> Any:
    if url.backend is None:
        return None
    if url.backend == "emulator":
        from emulator.usb_backend import EmulatorUSBBackend

        return EmulatorUSBBackend(
            seed=url.seed, vid=url.vid, pid=url.pid, serial_string=url.serial
        )
    import importlib

    module = importlib.import_module(f"usb.backend.{url.backend}")
    backend = module.get_backend()
    if backend is None:
        from protocol.errors import LinkError

        raise LinkError(f"{url}: pyusb backend {url.backend!r} is not available on this machine")
    return backend


def open_transport(url: BoardURL, *, timeout: float = 2.0) -> Transport:
    """Open the byte pipe a parsed board URL names (imports only what that scheme needs)."""
    text = str(url)
    if isinstance(url, EmuURL):
        from emulator.endpoint import BoardEndpoint
        from hostdriver.transports.inprocess import InProcessTransport

        return InProcessTransport(BoardEndpoint(url.seed), url=text)
    if isinstance(url, TcpURL):
        from hostdriver.transports.tcp import TcpTransport

        return TcpTransport(url.host, url.port, timeout=timeout, url=text)
    if isinstance(url, SerialURL):
        from hostdriver.transports.serial import SerialTransport

        return SerialTransport(url.port, baudrate=url.baudrate, timeout=timeout, url=text)
    if isinstance(url, UsbURL):
        from hostdriver.transports.usb import UsbTransport

        return UsbTransport(
            url.vid, url.pid, serial=url.serial, backend=_usb_backend(url), timeout=timeout,
            url=text,
        )
    raise TypeError(f"not a board URL: {url!r}")
