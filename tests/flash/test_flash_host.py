"""Host flash procedure against the emulator's flash model, packets crossing as bytes."""

from __future__ import annotations

import pytest
from conftest import SMALL, ModelPort, image

from emulator.flash import FlashModel
from hostdriver.flash import FlashClient, FlashProgress
from protocol.errors import FlashError
from protocol.firmware_image import make_image
from protocol.flash_packets import FlashKind, SlotState


@pytest.fixture
def board():
    return ModelPort(FlashModel())


def test_flash_4mib_image_progress_and_result(board):
    img = image(4 << 20, "2.3.4")
    seen: list[FlashProgress] = []
    result = FlashClient(board).flash(img.data, progress=seen.append)
    assert result.slot == 1 and result.verified and result.firmware_version == "2.3.4"
    assert result.bytes == len(img.data) and result.seconds >= 0
    phases = [p.phase for p in seen]
    assert phases[0] == "erase" and phases[-1] == "activate" and "verify" in phases
    writes = [p.done for p in seen if p.phase == "write"]
    assert writes == sorted(writes) and writes[-1] == len(img.data)
    erase = [p.done for p in seen if p.phase == "erase"]
    assert len(erase) > 2 and erase[-1] == -(-len(img.data) // 4096) * 4096
    # 60 KiB chunks: 69 WRITE packets for 4 MiB + 48 bytes
    assert board.sent.count(FlashKind.WRITE) == 69
    assert board.model.active_slot == 1 and board.model.firmware_version_text == "2.3.4"


def test_second_flash_goes_to_the_other_slot(board):
    client = FlashClient(board)
    assert client.flash(image(10_000, "2.0.0")).slot == 1
    assert client.flash(image(10_000, "3.0.0")).slot == 0
    info = client.info()
    assert info.active_slot == 0 and info.firmware_version == "3.0.0"
    assert [s.firmware_version for s in info.slots] == ["3.0.0", "2.0.0"]


@pytest.mark.parametrize(
    "mangle,match",
    [
        (lambda d: d[:-1], "truncated"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "payload corrupted"),
        (lambda d: d[:30], "truncated"),
        (
            lambda d: make_image(b"x" * 100, version="2.0.0", board_kind="bss2-kind-v1").data,
            "built for board kind 'bss2-kind-v1', the board is 'emulator'",
        ),
        (
            lambda d: make_image(bytes(9 << 20), version="2.0.0", board_kind="emulator").data,
            "does not fit",
        ),
    ],
    ids=["truncated", "crc", "short-header", "board-kind", "too-big"],
)
def test_bad_images_refused_before_touching_the_board(board, mangle, match):
    data = mangle(image(5000).data)
    with pytest.raises(FlashError, match=match):
        FlashClient(board).flash(data)
    assert set(board.sent) <= {FlashKind.INFO}  # read-only questions at most
    assert board.model.active_slot == 0 and board.model.firmware_version_text == "1.0.0"


def test_injected_write_error_is_clear_and_keeps_active_slot(board):
    client = FlashClient(board)
    client.inject_write_failure(7)
    with pytest.raises(FlashError) as err:
        client.flash(image(100_000, "2.0.0"))
    assert "program failure at slot offset 0x6000" in str(err.value)
    assert "active slot is unchanged" in str(err.value)
    info = client.info()
    assert info.active_slot == 0 and info.firmware_version == "1.0.0"
    assert info.slots[1].state != SlotState.VALID
    # the fault was one-shot: a retry works
    assert client.flash(image(100_000, "2.0.0")).firmware_version == "2.0.0"


def test_verify_only(board):
    client = FlashClient(board)
    img = image(50_000, "2.0.0")
    client.flash(img)
    sent = len(board.sent)
    result = client.verify(img)
    assert result.verified and result.slot == 1 and result.firmware_version == "2.0.0"
    assert set(board.sent[sent:]) <= {FlashKind.INFO, FlashKind.READ_CRC}
    with pytest.raises(FlashError, match="does not match"):
        client.verify(image(50_000, "2.0.1"))


def test_rollback(board):
    client = FlashClient(board)
    client.flash(image(20_000, "2.0.0"))
    back = client.rollback()
    assert back.slot == 0 and back.firmware_version == "1.0.0"
    forward = client.rollback()
    assert forward.slot == 1 and forward.firmware_version == "2.0.0"


def test_rollback_needs_another_valid_slot(board):
    with pytest.raises(FlashError, match="no other valid image.*slot 1: EMPTY"):
        FlashClient(board).rollback()
    client = FlashClient(board)
    client.inject_write_failure(2)  # header page written, payload broken
    with pytest.raises(FlashError):
        client.flash(image(10_000))
    with pytest.raises(FlashError, match="slot 1: INVALID"):
        client.rollback()
    assert board.model.firmware_version_text == "1.0.0"


def test_chunk_size_is_rounded_to_pages():
    port = ModelPort(FlashModel(geometry=SMALL))
    img = image(3000)
    FlashClient(port).flash(img, chunk_size=700)  # -> 512 bytes (2 pages of 256)
    assert port.sent.count(FlashKind.WRITE) == -(-len(img.data) // 512)
