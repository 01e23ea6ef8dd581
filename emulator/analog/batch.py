"""What the FPGA executor hands the analog core, and what it gets back (docs/interfaces.md).

All times are 8 ns ticks counted from the start of the episode they belong to.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from protocol.addressmap import N_NEURONS
from protocol.errors import ConfigError
from protocol.wire import LABEL_MASK

from . import kernels


def _arr(x: object, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x).reshape(-1), dtype=dtype)


def _range(x: np.ndarray) -> tuple[int, int]:
    """(min, max) of a non-empty int64 array (one compiled pass where numba runs: the
    checks of a batch are ~10 such reductions)."""
    if kernels.AVAILABLE:
        return kernels.int_range(x)
    return int(x.min()), int(x.max())


@dataclass
class EpisodeBatch:
    """Independent episodes simulated together (each starts from the global neuron reset)."""

    n_episodes: int
    duration: np.ndarray  # [E] u64 ticks each episode lasts
    spike_episode: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # [S]
    spike_time: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # [S]
    spike_label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint16))  # [S]
    cadc_episode: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # [C]
    cadc_time: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # [C]
    madc_episode: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # [M]
    madc_time: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # [M]
    noise_key: int = 0  # temporal noise of episode e = f(serial, noise_key, e)
    # optional extension: the e used for noise (default 0..E-1); lets a test run episodes one
    # at a time and still compare with a batch
    episode_ids: np.ndarray | None = None
    # optional extension: readout registers per episode (the executor passes them when they
    # change between the episodes of one batch); None: the register file's current values.
    # They only shape the ADC readout, so changing them neither splits a batch nor recompiles.
    cadc_offset: np.ndarray | None = None  # [E, 512] CADC_OFFSET register words
    madc_config: np.ndarray | None = None  # [E] MADC_CONFIG register word

    def normalised(self) -> EpisodeBatch:
        """Copy with canonical dtypes; raises ConfigError on inconsistent shapes or values."""
        e = int(self.n_episodes)
        if e < 0:
            raise ConfigError(f"n_episodes must be >= 0, got {e}")
        b = EpisodeBatch(
            n_episodes=e,
            duration=_arr(self.duration, np.int64),
            spike_episode=_arr(self.spike_episode, np.int64),
            spike_time=_arr(self.spike_time, np.int64),
            spike_label=_arr(self.spike_label, np.int64),
            cadc_episode=_arr(self.cadc_episode, np.int64),
            cadc_time=_arr(self.cadc_time, np.int64),
            madc_episode=_arr(self.madc_episode, np.int64),
            madc_time=_arr(self.madc_time, np.int64),
            noise_key=int(self.noise_key) & ((1 << 64) - 1),
            episode_ids=None if self.episode_ids is None else _arr(self.episode_ids, np.int64),
            cadc_offset=None if self.cadc_offset is None else np.ascontiguousarray(
                np.asarray(self.cadc_offset, np.uint32).reshape(-1, N_NEURONS)),
            madc_config=None if self.madc_config is None else _arr(self.madc_config, np.int64),
        )
        for name in ("cadc_offset", "madc_config"):
            x = getattr(b, name)
            if x is not None and x.shape[0] != e:
                raise ConfigError(f"{name} has {x.shape[0]} episode rows, expected n_episodes={e}")
        if b.duration.size != e:
            raise ConfigError(f"duration has {b.duration.size} entries, expected n_episodes={e}")
        if b.duration.size and _range(b.duration)[0] < 0:
            raise ConfigError("episode durations must be >= 0 ticks")
        for name, ep, t in (
            ("spike", b.spike_episode, b.spike_time),
            ("cadc", b.cadc_episode, b.cadc_time),
            ("madc", b.madc_episode, b.madc_time),
        ):
            if ep.size != t.size:
                raise ConfigError(f"{name}_episode has {ep.size} entries, {name}_time {t.size}")
            if ep.size == 0:
                continue
            lo, hi = _range(ep)
            if lo < 0 or hi >= e:
                raise ConfigError(f"{name}_episode outside 0..{e - 1}")
            if _range(t)[0] < 0:
                raise ConfigError(f"{name}_time must be >= 0 ticks")
        if b.spike_label.size != b.spike_episode.size:
            raise ConfigError(
                f"spike_label has {b.spike_label.size} entries, spike_episode "
                f"{b.spike_episode.size}"
            )
        lo, hi = _range(b.spike_label) if b.spike_label.size else (0, 0)
        if lo < 0 or hi > LABEL_MASK:
            raise ConfigError(f"spike labels must lie in 0..{LABEL_MASK}")
        return b


@dataclass
class EpisodeResult:
    """Outputs of one AnalogCore.run: recorded events, ADC samples, spike-counter increments."""

    spike_episode: np.ndarray  # [R] i32, events that reached CrossbarOutput.FPGA_RECORD
    spike_time: np.ndarray  # [R] u64 ticks from the episode start; sorted by (episode, time, label)
    spike_label: np.ndarray  # [R] u16
    cadc_samples: np.ndarray  # [C, 512] u8, row i answers request i
    madc_values: np.ndarray  # [M] u16
    spike_counts: np.ndarray  # [512] u32 increments of the per-circuit spike counters
    # AnalogCore.run_deferred: a worker still writes cadc_samples until this future is done
    pending: Future | None = field(default=None, repr=False, compare=False)

    def wait(self) -> None:
        """Return once cadc_samples holds every code (raises what the worker raised)."""
        if self.pending is not None:
            fut, self.pending = self.pending, None
            fut.result()

    @staticmethod
    def empty(n_cadc: int = 0, n_madc: int = 0) -> EpisodeResult:
        return EpisodeResult(
            spike_episode=np.zeros(0, np.int32),
            spike_time=np.zeros(0, np.uint64),
            spike_label=np.zeros(0, np.uint16),
            cadc_samples=np.zeros((n_cadc, N_NEURONS), np.uint8),
            madc_values=np.zeros(n_madc, np.uint16),
            spike_counts=np.zeros(N_NEURONS, np.uint32),
        )
