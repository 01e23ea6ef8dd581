"""Shared helpers: a wire-bytes port onto an in-process FlashModel, and images."""

from __future__ import annotations

import random

import pytest

from emulator.flash import FlashGeometry, FlashModel
from protocol.control import decode_control, encode_control
from protocol.firmware_image import FirmwareImage, make_image

SMALL = FlashGeometry(page_size=256, slot_size=64 * 256)  # 16 KiB slots: quick exhaustive tests


class ModelPort:
    """Board stand-in: packets cross as bytes (encode -> FlashModel.handle -> decode)."""

    def __init__(self, model: FlashModel) -> None:
        self.model = model
        self.sent: list[int] = []

    def control(self, packet, *, timeout=None):
        kind, fields = packet
        self.sent.append(kind)
        return decode_control(self.model.handle(encode_control(kind, **fields)))


def image(
    size: int, version: str = "2.0.0", kind: str = "emulator", seed: int = 0
) -> FirmwareImage:
    payload = random.Random(seed).randbytes(size)
    return make_image(payload, version=version, board_kind=kind)


@pytest.fixture
def flash_file(tmp_path):
    return tmp_path / "board.flash"
