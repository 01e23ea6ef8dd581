"""Temporal noise as a pure function of (serial, noise_key, episode, step, channel).

Drawing fresh Gaussians per neuron and step costs more than the whole integration, so each chip
holds one table of 2**20 standard normals (drawn from its serial) and a noise value is a table
entry at a position hashed from (noise_key, episode, step) plus the channel index. The same
episode therefore sees the same noise whether it runs alone or in a batch of thousands, and
different episodes / steps / runs see uncorrelated slices of the table.
"""

from __future__ import annotations

import numpy as np
import torch

from . import kernels
from .mismatch import _rng

TABLE_BITS = 20
TABLE_SIZE = 1 << TABLE_BITS
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)

# salts separating the noise streams
SALT_MEMBRANE = 0x6D656D62
SALT_CADC = 0x63616463
SALT_MADC = 0x6D616463
SALT_BACKGROUND = 0x626B6764
_SHIFT = np.uint64(64 - TABLE_BITS)
_PREFIX_CACHE = 256  # (salt, key) prefixes a table keeps (one batch uses 2-3)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 finaliser (uint64 -> well-mixed uint64)."""
    z = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_keys(*parts: np.ndarray | int) -> np.ndarray:
    """Hash of several integer arrays (broadcast together), order-sensitive."""
    h = np.uint64(0x243F6A8885A308D3)
    with np.errstate(over="ignore"):
        for p in parts:
            h = splitmix64(np.asarray(h, np.uint64) ^ (np.asarray(p, np.int64).astype(np.uint64)
                                                        & _M64))
    return np.asarray(h, np.uint64)


class NoiseTable:
    """One chip's table of standard normals plus channel-contiguous lookups."""

    def __init__(self, serial: int, width: int = 1024) -> None:
        self.serial = int(serial)
        self.width = width
        t = _rng(self.serial, "temporal_noise_table").standard_normal(TABLE_SIZE + width)
        self.table = torch.from_numpy(t.astype(np.float32))
        self._prefix: dict[tuple[int, int], np.uint64] = {}

    def offsets(self, salt: int, key: int, *index: np.ndarray) -> np.ndarray:
        """Table start per index tuple (int64, in 0..TABLE_SIZE-1). With numba: the hash of
        (serial, salt, key) once per (salt, key), the index arrays in one compiled pass (the
        same values as hash_keys, without its ~20 numpy temporaries per index array)."""
        if not kernels.AVAILABLE or not index:
            h = hash_keys(self.serial, salt, key, *index)
            return (h >> _SHIFT).astype(np.int64)
        arrs = [np.asarray(p, np.int64) for p in index]
        shape = arrs[0].shape
        if any(a.shape != shape for a in arrs):
            arrs = np.broadcast_arrays(*arrs)
            shape = arrs[0].shape
        parts = np.stack([a.reshape(-1) for a in arrs])
        return kernels.hash_offsets(self._prefix_of(salt, key), parts, _SHIFT).reshape(shape)

    def step_offsets(self, salt: int, key: int, episodes: np.ndarray, n_steps: int
                     ) -> np.ndarray:
        """[n_steps, E] table starts per (step, episode): offsets(salt, key,
        episodes[None, :], arange(n_steps)[:, None]), each episode's partial hash once."""
        ep = np.ascontiguousarray(episodes, np.int64).reshape(-1)
        if not kernels.AVAILABLE:
            return self.offsets(salt, key, ep[None, :], np.arange(n_steps)[:, None])
        return kernels.hash_grid(self._prefix_of(salt, key), ep, int(n_steps), _SHIFT)

    def _prefix_of(self, salt: int, key: int) -> np.uint64:
        """hash_keys(serial, salt, key), cached (a batch asks for the same 2-3)."""
        ck = (int(salt), int(key))
        prefix = self._prefix.get(ck)
        if prefix is None:
            if len(self._prefix) >= _PREFIX_CACHE:
                self._prefix.clear()
            prefix = np.uint64(hash_keys(self.serial, salt, key))
            self._prefix[ck] = prefix
        return prefix

    def windows(self, width: int) -> torch.Tensor:
        """[TABLE_SIZE, width] view: row i is table[i : i + width] (no copy)."""
        return self.table.unfold(0, width, 1)

    def rows(self, start: np.ndarray, channels: np.ndarray) -> torch.Tensor:
        """table[start[..., None] + channels]: shape start.shape + (len(channels),)."""
        idx = torch.from_numpy(np.asarray(start, np.int64))[..., None] + torch.from_numpy(
            np.asarray(channels, np.int64))
        return self.table[idx]
