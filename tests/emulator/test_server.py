"""tools.emulator serve: a real subprocess on tcp or a pty, spoken to with protocol.Link."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from emulator.server import parse_listen
from protocol import instructions as ins
from protocol.addressmap import Block, SystemReg, address
from protocol.control import ControlKind, decode_control, encode_control
from protocol.errors import ConfigError
from protocol.link import Link
from protocol.records import decode_trace
from protocol.wire import PROTOCOL_VERSION, Channel

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = address(Block.SYSTEM, SystemReg.SCRATCH0)


def start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.emulator", "serve", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    assert ready, "server printed no URL"
    url = proc.stdout.readline().strip()
    assert url, proc.stderr.read()
    return proc, url


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        for f in (proc.stdout, proc.stderr):
            f.close()


class Client:
    """Host side over a file descriptor: Link + select() on a real clock."""

    def __init__(self, fd: int, send, recv) -> None:
        self.fd, self._send, self._recv = fd, send, recv
        self.link = Link()
        self.link.connect(time.monotonic())
        self.inbox: list[tuple[int, bytes]] = []

    def wait(self, n: int, timeout: float = 20.0) -> list[tuple[int, bytes]]:
        end = time.monotonic() + timeout
        while len(self.inbox) < n:
            now = time.monotonic()
            assert now < end, f"timed out with {len(self.inbox)} of {n} messages"
            out = self.link.poll(now)
            while out:
                k = self._send(out)
                out = out[k:]
            due = self.link.next_deadline()
            wait = min(end - now, max(0.0, due - now) if due is not None else 0.05)
            if select.select([self.fd], [], [], wait)[0]:
                data = self._recv()
                assert data, "server closed the connection"
                self.inbox += self.link.receive(data, time.monotonic())
        got, self.inbox = self.inbox[:n], self.inbox[n:]
        return got

    def request(self, channel: int, message: bytes) -> bytes:
        self.link.send(channel, message, time.monotonic())
        return self.wait(1)[0][1]

    def hello(self) -> dict:
        kind, f = decode_control(self.request(
            Channel.CONTROL, encode_control(ControlKind.HELLO, protocol_version=PROTOCOL_VERSION)))
        assert kind == ControlKind.HELLO_REPLY
        return f

    def run(self, *parts):
        return decode_trace(self.request(Channel.PLAYBACK,
                                         ins.program_bytes(ins.program(*parts))))


def tcp_client(url: str) -> tuple[Client, socket.socket]:
    host, port = parse_listen(url)
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Client(sock.fileno(), sock.send, lambda: sock.recv(1 << 20)), sock


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen, str]]:
    proc, url = start("--listen", "tcp://127.0.0.1:0", "--seed", "4242")
    yield proc, url
    if proc.poll() is None:
        assert stop(proc) == 0


def test_parse_listen() -> None:
    assert parse_listen("tcp://127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("tcp://localhost:5000") == ("localhost", 5000)
    for bad in ("udp://127.0.0.1:1", "tcp://127.0.0.1", "tcp://:80", "tcp://h:99999",
                "tcp://h:1/x"):
        with pytest.raises(ConfigError):
            parse_listen(bad)


def test_tcp_session(server) -> None:
    proc, url = server
    assert url.startswith("tcp://127.0.0.1:") and not url.endswith(":0")
    client, sock = tcp_client(url)
    with sock:
        info = client.hello()
        assert info["serial"] == 4242 and info["board_kind"] == "emulator"
        payloads = [os.urandom(n) for n in (0, 1, 5000, 70000)]
        for p in payloads:
            client.link.send(Channel.LOOPBACK, p, time.monotonic())
        assert [m for _, m in client.wait(len(payloads))] == payloads
        tr = client.run(ins.write(SCRATCH, 0xC0DE), ins.read(SCRATCH), ins.halt())
        assert tr.reads["data"].tolist() == [0xC0DE]
    # a new connection after a disconnect: fresh link, same board
    client, sock = tcp_client(url)
    with sock:
        assert client.run(ins.read(SCRATCH), ins.halt()).reads["data"].tolist() == [0xC0DE]
    assert stop(proc, signal.SIGINT) == 0


def test_new_connection_replaces_old(server) -> None:
    _, url = server
    first, s1 = tcp_client(url)
    with s1:
        first.hello()
        second, s2 = tcp_client(url)
        with s2:
            assert second.hello()["serial"] == 4242
            # the server closed the first connection
            s1.settimeout(5)
            assert s1.recv(1 << 16) == b""


def test_client_reset_mid_transfer_does_not_kill_server(server) -> None:
    proc, url = server
    for i in range(4):
        client, sock = tcp_client(url)
        client.hello()
        if i % 2:  # the board is busy echoing into a socket nobody reads
            for _ in range(30):
                client.link.send(Channel.LOOPBACK, os.urandom(60000), time.monotonic())
        else:  # the board is busy computing a long trace when the peer vanishes
            big = ins.program(*([ins.read(SCRATCH, 16)] * 20000), ins.halt())
            client.link.send(Channel.PLAYBACK, ins.program_bytes(big), time.monotonic())
        out = client.link.poll(time.monotonic())
        sock.sendall(out)
        time.sleep(0.05)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST
    client, sock = tcp_client(url)
    with sock:
        assert client.hello()["serial"] == 4242
    assert proc.poll() is None


def test_faults_and_seed_options() -> None:
    proc, url = start("--faults", "0.05", "--fault-seed", "3", "--seed", "9")
    try:
        client, sock = tcp_client(url)
        with sock:
            assert client.hello()["serial"] == 9
            rng = np.random.default_rng(0)
            payloads = [rng.bytes(int(n)) for n in rng.integers(1, 20000, 300)]
            for p in payloads:
                client.link.send(Channel.LOOPBACK, p, time.monotonic())
            assert [m for _, m in client.wait(len(payloads), timeout=60)] == payloads
            assert client.link.stats.retransmits > 0
    finally:
        assert stop(proc) == 0


def test_pty(tmp_path: Path) -> None:
    flash = tmp_path / "board.flash"
    proc, url = start("--pty", "--seed", "11", "--flash-file", str(flash))
    try:
        assert url.startswith("serial:///dev/")
        fd = os.open(url[len("serial://"):], os.O_RDWR | os.O_NOCTTY)
        try:
            client = Client(fd, lambda b: os.write(fd, b), lambda: os.read(fd, 1 << 16))
            assert client.hello()["serial"] == 11
            tr = client.run(ins.write(SCRATCH, 5), ins.read(SCRATCH, 2), ins.halt())
            assert tr.reads["data"].tolist() == [5, 0]
            payload = os.urandom(30000)
            assert client.request(Channel.LOOPBACK, payload) == payload
            # leave without reading: echoes pile up on the board's side of the pty
            for _ in range(40):
                client.link.send(Channel.LOOPBACK, payload, time.monotonic())
            client.link.poll(time.monotonic())
            out = client.link.poll(time.monotonic())
            while out:
                out = out[os.write(fd, out):]
        finally:
            os.close(fd)
        # a new session on the same pty is not stuck behind the old session's bytes
        fd = os.open(url[len("serial://"):], os.O_RDWR | os.O_NOCTTY)
        try:
            client = Client(fd, lambda b: os.write(fd, b), lambda: os.read(fd, 1 << 16))
            assert client.hello()["serial"] == 11
            assert client.run(ins.read(SCRATCH), ins.halt()).reads["data"].tolist() == [5]
        finally:
            os.close(fd)
        assert flash.exists() and flash.stat().st_size > 0
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize(
    "args",
    [["--listen", "udp://127.0.0.1:0"], ["--faults", "1.5"], ["--seed", "-1"],
     ["--listen", "tcp://127.0.0.1:0", "--pty"]],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "tools.emulator", "serve", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == "" and "error" in proc.stderr.lower()
