"""BoardEndpoint: the board behind wire bytes, driven by a host-side protocol.Link and a
simulated clock (deterministic: no sleeps; background-mode tests sync with the worker thread
through events, never through wall-clock time)."""

from __future__ import annotations

import select
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.endpoint import BoardEndpoint
from emulator.executor import HALT_INTERNAL
from emulator.faults import FaultConfig
from protocol import instructions as ins
from protocol.addressmap import Block, SystemReg, address
from protocol.control import ControlErrorCode, ControlKind, decode_control, encode_control
from protocol.errors import ConfigError
from protocol.link import Link
from protocol.records import decode_trace
from protocol.wire import PROTOCOL_VERSION, Channel

SCRATCH = address(Block.SYSTEM, SystemReg.SCRATCH0)


class Host:
    """A host Link wired to an endpoint through a perfect pipe, on a simulated clock."""

    def __init__(self, ep: BoardEndpoint, *, rto: float = 0.05) -> None:
        self.ep = ep
        self.link = Link(rto=rto)
        self.now = 0.0
        self.inbox: list[tuple[int, bytes]] = []
        self.link.connect(self.now)

    def step(self) -> None:
        out = self.link.poll(self.now)
        if out:
            self.ep.receive(out, self.now)
        back = self.ep.transmit(self.now)
        if back:
            self.inbox += self.link.receive(back, self.now)
        # jump to the next deadline of either side (at least 1 ms: a wire takes time)
        due = [t for t in (self.link.next_deadline(), self.ep.next_deadline()) if t is not None]
        self.now = max(self.now + 1e-3, min(due)) if due else self.now + 1e-3

    def request(self, channel: int, message: bytes, *, max_steps: int = 20000) -> bytes:
        self.link.send(channel, message, self.now)
        return self.wait(1, max_steps=max_steps)[0][1]

    def wait(self, n: int, *, max_steps: int = 20000) -> list[tuple[int, bytes]]:
        for _ in range(max_steps):
            if len(self.inbox) >= n:
                got, self.inbox = self.inbox[:n], self.inbox[n:]
                return got
            self.step()
        raise AssertionError(f"no answer: {len(self.inbox)} of {n} messages")

    def control(self, kind: int, **fields) -> tuple[int, dict]:
        return decode_control(self.request(Channel.CONTROL, encode_control(kind, **fields)))

    def control_raw(self, packet: bytes) -> tuple[int, dict]:
        return decode_control(self.request(Channel.CONTROL, packet))

    def run(self, *parts):
        return decode_trace(self.request(Channel.PLAYBACK, ins.program_bytes(ins.program(*parts))))


@pytest.fixture
def ep() -> BoardEndpoint:
    return BoardEndpoint(0xABCDEF0123, firmware_version=(1, 2, 3), chip_id=0x77)


@pytest.fixture
def host(ep: BoardEndpoint) -> Host:
    return Host(ep)


def test_hello(host: Host) -> None:
    kind, f = host.control(ControlKind.HELLO, protocol_version=PROTOCOL_VERSION)
    assert kind == ControlKind.HELLO_REPLY
    assert f == {"protocol_version": PROTOCOL_VERSION, "serial": 0xABCDEF0123,
                 "firmware_version": 0x010203, "chip_id": 0x77, "board_kind": "emulator"}


def test_hello_wrong_version(host: Host) -> None:
    kind, f = host.control(ControlKind.HELLO, protocol_version=PROTOCOL_VERSION + 1)
    assert kind == ControlKind.ERROR
    assert f["code"] == ControlErrorCode.VERSION_MISMATCH and f["request"] == ControlKind.HELLO


