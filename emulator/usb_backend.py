"""A pyusb backend that presents emulated boards as USB devices (pyusb's tests / PyFtdi pattern).

The host's usb transport talks to it exactly as to libusb: `usb.core.find`, descriptors parsed
from real descriptor bytes (device, configuration, interface, endpoints, strings over control
transfers), set_configuration, claim_interface, bulk transfers. Bulk OUT bytes go into a
BoardEndpoint, bulk IN bytes come out of it: the whole host USB path runs without hardware.

The board's USB identity (hostdriver.transports.usb holds the same numbers): VID:PID 1209:5B0E
(pid.codes open-source range), one configuration, one vendor-specific interface (class 0xFF)
with bulk OUT 0x01 and bulk IN 0x81, wMaxPacketSize 512 (USB 2.0 high speed), iSerialNumber =
board serial as 16 upper-case hex digits. `usb://1209:5B0E?backend=emulator&seed=N` selects
this backend from a board URL (tests, demos).
"""

from __future__ import annotations

import array
import errno
import struct
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, Protocol

import usb.backend
import usb.core
import usb.util

USB_VID = 0x1209
USB_PID = 0x5B0E
EP_OUT = 0x01
EP_IN = 0x81
MAX_PACKET_SIZE = 512
INTERFACE_NUMBER = 0
CONFIGURATION_VALUE = 1
LANGID_EN_US = 0x0409
BCD_USB = 0x0200
BCD_DEVICE = 0x0100
MANUFACTURER = "strobe"
PRODUCT = "strobe neuromorphic board (emulated)"

# libusb error codes, so errors look like libusb1's to callers that inspect them
_LIBUSB_ERROR_INVALID_PARAM = -2
_LIBUSB_ERROR_NO_DEVICE = -4
_LIBUSB_ERROR_NOT_FOUND = -5
_LIBUSB_ERROR_BUSY = -6
_LIBUSB_ERROR_TIMEOUT = -7
_LIBUSB_ERROR_PIPE = -9

_GET_STATUS = 0x00
_GET_DESCRIPTOR = 0x06
_GET_CONFIGURATION = 0x08
_GET_INTERFACE = 0x0A


class Endpoint(Protocol):
    """What the backend needs of a board: emulator.endpoint.BoardEndpoint satisfies it."""

    def receive(self, data: bytes, now: float) -> Any: ...
    def transmit(self, now: float) -> bytes: ...
    def next_deadline(self) -> float | None: ...


# ------------------------------------------------------------------ descriptor bytes
_DEVICE_FIELDS = (
    "bLength bDescriptorType bcdUSB bDeviceClass bDeviceSubClass bDeviceProtocol "
    "bMaxPacketSize0 idVendor idProduct bcdDevice iManufacturer iProduct iSerialNumber "
    "bNumConfigurations"
).split()
_DEVICE_FMT = "<BBHBBBBHHHBBBB"
_CONFIG_FIELDS = (
    "bLength bDescriptorType wTotalLength bNumInterfaces bConfigurationValue iConfiguration "
    "bmAttributes bMaxPower"
).split()
_CONFIG_FMT = "<BBHBBBBB"
_INTERFACE_FIELDS = (
    "bLength bDescriptorType bInterfaceNumber bAlternateSetting bNumEndpoints bInterfaceClass "
    "bInterfaceSubClass bInterfaceProtocol iInterface"
).split()
_INTERFACE_FMT = "<BBBBBBBBB"
_ENDPOINT_FIELDS = "bLength bDescriptorType bEndpointAddress bmAttributes wMaxPacketSize bInterval"
_ENDPOINT_FMT = "<BBBBHB"


def device_descriptor(vid: int, pid: int) -> bytes:
    """The 18-byte USB device descriptor (USB 2.0 spec, table 9-8)."""
    return struct.pack(
        _DEVICE_FMT, 18, usb.util.DESC_TYPE_DEVICE, BCD_USB, 0, 0, 0, 64, vid, pid,
        BCD_DEVICE, 1, 2, 3, 1,
    )


