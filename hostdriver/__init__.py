"""strobe hostdriver layer: connect(url) -> Board, transports, the link driver; ChipConfig,
Program and TimeGrid re-exported (loaded on first use: `import hostdriver` stays light)."""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from hostdriver.board import Board, BoardInfo
from hostdriver.link_driver import LinkDriver
from hostdriver.transports import open_transport
from hostdriver.url import DEFAULT_URL, ENV_VAR, EmuURL, parse_board_url
from protocol.link import DEFAULT_MAX_MESSAGE, Link
from protocol.wire import FRAME_MAX_PAYLOAD

if TYPE_CHECKING:
    from hostdriver.chip import ChipConfig
    from hostdriver.program import Program
    from hostdriver.traces import TimeGrid

__all__ = ["Board", "BoardInfo", "ChipConfig", "LinkDriver", "Program", "TimeGrid", "connect",
           "resolve_url"]
_LAZY = {"ChipConfig": "hostdriver.chip", "Program": "hostdriver.program",
         "TimeGrid": "hostdriver.traces"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hostdriver' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def resolve_url(url: str | None = None) -> str:
    """The board URL to use: `url`, else $STROBE_BOARD, else emu://."""
    if url is None:
        url = os.environ.get(ENV_VAR) or DEFAULT_URL
    return url


def connect(
    url: str | None = None, *, timeout: float = 2.0, max_message: int = DEFAULT_MAX_MESSAGE
) -> Board:
    """Open the board at `url` (None: $STROBE_BOARD or emu://), handshake, return a Board.

    timeout bounds every wait for the board (handshake, replies): a dead link or a silent
    board raises LinkError within it. ConfigError for a malformed URL, BoardError for a
    board that speaks another protocol version. max_message: the largest message (program,
    trace) the link sends or accepts, in bytes (docs/protocol.md, 4.4); a larger trace from the
    board raises LinkError, a larger program ConfigError.
    """
    parsed = parse_board_url(resolve_url(url))
    transport = open_transport(parsed, timeout=timeout)
    try:
        # in-process, a frame costs Python work and no wire time: the board's own fragment
        # size (the wire's largest) both ways; a real link keeps Link's default
        link = Link(max_message=max_message, **(
            {"max_payload": FRAME_MAX_PAYLOAD} if isinstance(parsed, EmuURL) else {}))
        return Board(LinkDriver(transport, timeout=timeout, link=link), str(parsed))
    except BaseException:
        transport.close()
        raise
