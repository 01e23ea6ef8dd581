"""python -m tools.demo: the main job against the embedded emulator, end to end.

`make demo` runs this on a fresh machine: board info, a link test through the board's loopback
with injected faults, then calibration and in-the-loop training where those stages exist.
Each stage is the real CLI a user would run (`python -m tools.X --board emu://...`), so the demo
shows exactly what a lab engineer sees. Exits non-zero at the first failing stage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_training_targets(path: Path) -> None:
    """The calibration targets that realise the training model (training.board)."""
    from training.board import training_targets

    path.write_text(json.dumps(training_targets().to_dict(), indent=1))


def stages(board: str, workdir: Path, quick: bool) -> list[tuple[str, list[str]]]:
    cal = str(workdir / "calibration.json")
    targets = workdir / "targets.json"
    write_training_targets(targets)
    frames = "2000" if quick else "20000"
    return [
        ("board info", ["tools.info", "--board", board]),
        ("link test through the loopback, 1 % faults injected",
         ["tools.loopback", "--board", board, "--frames", frames, "--inject-faults", "0.01"]),
        ("calibrate all 512 neurons to the training targets",
         ["tools.calibrate", "--board", board, "--targets", str(targets), "--clamp",
          "--no-cache", "--out", cal]),
        ("train 8x8 digits with the chip in the loop",
         ["tools.train", "--board", board, "--dataset", "digits", "--calibration", cal,
          "--epochs", "2" if quick else "40", "--checkpoint", str(workdir / "ckpt")]),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n")[0])
    p.add_argument("--board", default="emu://?seed=1", help="board URL (default emu://?seed=1)")
    p.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="strobe-demo-") as tmp:
        for title, cmd in stages(args.board, Path(tmp), args.quick):
            print(f"\n=== {title}: python -m {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.call([sys.executable, "-m", *cmd])
            print(f"=== {title}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} "
                  f"in {time.perf_counter() - t0:.1f} s", flush=True)
            if rc != 0:
                return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
