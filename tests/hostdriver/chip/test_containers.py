"""Containers: golden words, vectorised round trips, range errors that name coordinates, and a
cross-check that every encoded word is accepted by the emulator's independent register file."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.registers import RegisterFile
from hostdriver.chip import (
    BackgroundSource,
    BackgroundSources,
    CADCConfig,
    Crossbar,
    CrossbarNode,
    CrossbarNodeCoord,
    GlobalCapMem,
    GlobalCell,
    GlobalCellCoord,
    MADCConfig,
    NeuronCapMem,
    NeuronCell,
    NeuronCellCoord,
    NeuronConfig,
    NeuronConfigs,
    NeuronCoord,
    ReadoutSource,
    RowMode,
    Synapse,
    SynapseArray,
    SynapseCoord,
    SynapseDrivers,
    SynapseRowCoord,
)
from protocol.errors import ConfigError

ALL = (NeuronCapMem, GlobalCapMem, NeuronConfigs, SynapseArray, SynapseDrivers, Crossbar,
       CADCConfig, MADCConfig, BackgroundSources)


def words_at(container, addr):
    a = container.register_addresses()
    return int(container.encode()[np.flatnonzero(a == addr)[0]])


def test_neuron_config_golden_words():
    cfg = NeuronConfig(enable_fire=True, enable_leak=True, enable_syn_exc=True, spike_output=True,
                       readout_source=ReadoutSource.SYN_INH, enable_readout=True,
                       output_label=0x1234, refractory_count=200, refractory_clock=3)
    assert cfg.encode() == (0x1234_0A87, 0x0000_03C8)
    assert NeuronConfig.decode(0x1234_0A87, 0x3C8) == cfg
    assert cfg.refractory_ticks == 200 * 8
    block = NeuronConfigs()
    block[NeuronCoord(300)] = cfg
    assert words_at(block, 0x0300_0258) == 0x1234_0A87
    assert words_at(block, 0x0300_0259) == 0x3C8
    assert block[300] == cfg and block[299] == NeuronConfig()
    assert NeuronConfig(connect_other_hemisphere=True, enable_adaptation=True,
                        enable_exponential=True, enable_syn_inh=True).encode() == (0x78, 0)


def test_synapse_golden_packing():
    syn = SynapseArray()
    syn[SynapseCoord(0, 0, 0)] = Synapse(weight=5, address=3)
    syn[SynapseCoord(0, 0, 1)] = Synapse(weight=63, address=63)
    syn[SynapseCoord(1, 255, 255)] = Synapse(weight=1, address=2)
    assert words_at(syn, 0x0400_0000) == 0x3F3F_0305
    assert words_at(syn, 0x0400_FFFF) == 0x0201_0000
    assert syn[SynapseCoord(0, 0, 1)] == Synapse(63, 63)


def test_driver_crossbar_cadc_madc_background_golden_words():
    drv = SynapseDrivers()
    drv[SynapseRowCoord(1, 10)] = RowMode.EXCITATORY
    drv[SynapseRowCoord(1, 11)] = "inhibitory"
    drv.enable[1, 5] = True
    assert words_at(drv, 0x0500_0085) == 0b1_10_01
    assert drv[SynapseRowCoord(1, 11)] is RowMode.INHIBITORY

    xb = Crossbar()
    xb[CrossbarNodeCoord(4, 8)] = CrossbarNode(enable=True, mask=0x3FFF, target=0x1234)
    assert words_at(xb, 0x0600_0048) == 0x8000_0000 | 0x3FFF << 14 | 0x1234
    assert xb[CrossbarNodeCoord(4, 8)] == CrossbarNode(True, 0x3FFF, 0x1234)

    cadc = CADCConfig(enable=True)
    cadc.offsets[[0, 1, 2]] = [-1, -128, 127]
    assert [words_at(cadc, 0x0800_0000 + i) for i in range(3)] == [0xFF, 0x80, 0x7F]
    assert words_at(cadc, 0x0900_0000) == 1
    assert CADCConfig.decode(cadc.encode()) == cadc

    madc = MADCConfig(enable=True, neuron=300, source=ReadoutSource.ADAPTATION, period=10)
    assert madc.encode().tolist() == [10 << 16 | 1 << 12 | 3 << 9 | 300]
    assert madc.neuron == 300 and madc.enable is True

    bg = BackgroundSources()
    bg[2] = BackgroundSource(enable=True, poisson=True, label=0x2ABC, period=1000, seed=0xDEADBEEF)
    assert [words_at(bg, 0x0B00_0008 + k) for k in range(3)] == [
        0x2ABC_0003, 1000, 0xDEAD_BEEF]
    assert bg[2].seed == 0xDEADBEEF


def test_capmem_golden_and_indexing():
    caps = NeuronCapMem()
    caps[NeuronCell.V_LEAK] = np.arange(512) + 100
    caps[NeuronCellCoord(17, NeuronCell.V_THRESHOLD)] = 1022
    assert words_at(caps, 0x0100_0220) == 117
    assert words_at(caps, 0x0100_0222) == 1022
    assert caps[NeuronCellCoord(17, NeuronCell.V_LEAK)] == 117
    assert caps[NeuronCell.V_LEAK][511] == 611
    g = GlobalCapMem()
    g[GlobalCell.I_BIAS_SYNAPSE_DAC] = [1, 2, 3, 4]
    assert words_at(g, GlobalCellCoord(3, 0).address) == 4


def test_range_errors_name_field_coordinate_and_range():
    caps = NeuronCapMem()
    with pytest.raises(ConfigError, match=r"^CapMemValue 1023 out of range 0\.\.1022 for "
                                          r"NeuronCell\.V_LEAK of neuron 17$"):
        caps[NeuronCell.V_LEAK] = np.where(np.arange(512) == 17, 1023, 0)
    caps.codes[17, NeuronCell.I_BIAS_LEAK] = 1023  # raw element write: caught by validate
    with pytest.raises(ConfigError, match="NeuronCell.I_BIAS_LEAK of neuron 17"):
        caps.encode()
    syn = SynapseArray()
    with pytest.raises(ConfigError, match=r"Weight 64 out of range 0\.\.63 for synapse weight of "
                                          r"synapse \(hemisphere 1, row 2, column 3\)"):
        w = np.zeros((2, 256, 256), int)
        w[1, 2, 3] = 64
        syn.weights = w
    syn.addresses[0, 5, 6] = 64
    with pytest.raises(ConfigError, match=r"SynapseAddress 64 .* row 5, column 6"):
        syn.validate()
    with pytest.raises(ConfigError, match="shape"):
        syn.weights = np.zeros((3, 3))
    drv = SynapseDrivers()
    drv.row_modes[0, 7] = 3
    with pytest.raises(ConfigError, match=r"RowMode 3 out of range 0\.\.2 .* synapse row 7"):
        drv.encode()
    neurons = NeuronConfigs()
    with pytest.raises(ConfigError, match="Label 16384 out of range 0..16383 for NeuronConfig."
                                          "output_label of neuron 5"):
        neurons.output_label = np.where(np.arange(512) == 5, 16384, 0)
    with pytest.raises(ConfigError, match="RefractoryCount 256"):
        NeuronConfig(refractory_count=256)
    with pytest.raises(ConfigError, match="ReadoutSource 4 out of range"):
        NeuronConfig(readout_source=4)
    with pytest.raises(ConfigError, match="MADCPeriod 0 .*enabled"):
        MADCConfig(enable=True, neuron=1).encode()
    with pytest.raises(ConfigError, match="MADCPeriod 3"):
        MADCConfig(period=3)
    bg = BackgroundSources()
    bg.enable[4] = True
    with pytest.raises(ConfigError, match="background source 4 period"):
        bg.validate()
    with pytest.raises(ConfigError, match="CADCOffset 128 .* channel 9"):
        CADCConfig(offsets=np.where(np.arange(512) == 9, 128, 0))
    with pytest.raises(TypeError):
        NeuronConfigs(not_a_field=1)


def random_container(cls, rng):
    c = cls()
    for name, spec in cls.FIELDS.items():
        if spec.kind is bool:
            v = rng.integers(0, 2, spec.shape).astype(bool)
        elif hasattr(spec.kind, "MIN"):
            hi = min(spec.kind.MAX, 1 << 40)
            v = rng.integers(spec.kind.MIN, hi + 1, spec.shape)
            if spec.kind.ALSO:
                v = np.maximum(v, spec.kind.MIN)
        else:
            v = rng.choice([m.value for m in spec.kind], spec.shape)
        setattr(c, name, v)
    return c


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_round_trip_and_emulator_accepts_every_word(seed):
    rng = np.random.default_rng(seed)
    regs = RegisterFile()
    for cls in ALL:
        c = random_container(cls, rng)
        words = c.encode()
        assert words.dtype == np.uint32 and words.shape == cls.register_addresses().shape
        back = cls.decode(words)
        assert back == c and back is not c
        assert np.array_equal(back.encode(), words)
        codes = regs.write_array(cls.register_addresses(), words)
        assert not codes.any(), f"{cls.__name__}: emulator refused {np.flatnonzero(codes)[:5]}"
        values, codes = regs.read_array(cls.register_addresses())
        assert not codes.any() and np.array_equal(values, words)


def test_containers_cover_every_mapped_register_of_the_emulator():
    regs = RegisterFile()
    addrs = np.concatenate([c.register_addresses() for c in ALL])
    assert np.unique(addrs).size == addrs.size == 79850
    # every config register is writable; its neighbours past the end of each block are not
    assert not regs.write_array(addrs, np.zeros(addrs.size)).any()
    assert (regs.write_array(np.array([0x0100_0018, 0x0600_0009, 0x0B00_0003]), np.zeros(3))
            != 0).all()


def test_decode_refuses_wrong_word_counts_and_copy_is_deep():
    with pytest.raises(ConfigError, match="decodes 256 words, got 3"):
        SynapseDrivers.decode([1, 2, 3])
    with pytest.raises(ConfigError, match="unsigned 32-bit"):
        MADCConfig.decode([1 << 32])
    a = SynapseArray()
    b = a.copy()
    b.weights[0, 0, 0] = 1
    assert a.weights[0, 0, 0] == 0 and a != b
    assert "SynapseArray(weights=(2, 256, 256) nonzero=0" in repr(a)
