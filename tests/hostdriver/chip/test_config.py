"""ChipConfig: whole-chip words, minimal diffs (counted on the wire), read-back and verify over the
in-process emulator and over TCP, the host's belief of the board, and configuration files."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest
from chip_factory import SpyBoard, random_config, tcp_emulator
from hypothesis import given, settings
from hypothesis import strategies as st

import hostdriver
from hostdriver.chip import (
    BELIEVED,
    ChipConfig,
    NeuronCell,
    SynapseCoord,
    believed,
    forget,
    load_config,
)
from hostdriver.chip.fileio import SCHEMA_VERSION, dumps
from protocol.errors import BoardError, ConfigError, LinkError
from protocol.wire import Instr

N_WORDS = 79850


@pytest.fixture
def emu():
    with hostdriver.connect("emu://") as board:
        yield board


@pytest.fixture(scope="module")
def tcp_url():
    with tcp_emulator() as url:
        yield url


def test_layout_covers_every_register_once_in_ascending_runs():
    addrs, words = ChipConfig().to_words()
    assert addrs.size == words.size == N_WORDS and not words.any()
    assert np.all(np.diff(addrs.astype(np.int64)) > 0)
    runs = ChipConfig.read_runs()
    assert sum(n for _, n in runs) == N_WORDS
    expanded = np.concatenate([np.arange(a, a + n) for a, n in runs])
    assert np.array_equal(expanded, addrs)
    assert ChipConfig.is_config_address([0x0400_FFFF, 0x0401_0000, 0x0700_0000]).tolist() == [
        True, False, False]


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_words_round_trip(seed):
    cfg = random_config(seed)
    addrs, words = cfg.to_words()
    back = ChipConfig.from_words(addrs, words)
    assert back == cfg
    perm = np.random.default_rng(seed).permutation(addrs.size)
    assert ChipConfig.from_words(addrs[perm], words[perm]) == cfg


def test_from_words_errors_and_partial_updates():
    with pytest.raises(ConfigError, match="0x07000003 SPIKE_COUNTER neuron 3 is not a chip"):
        ChipConfig.from_words([0x0700_0003], [1])
    with pytest.raises(ConfigError, match="not unsigned 32-bit"):
        ChipConfig.from_words([0x0900_0000], [1 << 32])
    base = random_config(3)
    s = SynapseCoord(0, 3, 4)
    cfg = ChipConfig.from_words([s.address, s.address], [0x0102, 0x0305], base=base)
    assert cfg.synapses[s].weight == 5 and cfg.synapses[s].address == 3
    assert cfg.synapses[SynapseCoord(0, 3, 5)].weight == 0
    assert base.synapses[s] != cfg.synapses[s]  # base is not modified


def test_diff_of_one_weight_is_one_word():
    cfg = random_config(1)
    new = cfg.copy()
    s = SynapseCoord(1, 200, 77)
    new.synapses.weights[1, 200, 77] = (int(new.synapses.weights[1, 200, 77]) + 1) % 64
    addrs, words = new.diff(cfg)
    assert addrs.tolist() == [s.address]
    assert words[0] == new.to_words()[1][np.flatnonzero(new.to_words()[0] == s.address)[0]]
    assert cfg.diff(cfg)[0].size == 0
    assert new.diff(None)[0].size == N_WORDS
    assert len(new.differences(cfg)) == 1 and "row 200 columns 76..77" in new.differences(cfg)[0]


def test_equality_copy_and_types():
    a = random_config(5)
    b = a.copy()
    assert a == b and a is not b
    b.neuron_capmem[NeuronCell.V_LEAK] = 1
    assert a != b and a.neuron_capmem != b.neuron_capmem
    with pytest.raises(TypeError):
        a.synapses = a.drivers
    with pytest.raises(AttributeError, match="no container 'weights'"):
        a.weights = 1
    assert "nonzero weights" in repr(a)


@pytest.mark.parametrize("transport", ["emu", "tcp"])
def test_random_config_written_and_read_back_equals_it(transport, emu, tcp_url):
    board = emu if transport == "emu" else hostdriver.connect(tcp_url)
    try:
        spy = SpyBoard(board)
        cfg = random_config(11)
        assert cfg.write(spy) == N_WORDS  # nothing known about the board: every word
        assert spy.data_words() == N_WORDS
        back = ChipConfig.read(spy)
        assert len(spy.programs) == 2  # one program each way
        reads = spy.programs[-1][spy.programs[-1]["op"] == Instr.READ]
        assert int(reads["count"].sum()) == N_WORDS
        assert back == cfg
        cfg.verify(spy)

        new = cfg.copy()
        new.synapses.weights[0, 3, 4] = (int(cfg.synapses.weights[0, 3, 4]) + 1) % 64
        assert new.write(spy) == 1
        prog = spy.programs[-1]
        assert spy.data_words() == 1
        assert prog["addr"][prog["op"] == Instr.DATA].tolist() == [SynapseCoord(0, 3, 4).address]
        assert ChipConfig.read(spy) == new
    finally:
        if transport == "tcp":
            board.close()


def test_unchanged_config_sends_nothing_and_belief_follows_reads(emu):
    spy = SpyBoard(emu)
    cfg = random_config(2)
    assert believed(spy) is None
    cfg.write(spy)
    assert believed(spy) == cfg
    n = len(spy.programs)
    assert cfg.write(spy) == 0 and len(spy.programs) == n
    # a second host object for the same board learns the state by reading it
    other = SpyBoard(emu)
    ChipConfig.read(other)
    new = cfg.copy()
    new.neurons.output_label[5] ^= 1
    assert new.write(other) == 1
    # explicit previous: the caller's word
    assert new.write(spy, previous=new) == 0
    assert new.write(spy, previous=None) == N_WORDS
    with pytest.raises(TypeError):
        new.write(spy, previous="board")
    forget(spy)
    assert believed(spy) is None and new.write(spy, previous=BELIEVED) == N_WORDS


def test_failed_write_forgets_the_belief(emu):
    spy = SpyBoard(emu)
    cfg = random_config(4)
    cfg.write(spy)
    new = cfg.copy()
    new.cadc.offsets[0] = -5 if cfg.cadc.offsets[0] != -5 else 5
    spy.fail_next = LinkError("cable pulled")
    with pytest.raises(LinkError):
        new.write(spy)
    assert believed(spy) is None
    assert new.write(spy) == N_WORDS
    new.verify(spy)


def test_board_refusal_raises_and_forgets(emu):
    from hostdriver.program import Program

    spy = SpyBoard(emu)
    ChipConfig().write(spy)
    assert believed(spy) == ChipConfig()
    p = Program()
    p.write([0x0A00_0000], [1 << 13])  # MADC_CONFIG bits 15..13 are reserved: the board refuses
    with pytest.raises(BoardError, match="VALUE_OUT_OF_RANGE"):
        p.run(spy)
    assert believed(spy) is None


def test_verify_names_the_differing_addresses(emu):
    cfg = random_config(6)
    cfg.write(emu)
    s = SynapseCoord(0, 3, 4)
    held = int(emu.read([s.address])[0])
    emu.write([s.address], [held ^ 1])  # behind the host model's back
    with pytest.raises(ConfigError) as e:
        cfg.verify(emu)
    msg = str(e.value)
    assert "differs from the expected config in 1 words" in msg
    assert f"0x04000182 SYNAPSE hemisphere 0 row 3 columns 4..5: expected 0x{held:08x}, " \
           f"board holds 0x{held ^ 1:08x}" in msg
    assert e.value.addresses.tolist() == [s.address]
    # after the failed verify the belief is what the board holds: a write repairs one word
    spy = SpyBoard(emu)
    ChipConfig.read(spy)
    assert cfg.write(spy) == 1
    cfg.verify(emu)


def test_label_map():
    cfg = ChipConfig()
    cfg.neurons.spike_output[[3, 7, 9]] = True
    cfg.neurons.output_label[[3, 7, 9, 11]] = [100, 200, 100, 300]
    m = cfg.label_map()
    assert m.shape == (16384,) and m[100] == 3 and m[200] == 7 and m[300] == -1 and m[0] == -1


# ----------------------------------------------------------------------------- files
def test_save_load_round_trip_is_readable_json(tmp_path):
    cfg = random_config(8)
    path = tmp_path / "chip.json"
    cfg.save(path, note="bench A")
    assert ChipConfig.load(path) == cfg
    doc = json.loads(path.read_text())
    assert doc["format"] == "strobe-chip-config" and doc["schema_version"] == SCHEMA_VERSION
    assert doc["note"] == "bench A"
    assert doc["containers"]["neuron_capmem"]["V_LEAK"] == cfg.neuron_capmem.codes[:, 0].tolist()
    assert len(doc["containers"]["synapses"]["weights"]) == 2
    assert path.read_text().count("\n") > 1000  # one array row per line, not one huge line
    assert [p.name for p in tmp_path.iterdir()] == ["chip.json"]  # no temp file left
    gz = tmp_path / "chip.json.gz"
    cfg.save(gz)
    assert gzip.decompress(gz.read_bytes())[:1] == b"{" and load_config(gz) == cfg


def test_interrupted_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "chip.json"
    old = random_config(1)
    old.save(path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        random_config(2).save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["chip.json"]


def _doc(cfg=None):
    return json.loads(dumps(cfg or ChipConfig()))


@pytest.mark.parametrize(
    ("mutate", "text"),
    [
        (lambda d: d.update(format="calibration"), "not a chip config file"),
        (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "newer than this software"),
        (lambda d: d.update(schema_version="1"), "invalid schema_version"),
        (lambda d: d["containers"].pop("crossbar"), r"containers missing \['crossbar'\]"),
        (lambda d: d["containers"]["madc"].update(gain=1), r"unknown \['gain'\]"),
        (lambda d: d["containers"]["neurons"].pop("enable_fire"), r"missing \['enable_fire'\]"),
        (lambda d: d["containers"]["synapses"]["weights"][1][2].__setitem__(3, 64),
         r"containers\.synapses\.weights: Weight 64 out of range 0\.\.63 for synapse weight of "
         r"synapse \(hemisphere 1, row 2, column 3\)"),
        (lambda d: d["containers"]["neuron_capmem"]["V_RESET"].__setitem__(17, 1023),
         r"containers\.neuron_capmem\.V_RESET: CapMemValue 1023 .* NeuronCell\.V_RESET of "
         r"neuron 17"),
        (lambda d: d["containers"]["drivers"]["row_modes"][0].pop(),
         r"ragged nested lists, expected shape \(2, 256\)"),
        (lambda d: d["containers"]["madc"].update(enable=1),
         r"containers\.madc: MADCPeriod 0"),
        (lambda d: d["containers"]["cadc"]["offsets"].__setitem__(0, 0.5), "not an integer"),
    ],
)
def test_bad_files_are_refused_naming_the_field(tmp_path, mutate, text):
    doc = _doc()
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=text):
        load_config(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    trunc = tmp_path / "trunc.json"
    trunc.write_text(dumps(ChipConfig())[:5000])
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_config(trunc)
    gz = tmp_path / "bad.json.gz"
    gz.write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(ConfigError, match="corrupt gzip"):
        load_config(gz)
    with pytest.raises(ConfigError, match="not a chip config"):
        (tmp_path / "list.json").write_text("[1, 2]")
        load_config(tmp_path / "list.json")
