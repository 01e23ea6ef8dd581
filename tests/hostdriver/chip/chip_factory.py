"""Test helpers: random valid containers / configs, a board spy that counts what is sent, and an
emulator served over TCP in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from hostdriver.chip import CONTAINERS, ChipConfig
from protocol.instructions import decode_program
from protocol.wire import Instr


def random_container(cls: type, rng: np.random.Generator) -> Any:
    c = cls()
    for name, spec in cls.FIELDS.items():
        if spec.kind is bool:
            v = rng.integers(0, 2, spec.shape).astype(bool)
        elif hasattr(spec.kind, "MIN"):
            v = rng.integers(spec.kind.MIN, min(spec.kind.MAX, 1 << 40) + 1, spec.shape)
        else:
            v = rng.choice([m.value for m in spec.kind], spec.shape)
        setattr(c, name, v)
    return c


def random_config(seed: int) -> ChipConfig:
    rng = np.random.default_rng(seed)
    return ChipConfig(**{name: random_container(cls, rng) for name, cls in CONTAINERS.items()})


class SpyBoard:
    """Forwards to a real board and records every program it runs (decoded)."""

    def __init__(self, board: Any, fail_next: BaseException | None = None) -> None:
        self.board = board
        self.programs: list[np.ndarray] = []
        self.fail_next = fail_next

    def run(self, program: np.ndarray, *, timeout: float | None = None) -> Any:
        self.programs.append(decode_program(np.asarray(program, np.uint64).tobytes()))
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return self.board.run(program, timeout=timeout)

    def data_words(self, i: int = -1) -> int:
        """Register words written by program i (DATA words)."""
        return int((self.programs[i]["op"] == Instr.DATA).sum())


@contextmanager
def tcp_emulator(seed: int = 1) -> Iterator[str]:
    """`python -m tools.emulator serve` on a free port; yields its tcp:// URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.emulator", "serve", "--seed", str(seed)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("tcp://"), url
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
