"""The emulated board as a sans-I/O byte endpoint: wire bytes in, wire bytes out, a clock.

Every transport (in-process, tcp, pty, the pyusb backend) drives the same object:
`receive(data, now)` with what arrived, `transmit(now)` for what to send, and `next_deadline()`
for when to call `transmit` again even if nothing arrives. Inside: fault injectors on both sides
of a protocol.Link, and the three channels: PLAYBACK (one program in, one trace out), LOOPBACK
(echo) and CONTROL (hello, faults, chip reset, plus handlers registered by other modules, e.g.
flash kinds 0x40..0x4F from emulator/flash.py).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
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
from protocol.wire import OPCODE_SHIFT, PROTOCOL_VERSION, TIMESTAMP_BITS, Channel, ErrorCode, Rec

ControlHandler = Callable[[bytes], bytes]
_M32 = (1 << 32) - 1
_KNOWN_KINDS = frozenset(int(k) for k in ControlKind)
_RX_STREAM, _TX_STREAM = 1, 2


class BoardEndpoint:
    """One emulated board (FPGA + chip) behind a byte stream.

    serial: 64-bit board serial; seeds the chip's fixed-pattern noise (AnalogCore(serial, regs)).
    faults: link faults from power-up (None: a clean link); SET_FAULTS packets change them.
    flash_file: the board's persistent flash (None: in memory); see emulator/flash.py.
    core: analog core to use instead of building emulator.analog.AnalogCore (tests).
    link_options: keyword arguments of protocol.link.Link (window, rto, ...).
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
    ) -> None:
        self.serial = int(serial)
        self.board_kind = board_kind
        self.regs = RegisterFile(self.serial, firmware_version=firmware_version, chip_id=chip_id)
        self.executor = Executor(self.regs, core)
        self._link_options = dict(link_options or {})
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

    def set_faults(self, config: FaultConfig | None) -> None:
        config = config or FaultConfig()
        self.faults_rx.configure(config)
        self.faults_tx.configure(config)

    # ------------------------------------------------------------------ byte endpoint
    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the wire. Complete messages are handled at once (a program runs here)."""
        self._feed(self.faults_rx.process(data, now), now)

    def transmit(self, now: float) -> bytes:
        """Bytes to put on the wire now (frames, retransmissions, acks, due delayed frames)."""
        held = self.faults_rx.release(now)
        if held:
            self._feed(held, now)
        return self.faults_tx.process(self.link.poll(now), now)

    def next_deadline(self) -> float | None:
        times = [t for t in (self.link.next_deadline(), self.faults_rx.next_deadline(),
                             self.faults_tx.next_deadline()) if t is not None]
        return min(times) if times else None

    def close(self) -> None:
        close = getattr(self.flash, "close", None)
        if callable(close):
            close()

    def _feed(self, data: bytes, now: float) -> None:
        if not data:
            return
        resets = self.link.stats.resets
        try:
            messages = self.link.receive(data, now)
        except LinkError as exc:  # a host message over max_message: dropped, board goes on
            self.link_errors += 1
            print(f"emulator: {exc}", file=sys.stderr)
            messages = getattr(exc, "messages", [])
        if self.link.stats.resets != resets:  # a new host session: faults back to power-up
            self.set_faults(self._power_up_faults)
            self.sessions += 1
        for channel, message in messages:
            reply = self._handle(channel, message)
            if reply is not None:
                self._send(channel, reply, now)

    def _send(self, channel: int, reply: bytes, now: float) -> None:
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

    def _playback(self, program: bytes) -> bytes:
        self.programs_run += 1
        try:
            return self.executor.run(program)
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


def _overflow_trace(dropped_words: int) -> bytes:
    """ERROR OVERFLOW (info32: trace words dropped) and HALT with status HALT_ERRORS."""
    error = ((int(Rec.ERROR) << OPCODE_SHIFT) | (int(ErrorCode.OVERFLOW) << 48)
             | min(dropped_words, _M32))
    halt = (int(Rec.HALT) << OPCODE_SHIFT) | (HALT_ERRORS << TIMESTAMP_BITS)
    return np.array([error, halt], "<u8").tobytes()


def _error(request: int, code: int, message: str) -> bytes:
    return encode_control(ControlKind.ERROR, request=int(request) & 0xFF, code=int(code),
                          message=message[:1000])