def configuration_descriptor() -> bytes:
    """Configuration + interface + two bulk endpoint descriptors, as GET_DESCRIPTOR returns."""
    endpoints = b"".join(
        struct.pack(_ENDPOINT_FMT, 7, usb.util.DESC_TYPE_ENDPOINT, ep,
                    usb.util.ENDPOINT_TYPE_BULK, MAX_PACKET_SIZE, 0)
        for ep in (EP_IN, EP_OUT)
    )
    interface = struct.pack(
        _INTERFACE_FMT, 9, usb.util.DESC_TYPE_INTERFACE, INTERFACE_NUMBER, 0, 2, 0xFF, 0, 0, 0
    )
    total = 9 + len(interface) + len(endpoints)
    # bmAttributes: bit 7 reserved (1), self-powered (bit 6); bMaxPower in 2 mA units
    config = struct.pack(
        _CONFIG_FMT, 9, usb.util.DESC_TYPE_CONFIG, total, 1, CONFIGURATION_VALUE, 0, 0xC0, 50
    )
    return config + interface + endpoints


def string_descriptor(text: str) -> bytes:
    body = text.encode("utf-16-le")
    return bytes([2 + len(body), usb.util.DESC_TYPE_STRING]) + body


def _parse(fields: list[str] | str, fmt: str, raw: bytes, **extra: Any) -> SimpleNamespace:
    names = fields.split() if isinstance(fields, str) else fields
    values = struct.unpack_from(fmt, raw)
    return SimpleNamespace(**dict(zip(names, values, strict=True)), **extra)


def _usb_error(text: str, code: int, err: int) -> usb.core.USBError:
    return usb.core.USBError(text, code, err)


