"""Decoded traces as arrays, and as dense torch tensors on a time grid.

`EpisodeData` is what an episode block of a Program (hostdriver/program.py) resolves to: its
spikes (absolute and episode-relative time, label, neuron, episode), CADC samples
[episode, sample, 512] with their times, MADC samples [episode, sample]. `spike_tensor(grid)` bins
spikes into [time step, episode, neuron]; `cadc_tensor(grid)` aligns CADC samples to the grid
(linear, previous or nearest). Everything is whole-array numpy; torch is imported only when a
tensor is asked for. A trace that lacks records the program asked for raises BoardError (never a
silently short array).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hostdriver.chip.values import config_error
from protocol.errors import BoardError
from protocol.wire import CADC_CHANNELS, LABEL_MASK, TICKS_PER_US

if TYPE_CHECKING:
    import torch

    from hostdriver.program import EpisodeTicket

__all__ = [
    "CADCData",
    "EpisodeData",
    "MADCData",
    "SpikeData",
    "TimeGrid",
    "label_lookup",
]

N_LABELS = LABEL_MASK + 1


def label_lookup(label_map: Any) -> np.ndarray | None:
    """[16384] int64 label -> index (-1 none) from an array of that shape or a {label: index}
    mapping; None stays None."""
    if label_map is None:
        return None
    if isinstance(label_map, dict):
        out = np.full(N_LABELS, -1, np.int64)
        if label_map:
            keys = np.fromiter(label_map.keys(), np.int64)
            vals = np.fromiter(label_map.values(), np.int64)
            if keys.min() < 0 or keys.max() > LABEL_MASK:
                raise config_error(f"label map keys must be labels 0..{LABEL_MASK}")
            out[keys] = vals
        return out
    arr = np.asarray(label_map)
    if arr.shape != (N_LABELS,) or arr.dtype.kind not in "iu":
        raise config_error(
            f"label map must be an int array of shape ({N_LABELS},) (label -> index, -1 = none), "
            f"got {arr.dtype} {arr.shape}"
        )
    return arr.astype(np.int64)


@dataclass(frozen=True)
class TimeGrid:
    """steps grid points start + k * dt (k = 0..steps-1), in `unit` ("us" or "ticks") relative to
    each episode's start. Spikes are binned into [start + k dt, start + (k+1) dt)."""

    dt: float
    steps: int
    start: float = 0.0
    unit: str = "us"

    def __post_init__(self) -> None:
        if self.unit not in ("us", "ticks"):
            raise config_error(f"TimeGrid unit must be 'us' or 'ticks', got {self.unit!r}")
        if not self.dt > 0 or int(self.steps) < 1:
            raise config_error(f"TimeGrid needs dt > 0 and steps >= 1, got {self.dt}, {self.steps}")

    @property
    def _scale(self) -> float:
        return float(TICKS_PER_US) if self.unit == "us" else 1.0

    @property
    def ticks(self) -> np.ndarray:
        """Grid point times in ticks (float64), relative to the episode start."""
        return (self.start + np.arange(int(self.steps)) * self.dt) * self._scale

    @property
    def us(self) -> np.ndarray:
        return self.ticks / TICKS_PER_US

    def bin(self, rel_ticks: np.ndarray) -> np.ndarray:
        """Step of each relative time (ticks), -1 where it falls outside the grid."""
        k = np.floor((np.asarray(rel_ticks, np.float64) - self.start * self._scale)
                     / (self.dt * self._scale)).astype(np.int64)
        return np.where((k >= 0) & (k < int(self.steps)), k, -1)


@dataclass(frozen=True)
class SpikeData:
    """Spikes in the trace of an episode block, sorted by (episode, time)."""

    time: np.ndarray  # int64 playback ticks (within the block's timer segment)
    label: np.ndarray  # int64 14-bit label
    neuron: np.ndarray  # int64 label_map[label], -1 where unmapped (or no label map)
    episode: np.ndarray  # int64 0..n_episodes-1
    rel_time: np.ndarray  # int64 ticks since the episode's start

    def __len__(self) -> int:
        return int(self.time.size)

    @property
    def rel_time_us(self) -> np.ndarray:
        return self.rel_time / TICKS_PER_US

    def counts(self, n_episodes: int, n: int, *, by: str = "neuron") -> np.ndarray:
        """[n_episodes, n] spike counts per episode and neuron (or label with by="label")."""
        idx = self.neuron if by == "neuron" else self.label
        ok = (idx >= 0) & (idx < n)
        flat = self.episode[ok] * n + idx[ok]
        return np.bincount(flat, minlength=n_episodes * n).reshape(n_episodes, n)


