"""Host side of flashing: validate, write the inactive slot, verify on the board, then activate.

Why this order: the board keeps booting its current image until the very last step, which is a
single boot-record switch the board itself guards with its own image check. Everything before
it only touches the slot the board does not boot from, so an error or a kill at any point leaves
the board running what it ran before (docs/flash.md, "Recovery guarantees").
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.control import ControlKind
from protocol.errors import BoardError, FlashError
from protocol.firmware_image import FirmwareImage, parse_image, unpack_version
from protocol.flash_packets import (
    NO_SLOT,
    FlashKind,
    FlashOp,
    FlashStatus,
    SlotState,
)
from protocol.wire import PROTOCOL_VERSION

ControlPacket = tuple[int, dict[str, Any]]


class ControlPort(Protocol):
    """What flashing needs of a board: hostdriver.Board satisfies it."""

    def control(self, packet: ControlPacket | bytes, *, timeout: float | None = None) -> Any: ...


@dataclass(frozen=True)
class FlashProgress:
    """One progress report: phase is 'erase', 'write', 'verify' or 'activate'."""

    phase: str
    done: int  # bytes of this phase done
    total: int  # bytes this phase covers


ProgressFn = Callable[[FlashProgress], None]


@dataclass(frozen=True)
class SlotSummary:
    state: SlotState
    firmware_version: str
    image_length: int
    image_crc: int


@dataclass(frozen=True)
class FlashInfo:
    """The board's answer to FLASH_INFO."""

    board_kind: str
    page_size: int
    slot_size: int
    max_chunk: int
    active_slot: int | None  # None: no bootable slot
    boot_sequence: int
    firmware_version: str
    slots: tuple[SlotSummary, ...]

    @property
    def target_slot(self) -> int:
        """Slot a new image goes to: never the one the board boots from."""
        return next(s for s in range(len(self.slots)) if s != self.active_slot)


