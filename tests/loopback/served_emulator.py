"""`python -m tools.emulator serve` (or another server script) as a subprocess for tests; the
first stdout line is its URL."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 60.0  # a cold interpreter importing numpy on a loaded 2-core CI box


class ServedEmulator:
    """A `tools.emulator serve` subprocess and the board URL it printed."""

    def __init__(self, *args: str, script: Path | None = None) -> None:
        command = ["-m", "tools.emulator", "serve"] if script is None else [str(script)]
        self.proc = subprocess.Popen(
            [sys.executable, *command, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
        )
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        line = b""
        deadline = time.monotonic() + STARTUP_S
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            chunk = os.read(fd, 1) if ready else b""
            if not chunk:
                self.stop()
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"tools.emulator serve {' '.join(args)} gave no URL: {err}")
            line += chunk
        self.url = line.decode().strip()

    def kill(self) -> None:
        """SIGKILL: the board vanishes without a goodbye."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
