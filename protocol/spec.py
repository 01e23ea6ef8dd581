"""The word formats declared with construct: the readable spec and the tests' oracle.

Every instruction and trace record is one little-endian u64 whose bits 63..56 are the opcode.
`ByteSwapped(BitStruct(...))` reads the eight bytes as one big-endian bit string, so each
declaration below lists its fields from bit 63 down to bit 0, exactly as the tables of
docs/protocol.md do. Reserved bits are `Const(0)`: building sets them, parsing insists on them.

This is the slow path by design (one Python object per word). The fast numpy codecs in
protocol/instructions.py and protocol/records.py must agree with it bit for bit; the oracle
functions here (`oracle_decode_trace`, `oracle_encode_records`) spell out the stream-level rules
(CADC blocks, TIME_SYNC unwrap, episodes) in plain Python for the tests and the benchmark.
"""

from __future__ import annotations

from typing import Any

import construct as cs
import numpy as np

from protocol.errors import DecodeError
from protocol.records import (
    CADC_DTYPE,
    EPISODE_DTYPE,
    ERROR_DTYPE,
    HALT_DTYPE,
    MADC_DTYPE,
    READ_DTYPE,
    SPIKE_DTYPE,
    Trace,
)
from protocol.wire import CADC_CHANNELS, CADC_DATA_WORDS, TIMESTAMP_BITS, Instr, Rec

B = cs.BitsInteger


def _reserved(bits: int) -> cs.Construct:
    return "reserved" / cs.Const(0, B(bits))


INSTRUCTION_BODIES: dict[int, cs.Construct] = {
    Instr.TIMER_RESET: cs.Struct(_reserved(56)),
    Instr.WAIT_UNTIL: cs.Struct("time" / B(56)),
    Instr.WRITE: cs.Struct(_reserved(24), "addr" / B(32)),
    Instr.DATA: cs.Struct(_reserved(24), "data" / B(32)),
    Instr.WRITE_BLOCK: cs.Struct("count" / B(24), "addr" / B(32)),
    Instr.READ: cs.Struct("count" / B(24), "addr" / B(32)),
    Instr.SPIKE1: cs.Struct("label0" / B(14), _reserved(42)),
    Instr.SPIKE2: cs.Struct("label0" / B(14), "label1" / B(14), _reserved(28)),
    Instr.SPIKE3: cs.Struct("label0" / B(14), "label1" / B(14), "label2" / B(14), _reserved(14)),
    Instr.SPIKE4: cs.Struct("label0" / B(14), "label1" / B(14), "label2" / B(14),
                            "label3" / B(14)),
    Instr.CADC_TRIGGER: cs.Struct(_reserved(56)),
    Instr.CADC_SCHEDULE: cs.Struct("count" / B(14), "interval" / B(42)),
    Instr.MADC_RECORD: cs.Struct("samples" / B(24), _reserved(32)),
    Instr.EPISODE_START: cs.Struct("index" / B(14), _reserved(42)),
    Instr.BARRIER: cs.Struct(_reserved(56)),
    Instr.HALT: cs.Struct(_reserved(56)),
    Instr.SYSTEM: cs.Struct(_reserved(48), "sysop" / B(8)),
}

RECORD_BODIES: dict[int, cs.Construct] = {
    Rec.TIME_SYNC: cs.Struct("time" / B(56)),
    Rec.SPIKE: cs.Struct("label" / B(14), "time" / B(42)),
    Rec.CADC_HEAD: cs.Struct("index" / B(14), "time" / B(42)),
    # channel 7k+j sits in bits [8j+7:8j]: listed from bit 55 down, s6 first
    Rec.CADC_DATA: cs.Struct(*[f"s{j}" / B(8) for j in reversed(range(7))]),
    Rec.MADC: cs.Struct("source" / B(4), "value" / B(10), "time" / B(42)),
    Rec.READ_DATA: cs.Struct("index" / B(24), "data" / B(32)),
    Rec.EPISODE: cs.Struct("index" / B(14), "time" / B(42)),
    Rec.HALT: cs.Struct("status" / B(14), "time" / B(42)),
    Rec.ERROR: cs.Struct("code" / B(8), "info16" / B(16), "info32" / B(32)),
}

# a word: 8 bytes, little-endian; FixedSized gives ByteSwapped the size the Switch hides
INSTRUCTION = cs.ByteSwapped(cs.FixedSized(8, cs.BitStruct(
    "op" / B(8), "body" / cs.Switch(cs.this.op, INSTRUCTION_BODIES, cs.Error))))
RECORD = cs.ByteSwapped(cs.FixedSized(8, cs.BitStruct(
    "op" / B(8), "body" / cs.Switch(cs.this.op, RECORD_BODIES, cs.Error))))


def _fields(parsed: Any) -> dict[str, int]:
    return {k: v for k, v in parsed.items() if not k.startswith("_") and k != "reserved"}


def build_instruction(op: int, /, **fields: int) -> bytes:
    """8 bytes of one instruction word from its named fields."""
    return INSTRUCTION.build({"op": int(op), "body": fields})


def build_record(op: int, /, **fields: int) -> bytes:
    """8 bytes of one trace record word from its named fields."""
    return RECORD.build({"op": int(op), "body": fields})


