"""A board dies at any moment of a flash: it must boot the previous image and accept a new flash.

Two kinds of death: a simulated one at every single flash program/erase (with the interrupted
write torn in half), exhaustively; and a real SIGKILL of a process that flashes its flash file.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL, ModelPort, image

from emulator.flash import FlashModel
from hostdriver.flash import FlashClient
from protocol.errors import FlashError


class Killed(Exception):
    pass


class DyingStorage:
    """Storage that dies at its nth write, leaving the first half of that write behind."""

    def __init__(self, inner, die_at: int) -> None:
        self.inner = inner
        self.die_at = die_at
        self.writes = 0

    def write(self, offset: int, data: bytes) -> None:
        if self.writes == self.die_at:
            self.inner.write(offset, data[: len(data) // 2])
            raise Killed
        self.writes += 1
        self.inner.write(offset, data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def flash_with_death(path: Path, img, die_at: int) -> int:
    """Flash `img` until the storage dies; returns how many writes the flash made (if none died)."""
    model = FlashModel(path, geometry=SMALL, erase_pages_per_poll=4)
    storage = DyingStorage(model.chip.storage, die_at)
    model.chip.storage = storage
    try:
        FlashClient(ModelPort(model)).flash(img, chunk_size=256)
    except Killed:
        return -1
    finally:
        storage.inner.close()
    return storage.writes


def test_death_at_every_write_keeps_the_board_bootable(tmp_path):
    path = tmp_path / "board.flash"
    old = image(3000, "2.0.0", seed=1)
    FlashClient(ModelPort(FlashModel(path, geometry=SMALL))).flash(old)
    new = image(3000, "3.0.0", seed=2)
    reference = tmp_path / "reference.flash"
    reference.write_bytes(path.read_bytes())
    total = flash_with_death(reference, new, die_at=10**9)  # count the writes of a whole flash
    assert total == 3 + 12 + 2  # erase steps, page programs, boot record erase + program
    start = path.read_bytes()  # each death point starts from the same board
    for die_at in range(total):
        victim = tmp_path / "victim.flash"
        victim.write_bytes(start)
        assert flash_with_death(victim, new, die_at) == -1
        board = FlashModel(victim, geometry=SMALL)
        # the switch is the very last write: any death before or during it boots the old image
        assert board.firmware_version_text == "2.0.0", die_at
        assert not board.fell_back
        result = FlashClient(ModelPort(board)).flash(new)
        assert result.verified and board.firmware_version_text == "3.0.0"
        board.close()
        assert FlashModel(victim, geometry=SMALL).firmware_version_text == "3.0.0"


def test_death_during_boot_record_switch_exhaustive(tmp_path):
    """Tear the boot-record write at every byte: the record in force is old or new, never none."""
    path = tmp_path / "board.flash"
    model = FlashModel(path, geometry=SMALL)
    FlashClient(ModelPort(model)).flash(image(1000, "2.0.0"))
    model.close()
    start = path.read_bytes()
    for cut in range(0, 25):
        path.write_bytes(start)
        board = FlashModel(path, geometry=SMALL)
        client = FlashClient(ModelPort(board))
        new = image(1000, "3.0.0", seed=5)
        inner = board.chip.storage
        real_program = board.chip.program

        def torn_program(offset, data, cut=cut, inner=inner, real=real_program, board=board):
            if offset < SMALL.slot_base(0):  # the boot record page
                inner.write(offset, data[:cut])
                raise Killed
            return real(offset, data)

        board.chip.program = torn_program
        with pytest.raises(Killed):
            client.flash(new)
        inner.close()
        after = FlashModel(path, geometry=SMALL)
        assert after.firmware_version_text == ("3.0.0" if cut >= 24 else "2.0.0"), cut
        after.close()


WORKER = Path(__file__).with_name("flash_worker.py")


def test_sigkill_during_flash_then_restart(tmp_path):
    """A real process flashing its flash file is SIGKILLed at random moments."""
    path = tmp_path / "board.flash"
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    FlashModel(path).close()  # factory board: 1.0.0
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(path), f"2.{attempt}.0"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        kill_after = rng.randrange(2, 60)
        lines = 0
        for _ in proc.stdout:
            lines += 1
            if lines == kill_after:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=30)
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, f"worker finished before the kill ({lines})"
        board = FlashModel(path)
        assert board.firmware_version_text == "1.0.0"
        board.close()
    board = FlashModel(path)
    result = FlashClient(ModelPort(board)).flash(image(1 << 20, "9.9.9"))
    assert result.verified and board.firmware_version_text == "9.9.9"


def test_flash_error_paths_do_not_touch_the_active_slot(tmp_path):
    path = tmp_path / "board.flash"
    board = FlashModel(path, geometry=SMALL)
    client = FlashClient(ModelPort(board))
    active_before = board.chip.read(SMALL.slot_base(0), SMALL.slot_size)
    client.inject_write_failure(2)
    with pytest.raises(FlashError, match="program failure"):
        client.flash(image(5000, "2.0.0"))
    assert board.active_slot == 0
    assert board.chip.read(SMALL.slot_base(0), SMALL.slot_size) == active_before
