"""The `__main__` of the accuracy benches: a strobe error is one line on stderr and the exit
status of the tools (2 for bad settings, 1 for everything else), not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from protocol.errors import ConfigError, StrobeError


def run(main: Callable[[], Any]) -> None:
    try:
        main()
    except StrobeError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(2 if isinstance(exc, ConfigError) else 1) from None
