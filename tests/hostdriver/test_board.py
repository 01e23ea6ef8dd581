"""Board and link driver: handshake, version checks, control replies, bounded waits.

The board side here is a minimal stand-in built from the real protocol.Link, so the failure
modes (silent board, dead pipe, wrong protocol version, refused requests) can be staged
exactly; tests/loopback runs the same Board against the real emulator through every transport.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from hostdriver import LinkDriver, connect
from hostdriver.board import Board
from hostdriver.transports.base import Transport
from hostdriver.transports.inprocess import InProcessTransport
from protocol.control import ControlErrorCode, ControlKind, decode_control, encode_control
from protocol.errors import BoardError, ConfigError, LinkError
from protocol.frames import Frame, encode_frame
from protocol.link import Link
from protocol.wire import PROTOCOL_VERSION, Channel, FrameType


class StubBoard:
    """Board side of the link: echoes LOOPBACK, answers HELLO / SET_FAULTS like a board."""

    def __init__(self, *, version: int = PROTOCOL_VERSION, refuse_hello: bool = False) -> None:
        self.link = Link()
        self.version = version
        self.refuse_hello = refuse_hello
        self.silent = False  # stops answering (but keeps swallowing bytes)
        self.firmware_version = 0x010203
        self.faults: dict | None = None

    def receive(self, data: bytes, now: float) -> None:
        if self.silent:
            return
        for channel, message in self.link.receive(data, now):
            if channel == Channel.LOOPBACK:
                self.link.send(channel, message, now)
            elif channel == Channel.CONTROL:
                self.link.send(channel, self.answer(message), now)

    def answer(self, message: bytes) -> bytes:
        kind, fields = decode_control(message)
        if kind == ControlKind.HELLO:
            if self.refuse_hello:
                return encode_control(
                    ControlKind.ERROR, request=kind, code=ControlErrorCode.VERSION_MISMATCH,
                    message=f"board speaks version {self.version}",
                )
            return encode_control(
                ControlKind.HELLO_REPLY, protocol_version=self.version, serial=0xABCDEF,
                firmware_version=self.firmware_version, chip_id=7, board_kind="stub",
            )
        if kind == ControlKind.SET_FAULTS:
            self.faults = fields
            return encode_control(ControlKind.ACK, request=kind)
        return encode_control(
            ControlKind.ERROR, request=kind, code=ControlErrorCode.UNSUPPORTED, message="nope"
        )

    def transmit(self, now: float) -> bytes:
        return b"" if self.silent else self.link.poll(now)

    def next_deadline(self) -> float | None:
        return None if self.silent else self.link.next_deadline()


class SwallowingTransport(Transport):
    """A pipe that accepts every byte and never answers (unplugged cable, hung board)."""

    def __init__(self) -> None:
        super().__init__("swallow://")
        self.written = 0

    def _write(self, data: bytes) -> None:
        self.written += len(data)

    def _read(self, timeout: float) -> bytes:
        time.sleep(timeout)
        return b""

    def _close(self) -> None:
        pass


class ForeignVersionTransport(SwallowingTransport):
    """A board that answers with frames of protocol version 9."""

    def _read(self, timeout: float) -> bytes:
        time.sleep(min(timeout, 0.01))
        frame = bytearray(encode_frame(Frame(FrameType.SYN_ACK, window=64, payload=b"abcd")))
        frame[2] = 9
        return bytes(frame)


def stub_board(stub: StubBoard, timeout: float = 1.0) -> Board:
    return Board(LinkDriver(InProcessTransport(stub), timeout=timeout), "emu://stub")


def test_handshake_reads_board_info() -> None:
    with stub_board(StubBoard()) as board:
        info = board.info
        assert (info.serial, info.chip_id, info.board_kind) == (0xABCDEF, 7, "stub")
        assert info.firmware == "1.2.3"
        assert info.protocol_version == PROTOCOL_VERSION
        d = info.as_dict()
        assert d["serial_hex"] == "0000000000ABCDEF" and d["url"] == "emu://stub"


def test_hello_reply_with_other_version_names_both() -> None:
    both = rf"version {PROTOCOL_VERSION + 1}.*version {PROTOCOL_VERSION}"
    with pytest.raises(BoardError, match=both):
        stub_board(StubBoard(version=PROTOCOL_VERSION + 1))


def test_hello_refused_names_host_version_and_board_reason() -> None:
    both = rf"refused protocol version {PROTOCOL_VERSION}.*version 7"
    with pytest.raises(BoardError, match=both):
        stub_board(StubBoard(version=7, refuse_hello=True))


def test_frames_of_another_version_give_board_error() -> None:
    driver = LinkDriver(ForeignVersionTransport(), timeout=0.3)
    both = rf"protocol version 9, this host speaks version {PROTOCOL_VERSION}"
    with pytest.raises(BoardError, match=both):
        driver.connect()


def test_loopback_and_stream() -> None:
    with stub_board(StubBoard()) as board:
        assert board.loopback(b"x" * 100_000) == b"x" * 100_000  # several fragments
        payloads = [bytes([i % 256]) * (i + 1) for i in range(300)]
        assert list(board.loopback_stream(payloads, depth=50)) == payloads
        assert list(board.loopback_stream([])) == []
        assert board.link_stats.messages_received == 302


def test_set_faults_sends_the_knobs_and_validates() -> None:
    stub = StubBoard()
    with stub_board(stub) as board:
        board.set_faults(drop=0.01, reorder=0.5, seed=9)
        assert stub.faults is not None
        assert stub.faults["drop"] == pytest.approx(0.01)
        assert stub.faults["reorder"] == pytest.approx(0.5)
        assert stub.faults["seed"] == 9
        with pytest.raises(ConfigError, match="corrupt"):
            board.set_faults(corrupt=1.5)


def test_refused_control_request_is_board_error_with_code() -> None:
    with stub_board(StubBoard()) as board:
        with pytest.raises(BoardError, match="CHIP_RESET: UNSUPPORTED: nope") as info:
            board.chip_reset()
        assert info.value.code == ControlErrorCode.UNSUPPORTED


def test_silent_board_raises_link_error_within_timeout() -> None:
    stub = StubBoard()
    board = stub_board(stub, timeout=0.3)
    stub.silent = True
    with pytest.raises(LinkError, match="silent for 0.3 s"):
        board.loopback(b"ping")
    with pytest.raises(LinkError, match="earlier failure"):  # the link stays down
        board.loopback(b"ping")
    board.close()


def test_swallowing_transport_fails_handshake_within_timeout() -> None:
    transport = SwallowingTransport()
    driver = LinkDriver(transport, timeout=0.2)
    with pytest.raises(LinkError, match=r"no answer to the link handshake \(SYN\) within 0.2 s"):
        driver.connect()
    assert transport.written > 0  # it did send SYNs


def test_swallowing_transport_after_handshake_fails_receive() -> None:
    stub = StubBoard()
    driver = LinkDriver(InProcessTransport(stub), timeout=1.0)
    driver.connect()
    driver.transport = SwallowingTransport()  # the cable is pulled
    driver.send(Channel.LOOPBACK, b"lost")
    with pytest.raises(LinkError, match="1 frames unacked"):
        driver.receive(Channel.LOOPBACK, timeout=0.2)


def test_closed_board_refuses_use() -> None:
    board = stub_board(StubBoard())
    board.close()
    with pytest.raises(LinkError, match="closed"):
        board.loopback(b"x")


def test_driver_rejects_bad_timeout() -> None:
    with pytest.raises(ValueError):
        LinkDriver(SwallowingTransport(), timeout=0)


def test_connect_rejects_bad_url_before_opening_anything() -> None:
    with pytest.raises(ConfigError, match="scheme 'nope'"):
        connect("nope://x")


def test_connect_uses_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STROBE_BOARD", "tcp://127.0.0.1:bad")
    with pytest.raises(ConfigError, match="port 'bad'"):
        connect()


def test_trace_over_max_message_is_link_error_and_programs_over_it_config_error() -> None:
    import numpy as np

    from protocol import instructions as ins
    from protocol.addressmap import Block, SystemReg, address

    scratch = address(Block.SYSTEM, SystemReg.SCRATCH0)
    with connect("emu://", max_message=4096) as board:
        assert board.driver.link.max_message == 4096
        with pytest.raises(ConfigError, match="max_message"):
            board.run(np.zeros(600, np.uint64))  # 4800 bytes: refused before sending
        board.loopback(b"still fine")
        # the board's link has the default bound, so it sends a 12.8 kB trace in full
        with pytest.raises(LinkError, match="max_message"):
            board.run(ins.program(*([ins.read(scratch, 16)] * 100), ins.halt()))


def test_refresh_info_reads_hello_again() -> None:
    stub = StubBoard()
    with stub_board(stub) as board:
        assert board.info.firmware == "1.2.3"
        stub.firmware_version = 0x020001  # flashed and rebooted into another image
        info = board.refresh_info()
        assert info is board.info and info.firmware == "2.0.1"
        assert (info.serial, info.url) == (0xABCDEF, "emu://stub")


def test_raw_writes_and_chip_reset_invalidate_the_chip_config_belief() -> None:
    import numpy as np

    from hostdriver.chip import ChipConfig, state
    from protocol.addressmap import Block, SystemReg, address

    scratch = address(Block.SYSTEM, SystemReg.SCRATCH0)
    with connect("emu://") as board:
        state.remember(board, ChipConfig())
        board.write([scratch], [1])
        assert state.believed(board) is None
        state.remember(board, ChipConfig())
        board.chip_reset()
        assert state.believed(board) is None
        state.remember(board, ChipConfig())
        with pytest.raises(BoardError):  # a failed write leaves the board's state unknown too
            board.write([address(Block.SYSTEM, SystemReg.SERIAL_LO)], [5])
        assert state.believed(board) is None
        state.remember(board, ChipConfig())
        board.read(np.array([scratch]))  # reads change nothing
        assert state.believed(board) is not None


def test_chip_config_program_and_time_grid_are_re_exported() -> None:
    import subprocess
    import sys
    from pathlib import Path

    import hostdriver
    from hostdriver.chip import ChipConfig
    from hostdriver.program import Program
    from hostdriver.traces import TimeGrid

    assert (hostdriver.ChipConfig, hostdriver.Program, hostdriver.TimeGrid) == (
        ChipConfig, Program, TimeGrid)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        hostdriver.Nope  # noqa: B018
    # a fresh interpreter: no import cycle whichever name comes first
    code = "from hostdriver import TimeGrid, Program, ChipConfig, connect; print('ok')"
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=root)
    assert done.stdout.strip() == "ok", done.stderr


def test_in_process_board_uses_the_largest_fragments_for_long_messages() -> None:
    from hostdriver.program import Program
    from protocol.addressmap import Block, address
    from protocol.wire import FRAME_MAX_PAYLOAD

    with connect("emu://?seed=3") as board:
        assert board._driver.link.max_payload == FRAME_MAX_PAYLOAD
        addrs = np.array([address(int(Block.SYNAPSE), i) for i in range(20000)])
        values = (np.arange(20000) * 2654435761) & 0x3F3F3F3F
        board.write(addrs, values)  # several fragments each way, of the largest size
        prog = Program()
        ticket = prog.read(addrs)
        assert np.array_equal(np.asarray(prog.run(board)[ticket]), values)
