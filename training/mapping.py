"""Placement and routing of a feed-forward `training.nn.Network` onto the chip.

Neurons: each logical neuron of a layer is one circuit (fan-in <= 128) or the two circuits of one
column merged with CONNECT_OTHER_HEMISPHERE (fan-in <= 256: the PNAS 256-246-10 layout, where
246 hidden + 10 readout neurons fill the 256 columns exactly). Merged layers are placed first
(lowest free columns), single-circuit layers then take free circuits of one hemisphere.

Signed weights: source i of a layer owns one synapse driver d of a hemisphere; row 2d is
excitatory, row 2d+1 inhibitory, and a weight k becomes |k| on one of the two rows (6 bit).

Rows are shared between populations by address matching: the population p (0 = the network's
inputs, p = the p-th spiking layer's outputs) sends events with synapse address p, so one driver
carries one source of every population, and the columns of the layer that consumes population p
give their synapses address p. Event label of a source on driver d of hemisphere h:

    label = h << 13 | (d % 4) << 11 | (d >> 2) << 6 | address

with crossbar nodes (FPGA or neuron quadrant) -> bus (h, b) passing labels whose bits 13..11
equal 4h + b, so an event reaches exactly driver d of hemisphere h. Every neuron event also goes
to FPGA_RECORD (hidden spikes are measured); FPGA input spikes are not recorded.

A network that does not fit raises TrainingError naming the resource that ran out (rows,
columns, drivers, addresses). Everything here is numpy over whole layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hostdriver.chip import ChipConfig, CrossbarInput, CrossbarOutput, ReadoutSource, RowMode
from protocol.addressmap import N_BUSES, N_COLUMNS, N_DRIVERS, N_HEMISPHERES, N_NEURONS
from protocol.errors import TrainingError

__all__ = [
    "MAX_FAN_IN",
    "LayerPlacement",
    "LayerSpec",
    "Mapping",
    "SourcePlacement",
    "labels_for",
    "place",
]

MAX_FAN_IN_SINGLE = N_DRIVERS  # one circuit: 128 drivers = 128 signed row pairs
MAX_FAN_IN = N_HEMISPHERES * N_DRIVERS  # two merged circuits: 256 signed inputs
N_ADDRESSES = 64
HIGH_SHIFT = 11
ROW_SELECT_SHIFT = 6
HIGH_MASK = 0x7 << HIGH_SHIFT
N_LABELS = 1 << 14


def labels_for(hemisphere: np.ndarray, driver: np.ndarray, address: np.ndarray) -> np.ndarray:
    """Event labels reaching synapses with `address` on driver d of hemisphere h (vectorised)."""
    h, d, a = (np.asarray(v, np.int64) for v in (hemisphere, driver, address))
    return (
        (h << (HIGH_SHIFT + 2))
        | ((d % N_BUSES) << HIGH_SHIFT)
        | ((d >> 2) << ROW_SELECT_SHIFT)
        | a
    )


@dataclass(frozen=True)
class LayerSpec:
    """What placement needs to know about one neuron layer."""

    index: int  # index of the neuron layer in Network.layers
    size: int
    fan_in: int
    spiking: bool  # LIF (fires, recorded) or LI (threshold off)


@dataclass(frozen=True)
class LayerPlacement:
    """Where a neuron layer's neurons sit. Arrays are [size]."""

    index: int
    size: int
    spiking: bool
    merged: bool  # two circuits (top + bottom of the column) per neuron
    hemisphere: np.ndarray  # hemisphere of the neuron's first (firing) circuit (merged: 0)
    column: np.ndarray

    @property
    def circuit(self) -> np.ndarray:
        """[size] the neuron's first circuit: fires, emits the label, is read by the CADC."""
        return self.hemisphere * N_COLUMNS + self.column

    @property
    def circuits(self) -> np.ndarray:
        """[size, 2] the neuron's circuits, -1 where it has only one."""
        second = np.where(self.merged, self.column + N_COLUMNS, -1)
        return np.stack([self.circuit, np.broadcast_to(second, self.column.shape)], axis=1)

    @property
    def hemispheres(self) -> tuple[int, ...]:
        """Hemispheres whose synapse rows feed this layer."""
        return (0, 1) if self.merged else tuple(int(h) for h in np.unique(self.hemisphere))