@pytest.mark.parametrize(
    ("packet", "code"),
    [
        (b"", ControlErrorCode.MALFORMED),
        (b"\x7e", ControlErrorCode.UNKNOWN_KIND),
        (bytes([ControlKind.HELLO]), ControlErrorCode.MALFORMED),  # field missing
        (bytes([ControlKind.HELLO, 1, 0]), ControlErrorCode.MALFORMED),  # trailing byte
        (bytes([ControlKind.ACK, 1]), ControlErrorCode.UNSUPPORTED),  # a reply, not a request
    ],
)
def test_bad_control_packets_get_error_replies(host: Host, packet: bytes, code: int) -> None:
    kind, f = host.control_raw(packet)
    assert kind == ControlKind.ERROR and f["code"] == code
    assert f["request"] == (packet[0] if packet else 0)


def test_registered_handler(host: Host, ep: BoardEndpoint) -> None:
    seen = []

    def handler(packet: bytes) -> bytes:
        seen.append(packet)
        return encode_control(ControlKind.ACK, request=packet[0])

    ep.register_control_handler(0x7E, handler)
    assert host.control_raw(b"\x7e\x01\x02") == (ControlKind.ACK, {"request": 0x7E})
    assert seen == [b"\x7e\x01\x02"]

    def broken(packet: bytes) -> bytes:
        raise RuntimeError("boom")

    ep.register_control_handler(0x7E, broken)
    kind, f = host.control_raw(b"\x7e")
    assert kind == ControlKind.ERROR and "boom" in f["message"]
    assert ep.internal_errors == 1
    with pytest.raises(Exception, match="0..255"):
        ep.register_control_handler(256, handler)


def test_flash_kinds_are_answered(host: Host) -> None:
    from protocol.flash_packets import FlashKind, build_packet, parse_packet

    reply = host.request(Channel.CONTROL, build_packet(FlashKind.INFO))
    kind, fields = parse_packet(reply)
    assert kind == FlashKind.INFO_REPLY and fields["board_kind"] == "emulator"


def test_chip_reset(host: Host, ep: BoardEndpoint) -> None:
    ep.regs.write(address(Block.DRIVER, 3), 0x11)
    ep.regs.write(SCRATCH, 5)
    assert host.control(ControlKind.CHIP_RESET) == (ControlKind.ACK,
                                                    {"request": ControlKind.CHIP_RESET})
    assert ep.regs.driver[0, 3] == 0 and ep.regs.scratch[0] == 5


def test_playback_program_and_trace(host: Host, ep: BoardEndpoint) -> None:
    values = np.arange(5000, dtype=np.uint64) & 0x3F3F3F3F  # > one 16 KiB frame each way
    start = address(Block.SYNAPSE, 0)
    tr = host.run(ins.write_block(start, values), ins.read(start, values.size), ins.halt())
    assert np.array_equal(tr.reads["data"], values) and tr.halt["status"][0] == 0
    assert ep.programs_run == 1


def test_loopback_echoes_unchanged(host: Host) -> None:
    rng = np.random.default_rng(1)
    msgs = [rng.bytes(int(n)) for n in rng.integers(0, 40000, 30)]
    for m in msgs:
        host.link.send(Channel.LOOPBACK, m, host.now)
    got = host.wait(len(msgs))
    assert [c for c, _ in got] == [Channel.LOOPBACK] * len(msgs)
    assert [m for _, m in got] == msgs


def test_set_faults_lossy_link_loses_nothing(host: Host, ep: BoardEndpoint) -> None:
    reply = host.control(ControlKind.SET_FAULTS, drop=0.05, corrupt=0.05, duplicate=0.05,
                         reorder=0.05, delay=0.05, delay_s=0.01, seed=7)
    assert reply == (ControlKind.ACK, {"request": ControlKind.SET_FAULTS})
    assert ep.faults_tx.config.drop == pytest.approx(0.05)
    rng = np.random.default_rng(2)
    msgs = [rng.bytes(int(n)) for n in rng.integers(1, 3000, 400)]
    for m in msgs:
        host.link.send(Channel.LOOPBACK, m, host.now)
    got = host.wait(len(msgs), max_steps=200000)
    assert [m for _, m in got] == msgs
    assert host.link.stats.retransmits > 0
    for inj in (ep.faults_rx, ep.faults_tx):
        s = inj.stats
        assert min(s.dropped, s.corrupted, s.duplicated, s.reordered, s.delayed) > 0
    # and programs still run exactly once each
    for i in range(5):
        tr = host.run(ins.write(SCRATCH, i), ins.read(SCRATCH), ins.halt())
        assert tr.reads["data"].tolist() == [i]
    assert ep.programs_run == 5


