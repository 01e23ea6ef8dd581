"""Emulator flash model: flash rules, boot record, persistence, fault injection."""

from __future__ import annotations

import tempfile
import zlib

import numpy as np
import pytest
from conftest import SMALL, ModelPort, image
from hypothesis import event, given, settings
from hypothesis import strategies as st

from emulator.flash import (
    BootRecord,
    FlashGeometry,
    FlashModel,
    MemoryStorage,
    build_boot_record,
    parse_boot_record,
)
from protocol.control import decode_control, encode_control
from protocol.errors import FlashError
from protocol.flash_packets import NO_SLOT, FlashKind, FlashOp, FlashStatus, SlotState


def ask(model: FlashModel, kind: FlashKind, **fields):
    rkind, reply = decode_control(model.handle(encode_control(kind, **fields)))
    return reply


def erase(model, slot, offset, length):
    reply = ask(model, FlashKind.ERASE, slot=slot, offset=offset, length=length)
    polls = 0
    while reply["status"] == FlashStatus.BUSY:
        reply = ask(model, FlashKind.POLL)
        polls += 1
    return reply, polls


def test_fresh_board_boots_factory_image():
    m = FlashModel()
    info = ask(m, FlashKind.INFO)
    assert info["board_kind"] == "emulator"
    assert info["active_slot"] == 0 and info["boot_sequence"] == 1
    assert m.firmware_version_text == "1.0.0" and info["firmware_version"] == 0x010000
    assert [s["state"] for s in info["slots"]] == [SlotState.VALID, SlotState.EMPTY]


def test_erase_is_slow_and_reports_progress():
    m = FlashModel(geometry=SMALL, erase_pages_per_poll=8)
    reply = ask(m, FlashKind.ERASE, slot=1, offset=0, length=32 * 256)
    assert reply["status"] == FlashStatus.BUSY and reply["total"] == 32 * 256
    dones = []
    while reply["status"] == FlashStatus.BUSY:
        # nothing else runs while the erase does
        busy = ask(m, FlashKind.WRITE, slot=1, offset=0, data=b"x")
        assert busy["status"] == FlashStatus.BUSY
        reply = ask(m, FlashKind.POLL)
        dones.append(reply["done"])
    assert dones == [2048, 4096, 6144, 8192]
    assert reply["status"] == FlashStatus.OK and reply["op"] == FlashOp.ERASE


def test_write_requires_erased_pages():
    m = FlashModel(geometry=SMALL)
    # slot 1 is blank (erased) on a fresh board: a first write succeeds
    assert ask(m, FlashKind.WRITE, slot=1, offset=256, data=b"a" * 300)["status"] == 0
    # second write to the same pages: refused with the first dirty page
    again = ask(m, FlashKind.WRITE, slot=1, offset=512, data=b"b")
    assert again["status"] == FlashStatus.NOT_ERASED and again["value"] == 512
    erase(m, 1, 256, 512)
    assert ask(m, FlashKind.WRITE, slot=1, offset=512, data=b"b")["status"] == FlashStatus.OK
    assert m.chip.read(SMALL.slot_base(1) + 256, 2) == b"\xff\xff"  # erased again
    assert m.chip.read(SMALL.slot_base(1) + 512, 2) == b"b\xff"


@pytest.mark.parametrize(
    "kind,fields,status",
    [
        (FlashKind.ERASE, dict(slot=0, offset=0, length=256), FlashStatus.SLOT_ACTIVE),
        (FlashKind.WRITE, dict(slot=0, offset=0, data=b"x"), FlashStatus.SLOT_ACTIVE),
        (FlashKind.ERASE, dict(slot=2, offset=0, length=256), FlashStatus.BAD_REQUEST),
        (FlashKind.ERASE, dict(slot=1, offset=100, length=256), FlashStatus.BAD_REQUEST),
        (FlashKind.ERASE, dict(slot=1, offset=0, length=100), FlashStatus.BAD_REQUEST),
        (FlashKind.ERASE, dict(slot=1, offset=0, length=65 * 256), FlashStatus.BAD_REQUEST),
        (FlashKind.WRITE, dict(slot=1, offset=10, data=b"x"), FlashStatus.BAD_REQUEST),
        (FlashKind.WRITE, dict(slot=1, offset=0, data=b""), FlashStatus.BAD_REQUEST),
        (FlashKind.WRITE, dict(slot=1, offset=63 * 256, data=b"x" * 257), FlashStatus.BAD_REQUEST),
        (FlashKind.READ_CRC, dict(slot=1, offset=0, length=65 * 256), FlashStatus.BAD_REQUEST),
        (FlashKind.ACTIVATE, dict(slot=1), FlashStatus.BAD_IMAGE),
        (FlashKind.ACTIVATE, dict(slot=9), FlashStatus.BAD_REQUEST),
    ],
)
def test_refusals(kind, fields, status):
    m = FlashModel(geometry=SMALL)
    before = m.chip.read(0, SMALL.total_size)
    reply = ask(m, kind, **fields)
    assert reply["status"] == status
    assert m.chip.read(0, SMALL.total_size) == before
    assert m.active_slot == 0


