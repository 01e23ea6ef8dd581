"""Input events -> per-step slot jumps, as gathers from pre-multiplied source tables.

An event from source u arriving in step k, q ticks before the step end, adds
w[u] * F_I[q] to the slot currents and sum_s w[u, s] * F_V[q, s] to the membrane (params.py).
q is resolved in bins of SUBSTEP_TICKS (bin centre), so per source the jumps of every bin can be
multiplied out once: an event then costs one row gather and one index_add.

Sources are grouped by the contiguous range of slot blocks (top exc, top inh, bottom exc,
bottom inh) they reach, so an input into one hemisphere touches 2 of the 4 blocks only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SUBSTEP_TICKS = 8


def n_bins(dt_ticks: int) -> int:
    return -(-dt_ticks // SUBSTEP_TICKS)


def bin_centres(dt_ticks: int) -> np.ndarray:
    """Centre (ticks before the step end) of each sub-step bin; bin b holds q in
    [b*SUBSTEP_TICKS + 1, min((b+1)*SUBSTEP_TICKS, dt)]."""
    lo = np.arange(n_bins(dt_ticks)) * SUBSTEP_TICKS + 1
    hi = np.minimum(lo + SUBSTEP_TICKS - 1, dt_ticks)
    return (lo + hi) / 2.0


def arrival(ticks: torch.Tensor, delay_ticks: int, dt_ticks: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(arrival step k, sub-step bin) of events emitted at integer tick times."""
    arr = ticks + delay_ticks
    step = torch.div(arr, dt_ticks, rounding_mode="floor")
    q = (step + 1) * dt_ticks - arr  # 1..dt ticks before the end of step k
    return step, torch.div(q - 1, SUBSTEP_TICKS, rounding_mode="floor")


def arrival_np(ticks: np.ndarray, delay_ticks: int, dt_ticks: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """arrival() on int64 numpy arrays (the same integers, without torch's per-op overhead)."""
    arr = np.asarray(ticks, np.int64) + delay_ticks
    step = arr // dt_ticks
    return step, ((step + 1) * dt_ticks - arr - 1) // SUBSTEP_TICKS


def slot_sum(x: torch.Tensor) -> torch.Tensor:
    """x[..., B, N] -> sum over the B slot blocks, always left to right."""
    out = x[..., 0, :]
    for b in range(1, x.shape[-2]):
        out = out + x[..., b, :]
    return out


def event_jumps(w: torch.Tensor, f_i: torch.Tensor, f_v: torch.Tensor, src: torch.Tensor,
                qbin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot and membrane jumps [S, B, N], [S, N] of events from rows src in bins qbin."""
    ws = w[src]
    return ws * f_i[qbin], slot_sum(ws * f_v[qbin])


@dataclass
class SourceGroup:
    """Sources reaching slot blocks b0..b1-1, jumps pre-multiplied for every sub-step bin."""

    b0: int
    b1: int
    index: np.ndarray  # [P] group-local index of each source, -1 if not in this group
    syn: torch.Tensor  # [b1-b0, P_g * Q, N] (block-major: each block's rows contiguous)
    v: torch.Tensor  # [P_g * Q, N]
    n_bins: int


def block_range(w_global: torch.Tensor) -> np.ndarray:
    """[P, 2] (first, last+1) nonzero slot block of each source; (0, 0) for none."""
    nz = (w_global != 0).any(-1).numpy()  # [P, 4]
    has = nz.any(1)
    first = np.where(has, nz.argmax(1), 0)
    last = np.where(has, 4 - nz[:, ::-1].argmax(1), 0)
    return np.stack([first, last], 1)


def source_groups(w: torch.Tensor, f_i: torch.Tensor, f_v: torch.Tensor,
                  ranges: np.ndarray) -> list[SourceGroup]:
    """Group sources by block range (from the global matrix, so every layer groups alike)."""
    groups = []
    q = f_i.shape[0]
    for b0, b1 in sorted({tuple(r) for r in ranges.tolist() if r[1] > r[0]}):
        members = np.flatnonzero((ranges[:, 0] == b0) & (ranges[:, 1] == b1))
        wg = w[torch.from_numpy(members), b0:b1]  # [P_g, B, N]
        if not bool((wg != 0).any()):
            continue
        syn = wg[:, None] * f_i[None, :, b0:b1]  # [P_g, Q, B, N]
        v = slot_sum(wg[:, None] * f_v[None, :, b0:b1])  # [P_g, Q, N]
        index = np.full(ranges.shape[0], -1, np.int64)
        index[members] = np.arange(members.size)
        syn = syn.reshape(-1, b1 - b0, w.shape[-1]).transpose(0, 1).contiguous()
        groups.append(SourceGroup(int(b0), int(b1), index, syn, v.reshape(-1, w.shape[-1]), q))
    return groups


@dataclass
class DenseJumps:
    """Arrivals of one chunk summed per (step, episode) over the steps k0..k1-1 that have any."""

    k0: int
    syn: torch.Tensor  # [4, k1-k0, E, N] phi-scaled slot jumps at the end of each step
    v: torch.Tensor  # [k1-k0, E, N] membrane jumps at the end of each step

    @property
    def k1(self) -> int:
        return self.k0 + self.v.shape[0]


BLOCK_EVENTS = 4096  # events gathered per pass (bounds the temporary)


def dense_jumps(groups: list[SourceGroup], step: np.ndarray, ep: np.ndarray, src: np.ndarray,
                qbin: np.ndarray, n_ep: int, n: int) -> DenseJumps | None:
    """Sum every event's pre-multiplied jumps into its (step, episode) row. Events are added in
    input order (stable), so an episode gets the same sums in any batch."""
    sel = [np.flatnonzero(g.index[src] >= 0) for g in groups]
    if not any(s.size for s in sel):
        return None
    used = np.concatenate(sel)
    k0, k1 = int(step[used].min()), int(step[used].max()) + 1
    syn = torch.zeros(4, (k1 - k0) * n_ep, n)
    v = torch.zeros((k1 - k0) * n_ep, n)
    buf = torch.empty(min(BLOCK_EVENTS, used.size), n)
    for g, s in zip(groups, sel, strict=True):
        dst_all = (step[s] - k0) * n_ep + ep[s]
        o = np.argsort(dst_all, kind="stable")  # rows in memory order; same-row events keep
        s, dst_all = s[o], dst_all[o]  # their input order
        rows_all = g.index[src[s]] * g.n_bins + qbin[s]
        for c0 in range(0, s.size, BLOCK_EVENTS):
            dst = torch.from_numpy(dst_all[c0:c0 + BLOCK_EVENTS])
            rows = torch.from_numpy(rows_all[c0:c0 + BLOCK_EVENTS])
            b = buf[:rows.numel()]
            v.index_add_(0, dst, torch.index_select(g.v, 0, rows, out=b))
            for blk in range(g.b1 - g.b0):
                syn[g.b0 + blk].index_add_(0, dst, torch.index_select(g.syn[blk], 0, rows, out=b))
    return DenseJumps(k0, syn.view(4, k1 - k0, n_ep, n), v.view(k1 - k0, n_ep, n))


def subset_jumps(j: DenseJumps | None, idx: torch.Tensor) -> DenseJumps | None:
    return None if j is None else DenseJumps(j.k0, j.syn[..., idx], j.v[..., idx])
