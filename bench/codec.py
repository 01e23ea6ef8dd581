"""Trace codec throughput: fast codec vs the construct declarations, one JSON line.

The fast decoder is protocol.records' two compiled passes; its whole-array numpy twin (what
runs without numba, and what reports malformed traces) is timed too (`decode_numpy_*`).

Stream: an MNIST-training-like mix (PNAS 2022: 20 CADC steps 1.7 us apart per sample), per
episode (36 us) one EPISODE record, 20 CADC blocks, 30..200 spikes and 4 MADC samples; the run
starts shortly before a 2^42-tick epoch boundary so the stream carries TIME_SYNC records at the
start and at the wrap, and ends with HALT. "records" counts 64-bit words (every CADC_DATA word is
a record, as in protocol/wire.py); "events" counts logical records (a CADC block = 1).

Fast rates: best wall time of --repeats runs (the timeit convention; the machine may be shared),
with the median wall time and the best CPU time of this process reported too. Baseline: the
first ~20k words of the same stream through protocol/spec.py (one construct parse/build per word
plus the stream rules), compared per byte.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol import records as trace_records  # noqa: E402
from protocol import spec  # noqa: E402
from protocol.codec import words_to_bytes  # noqa: E402
from protocol.records import decode_trace, encode_trace  # noqa: E402
from protocol.wire import CADC_CHANNELS  # noqa: E402

EPISODE_TICKS = 4540  # 36.3 us: 20 CADC steps of 1.7 us and a margin
CADC_PER_EPISODE = 20
CADC_INTERVAL = 212  # 1.7 us
MADC_PER_EPISODE = 4
WORDS_PER_EPISODE_EST = 1 + CADC_PER_EPISODE * 75 + 115 + MADC_PER_EPISODE


def make_inputs(min_words: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n_ep = -(-min_words // WORDS_PER_EPISODE_EST) + 1
    base = (1 << 42) - n_ep * EPISODE_TICKS // 2  # cross one epoch boundary mid-run
    ep_t = base + np.arange(n_ep, dtype=np.uint64) * np.uint64(EPISODE_TICKS)
    n_sp = rng.integers(30, 201, n_ep)
    sp_ep = np.repeat(np.arange(n_ep), n_sp)
    sp_t = ep_t[sp_ep] + rng.integers(1, EPISODE_TICKS, sp_ep.size).astype(np.uint64)
    sp_t.sort()
    c_ep = np.repeat(np.arange(n_ep), CADC_PER_EPISODE)
    c_k = np.tile(np.arange(CADC_PER_EPISODE), n_ep)
    c_t = ep_t[c_ep] + (c_k * CADC_INTERVAL + 3).astype(np.uint64)
    m_ep = np.repeat(np.arange(n_ep), MADC_PER_EPISODE)
    m_t = ep_t[m_ep] + (np.tile(np.arange(MADC_PER_EPISODE), n_ep) * 1000 + 7).astype(np.uint64)
    return dict(
        episodes={"time": ep_t, "index": np.arange(n_ep) % (1 << 14)},
        spikes={"time": sp_t, "label": rng.integers(0, 1 << 14, sp_t.size)},
        cadc={"time": c_t, "index": c_k},
        cadc_samples=rng.integers(0, 256, (c_t.size, CADC_CHANNELS), dtype=np.uint8),
        madc={"time": m_t, "value": rng.integers(0, 1024, m_t.size),
              "source": np.zeros(m_t.size, np.int64)},
        halt={"time": [int(ep_t[-1]) + EPISODE_TICKS], "status": [0]},
        sync=int(base),
    )


def timed(fn, repeats: int) -> tuple[float, float, float, object]:
    """Best and median wall time, best CPU time of this process, last result."""
    times, cpu, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(times), statistics.median(times), min(cpu), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000_000, help="minimum words in the stream")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--baseline-records", type=int, default=20_000)
    args = ap.parse_args()

    inputs = make_inputs(args.records)
    words = encode_trace(**inputs)  # warm-up, and the stream the decoder reads
    data = words_to_bytes(words)
    enc_best, enc_med, enc_cpu, _ = timed(lambda: encode_trace(**inputs), args.repeats)
    decode_trace(data)  # warm-up: the compiled passes load from numba's cache
    dec_best, dec_med, dec_cpu, trace = timed(lambda: decode_trace(data), args.repeats)
    raw = np.frombuffer(data, np.uint8)
    np_best, np_med, _, np_trace = timed(lambda: trace_records._decode_numpy(raw), args.repeats)
    assert np_trace.equals(trace)
    # the round trip is exact
    assert np.array_equal(trace.spikes["time"], inputs["spikes"]["time"])
    assert np.array_equal(trace.cadc_samples, inputs["cadc_samples"])
    assert np.array_equal(trace.cadc["time"], inputs["cadc"]["time"])

    # construct baseline on a prefix of the same stream, cut after a whole CADC block
    ops = (words[: args.baseline_records + 200] >> np.uint64(56)).astype(np.uint8)
    cut = args.baseline_records
    while cut < ops.size and ops[cut] == 0x04:
        cut += 1
    sub = data[: cut * 8]
    records = spec.parse_records(sub)
    t0 = time.perf_counter()
    oracle = spec.oracle_decode_trace(sub)
    c_dec = time.perf_counter() - t0
    t0 = time.perf_counter()
    rebuilt = spec.oracle_encode_records(records)
    c_enc = time.perf_counter() - t0
    assert rebuilt == sub and decode_trace(sub).equals(oracle)

    mb = len(data) / 1e6
    sub_mb = len(sub) / 1e6
    dec_rate, enc_rate = mb / dec_best, mb / enc_best
    c_dec_rate, c_enc_rate = sub_mb / c_dec, sub_mb / c_enc
    events = sum(inputs[k]["time"].size if k != "halt" else 1
                 for k in ("episodes", "spikes", "cadc", "madc", "halt"))
    print(json.dumps({
        "decode_mb_per_s": round(dec_rate, 1),
        "encode_mb_per_s": round(enc_rate, 1),
        "speedup_vs_construct": round(min(dec_rate / c_dec_rate, enc_rate / c_enc_rate), 1),
        "speedup_decode": round(dec_rate / c_dec_rate, 1),
        "speedup_encode": round(enc_rate / c_enc_rate, 1),
        "decode_mb_per_s_median": round(mb / dec_med, 1),
        "decode_numpy_mb_per_s": round(mb / np_best, 1),
        "decode_numpy_mb_per_s_median": round(mb / np_med, 1),
        "compiled": trace_records.COMPILED,
        "encode_mb_per_s_median": round(mb / enc_med, 1),
        "decode_mb_per_s_cpu": round(mb / dec_cpu, 1),
        "encode_mb_per_s_cpu": round(mb / enc_cpu, 1),
        "records": int(words.size),
        "events": int(events),
        "episodes": int(inputs["episodes"]["time"].size),
        "time_syncs": int(trace.syncs.size),
        "bytes": len(data),
        "repeats": args.repeats,
        "construct_records": cut,
        "construct_decode_mb_per_s": round(c_dec_rate, 4),
        "construct_encode_mb_per_s": round(c_enc_rate, 4),
        "construct_decode_us_per_record": round(c_dec / cut * 1e6, 2),
        "fast_decode_ns_per_record": round(dec_best / words.size * 1e9, 2),
    }))


if __name__ == "__main__":
    main()
