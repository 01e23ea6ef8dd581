"""Flashing a served emulator over tcp, and killing that emulator process mid-flash.

The emulator runs as `python -m tools.emulator serve --listen tcp://127.0.0.1:0 --flash-file F`,
a real separate process; SIGKILL leaves F exactly as the killed process left it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from conftest import image

import hostdriver
from hostdriver.flash import FlashClient, FlashProgress
from protocol.errors import StrobeError

ROOT = Path(__file__).parents[2]


@contextmanager
def served(flash_file: Path):
    """A served emulator on the flash file; yields (process, url)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.emulator",
            "serve",
            "--listen",
            "tcp://127.0.0.1:0",
            "--flash-file",
            str(flash_file),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("tcp://"), (url, proc.stderr.read() if proc.poll() else "")
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def firmware(url: str) -> str:
    with hostdriver.connect(url, timeout=5.0) as board:
        return board.info.firmware


def test_cli_flash_4mib_over_served_tcp(tmp_path):
    img = tmp_path / "fw.img"
    img.write_bytes(image(4 << 20, "2.4.0").data)
    with served(tmp_path / "board.flash") as (_, url):
        out = subprocess.run(
            [sys.executable, "-m", "tools.flash", "--board", url, str(img), "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["verified"] is True and result["firmware_version"] == "2.4.0"
        assert result["bytes"] == (4 << 20) + 48 and result["slot"] == 1
        assert firmware(url) == "2.4.0"
    with served(tmp_path / "board.flash") as (_, url):  # persisted across a restart
        assert firmware(url) == "2.4.0"


def test_kill_emulator_mid_flash_then_restart(tmp_path):
    flash_file = tmp_path / "board.flash"
    rng = random.Random(20240606)
    candidate = image(4 << 20, "3.0.0", seed=2)
    with hostdriver.connect("emu://") as board:  # how many progress steps a whole flash has
        steps: list[FlashProgress] = []
        FlashClient(board).flash(candidate, progress=steps.append)
    assert [p.phase for p in steps[-2:]] == ["verify", "activate"]
    with served(flash_file) as (_, url), hostdriver.connect(url, timeout=5.0) as board:
        FlashClient(board).flash(image(1 << 20, "2.0.0", seed=1))
    current = "2.0.0"
    # random erase/write steps, killed asynchronously (mid-request) or between requests, then
    # right after the read-back verified the new image, before ACTIVATE is sent
    plan = [(rng.randrange(1, len(steps) - 20), True) for _ in range(2)]
    plan += [(rng.randrange(1, len(steps) - 2), False) for _ in range(2)]
    plan.append((len(steps) - 1, False))
    for attempt, (kill_at, asynchronous) in enumerate(plan):
        seen: list[FlashProgress] = []
        with served(flash_file) as (proc, url):
            with hostdriver.connect(url, timeout=5.0) as board:
                assert board.info.firmware == current

                def progress(p, kill_at=kill_at, asynchronous=asynchronous, proc=proc, seen=seen):
                    seen.append(p)
                    if len(seen) != kill_at:
                        return
                    if asynchronous:  # lands while the next request is on its way / handled
                        threading.Timer(rng.uniform(0.0, 0.003), proc.kill).start()
                    else:  # dead before the next request leaves
                        proc.kill()
                        proc.wait(timeout=30)

                try:
                    FlashClient(board).flash(candidate, progress=progress)
                    finished = True  # only an asynchronous kill can be this late
                except StrobeError:
                    finished = False
            proc.wait(timeout=30)
        assert asynchronous or not finished
        may_have_switched = asynchronous and any(p.phase == "verify" for p in seen)
        with served(flash_file) as (_, url), hostdriver.connect(url, timeout=5.0) as board:
            booted = board.info.firmware
            if finished:
                assert booted == "3.0.0"
            elif may_have_switched:  # a late asynchronous kill may land after the switch
                assert booted in (current, "3.0.0")
            else:
                assert booted == current, (attempt, kill_at, seen[-1])
            info = FlashClient(board).info()
            assert info.firmware_version == booted
            assert info.slots[info.active_slot].state.name == "VALID"
            current = booted
    # after all that, a second flash succeeds and sticks
    with served(flash_file) as (_, url), hostdriver.connect(url, timeout=5.0) as board:
        result = FlashClient(board).flash(image(4 << 20, "4.0.0", seed=3))
        assert result.verified and board.info.firmware == "4.0.0"
    with served(flash_file) as (_, url):
        assert firmware(url) == "4.0.0"
