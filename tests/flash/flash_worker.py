"""Flashes a flash file in a separate process, one line per progress step, until it is killed.

Used by test_flash_crash.py: the test SIGKILLs this process at a random line.
"""

from __future__ import annotations

import random
import sys

from emulator.flash import FlashModel
from hostdriver.flash import FlashClient
from protocol.control import decode_control, encode_control
from protocol.firmware_image import make_image


class Port:
    def __init__(self, model: FlashModel) -> None:
        self.model = model

    def control(self, packet, *, timeout=None):
        kind, fields = packet
        return decode_control(self.model.handle(encode_control(kind, **fields)))


def main() -> None:
    path, version = sys.argv[1], sys.argv[2]
    model = FlashModel(path, erase_pages_per_poll=8)
    img = make_image(
        random.Random(version).randbytes(2 << 20), version=version, board_kind="emulator"
    )
    print("start", flush=True)
    FlashClient(Port(model)).flash(
        img, chunk_size=16384, progress=lambda p: print(p.phase, p.done, flush=True)
    )
    print("done", flush=True)


if __name__ == "__main__":
    main()