def test_bad_set_faults_refused(host: Host, ep: BoardEndpoint) -> None:
    kind, f = host.control(ControlKind.SET_FAULTS, drop=2.0, corrupt=0.0, duplicate=0.0,
                           reorder=0.0, delay=0.0, delay_s=0.01, seed=0)
    assert kind == ControlKind.ERROR and f["code"] == ControlErrorCode.MALFORMED
    assert "drop" in f["message"] and not ep.faults_tx.config.active


def test_new_session_restores_power_up_faults() -> None:
    ep = BoardEndpoint(2, faults=FaultConfig(duplicate=0.2, seed=1))
    h = Host(ep)
    h.control(ControlKind.SET_FAULTS, drop=0.3, corrupt=0.0, duplicate=0.0, reorder=0.0,
              delay=0.0, delay_s=0.01, seed=0)
    assert ep.faults_rx.config.drop == pytest.approx(0.3)
    h2 = Host(ep)  # a new host session: SYN with a new nonce
    h2.now = h.now
    assert h2.control(ControlKind.HELLO, protocol_version=PROTOCOL_VERSION)[0] == (
        ControlKind.HELLO_REPLY)
    assert ep.faults_rx.config == FaultConfig(duplicate=0.2, seed=1)
    assert ep.sessions == 2


def test_registers_survive_a_new_session(ep: BoardEndpoint) -> None:
    Host(ep).run(ins.write(SCRATCH, 99), ins.halt())
    ep.reset_link()
    assert Host(ep).run(ins.read(SCRATCH), ins.halt()).reads["data"].tolist() == [99]


def test_internal_error_becomes_halt_status(ep: BoardEndpoint, capsys) -> None:
    class Broken:
        def run(self, batch):
            raise RuntimeError("core bug")

    ep.executor._core = Broken()
    tr = Host(ep).run(ins.timer_reset(), ins.cadc_trigger(), ins.halt())
    assert tr.halt["status"].tolist() == [HALT_INTERNAL]
    assert ep.internal_errors == 1 and "core bug" in capsys.readouterr().err


def test_deadlines(ep: BoardEndpoint) -> None:
    assert ep.next_deadline() is None
    h = Host(ep)
    h.control(ControlKind.HELLO, protocol_version=PROTOCOL_VERSION)  # link established
    for _ in range(50):  # let the last acks settle
        h.step()
    assert ep.next_deadline() is None  # idle board: select() may sleep for ever
    h.link.send(Channel.LOOPBACK, b"x", h.now)
    ep.receive(h.link.poll(h.now), h.now)  # data arrived: the echo is due now
    assert ep.next_deadline() == h.now
    assert ep.transmit(h.now)
    assert ep.next_deadline() == pytest.approx(h.now + ep.link.rto)  # retransmission timer


def test_unknown_channel_is_ignored(ep: BoardEndpoint) -> None:
    h = Host(ep)
    h.link.send(7, b"nobody listens", h.now)
    h.link.send(Channel.LOOPBACK, b"still works", h.now)
    assert h.wait(1) == [(Channel.LOOPBACK, b"still works")]