@dataclass(frozen=True)
class SourcePlacement:
    """The drivers, address and labels of one population of event sources. Arrays are [size].

    population 0 are the network inputs (sent by the FPGA); population p > 0 are the outputs of
    the p-th spiking layer (neuron layer index `layer`). `consumer` is the neuron layer index
    whose synapses listen to them (None: nobody on chip, e.g. a spiking output layer)."""

    population: int
    layer: int | None  # None for the network inputs
    consumer: int | None
    size: int
    hemisphere: np.ndarray
    driver: np.ndarray
    address: int

    @property
    def labels(self) -> np.ndarray:
        return labels_for(self.hemisphere, self.driver, self.address)


@dataclass(frozen=True)
class Mapping:
    """A whole network's placement: neuron layers and source populations."""

    n_inputs: int
    layers: tuple[LayerPlacement, ...]
    sources: tuple[SourcePlacement, ...]

    # -- lookups ---------------------------------------------------------------------------------
    def layer(self, index: int) -> LayerPlacement:
        for lp in self.layers:
            if lp.index == index:
                return lp
        raise KeyError(f"no neuron layer {index} in this mapping")

    def source_of(self, layer_index: int) -> SourcePlacement:
        """The population a neuron layer listens to."""
        for s in self.sources:
            if s.consumer == layer_index:
                return s
        raise KeyError(f"no population feeds neuron layer {layer_index}")

    def emitted_by(self, layer_index: int) -> SourcePlacement:
        """The population a spiking layer emits."""
        for s in self.sources:
            if s.layer == layer_index:
                return s
        raise KeyError(f"neuron layer {layer_index} emits no events")

    @property
    def input_labels(self) -> np.ndarray:
        return self.sources[0].labels

    def label_lookup(self, layer_index: int) -> np.ndarray:
        """[16384] label -> neuron index within spiking layer `layer_index`, -1 for others."""
        out = np.full(N_LABELS, -1, np.int64)
        src = self.emitted_by(layer_index)
        out[src.labels] = np.arange(src.size)
        return out

    def used_circuits(self) -> np.ndarray:
        c = np.concatenate([lp.circuits.reshape(-1) for lp in self.layers])
        return np.sort(c[c >= 0])

    def summary(self) -> dict:
        """Plain-data description (docs, reports, checkpoints)."""
        return {
            "inputs": self.n_inputs,
            "layers": [
                {
                    "index": lp.index,
                    "size": lp.size,
                    "kind": "LIF" if lp.spiking else "LI",
                    "circuits_per_neuron": 2 if lp.merged else 1,
                    "columns": [int(lp.column.min()), int(lp.column.max())],
                    "hemispheres": list(lp.hemispheres),
                }
                for lp in self.layers
            ],
            "circuits": int(self.used_circuits().size),
            "drivers": int(max(np.unique(s.hemisphere * N_DRIVERS + s.driver).size
                               for s in self.sources)),
        }

    # -- configuration ---------------------------------------------------------------------------
    def configure(self, cfg: ChipConfig) -> ChipConfig:
        """Enables, labels, drivers, synapse addresses and crossbar of this mapping into cfg
        (in place). CapMem codes, CADC offsets and refractory settings are left as they are;
        every weight of the mapped synapses starts at 0 (see write_weights)."""
        nrn = cfg.neurons
        for lp in self.layers:
            circ = lp.circuits
            both = circ[circ >= 0]
            first = lp.circuit
            nrn.enable_leak[both] = True
            nrn.enable_syn_exc[both] = True
            nrn.enable_syn_inh[both] = True
            nrn.enable_readout[both] = True
            nrn.readout_source[both] = int(ReadoutSource.MEMBRANE)
            nrn.enable_adaptation[both] = False
            nrn.enable_exponential[both] = False
            nrn.enable_fire[both] = False
            nrn.spike_output[both] = False
            nrn.connect_other_hemisphere[both] = lp.merged
            if lp.spiking:
                nrn.enable_fire[first] = True
                nrn.spike_output[first] = True
                nrn.output_label[first] = self.emitted_by(lp.index).labels
        # an emitting population's labels on a neuron layer with no consumer are set above too
        drv = cfg.drivers
        syn = cfg.synapses
        for src in self.sources:
            drv.enable[src.hemisphere, src.driver] = True
            drv.row_modes[src.hemisphere, 2 * src.driver] = int(RowMode.EXCITATORY)
            drv.row_modes[src.hemisphere, 2 * src.driver + 1] = int(RowMode.INHIBITORY)
            if src.consumer is None:
                continue
            h, rows, cols = self._synapse_index(src)
            syn.addresses[h, rows, cols] = src.address
            syn.weights[h, rows, cols] = 0
        xb = cfg.crossbar
        outputs = np.arange(N_HEMISPHERES * N_BUSES)
        inputs = [int(CrossbarInput.FPGA), *range(int(CrossbarInput.FPGA))]  # FPGA + quadrants
        for i in inputs:
            xb.enable[i, outputs] = True
            xb.mask[i, outputs] = HIGH_MASK
            xb.target[i, outputs] = outputs << HIGH_SHIFT
        rec = int(CrossbarOutput.FPGA_RECORD)
        for q in range(int(CrossbarInput.FPGA)):  # neuron events -> trace
            xb.enable[q, rec] = True
            xb.mask[q, rec] = 0
            xb.target[q, rec] = 0
        cfg.cadc.enable = True
        return cfg

    def _synapse_index(self, src: SourcePlacement) -> tuple[np.ndarray, ...]:
        """(hemisphere, exc row, column) [n_target, n_source] of every synapse pair that connects
        src to its consumer (the inh row is exc row + 1)."""
        lp = self.layer(int(src.consumer))  # type: ignore[arg-type]
        h = np.broadcast_to(src.hemisphere[None, :], (lp.size, src.size))
        if not lp.merged and np.any(lp.hemisphere[:, None] != h):
            raise TrainingError("internal: a single-circuit layer listens across hemispheres")
        rows = np.broadcast_to(2 * src.driver[None, :], (lp.size, src.size))
        cols = np.broadcast_to(lp.column[:, None], (lp.size, src.size))
        h, rows, cols = (np.ascontiguousarray(a) for a in (h, rows, cols))
        return np.concatenate([h, h]), np.concatenate([rows, rows + 1]), np.concatenate(
            [cols, cols])

    def write_weights(self, cfg: ChipConfig, layer_index: int, weights: np.ndarray) -> None:
        """Signed integer weights [n_out, n_in] (-63..63) of the projection into neuron layer
        `layer_index`: |w| on the excitatory row where w > 0, on the inhibitory row where w < 0."""
        src = self.source_of(layer_index)
        lp = self.layer(layer_index)
        w = np.asarray(weights)
        if w.shape != (lp.size, src.size):
            raise TrainingError(
                f"weights for layer {layer_index} have shape {w.shape}, the mapping expects "
                f"{(lp.size, src.size)}"
            )
        w = w.astype(np.int16)
        if w.size and int(np.abs(w).max()) > 63:
            raise TrainingError(f"weights for layer {layer_index} exceed the 6-bit range +-63")
        h, rows, cols = self._synapse_index(src)
        values = np.concatenate([np.maximum(w, 0), np.maximum(-w, 0)])
        cfg.synapses.weights[h, rows, cols] = values