# ------------------------------------------------------------------ devices
class EmulatedUSBDevice:
    """One emulated board on the virtual bus: its descriptors and the endpoint behind them."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        serial_string: str,
        vid: int = USB_VID,
        pid: int = USB_PID,
        bus: int = 1,
        address: int = 1,
    ) -> None:
        self.endpoint = endpoint
        self.vid, self.pid = vid, pid
        self.bus, self.address = bus, address
        self.strings = {1: MANUFACTURER, 2: PRODUCT, 3: serial_string}
        self.raw_device = device_descriptor(vid, pid)
        self.raw_config = configuration_descriptor()
        self.unplugged = False
        self.configuration = 0  # unconfigured until SET_CONFIGURATION
        self.claimed: set[int] = set()
        self.pending_in = bytearray()
        self.open_handles = 0

    @property
    def serial_string(self) -> str:
        return self.strings[3]

    def descriptor(self, dtype: int, index: int, langid: int) -> bytes:
        if dtype == usb.util.DESC_TYPE_DEVICE:
            return self.raw_device
        if dtype == usb.util.DESC_TYPE_CONFIG and index == 0:
            return self.raw_config
        if dtype == usb.util.DESC_TYPE_STRING:
            if index == 0:
                return struct.pack("<BBH", 4, usb.util.DESC_TYPE_STRING, LANGID_EN_US)
            if index in self.strings and langid == LANGID_EN_US:
                return string_descriptor(self.strings[index])
        raise _usb_error("Pipe error (request stalled)", _LIBUSB_ERROR_PIPE, errno.EPIPE)


class _Handle:
    def __init__(self, device: EmulatedUSBDevice) -> None:
        self.device = device


class EmulatorUSBBackend(usb.backend.IBackend):
    """pyusb backend whose bus holds emulated boards (`usb.core.find(..., backend=this)`).

    With no endpoint given it builds one emulator BoardEndpoint from `seed` (and `faults`).
    More boards can be plugged with `add_device`; `unplug` makes a board vanish (transfers then
    fail with ENODEV, as libusb reports a disconnected device).
    """

    def __init__(
        self,
        endpoint: Endpoint | None = None,
        *,
        seed: int = 1,
        faults: Any = None,
        serial_string: str | None = None,
        vid: int = USB_VID,
        pid: int = USB_PID,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.devices: list[EmulatedUSBDevice] = []
        if endpoint is None:
            from emulator.endpoint import BoardEndpoint

            endpoint = BoardEndpoint(seed, faults=faults)
        self.add_device(
            endpoint, serial_string=serial_string or f"{seed:016X}", vid=vid, pid=pid
        )

    def add_device(
        self,
        endpoint: Endpoint,
        *,
        serial_string: str,
        vid: int = USB_VID,
        pid: int = USB_PID,
    ) -> EmulatedUSBDevice:
        dev = EmulatedUSBDevice(
            endpoint, serial_string=serial_string, vid=vid, pid=pid,
            address=len(self.devices) + 1,
        )
        self.devices.append(dev)
        return dev

    def unplug(self, device: EmulatedUSBDevice | None = None) -> None:
        (device or self.devices[0]).unplugged = True

    # ------------------------------------------------------------ enumeration, descriptors
    def enumerate_devices(self) -> Iterator[EmulatedUSBDevice]:
        return iter([d for d in self.devices if not d.unplugged])

    def get_parent(self, dev: EmulatedUSBDevice) -> None:
        return None

    def get_device_descriptor(self, dev: EmulatedUSBDevice) -> SimpleNamespace:
        return _parse(
            _DEVICE_FIELDS, _DEVICE_FMT, dev.raw_device,
            bus=dev.bus, address=dev.address, port_number=dev.address,
            port_numbers=(dev.address,), speed=usb.util.SPEED_HIGH,
        )

    def get_configuration_descriptor(self, dev: EmulatedUSBDevice, config: int) -> SimpleNamespace:
        self._check_index(config, 1, "configuration")
        return _parse(_CONFIG_FIELDS, _CONFIG_FMT, dev.raw_config, extra_descriptors=[])

    def get_interface_descriptor(
        self, dev: EmulatedUSBDevice, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        self._check_index(config, 1, "configuration")
        self._check_index(intf, 1, "interface")
        self._check_index(alt, 1, "alternate setting")
        return _parse(
            _INTERFACE_FIELDS, _INTERFACE_FMT, dev.raw_config[9:], extra_descriptors=[]
        )

    def get_endpoint_descriptor(
        self, dev: EmulatedUSBDevice, ep: int, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        self._check_index(config, 1, "configuration")
        self._check_index(intf, 1, "interface")
        self._check_index(alt, 1, "alternate setting")
        self._check_index(ep, 2, "endpoint")
        offset = 18 + 7 * ep
        return _parse(
            _ENDPOINT_FIELDS, _ENDPOINT_FMT, dev.raw_config[offset:],
            bRefresh=0, bSynchAddress=0, extra_descriptors=[],
        )

    @staticmethod
    def _check_index(index: int, count: int, what: str) -> None:
        if not 0 <= index < count:
            raise IndexError(f"{what} index {index} out of range (device has {count})")

    # ------------------------------------------------------------ handles, configuration
    def open_device(self, dev: EmulatedUSBDevice) -> _Handle:
        self._alive(dev)
        dev.open_handles += 1
        return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        dev = dev_handle.device
        dev.open_handles = max(0, dev.open_handles - 1)
        if dev.open_handles == 0:
            dev.claimed.clear()

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        dev = self._alive(dev_handle.device)
        if config_value not in (0, CONFIGURATION_VALUE):
            raise _usb_error("Entity not found", _LIBUSB_ERROR_NOT_FOUND, errno.ENOENT)
        if dev.claimed:
            raise _usb_error("Resource busy", _LIBUSB_ERROR_BUSY, errno.EBUSY)
        dev.configuration = config_value
        dev.pending_in.clear()

    def get_configuration(self, dev_handle: _Handle) -> int:
        return self._alive(dev_handle.device).configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        dev = self._alive(dev_handle.device)
        if intf != INTERFACE_NUMBER or altsetting != 0:
            raise _usb_error("Entity not found", _LIBUSB_ERROR_NOT_FOUND, errno.ENOENT)
        dev.pending_in.clear()

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        dev = self._alive(dev_handle.device)
        if dev.configuration != CONFIGURATION_VALUE or intf != INTERFACE_NUMBER:
            raise _usb_error("Entity not found", _LIBUSB_ERROR_NOT_FOUND, errno.ENOENT)
        dev.claimed.add(intf)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        dev_handle.device.claimed.discard(intf)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        raise _usb_error("Entity not found", _LIBUSB_ERROR_NOT_FOUND, errno.ENOENT)

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        raise _usb_error("Entity not found", _LIBUSB_ERROR_NOT_FOUND, errno.ENOENT)

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self._alive(dev_handle.device)

    def reset_device(self, dev_handle: _Handle) -> None:
        dev = self._alive(dev_handle.device)
        dev.configuration = 0
        dev.claimed.clear()
        dev.pending_in.clear()

    # ------------------------------------------------------------ transfers
    def ctrl_transfer(
        self,
        dev_handle: _Handle,
        bmRequestType: int,  # noqa: N803 (pyusb's parameter names)
        bRequest: int,  # noqa: N803
        wValue: int,  # noqa: N803
        wIndex: int,  # noqa: N803
        data: array.array,
        timeout: int,
    ) -> int:
        dev = self._alive(dev_handle.device)
        standard_in = (bmRequestType & 0xE0) == (usb.util.CTRL_IN | usb.util.CTRL_TYPE_STANDARD)
        if not standard_in:
            raise _usb_error("Pipe error (request stalled)", _LIBUSB_ERROR_PIPE, errno.EPIPE)
        if bRequest == _GET_DESCRIPTOR:
            reply = dev.descriptor(wValue >> 8, wValue & 0xFF, wIndex)
        elif bRequest == _GET_STATUS:
            reply = struct.pack("<H", 1)  # self-powered
        elif bRequest == _GET_CONFIGURATION:
            reply = bytes([dev.configuration])
        elif bRequest == _GET_INTERFACE:
            reply = b"\x00"
        else:
            raise _usb_error("Pipe error (request stalled)", _LIBUSB_ERROR_PIPE, errno.EPIPE)
        n = min(len(reply), len(data) * data.itemsize)
        memoryview(data).cast("B")[:n] = reply[:n]
        return n

    def bulk_write(
        self, dev_handle: _Handle, ep: int, intf: int, data: array.array, timeout: int
    ) -> int:
        dev = self._ready(dev_handle.device, ep, EP_OUT, intf)
        payload = memoryview(data).cast("B").tobytes()
        dev.endpoint.receive(payload, self.clock())
        return len(payload)

    def bulk_read(
        self, dev_handle: _Handle, ep: int, intf: int, buff: array.array, timeout: int
    ) -> int:
        """Fill `buff` with what the board transmits; wait up to `timeout` ms (0: no limit)."""
        dev = self._ready(dev_handle.device, ep, EP_IN, intf)
        start = self.clock()
        limit = None if timeout == 0 else start + timeout / 1000.0
        while not dev.pending_in:
            now = self.clock()
            dev.pending_in += dev.endpoint.transmit(now)
            if dev.pending_in:
                break
            if limit is not None and now >= limit:
                raise usb.core.USBTimeoutError(
                    "Operation timed out", _LIBUSB_ERROR_TIMEOUT, errno.ETIMEDOUT
                )
            due = dev.endpoint.next_deadline()
            wake = min(x for x in (due, limit, now + 0.05) if x is not None)
            time.sleep(max(0.0, wake - now))
            self._ready(dev, ep, EP_IN, intf)
        n = min(len(dev.pending_in), len(buff) * buff.itemsize)
        memoryview(buff).cast("B")[:n] = dev.pending_in[:n]
        del dev.pending_in[:n]
        return n

    # ------------------------------------------------------------ checks
    @staticmethod
    def _alive(dev: EmulatedUSBDevice) -> EmulatedUSBDevice:
        if dev.unplugged:
            raise _usb_error(
                "No such device (it may have been disconnected)",
                _LIBUSB_ERROR_NO_DEVICE, errno.ENODEV,
            )
        return dev

    def _ready(
        self, dev: EmulatedUSBDevice, ep: int, expected: int, intf: int
    ) -> EmulatedUSBDevice:
        self._alive(dev)
        if ep != expected or intf not in dev.claimed:
            raise _usb_error("Invalid parameter", _LIBUSB_ERROR_INVALID_PARAM, errno.EINVAL)
        return dev
