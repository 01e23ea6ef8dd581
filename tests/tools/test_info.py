"""python -m tools.info: human and JSON output, one-line failures with distinct exit codes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.wire import PROTOCOL_VERSION
from tools.info import cli

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--board", "emu://?seed=5", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    info = json.loads(out[-1])
    assert info["serial"] == 5 and info["serial_hex"] == "0000000000000005"
    assert info["protocol_version"] == PROTOCOL_VERSION
    assert info["board_kind"] == "emulator" and info["url"] == "emu://?seed=5"
    assert info["firmware"].count(".") == 2


def test_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--board", "usb://1209:5B0E?backend=emulator&seed=6"]) == 0
    out = capsys.readouterr().out
    assert "serial    0000000000000006" in out
    assert "kind      emulator" in out


def test_env_var_names_the_board(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROBE_BOARD", "emu://?seed=9")
    assert cli(["--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["serial"] == 9


def test_bad_url_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["--board", "tcp://nohost"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: bad board URL 'tcp://nohost'")


def test_unreachable_board_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["--board", f"tcp://127.0.0.1:{_free_port()}", "--timeout", "0.5"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: LinkError: ")


def test_module_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.info", "--board", "emu://?seed=4", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["serial"] == 4