def test_spike_loopback_through_real_analog_core() -> None:
    from protocol.addressmap import CrossbarInput, CrossbarOutput

    ep = BoardEndpoint(1)
    node = address(Block.CROSSBAR, CrossbarInput.FPGA << 4 | CrossbarOutput.FPGA_RECORD)
    times = np.array([100, 100, 250, 4000, 4001], np.uint64)
    labels = np.array([3, 0x1234, 77, 0x3FFF, 0], np.uint16)
    parts = [ins.write(node, 1 << 31), ins.timer_reset()]
    for e in range(3):
        parts += [ins.wait_until(10000 * e), ins.episode_start(e),
                  ins.spikes(times + 10000 * e, labels)]
    tr = Host(ep).run(*parts, ins.halt())
    assert tr.errors.size == 0
    assert tr.spikes["label"].tolist() == labels.tolist() * 3
    assert tr.spikes["time"].tolist() == [int(t) + 10000 * e for e in range(3) for t in times]
    assert tr.spikes["episode"].tolist() == [e for e in range(3) for _ in times]
    assert ep.executor.stats.core_runs == 1


def _small_counts(program: bytes) -> bytes:
    """Random words, but WRITE_BLOCK / READ / MADC_RECORD counts below 256 and CADC_SCHEDULE
    spans below 64 x 65536 ticks (keeps traces and the simulated time small: the emulator
    simulates every tick it is asked to, and a random 42-bit interval asks for days)."""
    b = bytearray(program)
    for i in range(7, len(b), 8):
        if b[i] in (0x84, 0x85, 0x8C):
            b[i - 2] = b[i - 1] = 0
        elif b[i] == 0x8B:  # [55:42] count, [41:0] interval
            b[i - 1] = 0
            b[i - 2] &= 0xFC
            b[i - 3] = b[i - 4] = b[i - 5] = 0
    return bytes(b)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, 9]), st.binary(max_size=300)),
                max_size=12),
       st.binary(max_size=200))
def test_fuzzed_messages_never_break_the_board(messages, garbage) -> None:
    ep = BoardEndpoint(3)
    h = Host(ep)
    ep.receive(garbage, 0.0)  # line noise before the session
    messages = [(c, _small_counts(p) if c == Channel.PLAYBACK else p) for c, p in messages]
    for channel, payload in messages:
        h.link.send(channel, payload, h.now)
    answered = sum(1 for c, _ in messages if c in (Channel.PLAYBACK, Channel.CONTROL,
                                                  Channel.LOOPBACK))
    got = h.wait(answered)
    for (channel, payload), (c, reply) in zip(
            [m for m in messages if m[0] in (0, 1, 2)], got, strict=True):
        assert c == channel
        if channel == Channel.LOOPBACK:
            assert reply == payload
        elif channel == Channel.PLAYBACK:
            assert decode_trace(reply).halt.size == 1
        else:
            assert decode_control(reply)[0] in (ControlKind.ERROR, ControlKind.HELLO_REPLY,
                                                ControlKind.ACK) or reply[0] in range(0x40, 0x50)
    assert h.control(ControlKind.HELLO, protocol_version=PROTOCOL_VERSION)[0] == (
        ControlKind.HELLO_REPLY)
    assert ep.internal_errors == 0


def test_host_message_over_max_message_is_dropped_and_the_board_goes_on(capsys) -> None:
    ep = BoardEndpoint(5, link_options={"max_message": 4096})
    h = Host(ep)
    h.link.send(Channel.LOOPBACK, bytes(10_000), h.now)  # the host's own bound is 512 MiB
    h.link.send(Channel.LOOPBACK, b"after", h.now)
    assert h.wait(1) == [(Channel.LOOPBACK, b"after")]
    assert ep.link_errors == 1 and ep.link.stats.oversized == 1
    assert "max_message" in capsys.readouterr().err


def test_trace_over_max_message_becomes_an_overflow_error_trace(capsys) -> None:
    from emulator.executor import HALT_ERRORS
    from protocol.wire import ErrorCode

    ep = BoardEndpoint(5, link_options={"max_message": 4096})
    program = ins.program(*([ins.read(SCRATCH, 16)] * 100), ins.halt())  # 1600 READ_DATA
    tr = Host(ep).run(program)
    assert tr.reads.size == 0 and tr.halt["status"].tolist() == [HALT_ERRORS]
    assert tr.errors["code"].tolist() == [ErrorCode.OVERFLOW]
    assert int(tr.errors["info32"][0]) >= 1600  # trace words dropped, never silent
    assert "max_message" in capsys.readouterr().err


