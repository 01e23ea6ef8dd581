"""The in-process pipe hands frames on unjoined (write_parts / read_parts) where its endpoint
takes parts, joins them where it does not, and fails like write() / read() on a dead pipe."""

from __future__ import annotations

import pytest

from emulator.endpoint import BoardEndpoint
from emulator.faults import FaultConfig
from hostdriver.link_driver import LinkDriver
from hostdriver.transports.inprocess import InProcessTransport
from protocol.errors import LinkError
from protocol.wire import Channel


class JoinedEndpoint:
    """An endpoint that only speaks whole bytes (no *_parts methods)."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.out = b""

    def receive(self, data: bytes, now: float) -> None:
        self.got.append(data)

    def transmit(self, now: float) -> bytes:
        out, self.out = self.out, b""
        return out

    def next_deadline(self) -> float | None:
        return None


class PartsEndpoint(JoinedEndpoint):
    def __init__(self, fail: BaseException | None = None) -> None:
        super().__init__()
        self.got_parts: list[list] = []
        self.out_parts: list = []
        self.fail = fail

    def receive_parts(self, parts: list, now: float) -> None:
        if self.fail is not None:
            raise self.fail
        self.got_parts.append(parts)

    def transmit_parts(self, now: float) -> list:
        if self.fail is not None:
            raise self.fail
        out, self.out_parts = self.out_parts, []
        return out


def _fake_clock() -> tuple[list[float], dict]:
    now = [10.0]

    def sleep(dt: float) -> None:
        now[0] += dt

    return now, {"clock": lambda: now[0], "sleep": sleep}


def test_parts_pass_through_uncopied_where_the_endpoint_takes_them():
    ep = PartsEndpoint()
    t = InProcessTransport(ep)
    payload = memoryview(bytes(range(50)))
    t.write_parts([b"h" * 16, payload, b"crc!"])
    [got] = ep.got_parts
    assert got[1] is payload and ep.got == []
    ep.out_parts = [b"a", payload]
    back = t.read_parts(1.0)
    assert back[1] is payload
    t.write_parts([])
    t.write_parts([b"", memoryview(b"")])
    assert len(ep.got_parts) == 1  # nothing to write: the endpoint is not called


def test_parts_are_joined_for_an_endpoint_without_parts_methods():
    ep = JoinedEndpoint()
    t = InProcessTransport(ep)
    t.write_parts([b"ab", memoryview(b"cd"), b""])
    assert ep.got == [b"abcd"] and type(ep.got[0]) is bytes
    ep.out = b"xyz"
    assert t.read_parts(1.0) == [b"xyz"]


def test_read_parts_times_out_empty_on_the_injected_clock():
    now, kw = _fake_clock()
    for ep in (PartsEndpoint(), JoinedEndpoint()):
        start = now[0]
        assert InProcessTransport(ep, **kw).read_parts(0.5) == []
        assert now[0] - start >= 0.5


@pytest.mark.parametrize("ep", [PartsEndpoint(), JoinedEndpoint()])
def test_a_closed_pipe_refuses_parts(ep):
    t = InProcessTransport(ep)
    t.close()
    with pytest.raises(LinkError, match="closed"):
        t.write_parts([b"x"])
    with pytest.raises(LinkError, match="closed"):
        t.read_parts(0.0)


def test_endpoint_failures_become_link_errors():
    t = InProcessTransport(PartsEndpoint(fail=OSError("gone")), url="emu://x")
    with pytest.raises(LinkError, match="emu://x: write failed: gone"):
        t.write_parts([b"x"])
    with pytest.raises(LinkError, match="emu://x: read failed: gone"):
        t.read_parts(0.0)
    t = InProcessTransport(PartsEndpoint(fail=LinkError("as is")))
    with pytest.raises(LinkError, match="^as is$"):
        t.write_parts([b"x"])


class CountingEndpoint(BoardEndpoint):
    def __init__(self, **kw) -> None:  # noqa: ANN003
        super().__init__(**kw)
        self.parts_in = self.parts_out = 0

    def receive_parts(self, parts, now):  # noqa: ANN001, ANN201
        self.parts_in += 1
        return super().receive_parts(parts, now)

    def transmit_parts(self, now):  # noqa: ANN001, ANN201
        self.parts_out += 1
        return super().transmit_parts(now)


@pytest.mark.parametrize("faults", [None, FaultConfig(drop=0.05, corrupt=0.05, seed=4)])
def test_long_loopback_messages_survive_the_parts_path(faults):
    ep = CountingEndpoint(faults=faults)
    driver = LinkDriver(InProcessTransport(ep), timeout=10.0)
    driver.connect()
    for n in (1, 70_000, 300_001):
        message = bytes(range(256)) * (n // 256) + bytes(n % 256)
        echo = driver.request(Channel.LOOPBACK, message)
        assert type(echo) is bytes and echo == message
    assert ep.parts_in and ep.parts_out
    if faults is None:
        assert ep.faults_tx.stats.frames == 0 and driver.stats.crc_errors == 0
    else:  # the faults saw (and damaged) the frames: the joined path ran
        assert ep.faults_tx.stats.frames > 0 and ep.faults_rx.stats.frames > 0
        assert ep.faults_tx.stats.dropped + ep.faults_tx.stats.corrupted > 0
    driver.close()
