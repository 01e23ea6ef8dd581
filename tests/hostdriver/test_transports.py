"""Transports as byte pipes: round trips, timeouts, dead pipes, full-duplex bulk writes."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import usb.core
import usb.util

from emulator.usb_backend import (
    EP_IN,
    EP_OUT,
    MAX_PACKET_SIZE,
    USB_PID,
    USB_VID,
    EmulatorUSBBackend,
    configuration_descriptor,
    device_descriptor,
)
from hostdriver.transports import usb as usb_transport
from hostdriver.transports.inprocess import InProcessTransport
from hostdriver.transports.serial import SerialTransport
from hostdriver.transports.tcp import TcpTransport
from hostdriver.transports.usb import UsbTransport
from protocol.errors import LinkError


class EchoEndpoint:
    """Board stand-in: transmits back what it received, optionally `delay` seconds later."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.queue: list[tuple[float, bytes]] = []
        self.received = bytearray()
        self.closed = False

    def receive(self, data: bytes, now: float) -> None:
        assert isinstance(data, bytes)
        self.received += data
        self.queue.append((now + self.delay, data))

    def transmit(self, now: float) -> bytes:
        due = [d for t, d in self.queue if t <= now]
        self.queue = [(t, d) for t, d in self.queue if t > now]
        return b"".join(due)

    def next_deadline(self) -> float | None:
        return min((t for t, _ in self.queue), default=None)

    def close(self) -> None:
        self.closed = True


def read_exactly(transport, n: int, limit: float = 10.0) -> bytes:  # noqa: ANN001
    out = bytearray()
    deadline = time.monotonic() + limit
    while len(out) < n and time.monotonic() < deadline:
        out += transport.read(0.2)
    return bytes(out)


# ------------------------------------------------------------------ in-process
def test_inprocess_round_trip_and_timeout() -> None:
    ep = EchoEndpoint()
    t = InProcessTransport(ep)
    assert t.read(0.0) == b""
    t.write(b"hello")
    assert t.read(0.5) == b"hello"
    assert t.read(0.01) == b""
    t.close()
    assert ep.closed and t.closed
    with pytest.raises(LinkError, match="closed"):
        t.write(b"x")
    with pytest.raises(LinkError, match="closed"):
        t.read(0.0)


def test_inprocess_waits_for_endpoint_deadline() -> None:
    ep = EchoEndpoint(delay=0.05)
    t = InProcessTransport(ep)
    t.write(b"late")
    assert t.read(0.0) == b""
    assert t.read(2.0) == b"late"  # returns when due, not after the whole timeout


def test_inprocess_uses_injected_clock() -> None:
    fake = [100.0]
    slept: list[float] = []

    def sleep(dt: float) -> None:
        slept.append(dt)
        fake[0] += dt

    ep = EchoEndpoint(delay=1.0)
    t = InProcessTransport(ep, clock=lambda: fake[0], sleep=sleep)
    t.write(b"x")
    assert t.read(0.5) == b""
    assert t.read(0.6) == b"x"
    assert fake[0] == pytest.approx(101.0)


