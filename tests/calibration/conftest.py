"""Shared fixtures: emulated boards and full calibrations computed once per test session, and a
private cache directory (board stand-ins live in cal_helpers.py)."""

from __future__ import annotations

from typing import Any

import pytest

import hostdriver
from calibration import CalibrationResult, Progress, calibrate


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Tests never read or write the user's ~/.cache."""
    monkeypatch.setenv("STROBE_CACHE_DIR", str(tmp_path_factory.mktemp("strobe-cache")))


@pytest.fixture(scope="session")
def boards():
    """One emulated board per seed, connected once for the whole session."""
    opened: dict[int, Any] = {}

    def get(seed: int) -> Any:
        if seed not in opened:
            opened[seed] = hostdriver.connect(f"emu://?seed={seed}", timeout=30.0)
        return opened[seed]

    yield get
    for b in opened.values():
        b.close()


class Recorder(Progress):
    """Records the progress hooks a calibration calls."""

    def __init__(self) -> None:
        self.log: list[tuple] = []

    def start(self, step: str, index: int, total: int, expected_runs: int) -> None:
        self.log.append(("start", step, index, total))

    def run(self, note: str) -> None:
        self.log.append(("run", note))

    def done(self, step: str, params: list) -> None:
        self.log.append(("done", step))


@pytest.fixture(scope="session")
def progress_log() -> dict[int, list[tuple]]:
    return {}


@pytest.fixture(scope="session")
def full(boards, progress_log):
    """Full calibration (no cache) of emu://?seed=N, computed once per seed per session."""
    done: dict[int, CalibrationResult] = {}

    def get(seed: int) -> CalibrationResult:
        if seed not in done:
            rec = Recorder()
            done[seed] = calibrate(boards(seed), cache=False, progress=rec)
            progress_log[seed] = rec.log
        return done[seed]

    return get
