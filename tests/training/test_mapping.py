"""Placement and routing onto the chip (training/mapping.py): layouts, labels, resource errors."""

from __future__ import annotations

import numpy as np
import pytest

from hostdriver.chip import ChipConfig, CrossbarInput, CrossbarOutput, RowMode
from protocol.errors import TrainingError
from training import nn
from training.mapping import LayerSpec, labels_for, place, specs_of


def _pnas():
    specs, n_in = specs_of(nn.pnas_network(256, 246, 10, quantize=True, seed=0))
    return place(specs, n_in)


def _decode(label: np.ndarray) -> tuple[np.ndarray, ...]:
    """(hemisphere, driver, address) an event label reaches (docs/chip.md 4.1)."""
    lab = np.asarray(label, np.int64)
    h, bus = (lab >> 13) & 1, (lab >> 11) & 3
    return h, 4 * ((lab >> 6) & 0x1F) + bus, lab & 0x3F


def test_pnas_layout_fills_the_chip() -> None:
    m = _pnas()
    hidden, out = m.layers
    assert hidden.merged and out.merged and hidden.spiking and not out.spiking
    assert hidden.column.tolist() == list(range(246))
    assert out.column.tolist() == list(range(246, 256))
    assert m.used_circuits().tolist() == list(range(512))
    assert hidden.circuits[0].tolist() == [0, 256]
    inputs = m.sources[0]
    # 256 inputs: 128 drivers of each hemisphere
    assert np.bincount(inputs.hemisphere).tolist() == [128, 128]
    pairs = zip(inputs.hemisphere.tolist(), inputs.driver.tolist(), strict=True)
    assert sorted(set(pairs)) == [
        (h, d) for h in (0, 1) for d in range(128)
    ]
    assert m.summary()["circuits"] == 512 and m.summary()["drivers"] == 256


def test_labels_are_unique_and_decode_to_their_driver_and_address() -> None:
    m = _pnas()
    labels = np.concatenate([s.labels for s in m.sources])
    assert np.unique(labels).size == labels.size
    for s in m.sources:
        h, d, a = _decode(s.labels)
        assert np.array_equal(h, s.hemisphere) and np.array_equal(d, s.driver)
        assert (a == s.address).all()
    # one driver carries one source of each population, told apart by the address
    keys = np.concatenate([s.hemisphere * 128 + s.driver for s in m.sources])
    addrs = np.concatenate([np.full(s.size, s.address) for s in m.sources])
    pairs = np.unique(np.stack([keys, addrs]), axis=1)
    assert pairs.shape[1] == keys.size
    assert labels_for(1, 45, 37) == (1 << 13) | (1 << 11) | (11 << 6) | 37


def test_digits_layout_single_hidden_circuits_and_merged_readout() -> None:
    specs, n_in = specs_of(nn.pnas_network(64, 246, 10, quantize=True))
    m = place(specs, n_in)
    hidden, out = m.layers
    assert not hidden.merged and out.merged  # fan-in 64 vs 246
    assert set(hidden.hemisphere.tolist()) == {0}
    assert not set(hidden.column.tolist()) & set(out.column.tolist())
    assert (m.sources[0].hemisphere == 0).all()  # inputs on the hidden layer's hemisphere
    assert np.bincount(m.sources[1].hemisphere).tolist() == [123, 123]
    small = place(specs_of(nn.pnas_network(64, 20, 10, quantize=True))[0], 64)
    assert not small.layers[0].merged and not small.layers[1].merged
    always = place(specs_of(nn.pnas_network(64, 20, 10, quantize=True))[0], 64, merge="always")
    assert all(lp.merged for lp in always.layers)


def _route(cfg: ChipConfig, inp: int, labels: np.ndarray) -> np.ndarray:
    """Crossbar outputs each event of crossbar input `inp` passes ([n, 9] bool)."""
    xb = cfg.crossbar
    lab = np.asarray(labels, np.int64)[:, None]
    return xb.enable[inp][None, :] & ((lab & xb.mask[inp][None, :]) == xb.target[inp][None, :])


