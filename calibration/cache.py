"""A cache of calibration files keyed by chip serial + targets + software version + routines
revision.

The same chip calibrated to the same targets by the same software gives (up to noise) the same
codes, so a second run loads the file instead of measuring (instant). Location:
$STROBE_CACHE_DIR, else $XDG_CACHE_HOME/strobe, else ~/.cache/strobe; files live in its
`calibration/` folder as `<serial hex>-<targets hash>-<version>-r<revision>.json`, written
atomically. The revision is calibration.result.ROUTINES_REVISION, bumped whenever a routine's
results change: the package version changes only at releases, so without it a calibration made
by a fixed routine's buggy predecessor would be served again. Files of another revision (and
files from before revisions, named without one) are simply not found; `clear` removes them.
A corrupted entry is treated as a miss (and replaced), never as a calibration.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from protocol.errors import CalibrationError

from . import fileformat
from .result import ROUTINES_REVISION, CalibrationResult, software_version
from .targets import Targets

__all__ = ["Cache", "cache_dir"]

ENV_VAR = "STROBE_CACHE_DIR"


def cache_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "strobe"


class Cache:
    """Calibration files by (serial, targets, software version, routines revision)."""

    def __init__(self, root: str | os.PathLike[str] | None = None,
                 revision: int = ROUTINES_REVISION) -> None:
        self.root = Path(root) if root is not None else cache_dir()
        self.revision = int(revision)  # of the routines whose results get / put serve

    def path(self, serial: int, targets: Targets, version: str | None = None) -> Path:
        v = re.sub(r"[^A-Za-z0-9._+-]", "_", version or software_version())
        name = f"{int(serial):016X}-{targets.key()}-{v}-r{self.revision}.json"
        return self.root / "calibration" / name

    def get(self, serial: int, targets: Targets) -> CalibrationResult | None:
        p = self.path(serial, targets)
        if not p.is_file():
            return None
        try:
            result = fileformat.load(p)
        except CalibrationError:
            return None  # a damaged entry is a miss; the next put replaces it
        if result.serial != int(serial) or result.targets.key() != targets.key():
            return None
        return result

    def put(self, result: CalibrationResult) -> Path:
        return fileformat.save(result, self.path(result.serial, result.targets,
                                                 result.software_version))

    def clear(self) -> int:
        """Remove every cached calibration (every version and revision); returns how many
        files went."""
        n = 0
        for p in (self.root / "calibration").glob("*.json"):
            p.unlink(missing_ok=True)
            n += 1
        return n
