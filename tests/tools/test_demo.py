"""make demo's job, in its quick form: every stage runs its real CLI against emu://."""

from __future__ import annotations

import subprocess
import sys


def test_quick_demo_runs_every_stage_and_succeeds():
    proc = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--quick"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for stage in ("board info", "link test", "calibrate all 512 neurons", "train 8x8 digits"):
        assert f"=== {stage}" in out and "FAILED" not in out
    assert "0 lost, 0 corrupted" in out
    assert "ratio" in out and "test accuracy" in out
