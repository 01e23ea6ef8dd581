"""strobe emulator: the board (FPGA + chip) on the far side of the wire, speaking wire bytes.

- endpoint.BoardEndpoint: the board as a sans-I/O byte endpoint (what every transport drives)
- executor.Executor: playback programs -> traces; registers.RegisterFile: the address space
- faults: seeded link-fault injection; server: tcp / pty serving (`python -m tools.emulator`)
- analog: the chip's analog core; flash: the board's flash; usb_backend: a pyusb device

Imports here are lazy, so `import emulator.analog` does not pull in the link layer.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BoardEndpoint": "emulator.endpoint",
    "Executor": "emulator.executor",
    "RegisterFile": "emulator.registers",
    "FaultConfig": "emulator.faults",
    "FaultInjector": "emulator.faults",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'emulator' has no attribute {name!r}")
    return getattr(import_module(module), name)
