"""AnalogCore: the chip's analog side, called once per program with all its episodes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from protocol.addressmap import N_NEURONS, CrossbarInput, ReadoutSource
from protocol.errors import ConfigError

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
from .mismatch import ChipMismatch, MismatchConfig
from .noise import SALT_CADC, SALT_MADC, SALT_MEMBRANE, NoiseTable
from .params import TorchParams
from .simulate import SimOutput, arrival, run_steps, to_ticks

MADC_NEURON_MASK = 0x1FF
MADC_SOURCE_SHIFT = 9


@dataclass
class _Model:
    version: int
    chip: CompiledChip
    params: TorchParams
    fpga_cache: dict[int, tuple[torch.Tensor, bool]]


class AnalogCore:
    """Simulates episodes of the analog core of chip `serial` configured by `regs`.

    serial: seeds every fixed-pattern and temporal noise source (one serial = one chip).
    regs: a RegisterFile (docs/interfaces.md attribute names); compiled again when its
    `version` changes.
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
        self.force_general = False  # tests: never take the layered fast path

    # ------------------------------------------------------------------ compile
    def model(self) -> _Model:
        ver = int(getattr(self.regs, "version", -1))
        if self._model is None or ver < 0 or self._model.version != ver:
            chip = with_noise(compile_chip(self.regs, self.mismatch, self.sim),
                              self.config.membrane_noise_mv)
            self._model = _Model(ver, chip, TorchParams.build(chip), {})
        return self._model

    def _fpga_rows(self, m: _Model, labels: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Slot jumps [U, N*4] and record flags for the unique FPGA labels (cached per model)."""
        new = [int(x) for x in labels if int(x) not in m.fpga_cache]
        if new:
            cur, rec = m.chip.router.route(np.full(len(new), int(CrossbarInput.FPGA)),
                                           np.asarray(new))
            rows = torch.from_numpy(m.chip.slot_matrix(cur))
            for i, lab in enumerate(new):
                m.fpga_cache[lab] = (rows[i], bool(rec[i]))
        if labels.size == 0:
            return torch.zeros(0, m.chip.k), np.zeros(0, bool)
        rows = torch.stack([m.fpga_cache[int(x)][0] for x in labels])
        return rows, np.array([m.fpga_cache[int(x)][1] for x in labels])

    # ------------------------------------------------------------------ run
    def run(self, batch: EpisodeBatch) -> EpisodeResult:
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

        # input events: FPGA spikes and background sources
        uniq, inv = np.unique(b.spike_label, return_inverse=True)
        rows_u, rec_u = self._fpga_rows(m, uniq)
        src_rows = [rows_u]
        ev_row = [inv.astype(np.int64)]
        ev_ep, ev_t = [b.spike_episode], [b.spike_time]
        rec_ep, rec_t, rec_lab = [b.spike_episode[rec_u[inv]]], [b.spike_time[rec_u[inv]]], [
            b.spike_label[rec_u[inv]]]
        bs, bep, bt, blab = background_events(chip.background, b.duration, ids)
        if bs.size:
            pairs, binv = np.unique(np.stack([bs, blab], 1), axis=0, return_inverse=True)
            cur, brec = chip.router.route(int(CrossbarInput.BACKGROUND0) + pairs[:, 0],
                                          pairs[:, 1])
            src_rows.append(torch.from_numpy(chip.slot_matrix(cur)))
            ev_row.append(binv.reshape(-1) + rows_u.shape[0])
            ev_ep.append(bep)
            ev_t.append(bt)
            sel = brec[binv.reshape(-1)]
            rec_ep.append(bep[sel])
            rec_t.append(bt[sel])
            rec_lab.append(blab[sel])
        w_src = torch.cat(src_rows) if len(src_rows) > 1 else src_rows[0]
        ev_row_a = np.concatenate(ev_row)
        ev_ep_a = np.concatenate(ev_ep)
        ev_t_a = np.concatenate(ev_t)

        cadc = np.zeros((b.cadc_time.size, N_NEURONS), np.uint8)
        madc = np.zeros(b.madc_time.size, np.uint16)
        counts = np.zeros(N_NEURONS, np.int64)
        spk_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

        # episodes in chunks that bound memory; each chunk is simulated independently
        order = np.argsort(b.duration, kind="stable")
        t_all = b.duration // self.sim.dt_ticks + 1
        budget = max(self.sim.chunk_elements, 1)
        start = 0
        while start < n_ep:
            t_max = int(t_all[order[start]])
            stop = start
            while stop < n_ep:
                t_max = max(t_max, int(t_all[order[stop]]))
                if (stop - start + 1) * t_max * chip.k > budget and stop > start:
                    break
                stop += 1
            sel_ep = np.sort(order[start:stop])
            self._run_chunk(m, b, ids, sel_ep, int(t_all[sel_ep].max()), w_src, ev_row_a,
                            ev_ep_a, ev_t_a, cadc, madc, counts, spk_parts)
            start = stop

        # recorded events: FPGA loopback, background, neurons
        for e_, t_, l_ in spk_parts:
            rec_ep.append(e_)
            rec_t.append(t_)
            rec_lab.append(l_)
        r_ep = np.concatenate(rec_ep).astype(np.int64)
        r_t = np.concatenate(rec_t).astype(np.int64)
        r_l = np.concatenate(rec_lab).astype(np.int64)
        o = np.lexsort((r_l, r_t, r_ep))
        return EpisodeResult(
            spike_episode=r_ep[o].astype(np.int32),
            spike_time=r_t[o].astype(np.uint64),
            spike_label=r_l[o].astype(np.uint16),
            cadc_samples=cadc,
            madc_values=madc,
            spike_counts=counts.astype(np.uint32),
        )

    def _run_chunk(self, m: _Model, b: EpisodeBatch, ids: np.ndarray, sel_ep: np.ndarray,
                   t_steps: int, w_src: torch.Tensor, ev_row: np.ndarray, ev_ep: np.ndarray,
                   ev_t: np.ndarray, cadc: np.ndarray, madc: np.ndarray, counts: np.ndarray,
                   spk_parts: list) -> None:
        chip, p = m.chip, m.params
        dt, n_ep_c = self.sim.dt_ticks, sel_ep.size
        local = np.full(b.n_episodes, -1, np.int64)
        local[sel_ep] = np.arange(n_ep_c)
        # external jumps
        b0 = torch.zeros(t_steps, n_ep_c, chip.k)
        b1 = torch.zeros(t_steps, n_ep_c, chip.k)
        ev = np.flatnonzero(local[ev_ep] >= 0)
        if ev.size:
            step, delta = arrival(torch.from_numpy(ev_t[ev]), self.sim.route_delay_ticks, dt)
            ok = step < t_steps
            le = torch.from_numpy(local[ev_ep[ev]])
            rows = (step * n_ep_c + le)[ok]
            jumps = w_src[torch.from_numpy(ev_row[ev])[ok]]
            # stable order: by destination row, then input order (same in any batch)
            o = torch.argsort(rows, stable=True)
            b0.view(-1, chip.k).index_add_(0, rows[o], jumps[o])
            b1.view(-1, chip.k).index_add_(0, rows[o], jumps[o] * delta[ok][o][:, None])
        # membrane noise
        starts = self.noise.offsets(SALT_MEMBRANE, b.noise_key, ids[sel_ep][None, :],
                                    np.arange(t_steps)[:, None])  # [T, E]
        noise = self.noise.rows(starts, chip.canon) * p.noise_step  # [T, E, N]
        keep_syn, keep_ad = self._needs(chip, b)
        out = run_steps(p, b0, b1, noise, dt_ticks=dt, delay_ticks=self.sim.route_delay_ticks,
                        keep_syn=keep_syn, keep_adapt=keep_ad)
        self._collect_spikes(chip, b, sel_ep, out, counts, spk_parts)
        self._readout(m, b, ids, local, out, cadc, madc)

    def _needs(self, chip: CompiledChip, b: EpisodeBatch) -> tuple[bool, bool]:
        src = set()
        if b.cadc_time.size:
            src |= set(np.unique(chip.readout_source).tolist())
        if b.madc_time.size:
            src.add(int(self.regs.madc_config) >> MADC_SOURCE_SHIFT & 0x7)
        syn = bool(src & {int(ReadoutSource.SYN_EXC), int(ReadoutSource.SYN_INH)})
        return syn, int(ReadoutSource.ADAPTATION) in src

    def _collect_spikes(self, chip: CompiledChip, b: EpisodeBatch, sel_ep: np.ndarray,
                        out: SimOutput, counts: np.ndarray, spk_parts: list) -> None:
        e_l, n_i, ts = out.spikes.arrays()
        if e_l.size == 0:
            return
        ticks = to_ticks(torch.from_numpy(ts), self.sim.dt_ticks).numpy()
        ep = sel_ep[e_l]
        ok = ticks < b.duration[ep]
        ep, n_i, ticks = ep[ok], n_i[ok], ticks[ok]
        for j in (0, 1):
            c = chip.members[n_i, j]
            has = c >= 0
            counts += np.bincount(c[has], minlength=N_NEURONS)
            emit = has & chip.spike_output[np.maximum(c, 0)] & chip.circuit_record[
                np.maximum(c, 0)]
            spk_parts.append((ep[emit], ticks[emit], chip.output_label[c[emit]]))

    # ------------------------------------------------------------------ readout
    def _values(self, m: _Model, out: SimOutput, e_l: np.ndarray, t: np.ndarray,
                circuits: np.ndarray, source: np.ndarray) -> np.ndarray:
        """Potential (mV) seen by the ADC at (episode row, tick) for circuits [R, C]."""
        chip, p = m.chip, m.params
        dt = self.sim.dt_ticks
        j = torch.from_numpy(t // dt)
        f = torch.from_numpy(((t % dt) / dt).astype(np.float32))[:, None]
        el = torch.from_numpy(e_l)
        nrn = torch.from_numpy(chip.circuit_neuron[circuits])  # [C]
        v0 = out.v[j, el][:, nrn]
        v1 = out.v[j + 1, el][:, nrn]
        rdt = p.rdt[nrn]
        h = torch.where(rdt > 1e-6, -torch.expm1(-rdt * f) / -torch.expm1(-rdt),
                        f.expand(-1, nrn.shape[0]))
        val = (v0 + (v1 - v0) * h).double().numpy()
        src = np.broadcast_to(source, val.shape)
        if out.syn is not None:
            for s_, off in ((ReadoutSource.SYN_EXC, 0), (ReadoutSource.SYN_INH, 1)):
                slot = torch.from_numpy(chip.circuit_slot0[circuits] + off)
                phi = chip.slot_phi[chip.circuit_neuron[circuits], chip.circuit_slot0[
                    circuits] + off]
                s0 = out.syn[j, el][:, nrn, slot]
                s1 = out.syn[j + 1, el][:, nrn, slot]
                cur = ((s0 + (s1 - s0) * f).double().numpy() /
                       np.where(phi == 0, np.inf, phi))
                vv = READOUT_BASE_MV + SYN_READOUT_MV_PER_NA * cur + self.mismatch.readout_offset[
                    circuits, int(s_)]
                val = np.where(src == int(s_), vv, val)
        if out.adapt is not None:
            a0 = out.adapt[j, el][:, nrn]
            a1 = out.adapt[j + 1, el][:, nrn]
            cur = (a0 + (a1 - a0) * f).double().numpy()
            vv = READOUT_BASE_MV + ADAPT_READOUT_MV_PER_NA * cur + self.mismatch.readout_offset[
                circuits, int(ReadoutSource.ADAPTATION)]
            val = np.where(src == int(ReadoutSource.ADAPTATION), vv, val)
        return np.where(src > int(ReadoutSource.ADAPTATION), 0.0, val)

    def _readout(self, m: _Model, b: EpisodeBatch, ids: np.ndarray, local: np.ndarray,
                 out: SimOutput, cadc: np.ndarray, madc: np.ndarray) -> None:
        mm = self.mismatch
        req = np.flatnonzero(local[b.cadc_episode] >= 0)
        if req.size:
            ep = b.cadc_episode[req]
            rank = _rank_in_episode(b.cadc_episode)[req]
            circ = np.arange(N_NEURONS)
            v = self._values(m, out, local[ep], b.cadc_time[req], circ,
                             m.chip.readout_source[None, :])
            starts = self.noise.offsets(SALT_CADC, b.noise_key, ids[ep], rank)
            noise = self.noise.rows(starts, circ).numpy() * self.config.cadc_read_noise_lsb
            cadc[req] = ro.cadc_code(v, mm.cadc_gain, mm.cadc_offset,
                                     ro.signed8(self.regs.cadc_offset), noise)
        req = np.flatnonzero(local[b.madc_episode] >= 0)
        if req.size:
            cfg = int(self.regs.madc_config)
            circ = np.array([cfg & MADC_NEURON_MASK])
            src = np.array([[cfg >> MADC_SOURCE_SHIFT & 0x7]])
            ep = b.madc_episode[req]
            v = self._values(m, out, local[ep], b.madc_time[req], circ, src)[:, 0]
            rank = _rank_in_episode(b.madc_episode)[req]
            starts = self.noise.offsets(SALT_MADC, b.noise_key, ids[ep], rank)
            noise = self.noise.rows(starts, np.zeros(1, np.int64)).numpy()[:, 0]
            madc[req] = ro.madc_code(v, mm.madc_gain, mm.madc_offset,
                                     noise * self.config.madc_read_noise_lsb)


def _rank_in_episode(ep: np.ndarray) -> np.ndarray:
    """Position of each request among the requests of its episode (in input order)."""
    order = np.argsort(ep, kind="stable")
    first = np.searchsorted(ep[order], ep[order], side="left")
    rank = np.empty(ep.size, np.int64)
    rank[order] = np.arange(ep.size) - first
    return rank
