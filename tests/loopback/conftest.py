"""Boards behind every transport for the loopback suite: in-process, tcp, pty, pyusb backend.

Served emulators are real `python -m tools.emulator serve` subprocesses (module scope: one
per transport and test module); their first stdout line is the URL to connect to.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from served_emulator import ServedEmulator

SEED = 3


@pytest.fixture(scope="module")
def served_tcp() -> Iterator[ServedEmulator]:
    server = ServedEmulator("--listen", "tcp://127.0.0.1:0", "--seed", str(SEED))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served_pty() -> Iterator[ServedEmulator]:
    server = ServedEmulator("--pty", "--seed", str(SEED))
    yield server
    server.stop()


TRANSPORTS = ["inprocess", "tcp", "pty", "usb"]


@pytest.fixture
def board_seed() -> int:
    """Serial number of every board the suite connects to."""
    return SEED


@pytest.fixture(params=TRANSPORTS)
def board_url(request: pytest.FixtureRequest) -> str:
    """The URL of a board with serial SEED, through each transport in turn."""
    kind = request.param
    if kind == "inprocess":
        return f"emu://?seed={SEED}"
    if kind == "usb":
        return f"usb://1209:5B0E?backend=emulator&seed={SEED}"
    server = request.getfixturevalue("served_tcp" if kind == "tcp" else "served_pty")
    return server.url
