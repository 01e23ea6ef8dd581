"""Shared CLI plumbing for tools.*: --board/--json flags, one-line errors, progress bars.

Every tool prints human output by default and one JSON object on the last stdout line with
--json; failures exit non-zero with a one-line reason on stderr (exit 2: bad arguments or
configuration, 1: anything else the board or link reported).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from tqdm import tqdm

from hostdriver.url import GRAMMAR
from protocol.errors import ConfigError, StrobeError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class ToolFailure(Exception):
    """A tool's own failure verdict (e.g. corrupted echoes): one line, exit status 1."""


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every board tool shares."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=GRAMMAR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--board", metavar="URL", default=None,
        help="board URL (default: $STROBE_BOARD, else emu://); grammar below",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on the last stdout line")
    p.add_argument(
        "--timeout", type=float, default=2.0, metavar="S",
        help="seconds the board may stay silent before the link counts as dead (default 2)",
    )
    return p


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def fail(message: str, status: int = EXIT_FAILURE) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


def run(main: Callable[[argparse.Namespace], int], p: argparse.ArgumentParser,
        argv: Sequence[str] | None = None) -> int:
    """Parse argv, run main, and turn every expected failure into one line + exit status."""
    args = p.parse_args(argv)
    try:
        return main(args)
    except ConfigError as exc:
        hint = " (board URL grammar: --help)" if "board URL" in str(exc) else ""
        fail(one_line(exc) + hint, EXIT_USAGE)
    except (StrobeError, ToolFailure) as exc:
        fail(f"{type(exc).__name__}: {one_line(exc)}" if isinstance(exc, StrobeError)
             else one_line(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)


def emit_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=False), flush=True)


def progress(total: int, desc: str, *, enabled: bool) -> tqdm:
    """A tqdm bar on stderr; hidden with --json and when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit="msg", file=sys.stderr,
                disable=None if enabled else True, dynamic_ncols=True, leave=False)
