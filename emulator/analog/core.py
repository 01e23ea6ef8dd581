"""AnalogCore: the chip's analog side, called once per program with all its episodes."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from protocol.addressmap import N_NEURONS, Block, CrossbarInput, ReadoutSource
from protocol.errors import ConfigError
from protocol.wire import LABEL_MASK

from . import fast, kernels
from . import readout as ro
from .background import background_events
from .batch import EpisodeBatch, EpisodeResult
from .compiled import (
    ADAPT_READOUT_MV_PER_NA,
    READOUT_BASE_MV,
    SYN_READOUT_MV_PER_NA,
    CompiledChip,
    SimConfig,
    compile_chip,
    with_noise,
)
from .events import arrival_np, block_range, dense_jumps, event_jumps, source_groups
from .fast import EventStream, LayerSources
from .mismatch import ChipMismatch, MismatchConfig
from .noise import SALT_CADC, SALT_MADC, SALT_MEMBRANE, NoiseTable
from .params import TorchParams, slot_major
from .simulate import (
    LayerOut,
    Recurrence,
    add_blocks,
    lif_spikes,
    run_layer,
)

MADC_NEURON_MASK = 0x1FF
# no splitting for the workers below this (~450 PNAS episodes): on the shared 2-core machine a
# second worker gained nothing at 256 or 1024 episodes (its core is rarely free) and its chunk
# costs thread hand-offs and ~2 ms of Python
MIN_CHUNK_ELEMENTS = 1 << 22
MADC_SOURCE_SHIFT = 9
# the register blocks compile_chip reads (every other block is readout or FPGA state)
_COMPILED_BLOCKS = [int(x) for x in (Block.CAPMEM_NEURON, Block.CAPMEM_GLOBAL,
                                     Block.NEURON_CONFIG, Block.SYNAPSE, Block.DRIVER,
                                     Block.CROSSBAR, Block.BACKGROUND)]


@dataclass
class _Model:
    version: int
    chip: CompiledChip
    params: TorchParams
    layers: list[torch.Tensor] | None  # neuron indices per layer; None: recurrent (general)
    layer_params: list[TorchParams]
    has_rec: bool  # any on-chip event reaches a synapse
    fpga_cache: dict[int, tuple[torch.Tensor, bool]]
    # per-model facts every run asks (each a torch reduction: computed once, not per batch)
    layer_adex: list[bool]  # per layer: has AdEx neurons
    layer_rec: list[bool]  # per layer: gets on-chip input
    noisy: bool  # temporal membrane noise on
    membrane_readout: bool  # every CADC channel reads a membrane
    readout_sources: frozenset  # the ReadoutSource values the CADC channels read


@dataclass
class _Sources:
    """Input sources of a batch (FPGA labels, background pairs): slot jumps [P, 4, N] and, as the
    chosen path needs them, the reference's source groups ([general] + one list per layer) or
    the kernels' per-layer tables."""

    w: torch.Tensor
    ranges: np.ndarray  # [P, 2] block range per source (events.block_range)
    rank: np.ndarray  # [P] group rank (fast.group_rank)
    record: np.ndarray  # [P] bool: the source's events reach FPGA_RECORD
    groups: list[list] | None = None
    layers: list[LayerSources] | None = None


@dataclass
class _Grid:
    """State grids of one simulated set of neurons (a layer, or all of them)."""

    idx: torch.Tensor  # [N_l] global neuron indices
    v: torch.Tensor | None  # [T+1, E, N_l] membrane after resets (None: see _cadc_plan)
    syn: torch.Tensor | None  # [T+1, 4, E, N_l] phi-scaled slot currents, if read out
    adapt: torch.Tensor | None  # [T+1, E, N_l] adaptation current, if read out


def usable_workers(requested: int, running: int = 1) -> int:
    """Worker threads worth using now: at most the cores the host's load leaves free, at least
    1. The load (1-minute average) counts this process's own threads too: `running`, the
    workers of its last run, are added back. On a busy host a second worker only shares the
    calling thread's core: measured on the shared 2-core VM with both cores taken, 2 workers
    cost ~10 % more CPU and wall time than 1."""
    if requested <= 1:
        return 1
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not available on this platform: trust the request
        return requested
    free = (os.cpu_count() or 1) - load + running
    return max(1, min(requested, int(free + 0.5)))


def feedforward_layers(p: TorchParams) -> list[torch.Tensor] | None:
    """Topological layers of the on-chip connectivity (edges from firing neurons only), or None
    if it has a cycle. Layer 0 gets no on-chip input; layer i only from layers < i."""
    adj = (p.rec.abs().sum(1) > 0) & p.fire[:, None]  # [src, dst]
    n = adj.shape[0]
    indeg = adj.sum(0).to(torch.int64)
    done = torch.zeros(n, dtype=torch.bool)
    layers = []
    while not bool(done.all()):
        ready = (indeg == 0) & ~done
        if not bool(ready.any()):
            return None
        idx = torch.nonzero(ready, as_tuple=True)[0]
        layers.append(idx)
        done[idx] = True
        indeg -= adj[idx].sum(0).to(torch.int64)
    return layers


