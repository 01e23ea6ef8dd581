"""python -m tools.loopback --board URL --frames N: a link test through the board's loopback.

N messages of random payload (K 64-bit words each, one link frame each while K*8 <= the link's
max payload) go through the LOOPBACK channel, pipelined to keep the link window full; every echo
is compared with what was sent. --inject-faults P asks the board (emulator) to drop, corrupt,
duplicate and reorder frames, each with probability P, so the ARQ has to repair them.
Exit status 0 only if every message came back intact.

JSON fields: frames, ok, lost (never echoed: the link died), corrupted (echo differs),
retransmits (DATA frames the host retransmitted), mbytes_per_s (payload bytes echoed per second,
one direction, 1e6 bytes), plus seconds, payload_bytes, inject_faults, board, link (host link
counters) and error (when the link failed).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

import hostdriver
from hostdriver.board import Board
from protocol.errors import ConfigError, LinkError
from tools import _cli


def payloads(n: int, words: int, seed: int) -> Iterator[bytes]:
    """n random payloads of `words` u64 each, generated in blocks (not all held at once)."""
    rng = np.random.default_rng(seed)
    size = words * 8
    block = max(1, (1 << 22) // size)
    for start in range(0, n, block):
        count = min(block, n - start)
        data = rng.bytes(count * size)
        for i in range(count):
            yield data[i * size : (i + 1) * size]


def loopback_test(
    board: Board,
    frames: int,
    payload_words: int,
    *,
    inject_faults: float = 0.0,
    seed: int = 1,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Run the test on an open board; returns the result dict (never raises LinkError)."""
    if frames < 0:
        raise ConfigError(f"--frames must be >= 0, got {frames}")
    if payload_words < 1:
        raise ConfigError(f"--payload-words must be >= 1, got {payload_words}")
    if not 0.0 <= inject_faults <= 1.0:
        raise ConfigError(f"--inject-faults must be a probability in [0, 1], got {inject_faults}")
    if inject_faults:
        p = inject_faults
        board.set_faults(drop=p, corrupt=p, duplicate=p, reorder=p, seed=seed)
    stats0 = _counters(board)
    ok = corrupted = 0
    error: str | None = None
    start = time.perf_counter()
    bar = _cli.progress(frames, "loopback", enabled=show_progress)
    try:
        sent = payloads(frames, payload_words, seed)
        expected = payloads(frames, payload_words, seed)  # same stream again, in step
        for echo in board.loopback_stream(sent):
            if echo == next(expected):
                ok += 1
            else:
                corrupted += 1
            bar.update(1)
    except LinkError as exc:
        error = _cli.one_line(exc)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if inject_faults and error is None:
        board.set_faults()  # leave a served emulator as it was found
    link = {k: v - stats0[k] for k, v in _counters(board).items()}
    result: dict[str, Any] = {
        "frames": frames,
        "ok": ok,
        "lost": frames - ok - corrupted,
        "corrupted": corrupted,
        "retransmits": link["retransmits"],
        "mbytes_per_s": round(ok * payload_words * 8 / seconds / 1e6, 3) if seconds > 0 else 0.0,
        "seconds": round(seconds, 3),
        "payload_bytes": payload_words * 8,
        "inject_faults": inject_faults,
        "board": board.url,
        "link": link,
    }
    if error is not None:
        result["error"] = error
    return result


def _counters(board: Board) -> dict[str, int]:
    s = board.link_stats
    return {
        "retransmits": s.retransmits,
        "frames_sent": s.frames_sent,
        "frames_received": s.frames_received,
        "duplicates": s.duplicates,
        "out_of_order": s.out_of_order,
        "crc_errors": s.crc_errors,
        "garbage_bytes": s.garbage_bytes,
    }


def main(args: argparse.Namespace) -> int:
    with hostdriver.connect(args.board, timeout=args.timeout) as board:
        result = loopback_test(
            board, args.frames, args.payload_words, inject_faults=args.inject_faults,
            seed=args.seed, show_progress=not args.json,
        )
    if args.json:
        _cli.emit_json(result)
    else:
        print(
            f"{result['board']}: {result['ok']}/{result['frames']} echoes intact, "
            f"{result['lost']} lost, {result['corrupted']} corrupted, "
            f"{result['retransmits']} retransmits, {result['mbytes_per_s']} MB/s "
            f"({result['payload_bytes']} B payloads, {result['seconds']} s)"
        )
    if "error" in result:
        raise LinkError(result["error"])
    if result["ok"] != result["frames"]:
        raise _cli.ToolFailure(
            f"{result['lost']} lost and {result['corrupted']} corrupted of {result['frames']}"
        )
    return _cli.EXIT_OK


def cli(argv: Sequence[str] | None = None) -> int:
    p = _cli.parser(
        "python -m tools.loopback",
        "Send random payloads through the board's loopback and verify every echo.",
    )
    p.add_argument("--frames", type=int, default=1000, metavar="N", help="messages (default 1000)")
    p.add_argument(
        "--payload-words", type=int, default=64, metavar="K",
        help="64-bit words of random payload per message (default 64)",
    )
    p.add_argument(
        "--inject-faults", type=float, default=0.0, metavar="P",
        help="ask the board to drop/corrupt/duplicate/reorder frames, each with probability P",
    )
    p.add_argument("--seed", type=int, default=1, help="payload and fault seed (default 1)")
    return _cli.run(main, p, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