@dataclass(frozen=True)
class CADCData:
    """CADC samples of an episode block: [episode, sample, 512] with times [episode, sample]."""

    samples: np.ndarray  # uint8 [E, S, 512]
    time: np.ndarray  # int64 [E, S] playback ticks
    rel_time: np.ndarray  # int64 [E, S] ticks since the episode start

    @property
    def rel_time_us(self) -> np.ndarray:
        return self.rel_time / TICKS_PER_US


@dataclass(frozen=True)
class MADCData:
    """MADC samples of an episode block: values [episode, sample] (10-bit) and their times."""

    values: np.ndarray  # uint16 [E, M]
    source: np.ndarray  # uint8 [E, M]
    time: np.ndarray  # int64 [E, M]
    rel_time: np.ndarray  # int64 [E, M]

    @property
    def rel_time_us(self) -> np.ndarray:
        return self.rel_time / TICKS_PER_US


def _dense(episode: np.ndarray, n_episodes: int, what: str, expect: int | None) -> np.ndarray:
    """Rank of each record within its episode (records sorted by episode); checks that every
    episode has `expect` records (if given) and the same number otherwise."""
    counts = np.bincount(episode, minlength=n_episodes)
    want = int(counts.max(initial=0)) if expect is None else expect
    if episode.size and np.any(counts != want):
        e = int(np.flatnonzero(counts != want)[0])
        raise BoardError(
            f"trace holds {int(counts[e])} {what} samples for episode {e}, expected {want} "
            f"({int((counts != want).sum())} episodes differ)"
        )
    if expect and not episode.size:
        raise BoardError(f"trace holds no {what} samples, expected {expect} per episode")
    return np.arange(episode.size) - np.repeat(np.cumsum(counts) - counts, counts)


def _cadc_in_order(trace: Any, indices: np.ndarray, s: int, start: np.ndarray) -> CADCData | None:
    """The block's CADCData when the trace holds exactly its s samples per episode, episode by
    episode (by EPISODE index) and in time order within each: the usual layout, taken without
    the general path's sort and checks (which give the same arrays); None otherwise."""
    c = trace.cadc
    n = indices.size
    if s < 1 or c.size != n * s or indices.min(initial=0) < 0 or not (
            c["episode"].reshape(n, s) == indices[:, None]).all():
        return None
    times = c["time"].astype(np.int64).reshape(n, s)
    if s > 1 and not (times[:, 1:] >= times[:, :-1]).all():
        return None
    samples = trace.cadc_samples.reshape(n, s, CADC_CHANNELS).copy()
    return CADCData(samples, times, times - start[:, None])


def _is_range(x: np.ndarray) -> bool:
    """x == x[0] + arange(x.size) (consecutive indices)."""
    return x.size == 0 or bool((np.diff(x) == 1).all())


