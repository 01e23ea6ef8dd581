"""The compiled host-glue helpers of the analog core (kernels.hash_offsets / hash_grid /
rank_in_episode / unique_small / cadc_plan / int_range / radix_order and their users in
noise.py, fast.py, batch.py, core.py) give exactly the integers of the numpy code they replace:
the temporal-noise table offsets above all (a changed hash changes every noise value)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.analog import EpisodeBatch, core, fast, kernels
from emulator.analog.noise import (
    SALT_CADC,
    SALT_MEMBRANE,
    TABLE_BITS,
    TABLE_SIZE,
    NoiseTable,
    hash_keys,
    splitmix64,
)
from emulator.analog.simulate import to_ticks
from protocol.errors import ConfigError
from protocol.wire import LABEL_MASK

needs_numba = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba not installed")
I64 = st.integers(-(1 << 63), (1 << 63) - 1)


def ref_offsets(serial: int, salt: int, key: int, *index: np.ndarray) -> np.ndarray:
    """The numpy hash the compiled one must reproduce."""
    return (hash_keys(serial, salt, key, *index) >> np.uint64(64 - TABLE_BITS)).astype(np.int64)


@pytest.fixture(scope="module")
def table() -> NoiseTable:
    return NoiseTable(7, width=16)


def test_splitmix64_golden() -> None:
    # reference splitmix64 (Vigna) outputs of the state increments 1, 2 from seed 0
    out = splitmix64(np.array([0, 0x9E3779B97F4A7C15], np.uint64))
    assert out.tolist() == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


@needs_numba
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(I64, I64), min_size=0, max_size=40), st.integers(0, (1 << 63) - 1))
def test_offsets_match_numpy_hash(pairs: list, key: int) -> None:
    nt = NoiseTable.__new__(NoiseTable)  # the hash only: no table draw per example
    nt.serial, nt._prefix = 3, {}
    a = np.array([p[0] for p in pairs], np.int64)
    b = np.array([p[1] for p in pairs], np.int64)
    got = nt.offsets(SALT_CADC, key, a, b)
    assert got.dtype == np.int64 and got.shape == a.shape
    np.testing.assert_array_equal(got, ref_offsets(3, SALT_CADC, key, a, b))
    assert got.size == 0 or (got.min() >= 0 and got.max() < TABLE_SIZE)


@needs_numba
def test_offsets_wraparound_and_broadcast(table: NoiseTable) -> None:
    ext = np.array([-1, -(1 << 63), (1 << 63) - 1, 0, 1], np.int64)
    np.testing.assert_array_equal(table.offsets(SALT_MEMBRANE, 9, ext, ext[::-1]),
                                  ref_offsets(7, SALT_MEMBRANE, 9, ext, ext[::-1]))
    u = np.array([(1 << 64) - 1, 1 << 63, 5], np.uint64)  # cast to int64 as hash_keys does
    np.testing.assert_array_equal(table.offsets(SALT_CADC, 1, u), ref_offsets(7, SALT_CADC, 1, u))
    col, row = np.arange(5)[None, :], np.arange(3)[:, None]
    got = table.offsets(SALT_CADC, 2, col, row)
    assert got.shape == (3, 5)
    np.testing.assert_array_equal(got, ref_offsets(7, SALT_CADC, 2, col, row))
    assert table.offsets(SALT_CADC, 2, 4) == ref_offsets(7, SALT_CADC, 2, 4)
    # another (salt, key) must not reuse the cached prefix of the first
    assert not np.array_equal(table.offsets(SALT_CADC, 3, ext), table.offsets(SALT_CADC, 2, ext))
    np.testing.assert_array_equal(table.offsets(SALT_CADC, 3, ext),
                                  ref_offsets(7, SALT_CADC, 3, ext))


@pytest.mark.parametrize("compiled", [True, False])
def test_step_offsets_is_the_broadcast_offsets(table: NoiseTable, compiled: bool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if compiled and not kernels.AVAILABLE:
        pytest.skip("numba not installed")
    monkeypatch.setattr(kernels, "AVAILABLE", compiled and kernels.AVAILABLE)
    ids = np.array([0, 5, -3, (1 << 63) - 1, 17], np.int64)
    got = table.step_offsets(SALT_MEMBRANE, 11, ids, 34)
    assert got.shape == (34, 5)
    np.testing.assert_array_equal(
        got, ref_offsets(7, SALT_MEMBRANE, 11, ids[None, :], np.arange(34)[:, None]))
    assert table.step_offsets(SALT_MEMBRANE, 11, ids, 0).shape == (0, 5)


def ref_rank(ep: np.ndarray) -> np.ndarray:
    order = np.argsort(ep, kind="stable")
    first = np.searchsorted(ep[order], ep[order], side="left")
    rank = np.empty(ep.size, np.int64)
    rank[order] = np.arange(ep.size) - first
    return rank


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 9), max_size=60), st.booleans())
def test_rank_in_episode(ep: list, grouped: bool) -> None:
    e = np.array(sorted(ep) if grouped else ep, np.int64)
    np.testing.assert_array_equal(core._rank_in_episode(e), ref_rank(e))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, LABEL_MASK), max_size=80))
def test_unique_labels(labels: list) -> None:
    x = np.array(labels, np.int64)
    uniq, inv = core._unique_labels(x)
    u_ref, i_ref = np.unique(x, return_inverse=True)
    np.testing.assert_array_equal(uniq, u_ref)
    np.testing.assert_array_equal(inv, i_ref.reshape(-1))


@needs_numba
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 5000)), max_size=60),
       st.sampled_from([1, 7, 128]), st.booleans())
def test_cadc_plan_matches_numpy(reqs: list, dt: int, grouped: bool) -> None:
    if grouped:
        reqs = sorted(reqs, key=lambda r: r[0])
    ep = np.array([r[0] for r in reqs], np.int64)
    t = np.array([r[1] for r in reqs], np.int64)
    got = fast.CadcPlan.build(ep, t, 7, 3, dt)
    kernels.AVAILABLE = False
    try:
        ref = fast.CadcPlan.build(ep, t, 7, 3, dt)
    finally:
        kernels.AVAILABLE = True
    for name in ("ptr", "order", "j", "h_index"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
        assert getattr(got, name).dtype == np.int64
    assert torch.equal(got.fu, ref.fu) and got.v.shape == ref.v.shape == (t.size, 3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 300), st.integers(0, 600)),
                max_size=80))
def test_combined_order_is_the_lexsort(rows: list) -> None:
    k, e, n = (np.array([r[i] for r in rows], np.int64) for i in range(3))
    np.testing.assert_array_equal(core._spike_order(k, e, n), np.lexsort((n, e, k)))
    np.testing.assert_array_equal(core._event_order(k, e, n), np.lexsort((n, e, k)))


def test_combined_order_falls_back_to_lexsort() -> None:
    neg = (np.array([2, -1, 2]), np.array([0, 0, -5]), np.array([1, 1, 1]))
    np.testing.assert_array_equal(core._combined_order(neg), np.lexsort(neg[::-1]))
    big = (np.array([1, 0, 1], np.int64), np.array([1 << 40, 3, 0], np.int64),
           np.array([1 << 30, 2, 1 << 30], np.int64))  # spans multiply past 2**62
    np.testing.assert_array_equal(core._combined_order(big), np.lexsort(big[::-1]))
    assert core._combined_order((np.zeros(0, np.int64),) * 3).size == 0


@needs_numba
@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, (1 << 62) - 1), max_size=60), st.integers(0, 3))
def test_radix_order_is_stable_argsort(keys: list, coarse: int) -> None:
    k = np.array(keys, np.int64) >> (20 * coarse)  # coarse: many ties
    bits = max(int(k.max(initial=0)), 1).bit_length()
    np.testing.assert_array_equal(kernels.radix_order(k, bits), np.argsort(k, kind="stable"))


@needs_numba
@given(st.lists(I64, min_size=1, max_size=50))
def test_int_range(x: list) -> None:
    a = np.array(x, np.int64)
    assert kernels.int_range(a) == (a.min(), a.max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ticks_np_is_to_ticks(dtype: torch.dtype) -> None:
    t = torch.rand(500, dtype=dtype) * 40
    t[:3] = torch.tensor([0.0, 1 / 3, 33.999999])
    np.testing.assert_array_equal(core._ticks_np(t.numpy(), 128), to_ticks(t, 128).numpy())


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize(("field", "value", "msg"), [
    ("spike_time", [5, -1], "spike_time must be >= 0"),
    ("spike_episode", [0, 3], "spike_episode outside 0..2"),
    ("spike_episode", [-1, 0], "spike_episode outside 0..2"),
    ("spike_label", [0, LABEL_MASK + 1], "spike labels must lie"),
    ("spike_label", [-2, 0], "spike labels must lie"),
    ("cadc_time", [-4], "cadc_time must be >= 0"),
    ("duration", [10, -1, 5], "durations must be >= 0"),
])
def test_normalised_still_rejects(compiled: bool, field: str, value: list, msg: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "AVAILABLE", compiled and kernels.AVAILABLE)
    kw = dict(n_episodes=3, duration=[10, 10, 10], spike_episode=[0, 2], spike_time=[1, 2],
              spike_label=[4, 5], cadc_episode=[1], cadc_time=[3])
    kw[field] = np.array(value, np.int64)
    with pytest.raises(ConfigError, match=msg):
        EpisodeBatch(**kw).normalised()
    kw[field] = np.abs(np.array(value, np.int64)) % 3  # in range: accepted
    if field == "duration":
        kw[field] = [10, 10, 10]
    assert EpisodeBatch(**kw).normalised().n_episodes == 3
