"""A served emulator whose analog core takes DELAY extra seconds per run: a stand-in for a
program that needs long to emulate (many episodes), without burning the CPU in tests.

python tests/loopback/slow_board.py DELAY [tools.emulator serve options: --listen URL | --pty]
"""

from __future__ import annotations

import sys
import time

from emulator import server
from emulator.analog import AnalogCore
from emulator.endpoint import BoardEndpoint


class SlowCore:
    """The real analog core, after a sleep."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.inner: AnalogCore | None = None

    def run(self, batch: object) -> object:
        time.sleep(self.delay)
        assert self.inner is not None
        return self.inner.run(batch)


def main(argv: list[str]) -> int:
    delay, where = float(argv[0]), argv[1:]
    core = SlowCore(delay)
    endpoint = BoardEndpoint(3, core=core)
    core.inner = AnalogCore(endpoint.serial, endpoint.regs)
    if where == ["--pty"]:
        server.serve_pty(endpoint, server.print_url)
    else:
        server.serve_tcp(endpoint, *server.parse_listen(where[1]), server.print_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