class GatedCore:
    """The real analog core, held at the gate until the test opens it (a long program)."""

    def __init__(self) -> None:
        self.inner = None
        self.entered = threading.Event()
        self.gate = threading.Event()

    def run(self, batch):
        self.entered.set()
        assert self.gate.wait(30), "test never opened the gate"
        return self.inner.run(batch)


def _gated_endpoint() -> tuple[BoardEndpoint, GatedCore]:
    from emulator.analog import AnalogCore

    core = GatedCore()
    ep = BoardEndpoint(8, core=core)
    core.inner = AnalogCore(ep.serial, ep.regs)
    return ep, core


CORE_PROGRAM = (ins.timer_reset(), ins.cadc_trigger(), ins.halt())


def test_background_program_keeps_the_link_alive_and_replies_in_order() -> None:
    ep, core = _gated_endpoint()
    with ep.background() as wake:
        h = Host(ep)
        h.link.send(Channel.PLAYBACK, ins.program_bytes(ins.program(*CORE_PROGRAM)), h.now)
        h.link.send(Channel.CONTROL, encode_control(ControlKind.HELLO,
                                                    protocol_version=PROTOCOL_VERSION), h.now)
        h.link.send(Channel.LOOPBACK, b"behind", h.now)
        for _ in range(10):
            h.step()
        assert core.entered.wait(30) and ep.busy
        heard = h.link.stats.frames_received
        start = h.now
        for _ in range(40):  # simulated seconds pass while the core computes
            h.step()
        assert h.now - start > 10 * ep.keepalive
        assert h.inbox == []  # requests behind the program wait for it
        assert h.link.idle  # but the board acked them
        assert ep.keepalives_sent >= 10 and h.link.stats.frames_received - heard >= 10
        assert not select.select([wake], [], [], 0)[0]
        core.gate.set()
        assert select.select([wake], [], [], 30)[0]  # the server's select() wakes up
        got = h.wait(3)
    assert [c for c, _ in got] == [Channel.PLAYBACK, Channel.CONTROL, Channel.LOOPBACK]
    assert decode_trace(got[0][1]).cadc.size == 1
    assert decode_control(got[1][1])[0] == ControlKind.HELLO_REPLY and got[2][1] == b"behind"
    assert not ep.busy and ep.programs_run == 1
    assert Host(ep).run(ins.read(SCRATCH), ins.halt()).reads.size == 1  # synchronous again


def test_new_session_drops_the_reply_of_an_older_background_program() -> None:
    ep, core = _gated_endpoint()
    with ep.background() as wake:
        old = Host(ep)
        old.link.send(Channel.PLAYBACK, ins.program_bytes(ins.program(*CORE_PROGRAM)), old.now)
        old.link.send(Channel.LOOPBACK, b"old", old.now)
        for _ in range(5):
            old.step()
        assert core.entered.wait(30)
        ep.reset_link()  # a new tcp connection: the old session's requests are moot
        new = Host(ep)
        new.now = old.now
        new.link.send(Channel.LOOPBACK, b"new", new.now)
        for _ in range(5):
            new.step()
        assert new.inbox == []  # the board is still busy with the old program
        core.gate.set()
        assert select.select([wake], [], [], 30)[0]
        assert new.wait(1) == [(Channel.LOOPBACK, b"new")]
        for _ in range(20):
            new.step()
        assert new.inbox == []  # neither the old trace nor the old echo


def test_background_is_not_reentrant_and_keepalive_must_be_positive() -> None:
    ep = BoardEndpoint(1)
    with ep.background(), pytest.raises(ConfigError), ep.background():
        pass
    with pytest.raises(ConfigError):
        BoardEndpoint(1, keepalive=0)
