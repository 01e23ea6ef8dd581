"""python -m tools.info --board URL [--json]: connect, handshake, print what the board is."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import hostdriver
from tools import _cli


def main(args: argparse.Namespace) -> int:
    with hostdriver.connect(args.board, timeout=args.timeout) as board:
        info = board.info.as_dict()
    if args.json:
        _cli.emit_json(info)
        return _cli.EXIT_OK
    rows = [
        ("board", info["url"]),
        ("kind", info["board_kind"]),
        ("serial", info["serial_hex"]),
        ("firmware", info["firmware"]),
        ("chip id", f"0x{info['chip_id']:08X}"),
        ("protocol", str(info["protocol_version"])),
    ]
    for name, value in rows:
        print(f"{name:<9} {value}")
    return _cli.EXIT_OK


def cli(argv: Sequence[str] | None = None) -> int:
    p = _cli.parser("python -m tools.info", "Connect to a board and print what it reports.")
    return _cli.run(main, p, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