def test_write_chunk_limit():
    m = FlashModel()
    reply = ask(m, FlashKind.WRITE, slot=1, offset=0, data=bytes(60 * 1024 + 1))
    assert reply["status"] == FlashStatus.BAD_REQUEST


def test_undecodable_and_reply_kinds_are_bad_requests():
    m = FlashModel()
    assert decode_control(m.handle(b"\x42\x01"))[1]["status"] == FlashStatus.BAD_REQUEST
    status = encode_control(FlashKind.STATUS, op=0, status=0, slot=0, done=0, total=0, value=0)
    assert decode_control(m.handle(status))[1]["status"] == FlashStatus.BAD_REQUEST


def write_image(m, slot, data, geometry=SMALL):
    erase(m, slot, 0, -(-len(data) // geometry.page_size) * geometry.page_size)
    for off in range(0, len(data), geometry.page_size):
        reply = ask(
            m, FlashKind.WRITE, slot=slot, offset=off, data=data[off : off + geometry.page_size]
        )
        assert reply["status"] == FlashStatus.OK, reply


def test_read_crc_and_activate():
    m = FlashModel(geometry=SMALL)
    img = image(5000, "3.1.4")
    write_image(m, 1, img.data)
    crc = ask(m, FlashKind.READ_CRC, slot=1, offset=0, length=len(img.data))
    assert crc["value"] == zlib.crc32(img.data) == img.crc
    reply = ask(m, FlashKind.ACTIVATE, slot=1)
    assert reply["status"] == FlashStatus.OK and reply["value"] == 0x030104
    assert m.active_slot == 1 and m.firmware_version_text == "3.1.4" and m.boot_sequence == 2
    # the old slot is writable now, the new one is protected
    assert ask(m, FlashKind.WRITE, slot=1, offset=0, data=b"x")["status"] == FlashStatus.SLOT_ACTIVE


def test_activate_refuses_wrong_board_and_corrupt_image():
    m = FlashModel(geometry=SMALL)
    write_image(m, 1, image(1000, kind="other-board").data)
    reply = ask(m, FlashKind.ACTIVATE, slot=1)
    assert reply["status"] == FlashStatus.WRONG_BOARD
    assert m.active_slot == 0
    bad = bytearray(image(1000).data)
    bad[600] ^= 0xFF
    write_image(m, 1, bytes(bad))
    assert ask(m, FlashKind.ACTIVATE, slot=1)["status"] == FlashStatus.BAD_IMAGE
    info = ask(m, FlashKind.INFO)
    assert info["active_slot"] == 0 and info["slots"][1]["state"] == SlotState.INVALID


def test_injected_write_failure_leaves_garbage_and_reports_offset():
    m = FlashModel(geometry=SMALL)
    assert ask(m, FlashKind.FAULT, fail_write=3)["status"] == FlashStatus.OK
    erase(m, 1, 0, 4 * 256)
    reply = ask(m, FlashKind.WRITE, slot=1, offset=0, data=b"\x11" * 1024)
    assert reply["status"] == FlashStatus.WRITE_FAILED and reply["value"] == 512
    assert m.chip.read(SMALL.slot_base(1), 512) == b"\x11" * 512  # pages before the bad one
    assert m.chip.read(SMALL.slot_base(1) + 512, 256) != b"\x11" * 256
    # one-shot: the next program works again
    assert ask(m, FlashKind.WRITE, slot=1, offset=768, data=b"\x22")["status"] == FlashStatus.OK


def test_persistence_across_restart(flash_file):
    m = FlashModel(flash_file, geometry=SMALL)
    assert flash_file.stat().st_size == SMALL.total_size
    img = image(3000, "2.5.0")
    write_image(m, 1, img.data)
    ask(m, FlashKind.ACTIVATE, slot=1)
    m.close()
    again = FlashModel(flash_file, geometry=SMALL)
    assert again.active_slot == 1 and again.firmware_version_text == "2.5.0"
    assert again.boot_sequence == 2
    # erase-before-write state survives too: slot 1 pages are programmed, so no rewrite
    assert again.chip.erased[SMALL.slot_base(0) // 256] == False  # noqa: E712 (numpy bool)
    # and the boot record ping-pongs: the second switch goes to the other copy
    reply = ask(again, FlashKind.ACTIVATE, slot=0)
    assert reply["status"] == FlashStatus.OK and again.boot_sequence == 3
    records = [parse_boot_record(again.chip.read(SMALL.boot_copy_base(c), 64)) for c in (0, 1)]
    assert sorted(r.sequence for r in records) == [2, 3]


def test_flash_file_of_another_geometry_is_refused(flash_file):
    FlashModel(flash_file, geometry=SMALL).close()
    with pytest.raises(FlashError, match="another flash geometry"):
        FlashModel(flash_file, geometry=FlashGeometry(page_size=256, slot_size=32 * 256))


def test_boot_record_codec():
    rec = BootRecord(active_slot=1, sequence=9, image_length=100, image_crc=0xDEADBEEF)
    raw = build_boot_record(rec)
    assert raw[:4] == b"STBR" and len(raw) == 24
    assert parse_boot_record(raw) == rec
    for i in range(len(raw)):
        torn = bytearray(raw)
        torn[i] ^= 0x01
        assert parse_boot_record(bytes(torn)) is None
    assert parse_boot_record(b"\xff" * 24) is None
    assert parse_boot_record(raw[:10]) is None


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ 0x01]))