class AnalogCore:
    """Simulates episodes of the analog core of chip `serial` configured by `regs`.

    serial: seeds every fixed-pattern and temporal noise source (one serial = one chip).
    regs: a RegisterFile (docs/interfaces.md attribute names); compiled again when its
    `version` changes. mismatch: spreads (default: CHIP.md's); sim: integration settings.
    """

    def __init__(self, serial: int, regs: object, mismatch: MismatchConfig | None = None,
                 sim: SimConfig | None = None) -> None:
        self.serial = int(serial)
        self.regs = regs
        self.config = mismatch or MismatchConfig()
        self.sim = sim or SimConfig()
        self.mismatch = ChipMismatch.draw(self.serial, self.config)
        self.noise = NoiseTable(self.serial)
        self._model: _Model | None = None
        self._versions: dict[tuple, int] = {}
        self._group_cache: tuple | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._executor_workers = 0
        self._workers_used = 1  # workers of the last run (their load is ours: usable_workers)
        self.force_general = False  # tests: never take the layered path
        self.capture: list | None = None  # tests: a list collects (episodes, grids, spikes)

    def _pool(self, workers: int) -> ThreadPoolExecutor:
        """Threads for independent chunks (torch ops release the GIL)."""
        if self._executor is None or self._executor_workers != workers:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="analog")
            self._executor_workers = workers
        return self._executor

    # ------------------------------------------------------------------ compile
    def _model_version(self) -> int:
        """Changes whenever a register the model is compiled from changes: with per-block
        versions, the compiled blocks' only (readout registers: CADC offsets, MADC config are
        read at readout time and never recompile); else the register file's `version`."""
        bv = getattr(self.regs, "block_versions", None)
        if bv is None:
            return int(getattr(self.regs, "version", -1))
        v = np.asarray(bv, np.int64)[_COMPILED_BLOCKS]
        key = (v.tobytes(),)
        if key not in self._versions:
            self._versions[key] = len(self._versions)
        return self._versions[key]

    def model(self) -> _Model:
        ver = self._model_version()
        if self._model is None or ver < 0 or self._model.version != ver:
            chip = with_noise(compile_chip(self.regs, self.mismatch, self.sim),
                              self.config.membrane_noise_mv)
            params = TorchParams.build(chip)
            layers = feedforward_layers(params)
            lp = [] if layers is None else [params.subset(ix) for ix in layers]
            has_rec = bool((params.rec != 0).any())
            self._model = _Model(
                ver, chip, params, layers, lp, has_rec, {}, [x.has_adex for x in lp],
                [bool((x.rec != 0).any()) for x in lp], float(params.noise_step.abs().max()) > 0,
                bool((chip.readout_source == int(ReadoutSource.MEMBRANE)).all()),
                frozenset(np.unique(chip.readout_source).tolist()))
        return self._model

    def _fpga_rows(self, m: _Model, labels: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Slot jumps [U, 4, N] and record flags of the unique FPGA labels (cached per model)."""
        new = [int(x) for x in labels if int(x) not in m.fpga_cache]
        if new:
            cur, rec = m.chip.router.route(np.full(len(new), int(CrossbarInput.FPGA)),
                                           np.asarray(new))
            rows = slot_major(m.chip.slot_matrix(cur), m.chip.n)
            for i, lab in enumerate(new):
                m.fpga_cache[lab] = (rows[i], bool(rec[i]))
        if labels.size == 0:
            return torch.zeros(0, 4, m.chip.n), np.zeros(0, bool)
        rows = torch.stack([m.fpga_cache[int(x)][0] for x in labels])
        return rows, np.array([m.fpga_cache[int(x)][1] for x in labels])

    # ------------------------------------------------------------------ run
    def run(self, batch: EpisodeBatch) -> EpisodeResult:
        """Simulate all episodes of `batch` (results identical to one episode at a time)."""
        return self._run_threads(batch, False)

    def run_deferred(self, batch: EpisodeBatch) -> EpisodeResult:
        """run(), but where a worker thread is free the CADC codes (the last step, ~1.6 ms for
        5 k requests) are still being written by it when this returns: the caller does its
        own work meanwhile and calls result.wait() before it reads result.cadc_samples (the
        same values as run())."""
        return self._run_threads(batch, True)

    def _run_threads(self, batch: EpisodeBatch, defer: bool) -> EpisodeResult:
        threads = self.sim.threads
        if threads is None or threads == torch.get_num_threads():
            return self._run(batch, defer)
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return self._run(batch, defer)
        finally:
            torch.set_num_threads(old)

    def _run(self, batch: EpisodeBatch, defer: bool = False) -> EpisodeResult:
        ids = batch.episode_ids
        b = batch.normalised()
        n_ep = b.n_episodes
        ids = np.arange(n_ep, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        if ids.shape != (n_ep,):
            raise ConfigError(f"episode_ids must have n_episodes={n_ep} entries")
        if n_ep == 0:
            return EpisodeResult.empty(b.cadc_time.size, b.madc_time.size)
        m = self.model()
        chip = m.chip

        # input events: FPGA spikes and background sources (source = unique label / pair)
        uniq, inv = _unique_labels(b.spike_label)
        bs, bep, bt, blab = background_events(chip.background, b.duration, ids)
        pairs = np.zeros((0, 2), np.int64)
        binv = np.zeros(0, np.int64)
        if bs.size:
            pairs, binv = np.unique(np.stack([bs, blab], 1), axis=0, return_inverse=True)
            binv = binv.reshape(-1)
        groups = self._sources(m, uniq, pairs)
        sel = groups.record[inv]
        brec = groups.record[uniq.size + binv]
        ev = (np.concatenate([inv, binv + uniq.size]), np.concatenate([b.spike_episode, bep]),
              np.concatenate([b.spike_time, bt]))
        rec_ep = [b.spike_episode[sel], bep[brec]]
        rec_t = [b.spike_time[sel], bt[brec]]
        rec_lab = [b.spike_label[sel], blab[brec]]

        cadc = np.empty((b.cadc_time.size, N_NEURONS), np.uint8)  # every row gets written
        madc = np.zeros(b.madc_time.size, np.uint16)
        counts = np.zeros(N_NEURONS, np.int64)
        spk_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

        # episodes in chunks (similar durations together) that bound memory
        dt = chip.sim.dt_ticks
        t_all = b.duration // dt + 1
        order = np.argsort(t_all, kind="stable")
        if self._kernel_layers(m):  # the kernels keep the V (and syn) grid only
            per_ep = (t_all[order] + 1) * chip.n * (1 + 4 * self._needs(m, b)[0])
        else:  # dense jumps, state and grids
            per_ep = np.maximum(t_all[order], 1) * (chip.k + chip.n)
        workers = max(1, int(self.sim.workers))
        if self.sim.adapt_workers:
            workers = usable_workers(workers, self._workers_used)
        self._workers_used = workers
        # one chunk per worker where that pays (each chunk costs ~2 ms of Python), none above
        # the memory budget
        budget = min(max(self.sim.chunk_elements, 1),
                     max(int(per_ep.sum()) // workers + 1, MIN_CHUNK_ELEMENTS))
        chunks, start = [], 0
        while start < n_ep:
            # grow the chunk while (size) * (its largest per-episode cost) fits: per_ep is
            # sorted, so that product only grows and the fitting sizes are a prefix
            fits = np.arange(1, n_ep - start + 1) * per_ep[start:] <= budget
            stop = start + max(1, int(np.argmin(fits)) if not fits.all() else fits.size)
            chunks.append(np.sort(order[start:stop]))
            start = stop

        # one chunk: its kernels split the episodes over the workers instead (one pool, never
        # both levels: a pool thread waiting on its own pool would deadlock)
        inner = workers if len(chunks) == 1 else 1

        # the CADC codes of a single chunk may be left to a worker (run_deferred)
        pending: list = [] if defer and inner > 1 else None

        def job(sel_ep: np.ndarray) -> tuple[np.ndarray, list]:
            c_counts = np.zeros(N_NEURONS, np.int64)
            c_parts: list = []
            self._run_chunk(m, b, ids, sel_ep, int(t_all[sel_ep].max()), groups, ev, cadc, madc,
                            c_counts, c_parts, inner, pending)
            return c_counts, c_parts

        if workers > 1 and len(chunks) > 1:  # the calling thread takes the first chunk
            rest = [self._pool(workers - 1).submit(job, c) for c in chunks[1:]]
            outs = [job(chunks[0])] + [f.result() for f in rest]
        else:
            outs = [job(c) for c in chunks]
        for c_counts, c_parts in outs:  # chunk order: deterministic
            counts += c_counts
            spk_parts.extend(c_parts)

        for e_, t_, l_ in spk_parts:
            rec_ep.append(e_)
            rec_t.append(t_)
            rec_lab.append(l_)
        r_ep = np.concatenate(rec_ep).astype(np.int64)
        r_t = np.concatenate(rec_t).astype(np.int64)
        r_l = np.concatenate(rec_lab).astype(np.int64)
        o = _event_order(r_ep, r_t, r_l)
        return EpisodeResult(
            spike_episode=r_ep[o].astype(np.int32),
            spike_time=r_t[o].astype(np.uint64),
            spike_label=r_l[o].astype(np.uint16),
            cadc_samples=cadc,
            madc_values=madc,
            spike_counts=counts.astype(np.uint32),
            pending=pending[0] if pending else None,
        )

    @property
    def workers_used(self) -> int:
        """Worker threads of the last run (more than 1: the host had a core free for them)."""
        return self._workers_used

    @property
    def use_kernels(self) -> bool:
        """Whether runs take the compiled kernels (numba installed, SimConfig.kernels)."""
        return kernels.AVAILABLE and self.sim.kernels

    def _kernel_layers(self, m: _Model) -> bool:
        return self.use_kernels and m.layers is not None and not self.force_general

    def _sources(self, m: _Model, uniq: np.ndarray, pairs: np.ndarray) -> _Sources:
        """Jump tables of the batch's sources (FPGA labels uniq, background (source, label)
        pairs), cached per register version and source set, built for the path(s) this run
        takes before the chunks start."""
        key = (m.version, uniq.tobytes(), pairs.tobytes())
        c = self._group_cache
        if c is not None and c[0] == key and c[1] is m:
            src = c[2]
        else:
            chip = m.chip
            rows, rec = self._fpga_rows(m, uniq)
            if pairs.shape[0]:
                cur, brec = chip.router.route(int(CrossbarInput.BACKGROUND0) + pairs[:, 0],
                                              pairs[:, 1])
                rows = torch.cat([rows, slot_major(chip.slot_matrix(cur), chip.n)])
                rec = np.concatenate([rec, brec])
            ranges = block_range(rows)
            src = _Sources(rows, ranges, fast.group_rank(ranges), rec)
            self._group_cache = (key, m, src)
        w_src, p = src.w, m.params
        kern = self._kernel_layers(m)
        if kern and src.layers is None:
            src.layers = [fast.layer_sources(w_src, src.ranges, idx) for idx in m.layers]
        if (not kern or any(m.layer_adex)) and src.groups is None:
            out = [source_groups(w_src, p.f_i, p.f_v, src.ranges)]
            for idx, lp in zip(m.layers or [], m.layer_params, strict=False):
                out.append(source_groups(w_src[:, :, idx], lp.f_i, lp.f_v, src.ranges))
            src.groups = out
        return src

    def _run_chunk(self, m: _Model, b: EpisodeBatch, ids: np.ndarray, sel_ep: np.ndarray,
                   t_steps: int, src: _Sources, ev: tuple[np.ndarray, ...],
                   cadc: np.ndarray, madc: np.ndarray, counts: np.ndarray,
                   spk_parts: list, workers: int = 1, pending: list | None = None) -> None:
        chip = m.chip
        dt, n_ep = chip.sim.dt_ticks, sel_ep.size
        local = np.full(b.n_episodes, -1, np.int64)
        local[sel_ep] = np.arange(n_ep)
        ev_row, ev_ep, ev_t = ev
        stream = ext = None
        if self._kernel_layers(m) and not any(m.layer_adex):  # the kernels' stream only
            stream = EventStream.of_chunk(ev, local, src.rank + 1,
                                          int(src.rank.max(initial=-1)) + 2,
                                          chip.sim.route_delay_ticks, dt, t_steps, n_ep)
        else:
            sel = np.flatnonzero(local[ev_ep] >= 0)
            step, qbin = arrival_np(ev_t[sel], chip.sim.route_delay_ticks, dt)
            ok = step < t_steps
            ext = (step[ok], local[ev_ep[sel]][ok], ev_row[sel][ok], qbin[ok])
        starts = None
        if m.noisy:
            starts = self.noise.step_offsets(SALT_MEMBRANE, b.noise_key, ids[sel_ep],
                                             t_steps)  # [T, E]
        keep_syn, keep_ad = self._needs(m, b)
        plan = None
        if self._kernel_layers(m):
            plan = self._cadc_plan(m, b, local, n_ep, t_steps)
            grids, spikes = self._layered(m, src, ext, starts, n_ep, t_steps, keep_syn, keep_ad,
                                          plan=plan, workers=workers, stream=stream)
        elif m.layers is not None and not self.force_general:
            grids, spikes = self._layered(m, src, ext, starts, n_ep, t_steps, keep_syn, keep_ad,
                                          kern=False)
        else:
            noise = None if starts is None else self._dense_noise(m, starts, n_ep, t_steps)
            grids, spikes = self._general(m, src.groups[0], ext, noise, n_ep, t_steps, keep_syn,
                                          keep_ad)
        if self.capture is not None:
            self.capture.append((sel_ep, grids, spikes))
        self._collect_spikes(chip, b, sel_ep, spikes, counts, spk_parts)
        if plan is None:
            self._readout(m, b, ids, local, grids, cadc, madc)
        else:  # membrane interpolated inside the kernels: conversion only (and no MADC here)
            req = np.flatnonzero(local[b.cadc_episode] >= 0)
            starts = None
            if self.config.cadc_read_noise_lsb > 0:
                rank = _rank_in_episode(b.cadc_episode)[req]
                starts = self.noise.offsets(SALT_CADC, b.noise_key, ids[b.cadc_episode[req]],
                                            rank)
            pool = self._pool(workers - 1) if workers > 1 else None
            groups = self._cadc_groups(b, req)
            alpha = self.config.cadc_read_noise_lsb

            def codes(pool: ThreadPoolExecutor | None, workers: int) -> None:
                for sel, gain, off in groups:
                    fast.cadc_codes(plan.v if sel is None else plan.v[sel], chip.circuit_neuron,
                                    gain, off, _pick(starts, sel), self.noise.table, alpha,
                                    _pick(req, sel), cadc, pool, workers)

            if pending is not None and pool is not None:  # on the worker, while the caller
                pending.append(pool.submit(codes, None, 1))  # goes on (run_deferred)
            else:
                codes(pool, workers)

    def _dense_noise(self, m: _Model, starts: np.ndarray, n_ep: int, t_steps: int
                     ) -> torch.Tensor:
        """[T, E, N] membrane noise (mV) per step of every neuron (torch reference path)."""
        canon = m.chip.canon
        if (np.diff(canon) == 1).all():  # one contiguous window per (step, episode)
            rows = torch.index_select(self.noise.windows(canon.size), 0,
                                      torch.from_numpy(starts.reshape(-1) + int(canon[0])))
        else:
            rows = torch.index_select(self.noise.windows(N_NEURONS), 0, torch.from_numpy(
                starts.reshape(-1)))[:, torch.from_numpy(canon)]
        return rows.mul_(m.params.noise_step).view(t_steps, n_ep, -1)

    def _general(self, m: _Model, groups: list, ext: tuple, noise: torch.Tensor | None,
                 n_ep: int, t_steps: int, keep_syn: bool, keep_ad: bool
                 ) -> tuple[list[_Grid], tuple[torch.Tensor, ...]]:
        p = m.params
        events = dense_jumps(groups, *ext, n_ep, p.n)
        rec = Recurrence(p.rec, p.f_i, p.f_v, m.chip.sim.route_delay_ticks,
                         m.chip.sim.dt_ticks) if m.has_rec else None
        out = run_layer(p, events, None, noise, n_ep, t_steps, spikes_in_loop=True, rec=rec,
                        keep_syn=keep_syn, keep_adapt=keep_ad)
        idx = torch.arange(p.n)
        return [_Grid(idx, out.v, out.syn, out.adapt)], out.spikes.tensors()[:3]

    def _cadc_plan(self, m: _Model, b: EpisodeBatch, local: np.ndarray, n_ep: int,
                   t_steps: int) -> fast.CadcPlan | None:
        """The chunk's CADC requests for interpolation inside the kernels, which then keep no
        membrane grid: when every layer runs through them, every channel reads the membrane,
        the chunk has no MADC request and no test captures the grids. None otherwise."""
        chip = m.chip
        req = np.flatnonzero(local[b.cadc_episode] >= 0)
        if (req.size == 0 or self.capture is not None
                or bool((local[b.madc_episode] >= 0).any())
                or any(m.layer_adex) or not m.membrane_readout):
            return None
        t = b.cadc_time[req]
        if int(t.max()) // chip.sim.dt_ticks >= t_steps:
            raise ConfigError("a CADC sample time lies beyond its episode's duration")
        return fast.CadcPlan.build(local[b.cadc_episode[req]], t, n_ep, chip.n,
                                   chip.sim.dt_ticks)

    def _layered(self, m: _Model, src: _Sources, ext: tuple, starts: np.ndarray | None,
                 n_ep: int, t_steps: int, keep_syn: bool, keep_ad: bool, kern: bool = True,
                 plan: fast.CadcPlan | None = None, workers: int = 1,
                 stream: EventStream | None = None
                 ) -> tuple[list[_Grid], tuple[torch.Tensor, ...]]:
        """Layer after layer; LIF layers through the kernels (kern) or the torch reference,
        AdEx layers always through the reference (spikes inside the step loop). plan: the
        kernels interpolate the CADC requests and keep no membrane grid (v None). workers: threads
        the kernels split each layer's episodes over."""
        grids = []
        sp_e, sp_n, sp_t, sp_k = [], [], [], []
        dt, delay = m.chip.sim.dt_ticks, m.chip.sim.route_delay_ticks
        ep_sorted = noise = None  # stream: the external inputs' (built here from ext if None)
        for li, (idx, lp) in enumerate(zip(m.layers, m.layer_params, strict=True)):
            pre_ev = None
            if sp_e and m.layer_rec[li]:
                e_a, n_a, t_a, k_a = (_cat_np(x) for x in (sp_e, sp_n, sp_t, sp_k))
                # the order the general path adds them in: emission step, episode, neuron
                o = _spike_order(k_a, e_a, n_a)
                e_a, n_a, t_a = e_a[o], n_a[o], t_a[o]
                a_step, a_q = arrival_np(_ticks_np(t_a, dt), delay, dt)
                ok = a_step < t_steps
                pre_ev = tuple(torch.from_numpy(x[ok]) for x in (e_a, n_a, a_step, a_q))
            adex = m.layer_adex[li]
            if kern and not adex:
                if stream is None:
                    n_groups = int(src.rank.max(initial=-1)) + 2  # rank -1: no group
                    stream = EventStream.build(ext[1], ext[0], ext[2], ext[3], n_ep, t_steps,
                                               src.rank[ext[2]] + 1, n_groups)
                ls = src.layers[li]
                reach = ls.b1 > ls.b0  # per source: its events reach this layer
                if reach.all():
                    x = stream
                elif not reach.any():
                    x = EventStream.empty(n_ep)
                else:
                    if ep_sorted is None:
                        ep_sorted = np.repeat(np.arange(n_ep), np.diff(stream.ptr))
                    x = stream.select(reach[stream.src], n_ep, ep_sorted)
                pre = EventStream.empty(n_ep) if pre_ev is None else EventStream.build(
                    pre_ev[0].numpy(), pre_ev[2].numpy(), pre_ev[1].numpy(), pre_ev[3].numpy(),
                    n_ep, t_steps)
                chan = m.chip.canon[idx.numpy()]
                vl, syn, flat, seg = fast.integrate(
                    lp, n_ep, t_steps, x, ls, pre, starts, self.noise.table, chan, keep_syn, plan,
                    idx, self._pool(workers - 1) if workers > 1 else None, workers)
                sl, v_cols = fast.follow_spikes(lp, idx.numel(), flat, seg)
                if plan is None:
                    fast.put_columns(vl, flat, v_cols)
                else:
                    fast.interp_patch(v_cols, flat, lp, plan, idx,
                                      self._pool(workers - 1) if workers > 1 else None, workers)
                out = LayerOut(u=vl, v=vl, syn=syn, adapt=None, spikes=sl)
            else:
                events = dense_jumps(src.groups[li + 1], *ext, n_ep, idx.numel())
                pre = None
                if pre_ev is not None:
                    e_a, n_a, a_step, a_q = pre_ev
                    js, jv = event_jumps(lp.rec, lp.f_i, lp.f_v, n_a, a_q)
                    pre_i = torch.zeros(4, t_steps * n_ep, idx.numel())
                    pre_v = torch.zeros(t_steps * n_ep, idx.numel())
                    rows = a_step * n_ep + e_a
                    add_blocks(pre_i, rows, js)
                    pre_v.index_add_(0, rows, jv)
                    pre = (pre_i.view(4, t_steps, n_ep, -1), pre_v.view(t_steps, n_ep, -1))
                if starts is not None and noise is None:
                    noise = self._dense_noise(m, starts, n_ep, t_steps)
                nz = None if noise is None else _columns(noise, idx)
                out = run_layer(lp, events, pre, nz, n_ep, t_steps, spikes_in_loop=adex,
                                keep_syn=keep_syn, keep_adapt=keep_ad)
                if not adex:
                    sl, vl = lif_spikes(lp, out.u)
                    out = LayerOut(u=vl, v=vl, syn=out.syn, adapt=out.adapt, spikes=sl)
            vl, (e_l, n_l, t_l, k_l) = out.v, out.spikes.tensors()
            grids.append(_Grid(idx, vl, out.syn, out.adapt))
            sp_e.append(e_l)
            sp_n.append(idx[n_l])
            sp_t.append(t_l)
            sp_k.append(k_l)
        return grids, (torch.cat(sp_e), torch.cat(sp_n), torch.cat(sp_t))

    def _needs(self, m: _Model, b: EpisodeBatch) -> tuple[bool, bool]:
        """(keep synaptic-current grids, keep adaptation grids): what the batch's ADC requests
        read."""
        src = set()
        if b.cadc_time.size:
            src |= m.readout_sources
        if b.madc_time.size:
            cfg = [int(self.regs.madc_config)] if b.madc_config is None else np.unique(
                b.madc_config[b.madc_episode]).tolist()
            src |= {c >> MADC_SOURCE_SHIFT & 0x7 for c in cfg}
        syn = bool(src & {int(ReadoutSource.SYN_EXC), int(ReadoutSource.SYN_INH)})
        return syn, int(ReadoutSource.ADAPTATION) in src

    def _collect_spikes(self, chip: CompiledChip, b: EpisodeBatch, sel_ep: np.ndarray,
                        spikes: tuple[torch.Tensor, ...], counts: np.ndarray,
                        spk_parts: list) -> None:
        e_l, n_i, ts = (x.numpy() for x in spikes)
        if e_l.size == 0:
            return
        ticks = _ticks_np(ts, chip.sim.dt_ticks)
        ep = sel_ep[e_l]
        ok = ticks < b.duration[ep]
        ep, n_i, ticks = ep[ok], n_i[ok], ticks[ok]
        for j in (0, 1):
            c = chip.members[n_i, j]
            has = c >= 0
            counts += np.bincount(c[has], minlength=N_NEURONS)
            cc = np.maximum(c, 0)
            emit = has & chip.spike_output[cc] & chip.circuit_record[cc]
            spk_parts.append((ep[emit], ticks[emit], chip.output_label[c[emit]]))

    # ------------------------------------------------------------------ readout
    def _neuron_values(self, m: _Model, grids: list[_Grid], el: torch.Tensor, j: torch.Tensor,
                       f: torch.Tensor, source: int) -> torch.Tensor:
        """[R, N] membrane (mV) or adaptation readout (mV, without buffer offset) of every neuron
        at the requested (episode row, grid step j + fraction f [R, 1])."""
        p = m.params
        out = torch.zeros(el.shape[0], p.n)
        fu, inv = torch.unique(f[:, 0], return_inverse=True)
        for g in grids:
            n_ep, n_l = g.v.shape[1], g.v.shape[2]
            row0 = j * n_ep + el  # rows of the flattened [(T+1)*E, N_l] grid
            if source == int(ReadoutSource.MEMBRANE):
                flat = g.v.view(-1, n_l)
                h = torch.index_select(fast.interp_weights(p.rdt[g.idx], fu), 0, inv)
            elif source == int(ReadoutSource.ADAPTATION) and g.adapt is not None:
                flat = g.adapt.view(-1, n_l)
                h = f
            else:
                continue
            v0 = torch.index_select(flat, 0, row0)
            v1 = torch.index_select(flat, 0, row0 + n_ep)
            val = (v1 - v0).mul_(h).add_(v0)  # not torch.lerp: that fuses (kernels.py)
            if source == int(ReadoutSource.ADAPTATION):
                val = READOUT_BASE_MV + ADAPT_READOUT_MV_PER_NA * val
            if len(grids) == 1:
                out = val
            else:  # (not _columns(out, idx).copy_: for a scattered idx that is a copy)
                out[:, g.idx] = val
        return out

    def _circuit_values(self, m: _Model, grids: list[_Grid], e_l: np.ndarray, t: np.ndarray,
                        circuits: np.ndarray, source: np.ndarray) -> torch.Tensor:
        """Potential (mV, float32) seen by the ADC at (episode row, tick) for circuits [R, C]."""
        chip, p = m.chip, m.params
        dt = chip.sim.dt_ticks
        j = torch.from_numpy(t // dt)
        f = torch.from_numpy(((t % dt) / dt).astype(np.float32))[:, None]
        el = torch.from_numpy(e_l)
        nrn = torch.from_numpy(chip.circuit_neuron[circuits])
        src = np.broadcast_to(np.asarray(source), (1, circuits.size))[0]
        val = torch.zeros(el.shape[0], circuits.size)
        mem = src == int(ReadoutSource.MEMBRANE)
        if mem.all():
            v = self._neuron_values(m, grids, el, j, f, int(ReadoutSource.MEMBRANE))
            val = _gather_columns(v, chip.circuit_neuron[circuits])
        elif mem.any():
            v = self._neuron_values(m, grids, el, j, f, int(ReadoutSource.MEMBRANE))
            cols = torch.from_numpy(np.flatnonzero(mem))
            val[:, cols] = v[:, nrn[cols]]
        for s_ in (ReadoutSource.SYN_EXC, ReadoutSource.SYN_INH):
            sel = np.flatnonzero(src == int(s_))
            if sel.size == 0:
                continue
            c = circuits[sel]
            slot = torch.from_numpy(chip.circuit_slot0[c] + (int(s_) - 1))
            phi = torch.from_numpy(chip.slot_phi[chip.circuit_neuron[c], chip.circuit_slot0[c]
                                                 + (int(s_) - 1)].astype(np.float32))
            cur = torch.zeros(el.shape[0], sel.size)
            for g in grids:
                if g.syn is None:
                    continue
                loc = torch.full((p.n,), -1, dtype=torch.int64)
                loc[g.idx] = torch.arange(g.idx.numel())
                li = loc[nrn[sel]]
                ok = li >= 0
                if bool(ok.any()):
                    s0 = g.syn[j[:, None], slot[None, ok], el[:, None], li[None, ok]]
                    s1 = g.syn[j[:, None] + 1, slot[None, ok], el[:, None], li[None, ok]]
                    cur[:, ok] = torch.lerp(s0, s1, f) / torch.where(phi[ok] == 0,
                                                                     torch.inf, phi[ok])
            ro_off = torch.from_numpy(self.mismatch.readout_offset[c, int(s_)].astype(np.float32))
            val[:, torch.from_numpy(sel)] = READOUT_BASE_MV + SYN_READOUT_MV_PER_NA * cur + ro_off
        sel = np.flatnonzero(src == int(ReadoutSource.ADAPTATION))
        if sel.size:
            v = self._neuron_values(m, grids, el, j, f, int(ReadoutSource.ADAPTATION))
            ro_off = torch.from_numpy(self.mismatch.readout_offset[
                circuits[sel], int(ReadoutSource.ADAPTATION)].astype(np.float32))
            val[:, torch.from_numpy(sel)] = v[:, nrn[sel]] + ro_off
        return val  # sources > ADAPTATION read 0 mV

    def _readout(self, m: _Model, b: EpisodeBatch, ids: np.ndarray, local: np.ndarray,
                 grids: list[_Grid], cadc: np.ndarray, madc: np.ndarray) -> None:
        mm = self.mismatch
        chip = m.chip
        req = np.flatnonzero(local[b.cadc_episode] >= 0)
        if req.size:
            ep = b.cadc_episode[req]
            t = b.cadc_time[req]
            t_steps = grids[0].v.shape[0] - 1
            if int(t.max()) // chip.sim.dt_ticks >= t_steps:
                raise ConfigError("a CADC sample time lies beyond its episode's duration")
            starts = None
            if self.config.cadc_read_noise_lsb > 0:
                rank = _rank_in_episode(b.cadc_episode)[req]
                starts = self.noise.offsets(SALT_CADC, b.noise_key, ids[ep], rank)
            membrane = m.membrane_readout
            if self.use_kernels:
                if membrane:
                    dt = chip.sim.dt_ticks
                    f = torch.from_numpy(((t % dt) / dt).astype(np.float32))
                    v = fast.membrane_values(grids, m.params.rdt, m.params.n, t // dt,
                                             local[ep], f)
                    chan = chip.circuit_neuron
                else:
                    v = self._circuit_values(m, grids, local[ep], t, np.arange(N_NEURONS),
                                             chip.readout_source).numpy()
                    chan = np.arange(N_NEURONS)
                for sel, gain, off in self._cadc_groups(b, req):
                    fast.cadc_codes(_pick(v, sel), chan, gain, off, _pick(starts, sel),
                                    self.noise.table, self.config.cadc_read_noise_lsb,
                                    _pick(req, sel), cadc)
            else:
                v = self._circuit_values(m, grids, local[ep], t, np.arange(N_NEURONS),
                                         chip.readout_source)
                for sel, gain, off in self._cadc_groups(b, req):
                    vs = v if sel is None else v[torch.from_numpy(sel)]
                    cadc[_pick(req, sel)] = self._cadc_codes(vs, gain, off, _pick(starts, sel))
        req = np.flatnonzero(local[b.madc_episode] >= 0)
        if req.size:
            ep = b.madc_episode[req]
            rank = _rank_in_episode(b.madc_episode)[req]
            starts = self.noise.offsets(SALT_MADC, b.noise_key, ids[ep], rank)
            noise = self.noise.rows(starts, np.zeros(1, np.int64)).numpy()[:, 0]
            cfg = np.full(req.size, int(self.regs.madc_config), np.int64) if (
                b.madc_config is None) else b.madc_config[ep]
            for c in np.unique(cfg).tolist():  # one pass per configuration in force
                sel = np.flatnonzero(cfg == c)
                circ = np.array([c & MADC_NEURON_MASK])
                src = np.array([c >> MADC_SOURCE_SHIFT & 0x7])
                v = self._circuit_values(m, grids, local[ep[sel]], b.madc_time[req[sel]], circ,
                                         src)[:, 0]
                madc[req[sel]] = ro.madc_code(v.double().numpy(), mm.madc_gain,
                                              mm.madc_offset,
                                              noise[sel] * self.config.madc_read_noise_lsb)

    def _cadc_groups(self, b: EpisodeBatch, req: np.ndarray
                     ) -> list[tuple[np.ndarray | None, torch.Tensor, torch.Tensor]]:
        """(positions in req, gain, offset) per CADC_OFFSET setting in force for the requests
        req (positions None: all of them, the register file's setting)."""
        if b.cadc_offset is None:
            return [(None, *self._cadc_affine(self.regs.cadc_offset))]
        uniq, inv = np.unique(b.cadc_offset, axis=0, return_inverse=True)
        inv = inv.reshape(-1)[b.cadc_episode[req]]
        if uniq.shape[0] == 1:
            return [(None, *self._cadc_affine(uniq[0]))]
        order = np.argsort(inv, kind="stable")
        cuts = np.flatnonzero(np.diff(inv[order])) + 1
        return [(sel, *self._cadc_affine(uniq[inv[sel[0]]]))
                for sel in np.split(order, cuts)]

    def _cadc_codes(self, v: torch.Tensor, gain: torch.Tensor, off: torch.Tensor,
                    starts: np.ndarray | None) -> np.ndarray:
        """[R, 512] potentials (mV) -> u8 codes: v * gain + off (+ read noise), rounded half to
        even, clipped; one rounding per operation (kernels.cadc_codes does the same)."""
        x = v.mul(gain).add_(off)
        if starts is not None:
            nz = torch.index_select(self.noise.windows(N_NEURONS), 0, torch.from_numpy(starts))
            x.add_(nz.mul(torch.tensor(self.config.cadc_read_noise_lsb, dtype=torch.float32)))
        return x.round_().clamp_(0, ro.CADC_MAX).numpy().astype(np.uint8)

    def _cadc_affine(self, offset_words: np.ndarray | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """code = gain * V + off per channel (mismatch and the CADC_OFFSET register words
        folded in; None: the register file's)."""
        if offset_words is None:
            offset_words = self.regs.cadc_offset
        mm = self.mismatch
        gain = mm.cadc_gain / ro.CADC_MV_PER_LSB
        off = mm.cadc_offset + ro.signed8(offset_words) - gain * ro.CADC_V0_MV
        return (torch.from_numpy(gain.astype(np.float32)),
                torch.from_numpy(off.astype(np.float32)))


def _pick(x: np.ndarray | None, sel: np.ndarray | None) -> np.ndarray | None:
    """x[sel] (x itself for sel None or x None)."""
    return x if sel is None or x is None else x[sel]


def _unique_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(labels, return_inverse=True) for 14-bit labels, through a table (no sort)."""
    if kernels.AVAILABLE:
        return kernels.unique_small(np.ascontiguousarray(labels, np.int64), LABEL_MASK + 1)
    present = np.zeros(LABEL_MASK + 1, bool)
    present[labels] = True
    uniq = np.flatnonzero(present)
    lut = np.zeros(LABEL_MASK + 1, np.int64)
    lut[uniq] = np.arange(uniq.size)
    return uniq, lut[labels]


def _gather_columns(x: torch.Tensor, cols: np.ndarray) -> torch.Tensor:
    """x[:, cols] as slices of consecutive runs (much faster than a column gather)."""
    cols = np.asarray(cols, np.int64)
    if cols.size == 0:
        return x[:, :0]
    brk = np.flatnonzero(np.diff(cols) != 1) + 1
    starts = np.concatenate([[0], brk])
    ends = np.concatenate([brk, [cols.size]])
    if starts.size > 8:
        return torch.index_select(x, 1, torch.from_numpy(cols))
    parts = [x[:, int(cols[a]):int(cols[a]) + int(b - a)] for a, b in zip(starts, ends,
                                                                          strict=True)]
    return parts[0].contiguous() if len(parts) == 1 else torch.cat(parts, 1)


def _columns(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[..., idx], a view when idx is a contiguous range."""
    i0 = int(idx[0])
    if idx.numel() == int(idx[-1]) - i0 + 1 and bool((idx.diff() == 1).all()):
        return x[..., i0:i0 + idx.numel()]
    return x[..., idx]


def _rank_in_episode(ep: np.ndarray) -> np.ndarray:
    """Position of each request among the requests of its episode (in input order)."""
    if kernels.AVAILABLE:
        return kernels.rank_in_episode(np.ascontiguousarray(ep, np.int64))
    order = np.argsort(ep, kind="stable")
    first = np.searchsorted(ep[order], ep[order], side="left")
    rank = np.empty(ep.size, np.int64)
    rank[order] = np.arange(ep.size) - first
    return rank


def _cat_np(parts: list[torch.Tensor]) -> np.ndarray:
    """torch.cat(parts).numpy() (without the cat for a single part)."""
    return parts[0].numpy() if len(parts) == 1 else torch.cat(parts).numpy()


def _ticks_np(t: np.ndarray, dt_ticks: int) -> np.ndarray:
    """simulate.to_ticks on a numpy array: the same float multiply (in t's dtype), floor."""
    return np.floor(t * t.dtype.type(dt_ticks)).astype(np.int64)


def _spike_order(k: np.ndarray, e: np.ndarray, n: np.ndarray) -> np.ndarray:
    """np.lexsort((n, e, k)) (step, episode, neuron; ties in input order) as one stable sort
    of a combined int64 key where the three non-negative integers fit in it."""
    return _combined_order((k, e, n))


def _event_order(ep: np.ndarray, t: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """np.lexsort((lab, t, ep)): by episode, time, label (ties in input order)."""
    return _combined_order((ep, t, lab))


def _combined_order(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """np.lexsort(keys[::-1]) (first key most significant) as a stable argsort of
    sum key_i * prod(spans after i) where every key is >= 0 and that fits in int64 (it
    orders exactly as the lexsort then); else the lexsort."""
    if keys[0].size == 0:
        return np.zeros(0, np.int64)
    spans, total = [], 1
    for x in keys:
        lo, hi = kernels.int_range(x) if kernels.AVAILABLE else (int(x.min()), int(x.max()))
        if lo < 0:
            return np.lexsort(keys[::-1])
        spans.append(int(hi) + 1)
        total *= spans[-1]
    if total >= 1 << 62:
        return np.lexsort(keys[::-1])
    comb = keys[0].astype(np.int64)
    for x, span in zip(keys[1:], spans[1:], strict=True):
        comb = comb * span + x
    if kernels.AVAILABLE:
        return kernels.radix_order(comb, max(total - 1, 1).bit_length())
    return np.argsort(comb, kind="stable")
