"""The compiled trace decoder against its numpy twin: the same Trace, the same first error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import records
from protocol.codec import words_to_bytes
from protocol.errors import DecodeError
from protocol.records import decode_trace, encode_trace
from protocol.wire import CADC_DATA_WORDS, Rec

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EPOCH = 1 << 42


def _numpy(data: bytes):
    return records._decode_numpy(np.frombuffer(data, np.uint8))


def _outcome(fn, data):
    try:
        return fn(data), None
    except DecodeError as exc:
        return None, (exc.offset, str(exc))


def _agree(data: bytes) -> None:
    got, got_err = _outcome(decode_trace, data)
    want, want_err = _outcome(_numpy, data)
    assert got_err == want_err
    if want is not None:
        assert got.equals(want)


def _trace(rng: np.random.Generator, n_cadc: int = 3) -> bytes:
    """A trace of every record kind, across an epoch boundary, with episodes -1, 0 and 1."""
    return words_to_bytes(encode_trace(
        spikes={"time": [1, 40, EPOCH + 2, EPOCH + 50], "label": [5, 0x3FFF, 7, 8]},
        episodes={"time": [30, EPOCH + 10], "index": [3, 0x3FFF]},
        cadc={"time": np.arange(n_cadc) * 7 + 31, "index": np.arange(n_cadc)},
        cadc_samples=rng.integers(0, 256, (n_cadc, 512), dtype=np.uint8),
        madc={"time": [32, EPOCH + 11], "value": [1023, 0], "source": [15, 3]},
        reads={"time": [33, 34], "index": [0, (1 << 24) - 1], "data": [0xFFFFFFFF, 1]},
        errors={"time": [35], "code": [255], "info16": [0xFFFF], "info32": [0xDEADBEEF]},
        halt={"time": [EPOCH + 60], "status": [0x3FFF]},
        sync=0,
    ))


def test_the_compiled_decoder_is_in_use():
    # numba is a declared dependency: the fast path must be what decode_trace runs
    assert records.COMPILED


def test_every_record_kind_and_field_matches_the_numpy_decoder():
    data = _trace(np.random.default_rng(0))
    got, want = decode_trace(data), _numpy(data)
    assert got.equals(want)
    assert got.spikes["episode"].tolist() == [-1, 3, 3, 0x3FFF]
    assert got.madc["source"].tolist() == [15, 3] and got.madc["value"].tolist() == [1023, 0]
    assert got.reads.tolist() == [(0, 0xFFFFFFFF), ((1 << 24) - 1, 1)]
    assert got.errors.tolist() == [(255, 0xFFFF, 0xDEADBEEF)]
    assert got.halt["status"].tolist() == [0x3FFF] and got.halt["time"][0] == EPOCH + 60
    assert got.syncs.tolist() == [0, EPOCH]
    assert got.cadc_samples.flags.c_contiguous and got.cadc_samples.shape == (3, 512)


def test_samples_unpack_at_every_byte_position():
    # channel c of block b holds (b * 512 + c) % 251: a misplaced byte cannot go unnoticed
    n = 4
    samples = (np.arange(n * 512) % 251).astype(np.uint8).reshape(n, 512)
    data = words_to_bytes(encode_trace(cadc={"time": np.arange(n), "index": np.zeros(n, int)},
                                       cadc_samples=samples))
    assert np.array_equal(decode_trace(data).cadc_samples, samples)


@pytest.mark.parametrize("edit", ["data_opcode", "last_data_opcode", "padding", "head_cut",
                                  "stray_data", "unknown_opcode", "zero_opcode"])
def test_malformed_traces_raise_what_the_numpy_decoder_raises(edit):
    w = np.frombuffer(_trace(np.random.default_rng(1)), "<u8").copy()
    head = int(np.flatnonzero((w >> np.uint64(56)) == Rec.CADC_HEAD)[1])
    op = np.uint64(56)
    if edit == "data_opcode":
        w[head + 9] = (w[head + 9] & np.uint64((1 << 56) - 1)) | (np.uint64(Rec.SPIKE) << op)
    elif edit == "last_data_opcode":
        w[head + CADC_DATA_WORDS] ^= np.uint64(1) << op
    elif edit == "padding":
        w[head + CADC_DATA_WORDS] |= np.uint64(1) << np.uint64(20)
    elif edit == "head_cut":
        w = w[: head + 30]
    elif edit == "stray_data":
        w[0] = np.uint64(Rec.CADC_DATA) << op
    elif edit == "unknown_opcode":
        w[2] = np.uint64(0xAB) << op
    else:
        w[1] = np.uint64(0)
    data = w.tobytes()
    with pytest.raises(DecodeError) as exc:
        decode_trace(data)
    _agree(data)
    assert exc.value.offset is not None


@FUZZ
@given(st.integers(0, 2**32 - 1), st.integers(0, 3), st.lists(
    st.tuples(st.integers(0, 10**9), st.integers(0, 255)), max_size=4))
def test_mutated_traces_agree_with_the_numpy_decoder(seed, n_cadc, edits):
    data = bytearray(_trace(np.random.default_rng(seed), n_cadc))
    for pos, val in edits:
        data[pos % len(data)] = val
    _agree(bytes(data))


def test_a_numba_that_fails_to_import_leaves_the_numpy_passes_in_charge(tmp_path) -> None:
    """An installed numba that raises on import (a numpy newer than it supports) must not break
    decoding or program building: the numpy twins run."""
    import os
    import subprocess
    import sys

    broken = tmp_path / "numba"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('numba: numpy too new')\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (
        "import numpy as np\n"
        "from protocol import codec, records\n"
        "from hostdriver.program import Program, SpikeInput\n"
        "assert codec.NUMBA and not codec.numba_works()\n"
        "smp = (np.arange(512) % 256).astype(np.uint8)[None]\n"
        "data = codec.words_to_bytes(records.encode_trace(spikes={'time': [125, 130],"
        " 'label': [5, 6]}, cadc={'time': [140], 'index': [0]}, cadc_samples=smp))\n"
        "t = records.decode_trace(data)\n"
        "assert np.array_equal(t.cadc_samples, smp), t\n"
        "p = Program()\n"
        "p.episodes(2, 1000, spikes=SpikeInput(np.array([1, 0]), np.array([5, 9]),"
        " np.array([3, 4])), unit='ticks')\n"
        "print('ok')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=root)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
