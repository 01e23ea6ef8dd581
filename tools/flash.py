"""python -m tools.flash: put a firmware image on a board, safely; or build an image.

  python -m tools.flash --board URL IMAGE [--verify-only] [--json]
  python -m tools.flash --board URL --rollback [--json]
  python -m tools.flash make-image PAYLOAD --version X.Y.Z --board-kind K -o IMAGE

The image is checked (CRC, size, board kind) before anything is written; the board keeps booting
its current image until the new one is written, read back and verified (docs/flash.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

import hostdriver
from hostdriver.atomic import write_atomic
from hostdriver.flash import FlashClient, FlashProgress, FlashResult
from protocol.errors import FlashError
from protocol.firmware_image import FirmwareImage, make_image, parse_image
from tools import _cli


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FlashError(f"cannot read {what} {path}: {exc.strerror}") from None


def load_image(path: str) -> FirmwareImage:
    """The image file, checked before any board is touched."""
    try:
        return parse_image(_read(path, "image"))
    except FlashError as exc:
        raise FlashError(f"{path}: {exc}") from None


class _Bar:
    """One tqdm bar per phase, in bytes, on stderr (hidden with --json or off a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.phase = ""

    def __call__(self, p: FlashProgress) -> None:
        if p.phase != self.phase:
            self.close()
            self.phase = p.phase
            self.bar = tqdm(
                total=p.total,
                desc=p.phase,
                unit="B",
                unit_scale=True,
                file=sys.stderr,
                disable=None if self.enabled else True,
                dynamic_ncols=True,
                leave=False,
            )
        assert self.bar is not None
        self.bar.update(p.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _report(result: FlashResult, verb: str, args: argparse.Namespace) -> int:
    if args.json:
        _cli.emit_json(result.as_json())
    else:
        print(
            f"{verb} slot {result.slot}: {result.bytes} bytes in {result.seconds:.2f} s, "
            f"verified, firmware {result.firmware_version}"
        )
    return _cli.EXIT_OK


def main(args: argparse.Namespace) -> int:
    if args.rollback == bool(args.image):
        _cli.fail("give an IMAGE to flash or --rollback (not both)", _cli.EXIT_USAGE)
    if args.verify_only and args.rollback:
        _cli.fail("--verify-only checks an IMAGE; it does not go with --rollback", _cli.EXIT_USAGE)
    image = load_image(args.image) if args.image else None
    with hostdriver.connect(args.board, timeout=args.timeout) as board:
        client = FlashClient(board)
        if image is None:
            return _report(client.rollback(), "rolled back to", args)
        if args.verify_only:
            return _report(client.verify(image), "board runs the image from", args)
        bar = _Bar(enabled=not args.json)
        try:
            result = client.flash(image, progress=bar, chunk_size=args.chunk)
        finally:
            bar.close()
        return _report(result, "flashed", args)


def make_image_main(args: argparse.Namespace) -> int:
    img = make_image(
        _read(args.payload, "payload"), version=args.version, board_kind=args.board_kind
    )
    _write_atomically(Path(args.output), img.data)
    summary = {
        "image": args.output,
        "bytes": img.header.image_length,
        "firmware_version": img.header.version_text,
        "board_kind": img.header.board_kind,
        "payload_crc": f"{img.header.payload_crc:08x}",
    }
    if args.json:
        _cli.emit_json(summary)
    else:
        print(
            f"wrote {args.output}: {summary['bytes']} bytes, firmware {summary['firmware_version']}"
            f" for {summary['board_kind']}, payload CRC {summary['payload_crc']}"
        )
    return _cli.EXIT_OK


def _write_atomically(path: Path, data: bytes) -> None:
    write_atomic(path, data)


def _make_image_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.flash make-image",
        description="Wrap a payload file into a firmware image (header with version, board "
        "kind, length and CRC-32).",
    )
    p.add_argument("payload", metavar="PAYLOAD", help="payload file (the bitstream)")
    p.add_argument("--version", required=True, metavar="X.Y.Z", help="firmware version")
    p.add_argument(
        "--board-kind",
        required=True,
        metavar="K",
        help='board kind the image is for, as board info reports it (e.g. "emulator")',
    )
    p.add_argument("-o", "--output", required=True, metavar="IMAGE", help="image file to write")
    p.add_argument("--json", action="store_true", help="one JSON object on the last stdout line")
    return p


def _flash_parser() -> argparse.ArgumentParser:
    p = _cli.parser(
        "python -m tools.flash",
        "Flash a firmware image onto a board (inactive slot, read-back verified, then "
        "activated), verify what it runs, or roll back. `python -m tools.flash make-image -h` "
        "builds images.",
    )
    p.add_argument("image", metavar="IMAGE", nargs="?", help="firmware image file")
    p.add_argument(
        "--verify-only",
        action="store_true",
        help="write nothing: check that the board runs exactly IMAGE",
    )
    p.add_argument(
        "--rollback", action="store_true", help="make the board's other valid slot active"
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        metavar="BYTES",
        help="bytes per write packet (default: the board's maximum)",
    )
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["make-image"]:
        return _cli.run(make_image_main, _make_image_parser(), argv[1:])
    return _cli.run(main, _flash_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(cli())
