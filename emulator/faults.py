"""Seeded link-fault injection on whole frames: what a bad cable or a lossy USB hub would do.

The emulator puts one FaultInjector in each direction between its wire and its Link, so the
host's ARQ is exercised against drops, bit errors, duplicates, reordering and delays that are
reproducible from a seed. Frames are cut from the byte stream with protocol's FrameDecoder and
re-emitted byte for byte (corrupted ones with flipped bits), so nothing but the listed faults
changes on the wire.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, fields

import numpy as np

from protocol.errors import ConfigError
from protocol.frames import FrameDecoder, encode_frame

_PROBS = ("drop", "corrupt", "duplicate", "reorder", "delay")
DEFAULT_DELAY_S = 0.01
STALL_S = 0.2  # a partial frame waiting longer than this is given up (its length was garbage)


@dataclass(frozen=True)
class FaultConfig:
    """Per-frame fault probabilities (each direction) and the seed that makes them repeatable.

    delay_s: a delayed frame is held back for a uniform random time in (0, delay_s]; a reordered
    frame goes out right after the next frame, or after delay_s if no next frame comes.
    """

    drop: float = 0.0
    corrupt: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    delay_s: float = DEFAULT_DELAY_S
    seed: int = 0

    def __post_init__(self) -> None:
        for name in _PROBS:
            p = getattr(self, name)
            if not (isinstance(p, int | float) and 0.0 <= p <= 1.0):
                raise ConfigError(f"fault probability {name} must be in [0, 1], got {p!r}")
        if not (isinstance(self.delay_s, int | float) and math.isfinite(self.delay_s)
                and self.delay_s >= 0):
            raise ConfigError(f"fault delay_s must be a finite number >= 0 seconds, "
                              f"got {self.delay_s!r}")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ConfigError(f"fault seed must be an integer >= 0, got {self.seed!r}")

    @classmethod
    def uniform(cls, p: float, seed: int = 0) -> FaultConfig:
        """Drop, corrupt, duplicate and reorder each with probability p (`--faults P`)."""
        return cls(drop=p, corrupt=p, duplicate=p, reorder=p, seed=seed)

    @property
    def active(self) -> bool:
        return any(getattr(self, name) > 0 for name in _PROBS)

    def as_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class FaultStats:
    frames: int = 0
    dropped: int = 0
    corrupted: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0


class FaultInjector:
    """Applies a FaultConfig to the frames of one direction of a byte stream.

    `process(data, now)` takes any chunk of the stream and returns the bytes to pass on now;
    held-back frames come out of `release(now)` once due (`next_deadline()` says when).
    stream: tells the two directions of one endpoint apart, so they draw different faults.
    """

    def __init__(self, config: FaultConfig | None = None, *, stream: int = 0) -> None:
        self._decoder = FrameDecoder()
        self._partial_since: float | None = None
        self._held: list[tuple[float, int, bytes]] = []  # heap of (due, order, frame bytes)
        self._order = 0
        self._reorder: tuple[float, bytes] | None = None  # (give-up time, frame) awaiting a next
        self.stream = stream
        self.stats = FaultStats()
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        """New knobs and a fresh random stream from config.seed; held frames stay held."""
        self.config = config
        self._rng = np.random.default_rng([config.seed, self.stream, 0xFA017])

    @property
    def active(self) -> bool:
        return self.config.active or bool(self._held) or self._reorder is not None

    @property
    def garbage_bytes(self) -> int:
        """Bytes of the stream that were not part of an intact frame (dropped)."""
        return self._decoder.garbage_bytes

    def process(self, data: bytes, now: float) -> bytes:
        if not self.active and not self._decoder.buffered:
            return bytes(data)
        out: list[bytes] = [self.release(now)]
        dec = self._decoder
        frames = dec.feed(data)
        if frames or not dec.pending_frame:
            self._partial_since = now if dec.pending_frame else None
        elif self._partial_since is None:
            self._partial_since = now
        elif now - self._partial_since > STALL_S:  # line noise claimed a long frame: rescan
            frames = dec.skip_pending()
            self._partial_since = now if dec.pending_frame else None
        for frame in frames:
            self._one(encode_frame(frame), now, out)
        return b"".join(out)

    def _one(self, raw: bytes, now: float, out: list[bytes]) -> None:
        cfg = self.config
        rng = self._rng
        st = self.stats
        st.frames += 1
        u = rng.random(5)
        if u[0] < cfg.drop:
            st.dropped += 1
            return
        if u[1] < cfg.corrupt:
            raw = self._flip_bits(raw)
            st.corrupted += 1
        copies = [raw, raw] if u[2] < cfg.duplicate else [raw]
        if u[2] < cfg.duplicate:
            st.duplicated += 1
        for i, frame in enumerate(copies):
            if i == 0 and u[3] < cfg.reorder and self._reorder is None:
                st.reordered += 1
                self._reorder = (now + max(cfg.delay_s, 1e-3), frame)
                continue
            if i == 0 and u[4] < cfg.delay:
                st.delayed += 1
                self._hold(now + float(rng.uniform(0.0, cfg.delay_s)), frame)
                continue
            out.append(frame)
            if self._reorder is not None:  # the frame held for reordering goes after this one
                out.append(self._reorder[1])
                self._reorder = None

    def _flip_bits(self, raw: bytes) -> bytes:
        buf = bytearray(raw)
        n = int(self._rng.integers(1, 4))
        flips: set[int] = set()
        while len(flips) < n:  # distinct bits: two flips of one bit would cancel out
            flips.add(int(self._rng.integers(0, 8 * len(buf))))
        for pos in flips:
            buf[pos >> 3] ^= 1 << (pos & 7)
        return bytes(buf)

    def _hold(self, due: float, frame: bytes) -> None:
        heapq.heappush(self._held, (due, self._order, frame))
        self._order += 1

    def release(self, now: float) -> bytes:
        """Held frames that are due by `now`, in due order."""
        out: list[bytes] = []
        held = self._held
        while held and held[0][0] <= now:
            out.append(heapq.heappop(held)[2])
        if self._reorder is not None and self._reorder[0] <= now:
            out.append(self._reorder[1])
            self._reorder = None
        return b"".join(out)

    def next_deadline(self) -> float | None:
        times = [self._held[0][0]] if self._held else []
        if self._reorder is not None:
            times.append(self._reorder[0])
        return min(times) if times else None
