"""Flashing through the whole stack: hostdriver.Board -> link -> emulator endpoint (emu://)."""

from __future__ import annotations

import json

import pytest
from conftest import image

import hostdriver
from hostdriver.flash import FlashClient
from protocol.addressmap import SystemReg
from protocol.errors import FlashError
from tools.flash import cli


@pytest.fixture
def board():
    with hostdriver.connect("emu://") as b:
        yield b


def test_flash_4mib_over_emu_updates_board_info(board):
    assert board.info.firmware == "1.0.0"
    img = image(4 << 20, "2.1.0")
    result = FlashClient(board).flash(img.data)
    assert result.verified and result.bytes == (4 << 20) + 48 and result.slot == 1
    assert board.info.firmware == "2.1.0"  # refreshed from a new HELLO
    assert int(board.read([SystemReg.FIRMWARE_VERSION])[0]) == 0x020100
    assert FlashClient(board).verify(img).verified


def test_errors_over_emu_leave_active_slot(board):
    client = FlashClient(board)
    with pytest.raises(FlashError, match="built for board kind 'bss2-kind-v1'"):
        client.flash(image(10_000, kind="bss2-kind-v1"))
    client.inject_write_failure(2)
    with pytest.raises(FlashError, match="program failure"):
        client.flash(image(100_000, "2.0.0"))
    info = client.info()
    assert info.active_slot == 0 and info.firmware_version == "1.0.0"
    assert board.info.firmware == "1.0.0"


def test_cli_over_emu_json(tmp_path, capsys):
    path = tmp_path / "fw.img"
    path.write_bytes(image(4 << 20, "2.2.0").data)
    assert cli(["--board", "emu://", str(path), "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert result.pop("seconds") > 0
    assert result == {
        "slot": 1,
        "bytes": (4 << 20) + 48,
        "verified": True,
        "firmware_version": "2.2.0",
    }


def test_cli_wrong_board_kind_over_emu(tmp_path, capsys):
    path = tmp_path / "fw.img"
    path.write_bytes(image(1000, kind="bss2-kind-v1").data)
    with pytest.raises(SystemExit) as exc:
        cli(["--board", "emu://", str(path)])
    assert exc.value.code == 1
    assert "the board is 'emulator'" in capsys.readouterr().err
