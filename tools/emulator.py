"""python -m tools.emulator serve: an emulated board on TCP or a pseudo-terminal.

The first stdout line is the board URL to connect to (tcp://HOST:PORT or serial:///dev/pts/N);
the server then runs until SIGINT/SIGTERM (exit 0).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from emulator.faults import FaultConfig
from protocol.errors import ConfigError, StrobeError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.emulator",
                                description="Serve an emulated strobe board.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve one board until interrupted",
                       description="Serve one emulated board; prints its URL as the first line.")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--listen", metavar="tcp://HOST:PORT", default=None,
                       help="TCP address to listen on; PORT 0 picks a free one "
                            "(default tcp://127.0.0.1:0)")
    where.add_argument("--pty", action="store_true",
                       help="serve on a new pseudo-terminal (raw mode) for pyserial")
    s.add_argument("--seed", type=int, default=1, metavar="N",
                   help="board serial: the seed of the chip's fixed-pattern noise (default 1)")
    s.add_argument("--flash-file", default=None, metavar="PATH",
                   help="file holding the board's flash (created with a factory image if missing)")
    s.add_argument("--faults", type=float, default=0.0, metavar="P",
                   help="drop/corrupt/duplicate/reorder each frame with probability P, both "
                        "directions (default 0)")
    s.add_argument("--fault-seed", type=int, default=0, metavar="S",
                   help="seed of the injected faults (default 0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from emulator import server
    from emulator.endpoint import BoardEndpoint

    try:
        if not 0 <= args.seed < 1 << 64:
            raise ConfigError(f"--seed must be a 64-bit unsigned integer, got {args.seed}")
        faults = FaultConfig.uniform(args.faults, seed=args.fault_seed) if args.faults else None
        listen = None if args.pty else server.parse_listen(args.listen or "tcp://127.0.0.1:0")
        endpoint = BoardEndpoint(args.seed, faults=faults, flash_file=args.flash_file)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StrobeError, OSError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        if listen is None:
            server.serve_pty(endpoint, server.print_url)
        else:
            server.serve_tcp(endpoint, *listen, server.print_url)
    except OSError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        endpoint.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
