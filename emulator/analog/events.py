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
class StepEvents:
    """Events of one source group in one chunk, sorted by step (stable: input order kept)."""

    group: SourceGroup
    ptr: np.ndarray  # [T+1] event range of each step
    rows: torch.Tensor  # [S] row into group.syn / group.v
    episode: torch.Tensor  # [S] episode row
    max_per_step: int


def step_events(groups: list[SourceGroup], step: np.ndarray, ep: np.ndarray, src: np.ndarray,
                qbin: np.ndarray, t_steps: int) -> list[StepEvents]:
    out = []
    for g in groups:
        gi = g.index[src]
        sel = np.flatnonzero(gi >= 0)
        if sel.size == 0:
            continue
        o = sel[np.argsort(step[sel], kind="stable")]
        st = step[o]
        ptr = np.searchsorted(st, np.arange(t_steps + 1), side="left")
        rows = gi[o] * g.n_bins + qbin[o]
        out.append(StepEvents(g, ptr, torch.from_numpy(rows), torch.from_numpy(ep[o]),
                              int(np.diff(ptr).max())))
    return out
