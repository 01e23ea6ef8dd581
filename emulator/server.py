"""Serve a BoardEndpoint over TCP or a pseudo-terminal: a select() loop, no polling.

The loop sleeps in select() until bytes arrive, the socket can take more, a program finishes,
or the endpoint's next deadline (retransmission, delayed ack, held-back faulty frame, keepalive)
is due, so it adds no latency of its own. Programs run on the endpoint's worker thread
(BoardEndpoint.background), so the link stays serviced and the host hears keepalives while a
long program computes; a frozen or killed process still falls silent at once.

TCP serves one client at a time: a new connection replaces the old one and restarts the board's
link (registers, timer and flash persist, as on a board whose cable was replugged).
SIGINT / SIGTERM end the loop cleanly.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import time
import tty
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

from emulator.endpoint import BoardEndpoint
from protocol.errors import ConfigError

OUT_BUFFER_LIMIT = 16 << 20  # bytes queued for a reader that does not read: beyond, drop frames
_READ_SIZE = 1 << 20


def parse_listen(url: str) -> tuple[str, int]:
    """tcp://HOST:PORT -> (host, port); PORT 0 picks a free one."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--listen {url!r}: bad port ({exc})") from None
    if parts.scheme != "tcp" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ConfigError(f"--listen {url!r}: expected tcp://HOST:PORT (PORT 0 picks a free one)")
    return parts.hostname, port


class _Stop:
    """SIGINT/SIGTERM -> a byte on a pipe that select() watches (no exception mid-program)."""

    def __init__(self) -> None:
        self.requested = False
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)

    def _handler(self, signum: int, frame: object) -> None:
        self.requested = True
        with contextlib.suppress(OSError):
            os.write(self.w, b"x")

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Stop]:
        old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            os.close(self.r)
            os.close(self.w)


class _Pipe:
    """The current peer: a socket or the pty master, with its unsent bytes."""

    def __init__(self, fd: int, recv: Callable[[], bytes], send: Callable[[bytes], int]) -> None:
        self.fd = fd
        self.recv = recv
        self.send = send
        self.out = bytearray()
        self.dropped = 0

    def queue(self, data: bytes) -> None:
        if len(self.out) + len(data) > OUT_BUFFER_LIMIT:
            self.dropped += len(data)  # a reader that does not read: the link will retransmit
        else:
            self.out += data

    def flush(self) -> bool:
        """Send what the peer takes now; False if the peer is gone (reset, broken pipe)."""
        while self.out:
            try:
                n = self.send(self.out)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self.out.clear()
                return False
            del self.out[:n]
        return True


def _serve(endpoint: BoardEndpoint, stop: _Stop, listener: socket.socket | None,
           pipe: _Pipe | None, on_accept: Callable[[socket.socket], _Pipe] | None) -> None:
    with endpoint.background() as wake:
        _loop(endpoint, stop, listener, pipe, on_accept, wake)


def _loop(endpoint: BoardEndpoint, stop: _Stop, listener: socket.socket | None,
          pipe: _Pipe | None, on_accept: Callable[[socket.socket], _Pipe] | None,
          wake: int) -> None:
    clock = time.monotonic
    idle_spins = 0
    while not stop.requested:
        if pipe is not None:
            pipe.queue(endpoint.transmit(clock()))
            if not pipe.flush() and listener is not None:  # tcp peer gone: wait for the next
                _close_fd(pipe)
                pipe = None
        deadline = endpoint.next_deadline() if pipe is not None else None
        timeout = None if deadline is None else max(0.0, deadline - clock())
        if timeout == 0.0:
            idle_spins += 1
            if idle_spins > 3:  # a deadline that poll() does not move: do not spin the CPU
                timeout = 1e-3
        rlist = [stop.r, wake] + ([listener] if listener is not None else [])
        if pipe is not None:
            rlist.append(pipe.fd)
        wlist = [pipe.fd] if pipe is not None and pipe.out else []
        readable, writable, _ = select.select(rlist, wlist, [], timeout)
        if readable or writable:
            idle_spins = 0
        if stop.r in readable:
            with contextlib.suppress(OSError):
                os.read(stop.r, 64)
            continue
        if wake in readable:  # a program finished: the next transmit() sends its trace
            with contextlib.suppress(OSError):
                os.read(wake, 64)
        if listener is not None and listener in readable and on_accept is not None:
            try:
                conn, _ = listener.accept()
            except OSError:  # the client gave up before we accepted
                continue
            if pipe is not None:
                _close_fd(pipe)
            pipe = on_accept(conn)
            endpoint.reset_link()
            continue
        if pipe is not None and pipe.fd in readable:
            try:
                data = pipe.recv()
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"" and listener is not None:  # tcp peer went away
                _close_fd(pipe)
                pipe = None
                continue
            if data:
                sessions = endpoint.sessions
                endpoint.receive(data, clock())
                if endpoint.sessions != sessions:  # bytes queued for the previous session
                    pipe.out.clear()
        if pipe is not None and pipe.fd in writable and not pipe.flush() and listener is not None:
            _close_fd(pipe)
            pipe = None
    if pipe is not None and listener is not None:
        _close_fd(pipe)


def _close_fd(pipe: _Pipe) -> None:
    sock = getattr(pipe, "sock", None)
    if sock is not None:
        sock.close()


def _tcp_pipe(conn: socket.socket) -> _Pipe:
    conn.setblocking(False)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pipe = _Pipe(conn.fileno(), lambda: conn.recv(_READ_SIZE), conn.send)
    pipe.sock = conn  # type: ignore[attr-defined]
    return pipe


def serve_tcp(endpoint: BoardEndpoint, host: str, port: int,
              announce: Callable[[str], None]) -> None:
    """Listen on host:port, announce 'tcp://host:port', serve until SIGINT/SIGTERM."""
    stop = _Stop()
    with stop.installed(), socket.create_server((host, port)) as listener:
        listener.setblocking(False)
        bound_host, bound_port = listener.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        announce(f"tcp://{shown}:{bound_port}")
        _serve(endpoint, stop, listener, None, _tcp_pipe)


def serve_pty(endpoint: BoardEndpoint, announce: Callable[[str], None]) -> None:
    """Create a raw pseudo-terminal, announce 'serial:///dev/pts/N', serve on its master."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        os.set_blocking(master, False)
        name = os.ttyname(slave)
        # the slave stays open here, so the master never sees EIO when a client closes it
        pipe = _Pipe(master, lambda: os.read(master, _READ_SIZE), lambda b: os.write(master, b))
        stop = _Stop()
        with stop.installed():
            announce(f"serial://{name}")
            _serve(endpoint, stop, None, pipe, None)
    finally:
        os.close(master)
        os.close(slave)


def print_url(url: str) -> None:
    """The board URL, alone on the first stdout line, flushed (scripts read it)."""
    sys.stdout.write(url + "\n")
    sys.stdout.flush()