# ---------------------------------------------------------------------------------------------
# placement


def _specs(layers: Sequence[LayerSpec], n_inputs: int) -> None:
    prev = n_inputs
    for s in layers:
        if s.fan_in != prev:
            raise TrainingError(f"layer {s.index} has fan-in {s.fan_in}, expected {prev}")
        prev = s.size
    for s in layers[:-1]:
        if not s.spiking:
            raise TrainingError(f"layer {s.index} is not spiking but feeds another layer")


def place(layers: Sequence[LayerSpec], n_inputs: int, *, merge: str = "auto") -> Mapping:
    """Place neuron layers (in network order) and route their sources.

    merge: "auto" (two circuits per neuron only where the fan-in exceeds 128), "always" or
    "never". TrainingError names the resource that ran out.
    """
    if merge not in ("auto", "always", "never"):
        raise TrainingError(f"merge must be 'auto', 'always' or 'never', got {merge!r}")
    if not layers:
        raise TrainingError("nothing to place: the network has no neuron layers")
    _specs(layers, n_inputs)
    n_pop = 1 + sum(s.spiking for s in layers)
    if n_pop > N_ADDRESSES:
        raise TrainingError(
            f"addresses: {n_pop} event populations (inputs + spiking layers) but a synapse "
            f"address has {N_ADDRESSES} values; use at most {N_ADDRESSES - 1} spiking layers"
        )
    merged = []
    for s in layers:
        if s.fan_in > MAX_FAN_IN:
            raise TrainingError(
                f"rows: layer {s.index} has fan-in {s.fan_in}, but a neuron has at most "
                f"{MAX_FAN_IN} signed inputs ({N_DRIVERS} driver row pairs per hemisphere, two "
                "merged circuits); reduce the layer's inputs"
            )
        if merge == "never" and s.fan_in > MAX_FAN_IN_SINGLE:
            raise TrainingError(
                f"rows: layer {s.index} has fan-in {s.fan_in} > {MAX_FAN_IN_SINGLE} (one "
                "circuit's driver row pairs) and merge='never' forbids two circuits per neuron"
            )
        merged.append(merge == "always" or s.fan_in > MAX_FAN_IN_SINGLE)

    total = sum(s.size * (2 if m else 1) for s, m in zip(layers, merged, strict=True))
    if total > N_NEURONS:
        parts = ", ".join(
            f"{s.size} x {2 if m else 1}" for s, m in zip(layers, merged, strict=True)
        )
        raise TrainingError(
            f"columns: the network needs {total} neuron circuits ({parts}) but the chip has "
            f"{N_NEURONS}"
        )
    free = np.ones((N_HEMISPHERES, N_COLUMNS), bool)
    placed: dict[int, LayerPlacement] = {}
    # merged layers first: they need both circuits of a column
    for s, m in zip(layers, merged, strict=True):
        if not m:
            continue
        cols = np.flatnonzero(free.all(axis=0))
        if cols.size < s.size:
            raise TrainingError(
                f"columns: layer {s.index} needs {s.size} columns with both circuits free (two "
                f"circuits per neuron), only {cols.size} are left of {N_COLUMNS}"
            )
        cols = cols[: s.size]
        free[:, cols] = False
        placed[s.index] = LayerPlacement(
            s.index, s.size, s.spiking, True, np.zeros(s.size, np.int64), cols.astype(np.int64)
        )
    for s, m in zip(layers, merged, strict=True):
        if m:
            continue
        counts = free.sum(axis=1)
        fits = np.flatnonzero(counts >= s.size)
        if fits.size == 0:
            raise TrainingError(
                f"columns: layer {s.index} needs {s.size} circuits in one hemisphere (its "
                f"sources reach one hemisphere's rows), the most left in one is {counts.max()}"
            )
        h = int(fits[np.argmin(counts[fits])])  # the tightest hemisphere that fits
        cols = np.flatnonzero(free[h])[: s.size]
        free[h, cols] = False
        placed[s.index] = LayerPlacement(
            s.index, s.size, s.spiking, False, np.full(s.size, h, np.int64),
            cols.astype(np.int64),
        )

    sources = []
    pop_layer: list[int | None] = [None] + [s.index for s in layers if s.spiking]
    for p, emitter in enumerate(pop_layer):
        size = n_inputs if emitter is None else next(s.size for s in layers if s.index == emitter)
        consumer_pos = 0 if emitter is None else [s.index for s in layers].index(emitter) + 1
        consumer = layers[consumer_pos].index if consumer_pos < len(layers) else None
        if consumer is not None:
            hemis = placed[consumer].hemispheres
        else:
            hemis = (0, 1)  # not consumed on chip: any unique label will do
        cap = len(hemis) * N_DRIVERS
        if size > cap:
            raise TrainingError(
                f"drivers: population {p} has {size} sources but its consumer's "
                f"hemisphere(s) {list(hemis)} have {cap} synapse drivers"
            )
        # split evenly over the hemispheres, drivers 0.. in each
        per = -(-size // len(hemis))
        k = np.arange(size)
        h = np.asarray(hemis, np.int64)[k // per]
        d = k % per
        sources.append(SourcePlacement(p, emitter, consumer, size, h, d, p))
    return Mapping(n_inputs, tuple(placed[s.index] for s in layers), tuple(sources))


def specs_of(net: object) -> tuple[list[LayerSpec], int]:
    """LayerSpecs of a training.nn.Network (Linear, neuron, Linear, neuron, ...)."""
    from training.nn import LIF, Linear

    specs = []
    fan_in = None
    for i, m in enumerate(net.layers):  # type: ignore[attr-defined]
        if isinstance(m, Linear):
            fan_in = m.n_in
            continue
        specs.append(LayerSpec(i, m.size, int(fan_in), isinstance(m, LIF)))  # type: ignore[arg-type]
    return specs, int(net.n_in)  # type: ignore[attr-defined]
