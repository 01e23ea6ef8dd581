"""On-chip background spike sources (8): periodic or Poisson, restarted at every episode start.

Periodic source: spikes at period, 2 period, ... ticks after the episode start.
Poisson source: exponential intervals with the given mean (ticks), drawn from a hash of
(seed word, episode id, spike number), so a seed reproduces the same trains in every run.
"""

from __future__ import annotations

import numpy as np

from protocol.addressmap import BackgroundWords
from protocol.errors import ConfigError

from .noise import SALT_BACKGROUND, hash_keys

MAX_EVENTS = 20_000_000


def background_events(words: np.ndarray, durations: np.ndarray, episode_ids: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(source, episode row, time ticks, label) of all background spikes, vectorised per source."""
    out: list[tuple[np.ndarray, ...]] = []
    words = np.asarray(words, np.int64)
    dur = np.asarray(durations, np.int64)
    n_ep = dur.size
    for s in range(words.shape[0]):  # 8 sources
        w0, period, seed = int(words[s, 0]), int(words[s, 1]), int(words[s, 2])
        if not (w0 >> BackgroundWords.ENABLE) & 1 or n_ep == 0:
            continue
        period = max(period, 1)
        label = (w0 >> BackgroundWords.LABEL_SHIFT) & 0x3FFF
        dmax = int(dur.max())
        mean_n = dmax / period
        if (w0 >> BackgroundWords.POISSON) & 1:
            n_max = int(np.ceil(mean_n + 6.0 * np.sqrt(mean_n) + 10))
        else:
            n_max = dmax // period
        if n_max * n_ep > MAX_EVENTS:
            raise ConfigError(
                f"background source {s}: period {period} ticks over {dmax} ticks x {n_ep} "
                f"episodes gives more than {MAX_EVENTS} events"
            )
        if n_max == 0:
            continue
        m = np.arange(1, n_max + 1, dtype=np.int64)
        if (w0 >> BackgroundWords.POISSON) & 1:
            h = hash_keys(SALT_BACKGROUND, seed, episode_ids[:, None], m[None, :])
            uni = ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
            t = np.cumsum(-np.log(uni) * period, axis=1)
            t = np.ceil(t).astype(np.int64)
        else:
            t = np.broadcast_to(m * period, (n_ep, n_max))
        ok = t < dur[:, None]
        ep, idx = np.nonzero(ok)
        out.append((np.full(ep.size, s), ep, t[ep, idx], np.full(ep.size, label)))
    if not out:
        z = np.zeros(0, np.int64)
        return z, z, z, z
    return tuple(np.concatenate(x) for x in zip(*out, strict=True))  # type: ignore[return-value]