# ------------------------------------------------------------------ tcp
@pytest.fixture
def echo_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP echo server on 127.0.0.1 (one thread per connection)."""
    srv = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conns.append(conn)

            def echo(c: socket.socket = conn) -> None:
                try:
                    while data := c.recv(65536):
                        c.sendall(data)
                except OSError:
                    pass

            threading.Thread(target=echo, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1], conns
    srv.close()
    for c in conns:
        c.close()


def test_tcp_round_trip(echo_server: tuple[int, list[socket.socket]]) -> None:
    port, _ = echo_server
    with TcpTransport("127.0.0.1", port, timeout=2.0) as t:
        assert t.url == f"tcp://127.0.0.1:{port}"
        assert t.read(0.01) == b""
        t.write(b"abc")
        assert read_exactly(t, 3) == b"abc"


def test_tcp_bulk_write_does_not_deadlock(echo_server: tuple[int, list[socket.socket]]) -> None:
    # the peer echoes while we write: a blocking sendall of 16 MiB would fill both socket
    # buffers and hang; the duplex write keeps reading into its buffer instead
    port, _ = echo_server
    blob = os.urandom(1 << 24)
    with TcpTransport("127.0.0.1", port, timeout=5.0) as t:
        t.write(blob)
        assert read_exactly(t, len(blob), limit=30) == blob


def test_tcp_peer_close_raises_link_error(echo_server: tuple[int, list[socket.socket]]) -> None:
    port, conns = echo_server
    t = TcpTransport("127.0.0.1", port, timeout=2.0)
    deadline = time.monotonic() + 5
    while not conns and time.monotonic() < deadline:
        time.sleep(0.01)
    conns[0].shutdown(socket.SHUT_RDWR)
    conns[0].close()
    with pytest.raises(LinkError, match="closed the connection"):
        for _ in range(50):
            t.read(0.1)
    t.close()


def test_tcp_connection_refused() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(LinkError, match="cannot connect"):
        TcpTransport("127.0.0.1", port, timeout=1.0)


def test_tcp_unread_peer_times_out_instead_of_hanging() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    t = TcpTransport("127.0.0.1", srv.getsockname()[1], timeout=0.3)
    conn, _ = srv.accept()  # accepted but never read
    try:
        with pytest.raises(LinkError, match="accepted no data"):
            t.write(b"\0" * (64 << 20))
    finally:
        t.close()
        conn.close()
        srv.close()


# ------------------------------------------------------------------ serial
def test_serial_pyserial_loop_url() -> None:
    with SerialTransport("loop://", timeout=1.0) as t:
        assert t.read(0.01) == b""
        t.write(b"ping")
        assert read_exactly(t, 4) == b"ping"


@pytest.fixture
def pty_echo() -> Iterator[tuple[str, int, threading.Event]]:
    """A pty whose master side echoes; yields (slave path, master fd, stop event)."""
    master, slave = os.openpty()
    path = os.ttyname(slave)  # keep `slave` open: a master without one reads EIO
    stop = threading.Event()

    def echo() -> None:
        import select

        while not stop.is_set():
            r, _, _ = select.select([master], [], [], 0.05)
            if not r:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            view = memoryview(data)
            while view:
                _, w, _ = select.select([], [master], [], 0.05)
                if w:
                    view = view[os.write(master, view) :]

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    yield path, master, stop
    stop.set()
    thread.join(1)
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def test_serial_pty_round_trip_and_bulk(pty_echo: tuple[str, int, threading.Event]) -> None:
    path, _, _ = pty_echo
    with SerialTransport(path, baudrate=3_000_000, timeout=5.0) as t:
        t.write(b"\x00\x01\x02TS\x7f\xff")  # raw bytes, no line discipline mangling
        assert read_exactly(t, 7) == b"\x00\x01\x02TS\x7f\xff"
        blob = os.urandom(1 << 20)  # far beyond a pty's buffer, with the peer echoing
        t.write(blob)
        assert read_exactly(t, len(blob), limit=30) == blob


def test_serial_pty_closed_raises_link_error(pty_echo: tuple[str, int, threading.Event]) -> None:
    path, master, stop = pty_echo
    t = SerialTransport(path, timeout=1.0)
    stop.set()
    time.sleep(0.1)
    os.close(master)
    with pytest.raises(LinkError):
        for _ in range(20):
            t.read(0.1)
    t.close()


def test_serial_missing_device() -> None:
    with pytest.raises(LinkError, match="cannot open serial port"):
        SerialTransport("/dev/does-not-exist-strobe")


# ------------------------------------------------------------------ usb
def test_usb_descriptor_bytes_golden() -> None:
    # USB 2.0 spec table 9-8: bLength 18, DEVICE, bcdUSB 0x0200, class 0/0/0, ep0 64 bytes,
    # VID 0x1209, PID 0x5B0E, bcdDevice 0x0100, strings 1/2/3, one configuration
    assert device_descriptor(0x1209, 0x5B0E).hex() == "120100020000004009120e5b000101020301"
    assert configuration_descriptor().hex() == (
        "09022000010100c032"  # config: wTotalLength 32, 1 interface, value 1, self-powered
        "0904000002ff000000"  # interface 0, alt 0, 2 endpoints, vendor class 0xFF
        "07058102000200"  # bulk IN 0x81, wMaxPacketSize 512
        "07050102000200"  # bulk OUT 0x01, wMaxPacketSize 512
    )


def test_usb_backend_enumerates_like_a_device() -> None:
    backend = EmulatorUSBBackend(EchoEndpoint(), serial_string="00000000000000A1")
    dev = usb.core.find(idVendor=USB_VID, idProduct=USB_PID, backend=backend)
    assert dev is not None
    assert dev.bcdUSB == 0x0200 and dev.bNumConfigurations == 1
    assert dev.serial_number == "00000000000000A1"
    assert dev.manufacturer == "strobe"
    assert "strobe" in dev.product
    assert dev.langids == (0x0409,)
    cfg = dev[0]
    intf = cfg[(0, 0)]
    assert intf.bInterfaceClass == 0xFF and intf.bNumEndpoints == 2
    eps = {e.bEndpointAddress: e for e in intf}
    assert set(eps) == {EP_IN, EP_OUT}
    for e in eps.values():
        assert usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
        assert e.wMaxPacketSize == MAX_PACKET_SIZE
    # the raw configuration descriptor over a control transfer matches the parsed one
    raw = dev.ctrl_transfer(0x80, 0x06, 0x0200, 0, 255).tobytes()
    assert raw == configuration_descriptor()
    with pytest.raises(usb.core.USBError):  # unknown standard request stalls
        dev.ctrl_transfer(0x80, 0x33, 0, 0, 8)
    assert usb.core.find(idVendor=USB_VID, idProduct=0x0001, backend=backend) is None


def test_usb_transport_round_trip_and_timeout() -> None:
    ep = EchoEndpoint(delay=0.02)
    backend = EmulatorUSBBackend(ep, serial_string="S")
    with UsbTransport(backend=backend, timeout=1.0) as t:
        assert t.read(0.0) == b""  # 0 must not mean "wait forever" as it does in libusb
        blob = os.urandom(200_000)
        t.write(blob)
        assert ep.received == blob
        assert read_exactly(t, len(blob)) == blob


def test_usb_transport_selects_by_serial() -> None:
    a, b = EchoEndpoint(), EchoEndpoint()
    backend = EmulatorUSBBackend(a, serial_string="AAAA")
    backend.add_device(b, serial_string="BBBB")
    with UsbTransport(serial="BBBB", backend=backend) as t:
        t.write(b"to b")
    assert b.received == b"to b" and a.received == b""
    with pytest.raises(LinkError, match="no USB device 1209:5b0e with serial 'CCCC'"):
        UsbTransport(serial="CCCC", backend=backend)


def test_usb_unplugged_device_raises_link_error() -> None:
    backend = EmulatorUSBBackend(EchoEndpoint(), serial_string="S")
    t = UsbTransport(backend=backend, timeout=1.0)
    backend.unplug()
    with pytest.raises(LinkError, match="No such device"):
        t.write(b"x")
    with pytest.raises(LinkError, match="No such device"):
        t.read(0.1)
    t.close()


def test_usb_vid_pid_agree_between_host_and_emulator() -> None:
    assert (usb_transport.USB_VID, usb_transport.USB_PID) == (USB_VID, USB_PID) == (
        0x1209,
        0x5B0E,
    )