def _parse(fmt: cs.Construct, data: bytes, offset: int, what: str) -> tuple[int, dict[str, int]]:
    try:
        p = fmt.parse(data[offset * 8 : offset * 8 + 8])
    except cs.ConstructError as e:
        raise DecodeError(f"{what} word does not decode: {type(e).__name__}", offset=offset,
                          got=data[offset * 8 : offset * 8 + 8][::-1].hex(), unit="word") from e
    return p.op, _fields(p.body)


def parse_instructions(data: bytes) -> list[tuple[int, dict[str, int]]]:
    """(opcode, fields) of every instruction word; DecodeError on a bad word (no stream rules)."""
    _check_len(data)
    return [_parse(INSTRUCTION, data, i, "instruction") for i in range(len(data) // 8)]


def parse_records(data: bytes) -> list[tuple[int, dict[str, int]]]:
    """(opcode, fields) of every trace word; DecodeError on a bad word (no stream rules)."""
    _check_len(data)
    return [_parse(RECORD, data, i, "trace record") for i in range(len(data) // 8)]


def _check_len(data: bytes) -> None:
    if len(data) % 8:
        raise DecodeError("length is not a whole number of words", offset=len(data) // 8,
                          expected="multiple of 8 bytes", got=len(data), unit="word")


def oracle_decode_trace(data: bytes) -> Trace:
    """Reference decoder: one construct parse per word and the stream rules in plain Python."""
    data = bytes(data)
    _check_len(data)
    spikes, cadc, samples, madc, reads, episodes, halt, errors, syncs = ([] for _ in range(9))
    epoch, episode = 0, -1
    i, n = 0, len(data) // 8
    mask = (1 << TIMESTAMP_BITS) - 1
    while i < n:
        op, f = _parse(RECORD, data, i, "trace record")
        if op == Rec.TIME_SYNC:
            epoch = f["time"] & ~mask
            syncs.append(f["time"])
        elif op == Rec.SPIKE:
            spikes.append((epoch | f["time"], f["label"], episode))
        elif op == Rec.CADC_HEAD:
            block = []
            for j in range(i + 1, i + 1 + CADC_DATA_WORDS):  # in stream order, word by word
                o, d = _parse(RECORD, data, j, "trace record") if j < n else (None, None)
                if o != Rec.CADC_DATA:
                    raise DecodeError("CADC block with too few CADC_DATA words", offset=j,
                                      unit="word")
                block.append((o, d))
            row = [d[f"s{j}"] for _, d in block for j in range(7)]
            if any(row[CADC_CHANNELS:]):
                raise DecodeError("CADC padding slots not zero", offset=i + CADC_DATA_WORDS,
                                  unit="word")
            samples.append(row[:CADC_CHANNELS])
            cadc.append((epoch | f["time"], episode, f["index"]))
            i += CADC_DATA_WORDS
        elif op == Rec.CADC_DATA:
            raise DecodeError("CADC_DATA word outside a CADC block", offset=i, unit="word")
        elif op == Rec.MADC:
            madc.append((epoch | f["time"], f["value"], f["source"], episode))
        elif op == Rec.READ_DATA:
            reads.append((f["index"], f["data"]))
        elif op == Rec.EPISODE:
            episode = f["index"]
            episodes.append((f["index"], epoch | f["time"]))
        elif op == Rec.HALT:
            halt.append((f["status"], epoch | f["time"]))
        elif op == Rec.ERROR:
            errors.append((f["code"], f["info16"], f["info32"]))
        i += 1
    return Trace(
        spikes=np.array(spikes, dtype=SPIKE_DTYPE),
        cadc=np.array(cadc, dtype=CADC_DTYPE),
        cadc_samples=np.array(samples, dtype=np.uint8).reshape(-1, CADC_CHANNELS),
        madc=np.array(madc, dtype=MADC_DTYPE),
        reads=np.array(reads, dtype=READ_DTYPE),
        episodes=np.array(episodes, dtype=EPISODE_DTYPE),
        halt=np.array(halt, dtype=HALT_DTYPE),
        errors=np.array(errors, dtype=ERROR_DTYPE),
        syncs=np.array(syncs, dtype=np.uint64),
    )


def oracle_encode_records(records: list[tuple[int, dict[str, int]]]) -> bytes:
    """Reference encoder: one construct build per word, records already in stream order."""
    return b"".join(RECORD.build({"op": int(op), "body": f}) for op, f in records)


def cadc_block_records(index: int, time: int, samples) -> list[tuple[int, dict[str, int]]]:
    """CADC_HEAD + 74 CADC_DATA (op, fields) of one 512-channel sample, for the oracle."""
    padded = list(samples) + [0] * (CADC_DATA_WORDS * 7 - CADC_CHANNELS)
    out: list[tuple[int, dict[str, int]]] = [
        (Rec.CADC_HEAD, {"index": index, "time": time & ((1 << TIMESTAMP_BITS) - 1)})
    ]
    for k in range(CADC_DATA_WORDS):
        out.append((Rec.CADC_DATA, {f"s{j}": int(padded[7 * k + j]) for j in range(7)}))
    return out
