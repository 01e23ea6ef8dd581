"""The board's flash: pages, erase-before-write, A/B slots and a boot record that survives kills.

Why it is modelled this faithfully: the host's flash procedure is only proven safe if the device
it is tested against refuses what real flash refuses (programming a page that is not erased) and
persists exactly what a real flash would at the moment the board dies. The persistent form is the
raw flash contents in a file (`--flash-file`), written in place page by page as real flash is;
atomicity comes from the layout, not from the file system: an image goes to the slot the board
does not boot from, and the boot record switches with one page program into the older of two
copies, each guarded by a CRC. A kill at any moment leaves the previous record (and image) in force.
Layout and guarantees: docs/flash.md.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from construct import Bytes, Const, Int8ul, Int32ul, Struct

from protocol.errors import FlashError, ProtocolError
from protocol.firmware_image import (
    EMULATOR_BOARD_KIND,
    HEADER_SIZE,
    IMAGE_MAGIC,
    ImageHeader,
    make_image,
    parse_header,
    unpack_version,
)
from protocol.flash_packets import (
    MAX_WRITE_CHUNK,
    NO_SLOT,
    REQUEST_KINDS,
    FlashKind,
    FlashOp,
    FlashStatus,
    SlotState,
    build_packet,
    parse_packet,
)

_CRC_BLOCK = 1 << 20  # bytes read per step when the board computes a CRC

BOOT_MAGIC = b"STBR"
BOOT_RECORD_VERSION = 1
BootRecordBody = Struct(
    "magic" / Const(BOOT_MAGIC),
    "version" / Int8ul,
    "active_slot" / Int8ul,
    "reserved" / Bytes(2),
    "sequence" / Int32ul,  # +1 on every switch; the valid copy with the highest one is in force
    "image_length" / Int32ul,  # header + payload bytes of the image the record activated
    "image_crc" / Int32ul,  # CRC-32 of that whole image: the slot must still hold exactly it
)
BOOT_BODY_SIZE = BootRecordBody.sizeof()
BOOT_RECORD_SIZE = BOOT_BODY_SIZE + 4  # + CRC-32 of the body


@dataclass(frozen=True)
class BootRecord:
    active_slot: int
    sequence: int
    image_length: int
    image_crc: int


def build_boot_record(record: BootRecord) -> bytes:
    body = BootRecordBody.build(
        dict(
            version=BOOT_RECORD_VERSION,
            active_slot=record.active_slot,
            reserved=bytes(2),
            sequence=record.sequence,
            image_length=record.image_length,
            image_crc=record.image_crc,
        )
    )
    return body + zlib.crc32(body).to_bytes(4, "little")


def parse_boot_record(raw: bytes) -> BootRecord | None:
    """A boot record copy, or None if it is erased, torn or corrupted (its CRC says so)."""
    raw = bytes(raw[:BOOT_RECORD_SIZE])
    if len(raw) < BOOT_RECORD_SIZE or raw[:4] != BOOT_MAGIC:
        return None
    if zlib.crc32(raw[:BOOT_BODY_SIZE]) != int.from_bytes(raw[BOOT_BODY_SIZE:], "little"):
        return None
    body = BootRecordBody.parse(raw[:BOOT_BODY_SIZE])
    if body.version != BOOT_RECORD_VERSION:
        return None
    return BootRecord(body.active_slot, body.sequence, body.image_length, body.image_crc)


@dataclass(frozen=True)
class FlashGeometry:
    """Sizes of the flash; the boot record copies occupy the first two pages, slots follow."""

    page_size: int = 4096
    slot_size: int = 8 << 20
    n_slots: int = 2
    boot_copies: int = 2

    def __post_init__(self) -> None:
        if self.page_size < BOOT_RECORD_SIZE or self.slot_size % self.page_size:
            raise FlashError(f"bad flash geometry {self}: slot size must be whole pages")

    @property
    def total_size(self) -> int:
        return self.boot_copies * self.page_size + self.n_slots * self.slot_size

    @property
    def n_pages(self) -> int:
        return self.total_size // self.page_size

    def slot_base(self, slot: int) -> int:
        return self.boot_copies * self.page_size + slot * self.slot_size

    def boot_copy_base(self, copy: int) -> int:
        return copy * self.page_size


# ------------------------------------------------------------------------------ storage
def _check_range(offset: int, length: int, size: int) -> None:
    """Storage access must lie inside the device: a range past the end is a caller bug."""
    if offset < 0 or length < 0 or offset + length > size:
        raise FlashError(f"flash access {offset}..{offset + length} outside the device (0..{size})")


class MemoryStorage:
    """Flash contents in memory, sparse by block: a region never programmed costs nothing."""

    def __init__(self, size: int, page_size: int) -> None:
        self.size = size
        self.page_size = page_size
        self.block = page_size * max(1, (256 << 10) // page_size)
        self._blocks: dict[int, bytearray] = {}

    def _spans(self, offset: int, length: int):
        """(block index, offset in block, offset in the request, length) covering a range."""
        pos, end = offset, offset + length
        while pos < end:
            index, inner = divmod(pos, self.block)
            n = min(self.block - inner, end - pos)
            yield index, inner, pos - offset, n
            pos += n

    def read(self, offset: int, length: int) -> bytes:
        _check_range(offset, length, self.size)
        out = bytearray(b"\xff") * length
        for index, inner, at, n in self._spans(offset, length):
            data = self._blocks.get(index)
            if data is not None:
                out[at : at + n] = data[inner : inner + n]
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        _check_range(offset, len(data), self.size)
        view = memoryview(data)
        for index, inner, at, n in self._spans(offset, len(data)):
            buf = self._blocks.get(index)
            if buf is None:
                buf = self._blocks[index] = bytearray(b"\xff") * self.block
            buf[inner : inner + n] = view[at : at + n]

    def erased_pages(self) -> np.ndarray:
        per_block = self.block // self.page_size
        erased = np.ones(-(-self.size // self.block) * per_block, dtype=bool)
        for index, data in self._blocks.items():
            pages = np.frombuffer(data, np.uint8).reshape(per_block, self.page_size)
            erased[index * per_block : (index + 1) * per_block] = (pages == 0xFF).all(axis=1)
        return erased[: self.size // self.page_size]

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class FileStorage:
    """Flash contents in a file, written in place (pwrite) as a real flash is programmed."""

    def __init__(self, path: Path, size: int, page_size: int) -> None:
        self.path = path
        self.size = size
        self.page_size = page_size
        actual = path.stat().st_size
        if actual != size:
            raise FlashError(
                f"flash file {path} has {actual} bytes, expected {size}: it belongs to a board "
                "with another flash geometry (use another --flash-file)"
            )
        self._fd = os.open(path, os.O_RDWR)

    def read(self, offset: int, length: int) -> bytes:
        _check_range(offset, length, self.size)
        return os.pread(self._fd, length, offset)

    def write(self, offset: int, data: bytes) -> None:
        _check_range(offset, len(data), self.size)
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def erased_pages(self) -> np.ndarray:
        raw = np.fromfile(self.path, dtype=np.uint8).reshape(-1, self.page_size)
        return (raw == 0xFF).all(axis=1)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Refused(Exception):
    """An operation the flash refuses; becomes a STATUS packet."""

    def __init__(self, status: FlashStatus, value: int = 0) -> None:
        super().__init__(status.name, value)
        self.status = status
        self.value = value


# ------------------------------------------------------------------------------ the chip
class FlashChip:
    """Raw NOR-like flash: erase sets pages to 0xFF, a page programs once between erases."""

    def __init__(self, storage: MemoryStorage | FileStorage, geometry: FlashGeometry) -> None:
        self.storage = storage
        self.geometry = geometry
        self.erased = storage.erased_pages()
        self.fail_write = 0  # the n-th next page program fails (0: off)

    def read(self, offset: int, length: int) -> bytes:
        return self.storage.read(offset, length)

    def erase(self, first_page: int, n_pages: int) -> None:
        ps = self.geometry.page_size
        self.storage.write(first_page * ps, b"\xff" * (n_pages * ps))
        self.erased[first_page : first_page + n_pages] = True

    def program(self, offset: int, data: bytes) -> None:
        """Program `data` from page-aligned `offset`; refuses pages not erased, honours faults."""
        ps = self.geometry.page_size
        first, n = offset // ps, (len(data) + ps - 1) // ps
        dirty = np.flatnonzero(~self.erased[first : first + n])
        if dirty.size:
            raise _Refused(FlashStatus.NOT_ERASED, (first + int(dirty[0])) * ps)
        if self.fail_write and self.fail_write <= n:
            # The failing page ends up half-programmed, as on a real part: garbage, not erased.
            k = self.fail_write - 1
            self.fail_write = 0
            self.storage.write(offset, data[: k * ps])
            bad = bytes(b ^ 0x5A for b in data[k * ps : (k + 1) * ps]) or b"\x00"
            self.storage.write(offset + k * ps, bad)
            self.erased[first : first + k + 1] = False
            raise _Refused(FlashStatus.WRITE_FAILED, offset + k * ps)
        if self.fail_write:
            self.fail_write -= n
        self.storage.write(offset, data)
        self.erased[first : first + n] = False


# ------------------------------------------------------------------------------ the service
@dataclass
class _EraseJob:
    slot: int
    first_page: int  # absolute page index
    n_pages: int
    done: int = 0  # pages erased so far


@dataclass
class _SlotCheck:
    state: SlotState
    firmware_version: int = 0
    image_length: int = 0
    image_crc: int = 0
    board_kind: str = ""
    bad_offset: int = 0


class FlashModel:
    """The board side of flashing: answers flash control packets, boots from the boot record.

    path: the flash file (created with a factory image if missing); None keeps it in memory.
    erase_pages_per_poll: pages one POLL lets the running erase advance (erase is slow: the host
    sees BUSY and progress, and a kill can land in the middle of it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        geometry: FlashGeometry | None = None,
        board_kind: str = EMULATOR_BOARD_KIND,
        factory_version: str = "1.0.0",
        erase_pages_per_poll: int = 64,
    ) -> None:
        self.geometry = geometry or FlashGeometry()
        self.board_kind = board_kind
        self.erase_pages_per_poll = max(1, erase_pages_per_poll)
        g = self.geometry
        if path is None:
            storage: MemoryStorage | FileStorage = MemoryStorage(g.total_size, g.page_size)
            self.chip = FlashChip(storage, g)
            self._install_factory(factory_version)
        else:
            path = Path(path)
            if not path.exists():
                _create_flash_file(path, g, self.board_kind, factory_version)
            self.chip = FlashChip(FileStorage(path, g.total_size, g.page_size), g)
        self._job: _EraseJob | None = None
        self._last = dict(op=FlashOp.NONE, status=FlashStatus.OK, slot=0, done=0, total=0, value=0)
        self._checks: dict[int, _SlotCheck] = {}
        self.boot()

    # ---------------------------------------------------------------- boot
    def boot(self) -> None:
        """Choose the slot to run, as the bootloader does at power-up (no writes)."""
        self._checks.clear()
        copies = [
            parse_boot_record(self.chip.read(self.geometry.boot_copy_base(c), 64))
            for c in range(self.geometry.boot_copies)
        ]
        valid = [r for r in copies if r is not None and r.active_slot < self.geometry.n_slots]
        record = max(valid, key=lambda r: r.sequence, default=None)
        self.boot_sequence = record.sequence if record else 0
        order = list(range(self.geometry.n_slots))
        if record is not None:
            order.remove(record.active_slot)
            order.insert(0, record.active_slot)
        self.active_slot = NO_SLOT
        self.fell_back = False
        for slot in order:
            check = self.check_slot(slot)
            if check.state != SlotState.VALID:
                continue
            if record and slot == record.active_slot and check.image_crc != record.image_crc:
                continue  # the slot no longer holds what the record activated
            self.active_slot = slot
            self.fell_back = record is None or slot != record.active_slot
            break

    @property
    def firmware_version(self) -> int:
        """Packed version (major << 16 | minor << 8 | patch) the board runs; 0: none."""
        if self.active_slot == NO_SLOT:
            return 0
        return self.check_slot(self.active_slot).firmware_version

    @property
    def firmware_version_text(self) -> str:
        return unpack_version(self.firmware_version)

    def check_slot(self, slot: int) -> _SlotCheck:
        """What a slot holds: empty, a valid image (with its version and CRC) or a broken one."""
        cached = self._checks.get(slot)
        if cached is not None:
            return cached
        base, size = self.geometry.slot_base(slot), self.geometry.slot_size
        raw = self.chip.read(base, HEADER_SIZE)
        if raw[:4] != IMAGE_MAGIC:
            check = _SlotCheck(SlotState.EMPTY)
        else:
            try:
                header = parse_header(raw)
            except FlashError:
                check = _SlotCheck(SlotState.INVALID, bad_offset=0)
            else:
                check = self._check_payload(base, size, header)
        self._checks[slot] = check
        return check

    def _check_payload(self, base: int, size: int, header: ImageHeader) -> _SlotCheck:
        version, kind = header.firmware_version, header.board_kind
        if kind != self.board_kind:  # intact maybe, but not bootable on this board
            return _SlotCheck(SlotState.INVALID, version, board_kind=kind, bad_offset=24)
        if header.image_length > size:
            return _SlotCheck(SlotState.INVALID, version, board_kind=kind, bad_offset=size)
        payload_crc = _crc_range(self.chip, base + HEADER_SIZE, header.payload_length)
        if payload_crc != header.payload_crc:
            return _SlotCheck(SlotState.INVALID, version, board_kind=kind, bad_offset=HEADER_SIZE)
        image_crc = _crc_range(self.chip, base, header.image_length)
        return _SlotCheck(SlotState.VALID, version, header.image_length, image_crc, kind)

    # ---------------------------------------------------------------- control packets
    def handlers(self) -> dict[int, Callable[[bytes], bytes]]:
        """Request kinds this model answers, for BoardEndpoint.register_control_handler."""
        return {int(k): self.handle for k in REQUEST_KINDS}

    def handle(self, request: bytes) -> bytes:
        """One flash control packet in, its reply packet out."""
        try:
            kind, fields = parse_packet(bytes(request))
        except ProtocolError:
            return self._status(FlashOp.NONE, FlashStatus.BAD_REQUEST, 0)
        if kind == FlashKind.INFO:
            return self._info()
        if kind == FlashKind.POLL:
            return self._poll()
        op = _OPS.get(kind)
        if op is None:  # a reply kind sent as a request
            return self._status(FlashOp.NONE, FlashStatus.BAD_REQUEST, 0, value=kind)
        slot = fields.get("slot", 0)
        if self._job is not None:
            return self._status(op, FlashStatus.BUSY, slot, value=FlashOp.ERASE)
        try:
            if op == FlashOp.ERASE:
                return self._erase(slot, fields["offset"], fields["length"])
            if op == FlashOp.WRITE:
                return self._write(slot, fields["offset"], fields["data"])
            if op == FlashOp.READ_CRC:
                return self._read_crc(slot, fields["offset"], fields["length"])
            if op == FlashOp.ACTIVATE:
                return self._activate(slot)
            self.chip.fail_write = fields["fail_write"]
            return self._status(op, FlashStatus.OK, 0, value=fields["fail_write"])
        except _Refused as refused:
            return self._status(op, refused.status, slot, value=refused.value)

    def _status(self, op, status, slot, *, done=0, total=0, value=0) -> bytes:
        self._last = dict(op=op, status=status, slot=slot, done=done, total=total, value=value)
        return build_packet(FlashKind.STATUS, **self._last)

    def _info(self) -> bytes:
        g = self.geometry
        slots = []
        for s in range(g.n_slots):
            c = self.check_slot(s)
            slots.append(
                dict(
                    state=c.state,
                    firmware_version=c.firmware_version,
                    image_length=c.image_length,
                    image_crc=c.image_crc,
                )
            )
        return build_packet(
            FlashKind.INFO_REPLY,
            board_kind=self.board_kind,
            page_size=g.page_size,
            slot_size=g.slot_size,
            max_chunk=MAX_WRITE_CHUNK,
            active_slot=self.active_slot,
            boot_sequence=self.boot_sequence,
            firmware_version=self.firmware_version,
            n_slots=g.n_slots,
            slots=slots,
        )

    def _writable_slot(self, slot: int, offset: int, length: int, *, aligned: bool) -> int:
        """Absolute flash offset of a slot range the host may change; refuses what it may not."""
        g = self.geometry
        if slot >= g.n_slots:
            raise _Refused(FlashStatus.BAD_REQUEST, slot)
        if slot == self.active_slot:
            raise _Refused(FlashStatus.SLOT_ACTIVE, slot)
        if length <= 0 or offset + length > g.slot_size or (aligned and offset % g.page_size):
            raise _Refused(FlashStatus.BAD_REQUEST, offset)
        return g.slot_base(slot) + offset

    def _erase(self, slot: int, offset: int, length: int) -> bytes:
        if length % self.geometry.page_size:
            raise _Refused(FlashStatus.BAD_REQUEST, offset + length)
        start = self._writable_slot(slot, offset, length, aligned=True)
        self._checks.pop(slot, None)
        ps = self.geometry.page_size
        self._job = _EraseJob(slot, start // ps, length // ps)
        return self._status(
            FlashOp.ERASE, FlashStatus.BUSY, slot, total=length, value=FlashOp.ERASE
        )

    def _poll(self) -> bytes:
        job = self._job
        if job is None:
            return build_packet(FlashKind.STATUS, **self._last)
        n = min(self.erase_pages_per_poll, job.n_pages - job.done)
        self.chip.erase(job.first_page + job.done, n)
        job.done += n
        ps = self.geometry.page_size
        if job.done < job.n_pages:
            return self._status(
                FlashOp.ERASE,
                FlashStatus.BUSY,
                job.slot,
                done=job.done * ps,
                total=job.n_pages * ps,
                value=FlashOp.ERASE,
            )
        self._job = None
        total = job.n_pages * ps
        return self._status(FlashOp.ERASE, FlashStatus.OK, job.slot, done=total, total=total)

    def _write(self, slot: int, offset: int, data: bytes) -> bytes:
        if len(data) > MAX_WRITE_CHUNK:
            raise _Refused(FlashStatus.BAD_REQUEST, offset + MAX_WRITE_CHUNK)
        start = self._writable_slot(slot, offset, len(data), aligned=True)
        self._checks.pop(slot, None)
        try:
            self.chip.program(start, data)
        except _Refused as refused:  # report slot-relative offsets
            raise _Refused(refused.status, refused.value - self.geometry.slot_base(slot)) from None
        n = len(data)
        return self._status(FlashOp.WRITE, FlashStatus.OK, slot, done=n, total=n)

    def _read_crc(self, slot: int, offset: int, length: int) -> bytes:
        g = self.geometry
        if slot >= g.n_slots or offset + length > g.slot_size:
            raise _Refused(FlashStatus.BAD_REQUEST, offset)
        crc = _crc_range(self.chip, g.slot_base(slot) + offset, length)
        return self._status(
            FlashOp.READ_CRC, FlashStatus.OK, slot, done=length, total=length, value=crc
        )

    def _activate(self, slot: int) -> bytes:
        if slot >= self.geometry.n_slots:
            raise _Refused(FlashStatus.BAD_REQUEST, slot)
        check = self.check_slot(slot)
        if check.board_kind and check.board_kind != self.board_kind:
            raise _Refused(FlashStatus.WRONG_BOARD, 0)
        if check.state != SlotState.VALID:
            raise _Refused(FlashStatus.BAD_IMAGE, check.bad_offset)
        if slot != self.active_slot:
            self._switch_boot_record(slot, check)
        length = check.image_length
        return self._status(
            FlashOp.ACTIVATE,
            FlashStatus.OK,
            slot,
            done=length,
            total=length,
            value=check.firmware_version,
        )

    def _switch_boot_record(self, slot: int, check: _SlotCheck) -> None:
        """Make `slot` active with one page program into the older boot record copy."""
        g = self.geometry
        copies = [
            parse_boot_record(self.chip.read(g.boot_copy_base(c), 64)) for c in range(g.boot_copies)
        ]
        # Overwrite the copy that is not in force (invalid first, then lowest sequence).
        target = min(
            range(g.boot_copies), key=lambda c: -1 if copies[c] is None else copies[c].sequence
        )
        sequence = max((r.sequence for r in copies if r), default=0) + 1
        record = build_boot_record(BootRecord(slot, sequence, check.image_length, check.image_crc))
        self.chip.storage.sync()  # the image is durable before the record points at it
        self.chip.erase(g.boot_copy_base(target) // g.page_size, 1)
        self.chip.program(g.boot_copy_base(target), record)
        self.chip.storage.sync()
        self.boot()  # the board restarts into the new image

    # ---------------------------------------------------------------- test knobs
    def inject_write_failure(self, nth: int = 1) -> None:
        """Make the nth next page program fail (0 turns it off): the FAULT packet's knob."""
        self.chip.fail_write = nth

    def _install_factory(self, version: str) -> None:
        """A fresh board: factory image in slot 0, boot record pointing at it."""
        image = make_image(_factory_payload(), version=version, board_kind=self.board_kind).data
        g = self.geometry
        self.chip.program(g.slot_base(0), image)
        record = BootRecord(0, 1, len(image), zlib.crc32(image))
        self.chip.program(g.boot_copy_base(0), build_boot_record(record))

    def close(self) -> None:
        self.chip.storage.close()


_OPS = {
    FlashKind.ERASE: FlashOp.ERASE,
    FlashKind.WRITE: FlashOp.WRITE,
    FlashKind.READ_CRC: FlashOp.READ_CRC,
    FlashKind.ACTIVATE: FlashOp.ACTIVATE,
    FlashKind.FAULT: FlashOp.FAULT,
}


def _factory_payload() -> bytes:
    """Deterministic stand-in for the factory bitstream."""
    return b"strobe factory firmware\n".ljust(4096, b"\0")


def _crc_range(chip: FlashChip, start: int, length: int) -> int:
    crc = 0
    for lo in range(start, start + length, _CRC_BLOCK):
        crc = zlib.crc32(chip.read(lo, min(_CRC_BLOCK, start + length - lo)), crc)
    return crc


def _create_flash_file(path: Path, geometry: FlashGeometry, board_kind: str, version: str) -> None:
    """A new flash file holding the factory image, created atomically (temp file + rename)."""
    model = FlashModel(None, geometry=geometry, board_kind=board_kind, factory_version=version)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            block = 1 << 20
            for lo in range(0, geometry.total_size, block):
                f.write(model.chip.read(lo, min(block, geometry.total_size - lo)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
