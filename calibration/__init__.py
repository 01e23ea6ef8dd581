"""strobe calibration layer: tune all 512 neurons of a chip against its fixed-pattern noise.

    import hostdriver, calibration
    board = hostdriver.connect("emu://?seed=1")
    result = calibration.calibrate(board)              # every routine, docs/calibration.md
    calibration.save(result, "chip.cal.json")          # versioned, atomic
    cal = calibration.load("chip.cal.json")
    cal.apply(config)                                  # codes into a ChipConfig
    calibration.apply_file(board, "chip.cal.json")     # refuses another chip's file

Each routine also runs alone: calibration.routines.leak.calibrate(board, targets).
"""

from __future__ import annotations

from typing import Any

from .cache import Cache, cache_dir
from .fileformat import load, loads, save
from .pipeline import ORDER, Progress, calibrate
from .result import ROUTINES_REVISION, CalibrationResult, ParameterResult
from .search import BinarySearch, ModelSearch, NoisyBinarySearch, SearchResult
from .targets import PARAMETERS, Targets

__all__ = [
    "ORDER",
    "PARAMETERS",
    "ROUTINES_REVISION",
    "BinarySearch",
    "Cache",
    "CalibrationResult",
    "ModelSearch",
    "NoisyBinarySearch",
    "ParameterResult",
    "Progress",
    "SearchResult",
    "Targets",
    "apply_file",
    "cache_dir",
    "calibrate",
    "load",
    "loads",
    "save",
]


def apply_file(board: Any, path: Any, config: Any = None, *, force: bool = False) -> Any:
    """Load a calibration file and write it to board (on top of config, default: what the host
    believes the board holds). CalibrationError for a corrupted file, or one made for another
    chip serial (naming both) unless force=True. Returns the ChipConfig written."""
    result = load(path)
    result.check_serial(board.info.serial, force=force, source=f"calibration file {path}")
    return result.apply_to_board(board, config, force=True)
