"""Board: one connected board (or emulator) behind a board URL, as docs/interfaces.md lists.

Request/response over the link's channels: PLAYBACK (program -> trace), CONTROL (construct
packets: HELLO, SET_FAULTS, ...), LOOPBACK (echo). Errors the board reports become BoardError
with what it said attached; link failures are LinkError from the link driver.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from hostdriver.link_driver import LinkDriver
from protocol import instructions as ins
from protocol.control import (
    ControlErrorCode,
    ControlKind,
    control_kind_name,
    decode_control,
    encode_control,
)
from protocol.errors import BoardError, ConfigError, DecodeError
from protocol.link import LinkStats
from protocol.wire import OPCODE_SHIFT, PROTOCOL_VERSION, Channel, ErrorCode, Instr

if TYPE_CHECKING:
    from protocol.records import Trace

ControlPacket = tuple[int, dict[str, Any]]
_MAX_ERRORS_SHOWN = 5
_M32 = (1 << 32) - 1


@dataclass(frozen=True)
class BoardInfo:
    """What the board said about itself in the HELLO handshake."""

    serial: int
    firmware_version: int  # major << 16 | minor << 8 | patch
    chip_id: int
    protocol_version: int
    board_kind: str
    url: str

    @property
    def firmware(self) -> str:
        v = self.firmware_version
        return f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "serial_hex": f"{self.serial:016X}", "firmware": self.firmware}


def _error_name(code: int) -> str:
    for enum in (ControlErrorCode, ErrorCode):
        try:
            return enum(code).name
        except ValueError:
            continue
    return f"code {code}"


def _board_error(message: str, **attrs: Any) -> BoardError:
    exc = BoardError(message)
    for name, value in attrs.items():
        setattr(exc, name, value)
    return exc


class Board:
    """A connected board. Use hostdriver.connect(url) to make one; close() or `with` ends it."""

    def __init__(self, driver: LinkDriver, url: str) -> None:
        self.url = url
        self._driver = driver
        driver.connect()
        self.info = self._hello()

    def refresh_info(self) -> BoardInfo:
        """Read HELLO again and update `info` (after flashing, the firmware version changed)."""
        self.info = self._hello()
        return self.info

    # ------------------------------------------------------------------ handshake
    def _hello(self) -> BoardInfo:
        try:
            hello = (ControlKind.HELLO, {"protocol_version": PROTOCOL_VERSION})
            kind, fields = self.control(hello)
        except BoardError as exc:
            if getattr(exc, "code", None) == ControlErrorCode.VERSION_MISMATCH:
                raise _board_error(
                    f"{self.url}: the board refused protocol version {PROTOCOL_VERSION} "
                    f"(this host's): {getattr(exc, 'board_message', exc)}",
                    code=exc.code,
                ) from exc
            raise
        if kind != ControlKind.HELLO_REPLY:
            raise BoardError(f"{self.url}: HELLO answered with {kind!r}, expected HELLO_REPLY")
        if fields["protocol_version"] != PROTOCOL_VERSION:
            raise BoardError(
                f"{self.url}: the board speaks protocol version {fields['protocol_version']}, "
                f"this host speaks version {PROTOCOL_VERSION}"
            )
        return BoardInfo(
            serial=fields["serial"],
            firmware_version=fields["firmware_version"],
            chip_id=fields["chip_id"],
            protocol_version=fields["protocol_version"],
            board_kind=fields["board_kind"],
            url=self.url,
        )

    # ------------------------------------------------------------------ channels
    def control(
        self, packet: ControlPacket | bytes, *, timeout: float | None = None
    ) -> ControlPacket:
        """Send one CONTROL packet, return the reply (kind, fields).

        packet: (kind, fields) or encoded bytes. An ERROR reply raises BoardError carrying
        `code`, `request` and `board_message`.
        """
        if isinstance(packet, bytes | bytearray):
            raw = bytes(packet)
        else:
            kind, fields = packet
            raw = encode_control(kind, **fields)
        reply = self._driver.request(Channel.CONTROL, raw, timeout)
        try:
            rkind, rfields = decode_control(reply)
        except DecodeError as exc:
            raise BoardError(f"{self.url}: undecodable CONTROL reply: {exc}") from exc
        if rkind == ControlKind.ERROR:
            raise _board_error(
                f"{self.url}: the board refused {control_kind_name(raw[0])}: "
                f"{_error_name(rfields['code'])}: {rfields['message']}",
                code=rfields["code"],
                request=rfields["request"],
                board_message=rfields["message"],
            )
        return rkind, rfields

    def loopback(self, payload: bytes, *, timeout: float | None = None) -> bytes:
        """Echo one message through the board's LOOPBACK channel."""
        return self._driver.request(Channel.LOOPBACK, bytes(payload), timeout)

    def loopback_stream(
        self, payloads: Iterable[bytes], *, depth: int | None = None
    ) -> Iterator[bytes]:
        """Echoes of `payloads`, in order, keeping up to `depth` messages in flight.

        Pipelined: the next messages go out before earlier echoes are back, so the link's
        window stays full (default depth: twice the link window).
        """
        driver = self._driver
        depth = max(1, depth or 2 * driver.link.window)
        source = iter(payloads)
        outstanding = 0
        done = False
        while True:
            # top up after every echo: the window never drains, and the steady trickle of
            # frames keeps acks flowing, which lets the link fast-retransmit a lost frame
            # (refilling in big batches was faster on a clean link but waited out a full
            # retransmission timeout for every loss)
            queued = False
            while not done and outstanding < depth:
                try:
                    payload = next(source)
                except StopIteration:
                    done = True
                    break
                driver.send(Channel.LOOPBACK, bytes(payload), flush=False)
                outstanding += 1
                queued = True
            if queued:
                driver.pump(0.0)
            if not outstanding:
                return
            yield driver.receive(Channel.LOOPBACK)
            outstanding -= 1

    # ------------------------------------------------------------------ playback
    def run(
        self,
        program: np.ndarray | bytes,
        *,
        timeout: float | None = None,
        max_seconds: float | None = None,
    ) -> Trace:
        """Run a playback program, return its decoded trace.

        timeout: longest silence of the board (default: the connection's) while it executes;
        a busy board sends keepalives (docs/protocol.md, 4.7), while a frozen or dead one
        raises LinkError after `timeout`. max_seconds: optional bound on the whole run
        (LinkError past it; the connection is then closed for use). ERROR records raise
        BoardError with the complete trace attached as `.trace`.
        """
        from protocol.records import decode_trace

        if isinstance(program, bytes | bytearray):
            data = bytes(program)
        else:
            data = ins.program_bytes(program)
        reply = self._driver.request(Channel.PLAYBACK, data, timeout, max_seconds)
        trace = decode_trace(reply)
        errors = trace.errors
        if len(errors):
            shown = "; ".join(
                f"{_error_name(int(e['code']))} (info16 {int(e['info16'])}, "
                f"info32 0x{int(e['info32']):08x})"
                for e in errors[:_MAX_ERRORS_SHOWN]
            )
            more = f" and {len(errors) - _MAX_ERRORS_SHOWN} more" if len(errors) > 5 else ""
            raise _board_error(
                f"{self.url}: the board reported {len(errors)} error(s): {shown}{more}",
                trace=trace,
            )
        return trace

    def write(self, addrs: Any, values: Any, *, timeout: float | None = None) -> None:
        """Write registers (arrays of addresses and values, same length).

        Raw writes bypass the chip config model (hostdriver.chip), so its belief of what this
        board holds is dropped: the next ChipConfig.write() writes every word.
        """
        a, v = np.asarray(addrs), np.asarray(values)
        if a.shape != v.shape:
            raise ConfigError(f"write: {a.size} addresses but {v.size} values")
        try:
            self.run(ins.program(ins.write(a, v), ins.halt()), timeout=timeout)
        finally:
            self._forget_chip_config()

    def read(self, addrs: Any, *, timeout: float | None = None) -> np.ndarray:
        """Read registers; returns uint32 values in the order of `addrs`."""
        a = np.atleast_1d(np.asarray(addrs)).ravel()
        if a.size and (a.dtype.kind not in "iu" or int(a.min()) < 0 or int(a.max()) > _M32):
            raise ConfigError(f"read: addresses must be integers in 0..0x{_M32:X}")
        # one READ (count 1) per address, built vectorised: [55:32] count, [31:0] address
        words = a.astype(np.uint64) | np.uint64((int(Instr.READ) << OPCODE_SHIFT) | (1 << 32))
        trace = self.run(ins.program(words, ins.halt()), timeout=timeout)
        data = np.asarray(trace.reads["data"], dtype=np.uint32)
        if data.size != a.size:
            raise BoardError(f"{self.url}: asked for {a.size} register reads, got {data.size}")
        return data

    # ------------------------------------------------------------------ board knobs
    def set_faults(
        self,
        drop: float = 0.0,
        corrupt: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.0,
        seed: int = 0,
        *,
        delay_s: float = 0.01,
    ) -> None:
        """Ask the board (emulator) to inject link faults, each with the given probability."""
        probs = {"drop": drop, "corrupt": corrupt, "duplicate": duplicate, "reorder": reorder,
                 "delay": delay}
        for name, p in probs.items():
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"set_faults: {name} must be a probability in [0, 1], got {p}")
        if delay_s < 0:
            raise ConfigError(f"set_faults: delay_s must be >= 0 seconds, got {delay_s}")
        self._expect_ack(
            ControlKind.SET_FAULTS, {**probs, "delay_s": delay_s, "seed": int(seed) & 0xFFFFFFFF}
        )

    def chip_reset(self) -> None:
        """All chip registers back to their reset values (the chip config model's belief of
        this board is dropped, as for write())."""
        try:
            self._expect_ack(ControlKind.CHIP_RESET, {})
        finally:
            self._forget_chip_config()

    def _forget_chip_config(self) -> None:
        from hostdriver.chip import state  # lazy: the config model sits above the board

        state.forget(self)

    def _expect_ack(self, kind: ControlKind, fields: dict[str, Any]) -> None:
        rkind, rfields = self.control((kind, fields))
        if rkind != ControlKind.ACK or rfields.get("request") != kind:
            raise BoardError(f"{self.url}: {kind.name} answered with {rkind!r} {rfields}")

    # ------------------------------------------------------------------ lifetime
    @property
    def link_stats(self) -> LinkStats:
        return self._driver.stats

    @property
    def driver(self) -> LinkDriver:
        return self._driver

    def close(self) -> None:
        self._driver.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Board {self.url} serial {self.info.serial:016X}>"
