"""Link faults the ARQ must repair, and boards that die mid-run (LinkError, never a hang)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from served_emulator import ServedEmulator

import hostdriver
from emulator.usb_backend import EmulatorUSBBackend
from hostdriver.board import Board
from hostdriver.link_driver import LinkDriver
from hostdriver.transports.usb import UsbTransport
from protocol import instructions as ins
from protocol.errors import LinkError
from tools.loopback import loopback_test

SLOW_BOARD = Path(__file__).with_name("slow_board.py")
CORE_DELAY = 1.5  # seconds the slow board's analog core takes: 3x the host's timeout below


@pytest.mark.parametrize("kind", ["inprocess", "tcp"])
def test_one_percent_faults_lose_nothing(kind: str, request: pytest.FixtureRequest) -> None:
    # the acceptance run is 20000 frames; CI runs a tenth of it
    url = "emu://" if kind == "inprocess" else request.getfixturevalue("served_tcp").url
    with hostdriver.connect(url, timeout=5.0) as board:
        result = loopback_test(board, 2000, 64, inject_faults=0.01, seed=5)
    assert (result["ok"], result["lost"], result["corrupted"]) == (2000, 0, 0)
    assert result["retransmits"] > 0
    assert result["link"]["out_of_order"] > 0 and result["link"]["crc_errors"] > 0


def _stream_until_dead(board: Board, kill: object) -> tuple[int, LinkError]:
    """Stream echoes, kill the board after 200 of them; return (echoes seen, the error)."""
    payloads = (np.full(64, i, np.uint64).tobytes() for i in range(1_000_000))
    seen = 0
    with pytest.raises(LinkError) as info:
        for echo in board.loopback_stream(payloads):
            assert echo == np.full(64, seen, np.uint64).tobytes()
            seen += 1
            if seen == 200:
                kill()  # type: ignore[operator]
    return seen, info.value


@pytest.mark.parametrize("where", [("--listen", "tcp://127.0.0.1:0"), ("--pty",)])
def test_killing_served_emulator_mid_run_raises_link_error(where: tuple[str, ...]) -> None:
    server = ServedEmulator(*where)
    try:
        board = hostdriver.connect(server.url, timeout=2.0)
        seen, error = _stream_until_dead(board, server.kill)
        # detected by the pipe itself (EOF / EIO), not by waiting out the 2 s silence bound
        assert "silent" not in str(error)
        assert seen >= 200
        with pytest.raises(LinkError):  # and it stays down
            board.loopback(b"x")
        board.close()
    finally:
        server.stop()


def test_frozen_served_emulator_raises_link_error_after_timeout() -> None:
    # SIGSTOP: the connection stays open but the board never answers again
    server = ServedEmulator("--listen", "tcp://127.0.0.1:0")
    try:
        board = hostdriver.connect(server.url, timeout=0.5)
        _, error = _stream_until_dead(
            board, lambda: os.kill(server.proc.pid, signal.SIGSTOP)
        )
        assert "silent for 0.5 s" in str(error)
        board.close()
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


def test_unplugged_usb_board_mid_run_raises_link_error() -> None:
    backend = EmulatorUSBBackend(seed=2)
    transport = UsbTransport(backend=backend, timeout=2.0)
    board = Board(LinkDriver(transport, timeout=2.0), "usb://1209:5B0E?backend=emulator&seed=2")
    _, error = _stream_until_dead(board, backend.unplug)
    assert "No such device" in str(error)
    board.close()


def test_connect_to_nothing_is_link_error() -> None:
    server = ServedEmulator("--listen", "tcp://127.0.0.1:0")
    url = server.url
    server.stop()
    with pytest.raises(LinkError, match="cannot connect"):
        hostdriver.connect(url, timeout=1.0)


def _core_program() -> np.ndarray:
    """One episode with a CADC sample: the analog core runs once."""
    return ins.program(ins.timer_reset(), ins.cadc_trigger(), ins.halt())


@pytest.mark.parametrize("where", [("--listen", "tcp://127.0.0.1:0"), ("--pty",)])
def test_program_longer_than_the_timeout_completes(where: tuple[str, ...]) -> None:
    # the board keeps the link alive while it computes: silence, not run time, is bounded
    server = ServedEmulator(str(CORE_DELAY), *where, script=SLOW_BOARD)
    try:
        with hostdriver.connect(server.url, timeout=0.5) as board:
            heard = board.link_stats.frames_received
            trace = board.run(_core_program())
            assert trace.cadc.size == 1 and trace.halt["status"].tolist() == [0]
            assert board.link_stats.frames_received - heard >= 3  # keepalives came
            assert board.loopback(b"after") == b"after"
    finally:
        server.stop()


def test_board_frozen_mid_program_raises_link_error_after_timeout() -> None:
    server = ServedEmulator(str(CORE_DELAY), "--listen", "tcp://127.0.0.1:0", script=SLOW_BOARD)
    try:
        board = hostdriver.connect(server.url, timeout=0.5)
        board.loopback(b"warm")  # the program below reaches the board at once
        timer = threading.Timer(0.3, os.kill, (server.proc.pid, signal.SIGSTOP))
        timer.start()
        with pytest.raises(LinkError, match="silent for 0.5 s"):
            board.run(_core_program())
        timer.join()
        board.close()
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


def test_busy_board_beyond_max_seconds_raises_link_error_and_closes() -> None:
    # the overall bound holds even though keepalives prove the board alive
    server = ServedEmulator(str(CORE_DELAY), "--listen", "tcp://127.0.0.1:0", script=SLOW_BOARD)
    try:
        board = hostdriver.connect(server.url, timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(LinkError, match="no PLAYBACK answer within 0.4 s"):
            board.run(_core_program(), max_seconds=0.4)
        assert time.monotonic() - t0 < CORE_DELAY
        with pytest.raises(LinkError):  # a late trace must not be taken for the next answer
            board.loopback(b"after")
        board.close()
    finally:
        server.stop()
