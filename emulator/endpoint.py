"""The emulated board as a sans-I/O byte endpoint: wire bytes in, wire bytes out, a clock.

Every transport (in-process, tcp, pty, the pyusb backend) drives the same object:
`receive(data, now)` with what arrived, `transmit(now)` for what to send, and `next_deadline()`
for when to call `transmit` again even if nothing arrives. Inside: fault injectors on both sides
of a protocol.Link, and the three channels: PLAYBACK (one program in, one trace out), LOOPBACK
(echo) and CONTROL (hello, faults, chip reset, plus handlers registered by other modules, e.g.
flash kinds 0x40..0x4F from emulator/flash.py).

Programs run synchronously inside receive() by default (the in-process and pyusb transports:
the host waits in that call). A server that must keep the link alive while a long program
computes uses `background()`: programs then run on a worker thread, messages behind a running
program wait for it (replies stay in request order), and the link keeps acking and sends a
keepalive ACK every `keepalive` seconds, so the host can tell a busy board from a dead one.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from emulator.executor import HALT_ERRORS, HALT_INTERNAL, Executor
from emulator.faults import FaultConfig, FaultInjector
from emulator.registers import RegisterFile
from protocol.addressmap import SystemReg
from protocol.control import (
    ControlErrorCode,
    ControlKind,
    control_kind_name,
    decode_control,
    encode_control,
)
from protocol.errors import ConfigError, DecodeError, LinkError
from protocol.firmware_image import EMULATOR_BOARD_KIND
from protocol.link import Link
from protocol.wire import (
    FRAME_MAX_PAYLOAD,
    OPCODE_SHIFT,
    PROTOCOL_VERSION,
    TIMESTAMP_BITS,
    Channel,
    ErrorCode,
    Rec,
)

ControlHandler = Callable[[bytes], bytes]
_M32 = (1 << 32) - 1
_KNOWN_KINDS = frozenset(int(k) for k in ControlKind)
_RX_STREAM, _TX_STREAM = 1, 2
KEEPALIVE_S = 0.1  # keepalive period while a program runs in the background (docs/protocol.md)


class BoardEndpoint:
    """One emulated board (FPGA + chip) behind a byte stream.

    serial: 64-bit board serial; seeds the chip's fixed-pattern noise (AnalogCore(serial, regs)).
    faults: link faults from power-up (None: a clean link); SET_FAULTS packets change them.
    flash_file: the board's persistent flash (None: in memory); see emulator/flash.py.
    core: analog core to use instead of building emulator.analog.AnalogCore (tests).
    link_options: keyword arguments of protocol.link.Link (window, rto, ...); max_payload
    defaults to FRAME_MAX_PAYLOAD here.
    keepalive: seconds between keepalive ACKs while a background program runs.
    """

    def __init__(
        self,
        serial: int = 1,
        *,
        firmware_version: tuple[int, int, int] = (1, 0, 0),
        chip_id: int | None = None,
        board_kind: str = EMULATOR_BOARD_KIND,
        faults: FaultConfig | None = None,
        flash_file: str | None = None,
        core: object | None = None,
        link_options: dict[str, Any] | None = None,
        keepalive: float = KEEPALIVE_S,
    ) -> None:
        if not keepalive > 0:
            raise ConfigError(f"keepalive must be > 0 seconds, got {keepalive}")
        self.serial = int(serial)
        self.board_kind = board_kind
        self.regs = RegisterFile(self.serial, firmware_version=firmware_version, chip_id=chip_id)
        self.executor = Executor(self.regs, core)
        # the board sends its traces (megabytes of CADC samples) in the largest frames the
        # format allows: 4x fewer frames to encode, check and ack than the Link default; the
        # host's Link accepts any fragment size up to FRAME_MAX_PAYLOAD
        self._link_options = {"max_payload": FRAME_MAX_PAYLOAD, **(link_options or {})}
        self._power_up_faults = faults or FaultConfig()
        self._handlers: dict[int, ControlHandler] = {
            int(ControlKind.HELLO): self._hello,
            int(ControlKind.SET_FAULTS): self._set_faults,
            int(ControlKind.CHIP_RESET): self._chip_reset,
        }
        self.flash_file = flash_file
        self.flash = self._attach_flash(flash_file, firmware_version)
        self.programs_run = 0
        self.internal_errors = 0
        self.link_errors = 0  # peer messages dropped by the link (over max_message)
        self.sessions = 0  # host sessions begun (SYN with a new nonce): stale output is moot
        self.keepalive = float(keepalive)
        self.keepalives_sent = 0
        self._wake: _Waker | None = None  # set in background mode
        self._pending: deque[tuple[int, bytes]] = deque()  # messages behind a running program
        self._job: _Job | None = None
        self._generation = 0  # bumped by every link reset: a finished job of an older one is moot
        self._keepalive_due = 0.0
        self.reset_link()

    # ------------------------------------------------------------------ set-up
    def _attach_flash(self, flash_file: str | None, version: tuple[int, int, int]) -> Any:
        from emulator.flash import FlashModel

        flash = FlashModel(flash_file, board_kind=self.board_kind,
                           factory_version=".".join(str(int(v)) for v in version))
        for kind, handler in flash.handlers().items():
            self.register_control_handler(kind, self._flash_handler(handler))
        self._sync_firmware(flash)
        return flash

    def _flash_handler(self, handler: ControlHandler) -> ControlHandler:
        def call(packet: bytes) -> bytes:
            reply = handler(packet)
            self._sync_firmware(self.flash)  # an ACTIVATE reboots into another image
            return reply

        return call

    def _sync_firmware(self, flash: Any) -> None:
        word = int(flash.firmware_version)
        if word:
            self.regs.set_firmware_word(word)

    @property
    def firmware_version(self) -> int:
        """Packed version the board reports (FIRMWARE_VERSION register, HELLO_REPLY)."""
        return self.regs.read(int(SystemReg.FIRMWARE_VERSION))[0]

    def register_control_handler(self, kind: int, fn: ControlHandler) -> None:
        """Answer CONTROL packets whose first byte is `kind` with fn(packet) -> reply packet."""
        if not 0 <= int(kind) <= 0xFF:
            raise ConfigError(f"control kind must be 0..255, got {kind}")
        self._handlers[int(kind)] = fn

    def reset_link(self) -> None:
        """A fresh link and the power-up fault settings (a new TCP connection does this).
        Registers, timer and flash keep their state: the board did not lose power."""
        self.link = Link(**self._link_options)
        self.faults_rx = FaultInjector(self._power_up_faults, stream=_RX_STREAM)
        self.faults_tx = FaultInjector(self._power_up_faults, stream=_TX_STREAM)
        self._new_session()

    def _new_session(self) -> None:
        """Requests of the previous session still waiting are moot, as is a running job's
        reply (the job itself runs to its end: registers must stay consistent)."""
        self._generation += 1
        self._pending.clear()

    def set_faults(self, config: FaultConfig | None) -> None:
        config = config or FaultConfig()
        self.faults_rx.configure(config)
        self.faults_tx.configure(config)

    # ------------------------------------------------------------------ background mode
    @contextlib.contextmanager
    def background(self, join_timeout: float = 2.0) -> Iterator[int]:
        """Run programs on a worker thread while inside; yields a file descriptor that becomes
        readable when a program finishes (select() on it, then call transmit()).

        On exit a running program gets `join_timeout` seconds to finish (its worker is a
        daemon thread, so it never holds the process up longer).
        """
        if self._wake is not None:
            raise ConfigError("background() is already active on this endpoint")
        self._wake = waker = _Waker()
        try:
            yield waker.fd
        finally:
            job = self._job
            if job is not None:
                job.thread.join(join_timeout)
            self._job = None
            self._pending.clear()
            self._wake = None
            waker.close()

    @property
    def busy(self) -> bool:
        """A program is running in the background."""
        return self._job is not None and not self._job.done.is_set()

    # ------------------------------------------------------------------ byte endpoint
    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the wire. Complete messages are handled at once (a program runs here,
        unless in background mode)."""
        self._feed(self.faults_rx.process(data, now), now)

    def receive_parts(self, parts: list[bytes | memoryview], now: float) -> None:
        """receive(b"".join(parts), now) without the join (an in-process host's poll_parts):
        without faults the link decodes the parts in place; with them they are joined."""
        rx = self.faults_rx
        if rx.active or rx._decoder.buffered:  # process() would change or hold bytes back
            self._feed(rx.process(b"".join(parts), now), now)
        else:
            self._feed(parts, now)

    def transmit(self, now: float) -> bytes:
        """Bytes to put on the wire now (frames, retransmissions, acks, due delayed frames,
        the reply of a finished background program, a keepalive ACK while one runs)."""
        return b"".join(self.transmit_parts(now))

    def transmit_parts(self, now: float) -> list[bytes | memoryview]:
        """transmit() not yet joined: parts whose concatenation is its bytes. Without faults
        these are the link's (header, payload, trailer) parts, the payloads read-only views of
        the trace (an in-process host reassembles the trace from them: one copy, not two)."""
        held = self.faults_rx.release(now)
        if held:
            self._feed(held, now)
        if self._job is not None:
            self._dispatch(now)
        if self.busy and now >= self._keepalive_due:
            self.link.keepalive(now)
            self.keepalives_sent += 1
            self._keepalive_due = now + self.keepalive
        parts = self.link.poll_parts(now)
        tx = self.faults_tx
        # process() passes bytes through unchanged unless faults are on or a partial frame is
        # held from when they were: only then must the parts be joined and go through it
        if tx.active or tx._decoder.buffered:
            out = tx.process(b"".join(parts), now)
            return [out] if out else []
        return parts

    def next_deadline(self) -> float | None:
        times = [t for t in (self.link.next_deadline(), self.faults_rx.next_deadline(),
                             self.faults_tx.next_deadline()) if t is not None]
        if self.busy:
            times.append(self._keepalive_due)
        return min(times) if times else None

    def close(self) -> None:
        close = getattr(self.flash, "close", None)
        if callable(close):
            close()

    def _feed(self, data: bytes | list[bytes | memoryview], now: float) -> None:
        """Received bytes, or parts of them (receive_parts), into the link; handle messages."""
        if not data:
            return
        resets = self.link.stats.resets
        try:
            if type(data) is list:
                messages = self.link.receive_parts(data, now)
            else:
                messages = self.link.receive(data, now)
        except LinkError as exc:  # a host message over max_message: dropped, board goes on
            self.link_errors += 1
            print(f"emulator: {exc}", file=sys.stderr)
            messages = getattr(exc, "messages", [])
        if self.link.stats.resets != resets:  # a new host session: faults back to power-up
            self.set_faults(self._power_up_faults)
            self.sessions += 1
            self._new_session()
        if self._wake is not None:
            self._pending.extend(messages)
            self._dispatch(now)
            return
        for channel, message in messages:
            reply = self._handle(channel, message)
            if reply is not None:
                self._send(channel, reply, now)

    def _dispatch(self, now: float) -> None:
        """Background mode: collect a finished program's trace, then handle waiting messages
        in order until the next program goes to the worker."""
        while True:
            job = self._job
            if job is not None:
                if not job.done.is_set():
                    return
                self._job = None
                if job.generation == self._generation:
                    self._send(Channel.PLAYBACK, job.reply, now)
            if not self._pending or self._wake is None:
                return
            channel, message = self._pending.popleft()
            if channel == Channel.PLAYBACK:
                self._job = _Job(self._playback, message, self._generation, self._wake)
                self._keepalive_due = now + self.keepalive
                continue
            reply = self._handle(channel, message)
            if reply is not None:
                self._send(channel, reply, now)

    def _send(self, channel: int, reply: bytes | memoryview, now: float) -> None:
        """Queue a reply; a trace over the link's max_message becomes an OVERFLOW error trace."""
        if len(reply) > self.link.max_message:
            print(f"emulator: a {len(reply)}-byte reply on channel {channel} exceeds the link's "
                  f"max_message ({self.link.max_message} bytes)", file=sys.stderr)
            if channel != Channel.PLAYBACK:
                return  # loopback echoes and control replies never grow: not reached
            reply = _overflow_trace(len(reply) // 8)
        self.link.send(channel, reply, now)

    # ------------------------------------------------------------------ channels
    def _handle(self, channel: int, message: bytes) -> bytes | None:
        if channel == Channel.LOOPBACK:
            return message
        if channel == Channel.PLAYBACK:
            return self._playback(message)
        if channel == Channel.CONTROL:
            return self._control(message)
        return None  # no such channel: a board ignores it (the link already acked it)

    def _playback(self, program: bytes) -> bytes | memoryview:
        self.programs_run += 1
        try:
            return self.executor.run_view(program)  # read-only: the link sends it uncopied
        except Exception:  # an emulator bug must not kill the board: report it in the trace
            self.internal_errors += 1
            traceback.print_exc(file=sys.stderr)
            halt = (int(Rec.HALT) << OPCODE_SHIFT) | (HALT_INTERNAL << TIMESTAMP_BITS)
            return np.array([halt], "<u8").tobytes()

    def _control(self, packet: bytes) -> bytes:
        if not packet:
            return _error(0, ControlErrorCode.MALFORMED, "empty control packet")
        kind = packet[0]
        handler = self._handlers.get(kind)
        if handler is None:
            if kind in _KNOWN_KINDS:
                return _error(kind, ControlErrorCode.UNSUPPORTED,
                              f"{control_kind_name(kind)} is not a request this board answers")
            return _error(kind, ControlErrorCode.UNKNOWN_KIND,
                          f"unknown control packet kind 0x{kind:02x}")
        try:
            return handler(packet)
        except (DecodeError, ConfigError) as exc:
            return _error(kind, ControlErrorCode.MALFORMED, str(exc))
        except Exception as exc:  # a handler bug: answer, log, keep running
            self.internal_errors += 1
            traceback.print_exc(file=sys.stderr)
            return _error(kind, ControlErrorCode.UNSUPPORTED,
                          f"internal emulator error: {type(exc).__name__}: {exc}")

    def _hello(self, packet: bytes) -> bytes:
        _, fields = _decode(packet, ControlKind.HELLO)
        if fields["protocol_version"] != PROTOCOL_VERSION:
            return _error(ControlKind.HELLO, ControlErrorCode.VERSION_MISMATCH,
                          f"this board speaks protocol version {PROTOCOL_VERSION}, "
                          f"the host sent {fields['protocol_version']}")
        return encode_control(
            ControlKind.HELLO_REPLY,
            protocol_version=PROTOCOL_VERSION,
            serial=self.serial,
            firmware_version=self.firmware_version,
            chip_id=self.regs.chip_id,
            board_kind=self.board_kind,
        )

    def _set_faults(self, packet: bytes) -> bytes:
        _, f = _decode(packet, ControlKind.SET_FAULTS)
        config = FaultConfig(drop=f["drop"], corrupt=f["corrupt"], duplicate=f["duplicate"],
                             reorder=f["reorder"], delay=f["delay"], delay_s=f["delay_s"],
                             seed=f["seed"])
        self.set_faults(config)
        return encode_control(ControlKind.ACK, request=int(ControlKind.SET_FAULTS))

    def _chip_reset(self, packet: bytes) -> bytes:
        _decode(packet, ControlKind.CHIP_RESET)
        self.regs.chip_reset()
        return encode_control(ControlKind.ACK, request=int(ControlKind.CHIP_RESET))


def _decode(packet: bytes, kind: ControlKind) -> tuple[int, dict[str, Any]]:
    got, fields = decode_control(packet)
    assert got == kind  # dispatch was by the first byte
    return got, fields


class _Waker:
    """A pipe whose read end select() watches; wake() may come from any thread, also late."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if not self._closed:  # a job outliving background() must not write a reused fd
                with contextlib.suppress(OSError):  # full pipe: a wake-up is pending anyway
                    os.write(self._w, b"j")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            os.close(self.fd)
            os.close(self._w)


class _Job:
    """One program on a daemon worker thread; wakes the server's select() when done."""

    def __init__(self, run: Callable[[bytes], bytes], program: bytes, generation: int,
                 waker: _Waker) -> None:
        self.generation = generation
        self.reply = b""
        self.done = threading.Event()
        self._run, self._program, self._waker = run, program, waker
        self.thread = threading.Thread(target=self._main, name="strobe-playback", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.reply = self._run(self._program)  # never raises: errors become a HALT status
        finally:
            self._program = b""
            self.done.set()
            self._waker.wake()


def _overflow_trace(dropped_words: int) -> bytes:
    """ERROR OVERFLOW (info32: trace words dropped) and HALT with status HALT_ERRORS."""
    error = ((int(Rec.ERROR) << OPCODE_SHIFT) | (int(ErrorCode.OVERFLOW) << 48)
             | min(dropped_words, _M32))
    halt = (int(Rec.HALT) << OPCODE_SHIFT) | (HALT_ERRORS << TIMESTAMP_BITS)
    return np.array([error, halt], "<u8").tobytes()


def _error(request: int, code: int, message: str) -> bytes:
    return encode_control(ControlKind.ERROR, request=int(request) & 0xFF, code=int(code),
                          message=message[:1000])