@dataclass(frozen=True)
class FlashResult:
    """Outcome of flash / verify / rollback; `as_json()` is the `--json` line of tools.flash."""

    slot: int
    bytes: int
    seconds: float
    verified: bool
    firmware_version: str

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FlashClient:
    """Flash operations on one board over its CONTROL channel."""

    def __init__(self, board: ControlPort, *, timeout: float | None = 30.0) -> None:
        self.board = board
        self.timeout = timeout

    # ------------------------------------------------------------------ packets
    def _request(self, kind: FlashKind, **fields: Any) -> dict[str, Any]:
        try:
            rkind, rfields = self.board.control((int(kind), fields), timeout=self.timeout)
        except BoardError as exc:
            raise FlashError(f"board refused FLASH_{kind.name}: {exc}") from exc
        expected = FlashKind.INFO_REPLY if kind == FlashKind.INFO else FlashKind.STATUS
        if rkind != expected:
            raise FlashError(f"board answered FLASH_{kind.name} with kind {rkind:#04x}")
        return rfields

    def _op(self, kind: FlashKind, **fields: Any) -> dict[str, Any]:
        """A request answered by STATUS; a refusal becomes FlashError saying why."""
        reply = self._request(kind, **fields)
        if reply["status"] not in (FlashStatus.OK, FlashStatus.BUSY):
            raise FlashError(_explain(kind, reply))
        return reply

    def info(self) -> FlashInfo:
        r = self._request(FlashKind.INFO)
        slots = tuple(
            SlotSummary(
                SlotState(s["state"]),
                unpack_version(s["firmware_version"]),
                s["image_length"],
                s["image_crc"],
            )
            for s in r["slots"]
        )
        return FlashInfo(
            board_kind=r["board_kind"],
            page_size=r["page_size"],
            slot_size=r["slot_size"],
            max_chunk=r["max_chunk"],
            active_slot=None if r["active_slot"] == NO_SLOT else r["active_slot"],
            boot_sequence=r["boot_sequence"],
            firmware_version=unpack_version(r["firmware_version"]),
            slots=slots,
        )

    def inject_write_failure(self, nth: int = 1) -> None:
        """Emulator test knob: the nth next page program fails (0: off)."""
        self._op(FlashKind.FAULT, fail_write=nth)

    # ------------------------------------------------------------------ procedures
    def check_image(self, image: bytes | FirmwareImage, info: FlashInfo) -> FirmwareImage:
        """Refuse an image that is corrupt, truncated, too big or for another board kind."""
        img = image if isinstance(image, FirmwareImage) else parse_image(image)
        data_len = img.header.image_length
        if data_len > info.slot_size:
            raise FlashError(
                f"image of {data_len} bytes does not fit the board's {info.slot_size}-byte slot"
            )
        img.check_board_kind(info.board_kind)
        return img

    def flash(
        self,
        image: bytes | FirmwareImage,
        *,
        progress: ProgressFn | None = None,
        chunk_size: int | None = None,
    ) -> FlashResult:
        """Write `image` to the inactive slot, verify it on the board, make it active."""
        start = time.perf_counter()
        img = image if isinstance(image, FirmwareImage) else parse_image(image)
        info = self.info()
        img = self.check_image(img, info)
        slot = info.target_slot
        data = img.data
        report = progress or (lambda p: None)
        page = info.page_size
        chunk = min(chunk_size or info.max_chunk, info.max_chunk)
        chunk = max(page, chunk - chunk % page)

        erase_len = -(-len(data) // page) * page
        reply = self._op(FlashKind.ERASE, slot=slot, offset=0, length=erase_len)
        report(FlashProgress("erase", reply["done"], erase_len))
        while reply["status"] == FlashStatus.BUSY:
            reply = self._op(FlashKind.POLL)
            report(FlashProgress("erase", reply["done"], erase_len))

        view = memoryview(data)
        for offset in range(0, len(data), chunk):
            self._op(
                FlashKind.WRITE, slot=slot, offset=offset, data=bytes(view[offset : offset + chunk])
            )
            report(FlashProgress("write", min(offset + chunk, len(data)), len(data)))

        self._verify_slot(slot, img, report)
        self._op(FlashKind.ACTIVATE, slot=slot)
        report(FlashProgress("activate", len(data), len(data)))
        version = self._confirm_active(slot, img)
        return FlashResult(slot, len(data), time.perf_counter() - start, True, version)

    def verify(self, image: bytes | FirmwareImage) -> FlashResult:
        """Check, without writing, that the board runs exactly `image` (CRC read on the board)."""
        start = time.perf_counter()
        info = self.info()
        img = self.check_image(image, info)
        if info.active_slot is None:
            raise FlashError("the board has no bootable image, so it does not run this one")
        self._verify_slot(info.active_slot, img, lambda p: None)
        return FlashResult(
            info.active_slot,
            img.header.image_length,
            time.perf_counter() - start,
            True,
            info.firmware_version,
        )

    def rollback(self) -> FlashResult:
        """Make the other valid slot active (the board re-checks it before switching)."""
        start = time.perf_counter()
        info = self.info()
        others = [
            s
            for s, summary in enumerate(info.slots)
            if s != info.active_slot and summary.state == SlotState.VALID
        ]
        if not others:
            states = ", ".join(f"slot {s}: {x.state.name}" for s, x in enumerate(info.slots))
            raise FlashError(f"no other valid image to roll back to ({states})")
        slot = others[0]
        self._op(FlashKind.ACTIVATE, slot=slot)
        summary = info.slots[slot]
        version = self._confirm_active(slot, None)
        return FlashResult(slot, summary.image_length, time.perf_counter() - start, True, version)

    def _verify_slot(self, slot: int, img: FirmwareImage, report: ProgressFn) -> None:
        length = img.header.image_length
        reply = self._op(FlashKind.READ_CRC, slot=slot, offset=0, length=length)
        report(FlashProgress("verify", length, length))
        if reply["value"] != img.crc:
            raise FlashError(
                f"read-back of slot {slot} does not match the image: board CRC "
                f"{reply['value']:#010x}, image CRC {img.crc:#010x}"
            )

    def _confirm_active(self, slot: int, img: FirmwareImage | None) -> str:
        """Ask the board what it runs now; refresh the Board's cached info from its HELLO."""
        info = self.info()
        if info.active_slot != slot:
            raise FlashError(
                f"board activated slot {slot} but boots slot {info.active_slot} "
                f"({info.firmware_version})"
            )
        if img is not None and info.firmware_version != img.header.version_text:
            raise FlashError(
                f"board runs firmware {info.firmware_version}, expected {img.header.version_text}"
            )
        _refresh_board_info(self.board)
        return info.firmware_version


def _refresh_board_info(board: Any) -> None:
    """Board.info was read at connect; the firmware version changed, so read HELLO again."""
    refresh = getattr(board, "refresh_info", None)
    if callable(refresh):
        refresh()
        return
    info = getattr(board, "info", None)
    if info is None or not dataclasses.is_dataclass(info):
        return
    kind, fields = board.control((ControlKind.HELLO, {"protocol_version": PROTOCOL_VERSION}))
    if kind == ControlKind.HELLO_REPLY:
        board.info = dataclasses.replace(info, firmware_version=fields["firmware_version"])


_WHY = {
    FlashStatus.BAD_REQUEST: "request out of range or misaligned (offset {value:#x})",
    FlashStatus.NOT_ERASED: "page at slot offset {value:#x} was not erased before writing",
    FlashStatus.WRITE_FAILED: "flash program failure at slot offset {value:#x}",
    FlashStatus.BAD_IMAGE: "the slot's image does not check out (bad header or CRC)",
    FlashStatus.WRONG_BOARD: "the slot's image is built for another board kind",
    FlashStatus.SLOT_ACTIVE: "slot {value} is the one the board boots from",
    FlashStatus.BUSY: "an erase is still running",
}


def _explain(kind: FlashKind, reply: dict[str, Any]) -> str:
    try:
        status = FlashStatus(reply["status"])
    except ValueError:
        return f"FLASH_{kind.name} failed with unknown status {reply['status']}"
    why = _WHY.get(status, status.name).format(value=reply["value"])
    op = FlashOp(reply["op"]).name if reply["op"] in FlashOp._value2member_map_ else reply["op"]
    return (
        f"FLASH_{kind.name} refused ({status.name}, op {op}, slot {reply['slot']}): {why}; "
        "the active slot is unchanged"
    )


def flash_image(
    board: ControlPort,
    image: bytes | FirmwareImage,
    *,
    progress: ProgressFn | None = None,
    chunk_size: int | None = None,
) -> FlashResult:
    """Flash `image` onto `board` (see FlashClient.flash)."""
    return FlashClient(board).flash(image, progress=progress, chunk_size=chunk_size)


def verify_image(board: ControlPort, image: bytes | FirmwareImage) -> FlashResult:
    return FlashClient(board).verify(image)


def rollback(board: ControlPort) -> FlashResult:
    return FlashClient(board).rollback()


def flash_info(board: ControlPort) -> FlashInfo:
    return FlashClient(board).info()