@dataclass(frozen=True)
class EpisodeData:
    """Everything one episodes() block produced, episodes numbered 0..n_episodes-1."""

    n_episodes: int
    duration: int  # ticks
    start: np.ndarray  # int64 [E] playback time of each EPISODE record
    spikes: SpikeData
    cadc: CADCData | None
    madc: MADCData | None

    @classmethod
    def from_trace(
        cls, trace: Any, ticket: EpisodeTicket, *, label_map: Any = None
    ) -> EpisodeData:
        n = ticket.n_episodes
        lookup = np.full(N_LABELS, -1, np.int64)  # EPISODE index (14 bit) -> episode number
        lookup[ticket.indices] = np.arange(n)

        def number(ep_field: np.ndarray) -> np.ndarray:
            ep = ep_field.astype(np.int64)
            out = lookup[np.minimum(np.maximum(ep, 0), LABEL_MASK)]
            out[ep < 0] = -1
            return out

        recs = trace.episodes
        num = lookup[recs["index"].astype(np.int64)]
        mine = num >= 0
        seen = np.zeros(n, bool)  # n records numbered 0..n-1 are all distinct <=> all seen
        seen[num[mine]] = True
        if int(mine.sum()) != n or not seen.all():
            raise BoardError(
                f"trace holds {int(mine.sum())} EPISODE records of this block's {n} episodes"
            )
        start = np.empty(n, np.int64)
        start[num[mine]] = recs["time"][mine].astype(np.int64)

        # spikes
        sp = trace.spikes
        e = number(sp["episode"])
        sel = np.flatnonzero(e >= 0)
        e = e[sel]
        t = sp["time"][sel].astype(np.int64)
        order = np.lexsort((t, e))
        e, t = e[order], t[order]
        lab = sp["label"][sel][order].astype(np.int64)
        lk = label_lookup(label_map)
        neuron = lk[lab] if lk is not None else np.full(lab.size, -1, np.int64)
        spikes = SpikeData(t, lab, neuron, e, t - start[e])

        cadc = None
        if ticket.cadc is not None:
            cadc = _cadc_in_order(trace, ticket.indices, ticket.cadc[2], start)
        if cadc is None and (ticket.cadc is not None or trace.cadc.size):
            c = trace.cadc
            ce = number(c["episode"])
            csel = np.flatnonzero(ce >= 0)
            ce, ct = ce[csel], c["time"][csel].astype(np.int64)
            order = np.lexsort((ct, ce))
            ce, ct, rows = ce[order], ct[order], csel[order]
            expect = ticket.cadc[2] if ticket.cadc is not None else None
            if expect is not None or ce.size:
                rank = _dense(ce, n, "CADC", expect)
                s = int(expect if expect is not None else rank.max(initial=-1) + 1)
                times = np.zeros((n, s), np.int64)
                times[ce, rank] = ct
                if rows.size == n * s and _is_range(rows) and _is_range(ce * s + rank):
                    # the usual layout (episode by episode, in time order): one plain copy
                    samples = trace.cadc_samples[rows[0]:rows[0] + rows.size].reshape(
                        n, s, CADC_CHANNELS).copy()
                else:
                    samples = np.zeros((n, s, CADC_CHANNELS), np.uint8)
                    samples[ce, rank] = trace.cadc_samples[rows]
                cadc = CADCData(samples, times, times - start[:, None])

        madc = None
        if ticket.madc is not None or trace.madc.size:
            m = trace.madc
            me = number(m["episode"])
            msel = np.flatnonzero(me >= 0)
            me, mt = me[msel], m["time"][msel].astype(np.int64)
            order = np.lexsort((mt, me))
            me, mt, rows = me[order], mt[order], msel[order]
            expect = ticket.madc[1] if ticket.madc is not None else None
            if expect is not None or me.size:
                rank = _dense(me, n, "MADC", expect)
                k = int(expect if expect is not None else rank.max(initial=-1) + 1)
                vals = np.zeros((n, k), np.uint16)
                src = np.zeros((n, k), np.uint8)
                times = np.zeros((n, k), np.int64)
                vals[me, rank] = m["value"][rows]
                src[me, rank] = m["source"][rows]
                times[me, rank] = mt
                madc = MADCData(vals, src, times, times - start[:, None])
        return cls(n, ticket.duration, start, spikes, cadc, madc)

    # ---------------------------------------------------------------- dense tensors
    def spike_array(
        self, grid: TimeGrid, n: int = 512, *, label_map: Any = None, by: str = "neuron",
        binary: bool = False,
    ) -> np.ndarray:
        """float32 [steps, n_episodes, n]: spikes per step, episode and neuron.

        by="neuron" indexes by the neuron the label map gives (label_map here overrides the
        ticket's); by="label" indexes by the raw label. Spikes outside the grid or whose index is
        -1 or >= n are left out. binary=True clips counts to 1.
        """
        if by == "label":
            idx = self.spikes.label
        elif by == "neuron":
            lk = label_lookup(label_map)
            if lk is not None:
                idx = lk[self.spikes.label]
            elif self.spikes.neuron.size and (self.spikes.neuron < 0).all():
                raise config_error(
                    "spike_array by neuron needs a label map (ChipConfig.label_map() or your own "
                    "[16384] label -> index array); none was given to episodes() or here"
                )
            else:
                idx = self.spikes.neuron
        else:
            raise config_error(f"by must be 'neuron' or 'label', got {by!r}")
        steps = int(grid.steps)
        k = grid.bin(self.spikes.rel_time)
        ok = (k >= 0) & (idx >= 0) & (idx < n)
        flat = (k[ok] * self.n_episodes + self.spikes.episode[ok]) * n + idx[ok]
        dense = np.zeros(steps * self.n_episodes * n, np.float32)
        if binary:
            dense[flat] = 1.0
        else:
            np.add.at(dense, flat, 1.0)
        return dense.reshape(steps, self.n_episodes, n)

    def spike_tensor(
        self, grid: TimeGrid, n: int = 512, *, label_map: Any = None, by: str = "neuron",
        binary: bool = False, dtype: Any = None, device: Any = None,
    ) -> torch.Tensor:
        """spike_array as a torch tensor [steps, n_episodes, n] (float32 unless dtype)."""
        import torch

        arr = self.spike_array(grid, n, label_map=label_map, by=by, binary=binary)
        return torch.from_numpy(arr).to(dtype=dtype or torch.float32, device=device)

    def cadc_array(
        self, grid: TimeGrid, *, channels: Any = None, method: str = "linear"
    ) -> np.ndarray:
        """float32 [steps, n_episodes, channels]: CADC values at the grid times.

        method: "linear" interpolates between the two samples around each grid time, "previous"
        holds the last sample at or before it, "nearest" takes the closest. Grid times outside
        the sampled span take the first / last sample. channels: indices (default all 512).
        """
        if self.cadc is None or self.cadc.samples.shape[1] == 0:
            raise config_error("this episode block has no CADC samples (give episodes() a cadc=)")
        if method not in ("linear", "previous", "nearest"):
            raise config_error(f"method must be linear, previous or nearest, got {method!r}")
        samples = self.cadc.samples
        if channels is not None:
            samples = samples[:, :, np.asarray(channels, np.int64)]
        tau = self.cadc.rel_time.astype(np.float64)  # [E, S], ascending per episode
        g = grid.ticks  # [T]
        n_e, n_s = tau.shape
        # per-episode searchsorted in one call: shift each episode's times into its own band
        base = min(float(tau.min()), float(g.min()))
        span = max(float(tau.max()), float(g.max())) - base + 1.0
        band = (np.arange(n_e) * 2.0 * span)[:, None] - base
        flat = (tau + band).reshape(-1)
        q = g[None, :] + band  # [E, T]
        # number of samples at or before each grid time
        hi = np.searchsorted(flat, q.reshape(-1), side="right").reshape(n_e, -1)
        hi = hi - (np.arange(n_e) * n_s)[:, None]
        prev = np.clip(hi - 1, 0, n_s - 1)
        nxt = np.clip(hi, 0, n_s - 1)
        prev, nxt = prev.T, nxt.T  # [T, E]
        by_step = samples.transpose(1, 0, 2)  # [S, E, C] view
        e_idx = np.arange(n_e)[None, :]
        same = bool((tau == tau[:1]).all())  # the usual case: one schedule for every episode

        def gather(j: np.ndarray) -> np.ndarray:  # [T, E] sample index -> [T, E, C] float32
            if same:
                return by_step[j[:, 0]].astype(np.float32)
            return by_step[j, e_idx].astype(np.float32)

        if method == "previous":
            return gather(prev)
        t0 = np.take_along_axis(tau.T, prev, axis=0)  # [T, E]
        t1 = np.take_along_axis(tau.T, nxt, axis=0)
        gt = g[:, None]
        if method == "nearest":
            return gather(np.where(np.abs(gt - t1) < np.abs(gt - t0), nxt, prev))
        width = np.where(t1 > t0, t1 - t0, 1.0)
        w = np.clip((gt - t0) / width, 0.0, 1.0).astype(np.float32)[..., None]
        v0 = gather(prev)
        v1 = gather(nxt)
        v1 -= v0
        v1 *= w
        v0 += v1
        return v0

    def cadc_tensor(
        self, grid: TimeGrid, *, channels: Any = None, method: str = "linear", dtype: Any = None,
        device: Any = None,
    ) -> torch.Tensor:
        """cadc_array as a torch tensor [steps, n_episodes, channels]."""
        import torch

        arr = self.cadc_array(grid, channels=channels, method=method)
        return torch.from_numpy(arr).to(dtype=dtype or torch.float32, device=device)
