"""The chip's analog core: neurons, synapses, routing, ADCs and per-chip fixed-pattern noise.

docs/emulator.md describes the physics, the transfer curves, the mismatch defaults and the
integration method.
"""

from .batch import EpisodeBatch, EpisodeResult
from .compiled import SimConfig
from .core import AnalogCore
from .mismatch import ChipMismatch, MismatchConfig

__all__ = [
    "AnalogCore",
    "ChipMismatch",
    "EpisodeBatch",
    "EpisodeResult",
    "MismatchConfig",
    "SimConfig",
]
