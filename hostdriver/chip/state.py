"""What the host believes each board's chip configuration is, per Board object.

ChipConfig.write() diffs against this belief so only changed words cross the wire. The belief is
updated by every successful hostdriver.program.Program run (its config writes, chip resets and
config reads) and dropped when a run fails (the board's state is then unknown). Raw
``board.run(words)`` / ``board.write(...)`` bypass it: call ``forget(board)`` after those.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ChipConfig

__all__ = ["believed", "forget", "remember"]

_beliefs: weakref.WeakKeyDictionary[Any, ChipConfig] = weakref.WeakKeyDictionary()
_ATTR = "_strobe_believed_chip_config"  # fallback for boards that cannot be weakly referenced


def believed(board: Any) -> ChipConfig | None:
    """A copy of the config the host believes board holds, or None if unknown."""
    try:
        cfg = _beliefs.get(board)
    except TypeError:
        cfg = getattr(board, _ATTR, None)
    return None if cfg is None else cfg.copy()


def remember(board: Any, config: ChipConfig) -> None:
    """Record that board now holds config (a copy is kept)."""
    cfg = config.copy()
    try:
        _beliefs[board] = cfg
    except TypeError:
        setattr(board, _ATTR, cfg)


def forget(board: Any) -> None:
    """The board's config is unknown from now on (next write() writes every word)."""
    try:
        _beliefs.pop(board, None)
    except TypeError:
        if hasattr(board, _ATTR):
            delattr(board, _ATTR)
