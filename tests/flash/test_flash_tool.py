"""python -m tools.flash: make-image, refusals before touching a board, exit codes, error lines."""

from __future__ import annotations

import json

import pytest

from protocol.firmware_image import parse_image
from tools.flash import cli

UNREACHABLE = "tcp://127.0.0.1:1"  # nothing listens: any attempt to connect would fail


def make(tmp_path, size=5000, version="2.0.0", kind="emulator", name="fw.img"):
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
    out = tmp_path / name
    assert (
        cli(
            ["make-image", str(payload), "--version", version, "--board-kind", kind, "-o", str(out)]
        )
        == 0
    )
    return out


def fails(argv, capsys, status=1):
    with pytest.raises(SystemExit) as exc:
        cli(argv)
    assert exc.value.code == status
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ")
    return err


def test_make_image(tmp_path, capsys):
    out = make(tmp_path, size=1000, version="3.2.1", kind="bss2-kind-v1")
    img = parse_image(out.read_bytes())
    assert img.header.version_text == "3.2.1" and img.header.board_kind == "bss2-kind-v1"
    assert img.payload == (tmp_path / "payload.bin").read_bytes()
    assert "firmware 3.2.1 for bss2-kind-v1" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_make_image_json(tmp_path, capsys):
    payload = tmp_path / "p.bin"
    payload.write_bytes(b"abc")
    cli(
        [
            "make-image",
            str(payload),
            "--version",
            "1.0.0",
            "--board-kind",
            "emulator",
            "-o",
            str(tmp_path / "i.img"),
            "--json",
        ]
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line) == {
        "image": str(tmp_path / "i.img"),
        "bytes": 51,
        "firmware_version": "1.0.0",
        "board_kind": "emulator",
        "payload_crc": "352441c2",
    }


def test_make_image_errors(tmp_path, capsys):
    payload = tmp_path / "p.bin"
    payload.write_bytes(b"abc")
    out = str(tmp_path / "i.img")
    err = fails(
        ["make-image", str(payload), "--version", "1.2", "--board-kind", "emulator", "-o", out],
        capsys,
    )
    assert "not X.Y.Z" in err
    err = fails(
        ["make-image", str(payload), "--version", "1.2.0", "--board-kind", "a b", "-o", out], capsys
    )
    assert "board kind" in err
    err = fails(
        [
            "make-image",
            str(tmp_path / "missing"),
            "--version",
            "1.2.0",
            "--board-kind",
            "emulator",
            "-o",
            out,
        ],
        capsys,
    )
    assert "cannot read payload" in err
    assert not (tmp_path / "i.img").exists()


@pytest.mark.parametrize(
    "mangle,match",
    [
        (lambda d: d[:-10], "truncated"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 0x80]), "payload corrupted"),
        (lambda d: b"garbage" + d, "not a firmware image"),
    ],
)
def test_bad_image_refused_before_connecting(tmp_path, capsys, mangle, match):
    path = make(tmp_path)
    path.write_bytes(mangle(path.read_bytes()))
    err = fails(["--board", UNREACHABLE, str(path)], capsys)
    assert match in err and "FlashError" in err and str(path) in err


def test_usage_errors(tmp_path, capsys):
    path = make(tmp_path)
    fails(["--board", UNREACHABLE], capsys, status=2)
    fails(["--board", UNREACHABLE, str(path), "--rollback"], capsys, status=2)
    fails(["--board", UNREACHABLE, "--rollback", "--verify-only"], capsys, status=2)
    err = fails(["--board", UNREACHABLE, str(tmp_path / "nope.img")], capsys)
    assert "cannot read image" in err
