"""python -m tools.loopback: verdicts, JSON fields, exit status on every failure kind."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from hostdriver.board import Board
from protocol.errors import LinkError
from tools.loopback import cli, payloads

REPO = Path(__file__).resolve().parents[2]
FIELDS = {"frames", "ok", "lost", "corrupted", "retransmits", "mbytes_per_s"}


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_clean_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--board", "emu://", "--frames", "300", "--payload-words", "8", "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert FIELDS <= set(result)
    assert (result["frames"], result["ok"], result["lost"], result["corrupted"]) == (300, 300, 0, 0)
    assert result["retransmits"] == 0 and result["payload_bytes"] == 64
    assert result["mbytes_per_s"] > 0


def test_faults_are_repaired(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--board", "emu://", "--frames", "2000", "--inject-faults", "0.01", "--json"]
    assert cli(argv) == 0
    result = last_json(capsys.readouterr().out)
    assert (result["ok"], result["lost"], result["corrupted"]) == (2000, 0, 0)
    assert result["retransmits"] > 0 and result["inject_faults"] == 0.01


def test_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--board", "emu://", "--frames", "50"]) == 0
    assert "emu://: 50/50 echoes intact, 0 lost, 0 corrupted" in capsys.readouterr().out


def test_corrupted_echo_fails(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Board.loopback_stream

    def flip_one(self: Board, items: Iterable[bytes], **kw: object) -> Iterator[bytes]:
        for i, echo in enumerate(real(self, items, **kw)):
            yield echo if i != 7 else bytes([echo[0] ^ 1]) + echo[1:]

    monkeypatch.setattr(Board, "loopback_stream", flip_one)
    with pytest.raises(SystemExit) as info:
        cli(["--board", "emu://", "--frames", "20", "--json"])
    assert info.value.code == 1
    out, err = capsys.readouterr()
    result = last_json(out)
    assert (result["ok"], result["corrupted"], result["lost"]) == (19, 1, 0)
    assert err == "error: 0 lost and 1 corrupted of 20\n"


def test_link_death_reports_lost_frames(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Board.loopback_stream

    def die(self: Board, items: Iterable[bytes], **kw: object) -> Iterator[bytes]:
        for i, echo in enumerate(real(self, items, **kw)):
            if i == 5:
                raise LinkError("board silent for 2 s")
            yield echo

    monkeypatch.setattr(Board, "loopback_stream", die)
    with pytest.raises(SystemExit) as info:
        cli(["--board", "emu://", "--frames", "20", "--json"])
    assert info.value.code == 1
    out, err = capsys.readouterr()
    result = last_json(out)
    assert (result["ok"], result["lost"], result["error"]) == (5, 15, "board silent for 2 s")
    assert err == "error: LinkError: board silent for 2 s\n"


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--frames", "-1", "--frames must be >= 0"),
        ("--payload-words", "0", "--payload-words must be >= 1"),
        ("--inject-faults", "1.5", "--inject-faults must be a probability"),
    ],
)
def test_bad_arguments_exit_2(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["--board", "emu://", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_payloads_are_deterministic_and_sized() -> None:
    a = list(payloads(1000, 3, seed=4))
    assert a == list(payloads(1000, 3, seed=4))
    assert a != list(payloads(1000, 3, seed=5))
    assert {len(p) for p in a} == {24} and len(set(a)) == 1000


def test_module_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.loopback", "--frames", "100", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "STROBE_BOARD": "usb://1209:5B0E?backend=emulator"},
    )
    assert proc.returncode == 0, proc.stderr
    result = last_json(proc.stdout)
    assert result["ok"] == 100 and result["board"] == "usb://1209:5B0E?backend=emulator"
