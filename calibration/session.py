"""A calibration session: one board, the configuration measurements start from, and the runner
that turns a list of measurement blocks into ONE board program.

A `Block` is a configuration plus a batch of episodes (all 512 neurons at once, repeats as
episodes). `Session.measure(blocks)` writes each block's configuration as a minimal diff against
the previous one (the first against what the board holds), runs every episode batch, and returns
their EpisodeData in order. Routines never loop over neurons on the board: one call, one program.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hostdriver.chip import ChipConfig, believed
from hostdriver.program import CADCSchedule, EpisodeWrites, MADCSchedule, Program, SpikeInput
from hostdriver.traces import EpisodeData

from .setup import base_config, neuron_label_map

__all__ = ["Block", "Session"]

Progress = Callable[[str], None]


@dataclass
class Block:
    """One configuration and the episodes run with it (see Program.episodes for the fields)."""

    config: ChipConfig
    n_episodes: int
    duration: float  # us
    spikes: SpikeInput | None = None
    cadc: CADCSchedule | None = None
    madc: MADCSchedule | None = None
    writes: EpisodeWrites | None = None
    gap: float = 0.0


@dataclass
class Session:
    """Board + calibration state. `config` holds the codes calibrated so far (nominal elsewhere);
    routines copy it, change what they measure, and never leave it half-updated."""

    board: Any
    config: ChipConfig = field(default_factory=base_config)
    progress: Progress | None = None
    timeout: float = 30.0  # seconds the board may take for one measurement program
    runs: int = 0
    episodes: int = 0

    @property
    def serial(self) -> int:
        return int(self.board.info.serial)

    def measure(self, blocks: Sequence[Block], note: str = "") -> list[EpisodeData]:
        """Run all blocks as one program; EpisodeData per block (spikes labelled by circuit)."""
        program = Program()
        previous = believed(self.board)
        tickets = []
        for b in blocks:
            program.write_config(b.config, previous)
            previous = b.config
            if b.writes is not None:  # the board ends the block holding the episode writes too
                a = np.asarray(b.writes.addrs, np.int64).reshape(-1)
                v = np.asarray(b.writes.values, np.int64).reshape(-1)
                mine = ChipConfig.is_config_address(a)
                previous = ChipConfig.from_words(a[mine], v[mine], base=b.config)
            tickets.append(program.episodes(
                b.n_episodes, b.duration, spikes=b.spikes, cadc=b.cadc, madc=b.madc,
                writes=b.writes, gap=b.gap, label_map=neuron_label_map()))
        result = program.run(self.board, timeout=self.timeout)
        self.runs += 1
        self.episodes += sum(b.n_episodes for b in blocks)
        if self.progress is not None:
            self.progress(note)
        return [result[t] for t in tickets]
