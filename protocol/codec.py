"""Shared core of the vectorised word codecs: bytes -> u64 views and first-error reporting.

Instruction programs (protocol/instructions.py) and traces (protocol/records.py) are streams
of little-endian u64 words, decoded with whole-array numpy operations (a well-formed trace by
two compiled passes, LazyJit, where numba works). Errors are collected per check and the one at
the lowest word offset is raised, so the report names the first bad word a sequential decoder
would have stopped at.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from protocol.errors import DecodeError

U64 = np.uint64


def as_bytes_array(data, what: str) -> np.ndarray:
    """Zero-copy uint8 view of bytes-like (or numpy) `data`; DecodeError unless whole words."""
    if isinstance(data, np.ndarray):
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:
        raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size % 8:
        raise DecodeError(
            f"{what} length is not a whole number of 64-bit words",
            offset=raw.size // 8,
            expected="multiple of 8 bytes",
            got=raw.size,
            unit="word",
        )
    return raw


def as_words(data, what: str) -> np.ndarray:
    """Zero-copy little-endian u64 view of `data` (see as_bytes_array)."""
    return as_bytes_array(data, what).view("<u8")


class FirstError:
    """Collects candidate errors; raise_first() raises the one at the lowest word offset."""

    def __init__(self) -> None:
        self.best: tuple[int, str, object, object] | None = None

    def add(self, where: np.ndarray, msg: str, expected: object,
            got: Callable[[int], object]) -> None:
        """where: boolean mask over words, or ascending word offsets."""
        idx = np.flatnonzero(where) if where.dtype == bool else where
        if idx.size == 0:
            return
        i = int(idx[0])
        if self.best is None or i < self.best[0]:
            self.best = (i, msg, expected, got(i))

    def raise_first(self) -> None:
        if self.best is not None:
            i, msg, expected, got = self.best
            raise DecodeError(msg, offset=i, expected=expected, got=got, unit="word")


def hex_word(words: np.ndarray) -> Callable[[int], str]:
    return lambda i: "end of stream" if i >= words.size else f"0x{int(words[i]):016x}"


def words_to_bytes(words) -> bytes:
    """Wire bytes of a word stream: little-endian u64."""
    return np.asarray(words, dtype=U64).astype("<u8", copy=False).tobytes()


#: numba is installed: the compiled passes of the codecs (records, hostdriver.program) run
#: where it also imports (numba_works)
NUMBA = importlib.util.find_spec("numba") is not None
_numba_imports: bool | None = None


def numba_works() -> bool:
    """Whether numba imports, tried once, at the first compiled call: an installed numba that
    fails to import (e.g. next to a numpy newer than it supports) leaves the numpy twins in
    charge instead of failing every decode."""
    global _numba_imports
    if _numba_imports is None:
        try:
            import numba  # noqa: F401
        except Exception:  # noqa: BLE001 - any import failure means: no compiled passes
            _numba_imports = False
        else:
            _numba_imports = True
    return _numba_imports


class LazyJit:
    """A numba kernel compiled (or loaded from numba's on-disk cache) at its first call, so
    that importing the codecs does not import numba (~0.3 s) before a kernel is needed."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.py_func = fn
        self._compiled: Callable[..., Any] | None = None
        self.__doc__ = fn.__doc__

    def __call__(self, *args: Any) -> Any:
        kernel = self._compiled
        if kernel is None:
            from numba import njit

            kernel = self._compiled = njit(cache=True, nogil=True, boundscheck=False)(
                self.py_func)
        return kernel(*args)
