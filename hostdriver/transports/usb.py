"""USB transport via pyusb: find the board by VID:PID (+ serial string), bulk OUT/IN endpoints.

The board enumerates as VID:PID 1209:5B0E (pid.codes open-source range) with one vendor-class
interface holding bulk OUT 0x01 and bulk IN 0x81. `backend` selects a pyusb backend object
(None: pyusb picks libusb1/openusb/libusb0); emulator.usb_backend.EmulatorUSBBackend presents the
emulator as such a device for tests and demos.
"""

from __future__ import annotations

import array
import math
from typing import Any

import usb.core
import usb.util

from hostdriver.transports.base import Transport
from protocol.errors import LinkError

USB_VID = 0x1209
USB_PID = 0x5B0E
READ_SIZE = 1 << 16  # a multiple of every wMaxPacketSize


def _describe(vid: int, pid: int, serial: str | None) -> str:
    return f"{vid:04x}:{pid:04x}" + (f" with serial {serial!r}" if serial else "")


class UsbTransport(Transport):
    """Byte pipe over a USB board's bulk endpoints. A vanished device raises LinkError."""

    def __init__(
        self,
        vid: int = USB_VID,
        pid: int = USB_PID,
        *,
        serial: str | None = None,
        backend: Any = None,
        timeout: float = 2.0,
        url: str | None = None,
    ) -> None:
        query = f"?serial={serial}" if serial else ""
        super().__init__(url or f"usb://{vid:04X}:{pid:04X}{query}")
        self._timeout = timeout
        try:
            dev = self._find(vid, pid, serial, backend)
            self._dev = dev
            cfg = self._configure(dev)
            intf = cfg[(0, 0)]
            try:
                if dev.is_kernel_driver_active(intf.bInterfaceNumber):
                    dev.detach_kernel_driver(intf.bInterfaceNumber)
            except (NotImplementedError, usb.core.USBError):
                pass
            usb.util.claim_interface(dev, intf)
            self._intf = intf
            self._ep_out = self._bulk(intf, usb.util.ENDPOINT_OUT)
            self._ep_in = self._bulk(intf, usb.util.ENDPOINT_IN)
        except usb.core.NoBackendError as exc:
            raise LinkError(
                f"{self.url}: no USB backend (install libusb-1.0, e.g. apt install libusb-1.0-0)"
            ) from exc
        except (usb.core.USBError, ValueError) as exc:
            raise LinkError(f"{self.url}: cannot open USB device: {exc}") from exc

    def _find(self, vid: int, pid: int, serial: str | None, backend: Any) -> usb.core.Device:
        def matches(d: usb.core.Device) -> bool:
            if serial is None:
                return True
            try:
                return d.serial_number == serial
            except (usb.core.USBError, ValueError):
                return False  # no permission to read its strings: not ours to claim

        dev = usb.core.find(idVendor=vid, idProduct=pid, backend=backend, custom_match=matches)
        if dev is None:
            raise LinkError(
                f"{self.url}: no USB device {_describe(vid, pid, serial)} found "
                "(plugged in? permission: a udev rule granting access to 1209:5b0e?)"
            )
        return dev

    @staticmethod
    def _configure(dev: usb.core.Device) -> Any:
        try:
            return dev.get_active_configuration()
        except usb.core.USBError:
            dev.set_configuration()
            return dev.get_active_configuration()

    def _bulk(self, intf: Any, direction: int) -> Any:
        ep = usb.util.find_descriptor(
            intf,
            custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress) == direction
            and usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK,
        )
        if ep is None:
            which = "IN" if direction == usb.util.ENDPOINT_IN else "OUT"
            raise LinkError(f"{self.url}: the device has no bulk {which} endpoint")
        return ep

    @staticmethod
    def _ms(seconds: float) -> int:
        return max(1, math.ceil(seconds * 1000))  # pyusb/libusb: 0 ms means wait forever

    def _write(self, data: bytes) -> None:
        buf = array.array("B", data)
        while buf:
            try:
                n = self._ep_out.write(buf, self._ms(self._timeout))
            except usb.core.USBTimeoutError as exc:
                raise LinkError(
                    f"{self.url}: the device accepted no data for {self._timeout:.3g} s"
                ) from exc
            del buf[:n]

    def _read(self, timeout: float) -> bytes:
        try:
            return self._ep_in.read(READ_SIZE, self._ms(timeout)).tobytes()
        except usb.core.USBTimeoutError:
            return b""

    def _close(self) -> None:
        try:
            usb.util.release_interface(self._dev, self._intf)
        except (usb.core.USBError, ValueError):
            pass
        usb.util.dispose_resources(self._dev)
