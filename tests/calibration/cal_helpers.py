"""Board stand-ins for the calibration tests (imported as a plain module: unique name)."""

from __future__ import annotations

from typing import Any

SEEDS = (1, 2, 3)


class DyingBoard:
    """A real emu:// board whose link goes down (the board is closed) before program n."""

    def __init__(self, board: Any, die_before: int) -> None:
        self._board = board
        self.info = board.info
        self.url = board.url
        self.programs = 0
        self.die_before = die_before

    def run(self, program: Any, *, timeout: float | None = None) -> Any:
        self.programs += 1
        if self.programs >= self.die_before:
            self._board.close()
        return self._board.run(program, timeout=timeout)

    def close(self) -> None:
        self._board.close()

    def __enter__(self) -> DyingBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CountingBoard:
    """Delegates to a board and counts the programs it runs."""

    def __init__(self, board: Any) -> None:
        self._board = board
        self.info = board.info
        self.url = board.url
        self.programs = 0

    def run(self, program: Any, *, timeout: float | None = None) -> Any:
        self.programs += 1
        return self._board.run(program, timeout=timeout)