def test_boot_falls_back_when_active_slot_is_damaged(flash_file):
    m = FlashModel(flash_file, geometry=SMALL)
    write_image(m, 1, image(2000, "2.0.0").data)
    ask(m, FlashKind.ACTIVATE, slot=1)
    m.close()
    # damage slot 1 behind the board's back (bit rot): the bootloader must not run it
    flip_byte(flash_file, SMALL.slot_base(1) + 1000)
    again = FlashModel(flash_file, geometry=SMALL)
    assert again.active_slot == 0 and again.fell_back and again.firmware_version_text == "1.0.0"


def test_no_bootable_image(flash_file):
    FlashModel(flash_file, geometry=SMALL).close()
    flip_byte(flash_file, SMALL.slot_base(0) + 100)
    m = FlashModel(flash_file, geometry=SMALL)
    assert m.active_slot == NO_SLOT and m.firmware_version == 0
    # both slots may be written then; flashing recovers the board
    from hostdriver.flash import FlashClient

    result = FlashClient(ModelPort(m)).flash(image(1000, "4.0.0"))
    assert result.slot == 0 and m.firmware_version_text == "4.0.0"


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("erase"), st.integers(0, 2), st.integers(0, 70), st.integers(0, 70)),
        st.tuples(st.just("write"), st.integers(0, 2), st.integers(0, 70), st.integers(0, 600)),
        st.tuples(st.just("image"), st.integers(0, 1), st.integers(0, 3)),
        st.tuples(st.just("activate"), st.integers(0, 2)),
        st.tuples(st.just("fault"), st.integers(0, 3)),
        st.tuples(st.just("poll")),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(ops=_ops)
def test_random_operations_never_unboot_the_board(ops):
    """Whatever a host sends, the board boots the last image it activated, byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/f.flash"
        m = FlashModel(path, geometry=SMALL, erase_pages_per_poll=16)
        active, version = 0, "1.0.0"
        content = m.chip.read(SMALL.slot_base(0), SMALL.slot_size)
        for op in ops:
            if op[0] == "erase":
                ask(m, FlashKind.ERASE, slot=op[1], offset=op[2] * 256, length=op[3] * 256)
            elif op[0] == "write":
                ask(m, FlashKind.WRITE, slot=op[1], offset=op[2] * 256, data=b"\x5a" * op[3])
            elif op[0] == "image":
                data = image(2000, f"2.0.{op[2]}", seed=op[2]).data
                erase(m, op[1], 0, 8 * 256)
                for off in range(0, len(data), 256):
                    ask(m, FlashKind.WRITE, slot=op[1], offset=off, data=data[off : off + 256])
            elif op[0] == "activate":
                reply = ask(m, FlashKind.ACTIVATE, slot=op[1])
                if reply["status"] == FlashStatus.OK:
                    event("switched")
                    active, version = op[1], m.firmware_version_text
                    content = m.chip.read(SMALL.slot_base(active), SMALL.slot_size)
            elif op[0] == "fault":
                ask(m, FlashKind.FAULT, fail_write=op[1])
            else:
                ask(m, FlashKind.POLL)
            assert m.active_slot == active
        m.close()
        again = FlashModel(path, geometry=SMALL)
        assert again.active_slot == active and again.firmware_version_text == version
        assert again.chip.read(SMALL.slot_base(active), SMALL.slot_size) == content
        again.close()


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.integers(0, 3 * 65536), st.binary(min_size=1, max_size=70000)), max_size=6
    ),
    read=st.tuples(st.integers(0, 3 * 65536), st.integers(0, 70000)),
)
def test_memory_storage_matches_a_flat_buffer(writes, read):
    size = 4 * 65536 + 1000
    mem = MemoryStorage(size, 256)
    mem.block = 65536  # several blocks in a small test
    flat = bytearray(b"\xff") * size
    for offset, data in writes:
        data = data[: size - offset]
        mem.write(offset, data)
        flat[offset : offset + len(data)] = data
    offset, length = read
    if offset + length > size:
        with pytest.raises(FlashError):
            mem.read(offset, length)
    else:
        assert mem.read(offset, length) == bytes(flat[offset : offset + length])
    pages = np.frombuffer(bytes(flat[: size // 256 * 256]), np.uint8).reshape(-1, 256)
    assert (mem.erased_pages() == (pages == 0xFF).all(axis=1)).all()