def test_configure_routes_every_source_to_exactly_its_driver_and_records_neurons() -> None:
    m = _pnas()
    cfg = m.configure(ChipConfig())
    fpga = _route(cfg, int(CrossbarInput.FPGA), m.sources[0].labels)
    assert (fpga.sum(axis=1) == 1).all()  # one bus, not recorded
    assert not fpga[:, int(CrossbarOutput.FPGA_RECORD)].any()
    want = 4 * m.sources[0].hemisphere + m.sources[0].driver % 4
    assert np.array_equal(np.argmax(fpga, axis=1), want)
    hidden = m.layers[0]
    for quadrant in range(4):
        got = _route(cfg, quadrant, m.sources[1].labels)
        assert got[:, int(CrossbarOutput.FPGA_RECORD)].all()
        assert (got[:, :8].sum(axis=1) == 1).all()
    nrn = cfg.neurons
    assert nrn.connect_other_hemisphere[hidden.circuits.reshape(-1)].all()
    assert nrn.enable_fire[hidden.circuit].all() and not nrn.enable_fire[hidden.circuit + 256].any()
    assert np.array_equal(nrn.output_label[hidden.circuit], m.sources[1].labels)
    out = m.layers[1]
    assert not nrn.enable_fire[out.circuits.reshape(-1)].any()
    assert not nrn.spike_output[out.circuits.reshape(-1)].any()
    assert cfg.drivers.enable.all()
    assert (cfg.drivers.row_modes[:, 0::2] == int(RowMode.EXCITATORY)).all()
    assert (cfg.drivers.row_modes[:, 1::2] == int(RowMode.INHIBITORY)).all()
    # hidden columns listen to the inputs' address, readout columns to the hidden neurons'
    syn = cfg.synapses.addresses
    assert (syn[:, :, hidden.column] == m.sources[0].address).all()
    h1, d1 = m.sources[1].hemisphere, m.sources[1].driver
    assert (syn[h1, 2 * d1][:, out.column] == m.sources[1].address).all()
    assert (syn[h1, 2 * d1 + 1][:, out.column] == m.sources[1].address).all()
    assert cfg.cadc.enable
    cfg.validate()


def test_write_weights_splits_signs_onto_the_row_pair() -> None:
    specs, n_in = specs_of(nn.pnas_network(200, 3, 2, quantize=True))
    m = place(specs, n_in)
    cfg = m.configure(ChipConfig())
    w = np.zeros((3, 200), np.int8)
    w[1, 5], w[2, 150], w[0, 7] = 63, -20, 1
    m.write_weights(cfg, 1, w)
    src, lp = m.sources[0], m.layers[0]
    weights = cfg.synapses.weights
    h, d = src.hemisphere[5], src.driver[5]
    assert weights[h, 2 * d, lp.column[1]] == 63 and weights[h, 2 * d + 1, lp.column[1]] == 0
    h, d = src.hemisphere[150], src.driver[150]
    assert h == 1  # the second half of the inputs sits on the bottom hemisphere
    assert weights[h, 2 * d, lp.column[2]] == 0 and weights[h, 2 * d + 1, lp.column[2]] == 20
    assert int(np.abs(weights).sum()) == 63 + 20 + 1
    with pytest.raises(TrainingError, match="shape"):
        m.write_weights(cfg, 1, np.zeros((200, 3), np.int8))
    with pytest.raises(TrainingError, match="63"):
        m.write_weights(cfg, 1, np.full((3, 200), 64, np.int16))


def test_deeper_networks_get_one_address_per_population() -> None:
    net = nn.Network([
        nn.Linear(20, 30, quantize=True), nn.LIF(30), nn.Linear(30, 40, quantize=True),
        nn.LIF(40), nn.Linear(40, 5, quantize=True), nn.LIF(5),
    ])
    m = place(*specs_of(net))
    assert [s.address for s in m.sources] == [0, 1, 2, 3]
    assert [s.consumer for s in m.sources] == [1, 3, 5, None]
    labels = np.concatenate([s.labels for s in m.sources])
    assert np.unique(labels).size == labels.size
    lookup = m.label_lookup(5)
    assert lookup[m.sources[3].labels].tolist() == list(range(5))
    assert (lookup[m.sources[1].labels] == -1).all()
    cols = np.concatenate([lp.circuits.reshape(-1) for lp in m.layers])
    cols = cols[cols >= 0]
    assert np.unique(cols).size == cols.size


@pytest.mark.parametrize(
    ("layers", "n_in", "merge", "resource"),
    [
        ([LayerSpec(1, 10, 257, False)], 257, "auto", "rows"),
        ([LayerSpec(1, 10, 200, False)], 200, "never", "rows"),
        ([LayerSpec(1, 250, 200, True), LayerSpec(3, 10, 250, False)], 200, "auto", "columns"),
        ([LayerSpec(1, 300, 10, False)], 10, "auto", "columns"),
        ([LayerSpec(1, 200, 10, True), LayerSpec(3, 200, 200, True),
          LayerSpec(5, 200, 200, False)], 10, "auto", "columns"),
    ],
)
def test_resource_exhaustion_names_the_resource(layers, n_in, merge, resource) -> None:
    with pytest.raises(TrainingError, match=f"^{resource}:"):
        place(layers, n_in, merge=merge)


def test_too_many_populations_run_out_of_addresses() -> None:
    layers = [LayerSpec(2 * i + 1, 2, 2, True) for i in range(64)]
    with pytest.raises(TrainingError, match="^addresses:"):
        place(layers, 2)


def test_bad_arguments() -> None:
    with pytest.raises(TrainingError, match="merge"):
        place([LayerSpec(1, 2, 2, False)], 2, merge="sometimes")
    with pytest.raises(TrainingError, match="fan-in"):
        place([LayerSpec(1, 2, 3, False)], 2)
    with pytest.raises(TrainingError, match="not spiking"):
        place([LayerSpec(1, 2, 2, False), LayerSpec(3, 2, 2, False)], 2)
    with pytest.raises(TrainingError, match="nothing to place"):
        place([], 2)
