"""Board URLs: one grammar for CLI flags, $STROBE_BOARD and Python (ARCHITECTURE.md).

A parsed URL is a small frozen dataclass per transport; str() gives its canonical form, so
`parse_board_url(str(u)) == u`. Any malformed part raises ConfigError naming that part and
showing the grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from protocol.errors import ConfigError

DEFAULT_URL = "emu://"
ENV_VAR = "STROBE_BOARD"
USB_BACKENDS = ("emulator", "libusb1", "libusb0", "openusb")
DEFAULT_BAUDRATE = 115200
DEFAULT_SEED = 1  # board serial of an emulator started without ?seed (as tools.emulator serve)

GRAMMAR = """board URL grammar:
  emu://[?seed=N]                      embedded emulator (the default); N = board serial (1)
  tcp://HOST:PORT                      a board or `python -m tools.emulator serve` over TCP
  serial:///dev/ttyUSB0[?baudrate=N]   a serial device or pty (pyserial)
  serial:PYSERIAL_URL                  any pyserial URL: serial:loop://, serial:socket://HOST:PORT
  usb://VID:PID[?serial=S]             a USB board by hex vendor:product id, e.g. usb://1209:5B0E
                                       (&backend=emulator&seed=N: the emulated USB board)"""


def _bad(url: str, part: str, why: str) -> ConfigError:
    return ConfigError(f"bad board URL {url!r}: {part}: {why}\n{GRAMMAR}")


@dataclass(frozen=True)
class EmuURL:
    """The emulator embedded in this process (in-process transport)."""

    seed: int = DEFAULT_SEED

    def __str__(self) -> str:
        return "emu://" + (f"?seed={self.seed}" if self.seed != DEFAULT_SEED else "")


@dataclass(frozen=True)
class TcpURL:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


@dataclass(frozen=True)
class SerialURL:
    """`port` is a device path or a pyserial URL (passed to serial.serial_for_url as is)."""

    port: str
    baudrate: int = DEFAULT_BAUDRATE

    @property
    def is_pyserial_url(self) -> bool:
        return "://" in self.port

    def __str__(self) -> str:
        if self.is_pyserial_url:
            return f"serial:{self.port}"
        query = f"?baudrate={self.baudrate}" if self.baudrate != DEFAULT_BAUDRATE else ""
        prefix = "serial://" if self.port.startswith("/") else "serial:"
        return f"{prefix}{self.port}{query}"


@dataclass(frozen=True)
class UsbURL:
    vid: int
    pid: int
    serial: str | None = None
    backend: str | None = None  # None: pyusb's default (libusb1, openusb, libusb0)
    seed: int = DEFAULT_SEED  # only with backend="emulator"

    def __str__(self) -> str:
        params: list[tuple[str, str]] = []
        if self.serial is not None:
            params.append(("serial", self.serial))
        if self.backend is not None:
            params.append(("backend", self.backend))
        if self.seed != DEFAULT_SEED:
            params.append(("seed", str(self.seed)))
        query = f"?{urlencode(params)}" if params else ""
        return f"usb://{self.vid:04X}:{self.pid:04X}{query}"


BoardURL = EmuURL | TcpURL | SerialURL | UsbURL


def _query(url: str, query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    if not query:
        return {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise _bad(url, f"query {query!r}", "expected NAME=VALUE pairs joined by '&'") from exc
    out: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            valid = ", ".join(allowed) if allowed else "none"
            raise _bad(url, f"parameter {name!r}", f"unknown here (valid: {valid})")
        if name in out:
            raise _bad(url, f"parameter {name!r}", "given twice")
        out[name] = value
    return out


def _int(url: str, name: str, text: str, lo: int, hi: int, base: int = 10) -> int:
    try:
        value = int(text, base)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi or text.strip() != text or text.startswith("+"):
        kind = "a hex number" if base == 16 else "an integer"
        raise _bad(url, f"{name} {text!r}", f"expected {kind} in [{lo}, {hi}]")
    return value


def _split(url: str) -> tuple[str, str, str]:
    """'scheme://rest?query' -> (scheme, rest, query) for the hierarchical schemes."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    if "#" in rest or "#" in query:
        raise _bad(url, "fragment", "board URLs have no '#' part")
    return scheme, rest, query


def parse_board_url(url: str) -> BoardURL:
    """Parse a board URL (see GRAMMAR); ConfigError names the part that is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise _bad(str(url), "URL", "empty")
    url = url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "serial":
        return _parse_serial(url)
    if "://" not in url:
        raise _bad(url, "scheme", "expected SCHEME://... with SCHEME one of emu, tcp, serial, usb")
    if scheme == "emu":
        _, rest, query = _split(url)
        if rest not in ("", "/"):
            raise _bad(url, f"location {rest!r}", "emu:// takes no host or path")
        params = _query(url, query, ("seed",))
        seed = _int(url, "seed", params["seed"], 0, 2**64 - 1) if "seed" in params else DEFAULT_SEED
        return EmuURL(seed)
    if scheme == "tcp":
        return _parse_tcp(url)
    if scheme == "usb":
        return _parse_usb(url)
    raise _bad(url, f"scheme {scheme!r}", "unknown (valid: emu, tcp, serial, usb)")


_TCP_RE = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:/\[\]@]+)):(?P<port>[^/]*)/?")


def _parse_tcp(url: str) -> TcpURL:
    _, rest, query = _split(url)
    _query(url, query, ())
    m = _TCP_RE.fullmatch(rest)
    if m is None:
        raise _bad(url, f"address {rest!r}", "expected HOST:PORT (IPv6 as [ADDR]:PORT)")
    host = m.group("v6") or m.group("host")
    port = _int(url, "port", m.group("port"), 1, 65535)
    return TcpURL(host, port)


def _parse_serial(url: str) -> SerialURL:
    rest = url.split(":", 1)[1]
    if not rest:
        raise _bad(url, "port", "missing: give a device path or a pyserial URL")
    if rest.startswith("//"):  # serial:///dev/x, the path form with an empty host
        location, _, query = rest[2:].partition("?")
        if not location.startswith("/"):
            raise _bad(
                url, f"host {location.split('/')[0]!r}",
                "serial device URLs have no host: write serial:///dev/NAME",
            )
        path = location
    elif "://" in rest:  # a pyserial URL: loop://, socket://host:port, spy://..., rfc2217://...
        proto = rest.split("://", 1)[0]
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", proto):
            raise _bad(url, f"pyserial protocol {proto!r}", "not a URL scheme name")
        return SerialURL(rest)
    else:  # serial:/dev/ttyUSB0 or serial:COM3
        path, _, query = rest.partition("?")
    if not path or path == "/":
        raise _bad(url, "device path", "missing (e.g. serial:///dev/ttyUSB0)")
    params = _query(url, query, ("baudrate",))
    baud = (
        _int(url, "baudrate", params["baudrate"], 1, 100_000_000)
        if "baudrate" in params
        else DEFAULT_BAUDRATE
    )
    return SerialURL(path, baud)


def _parse_usb(url: str) -> UsbURL:
    _, rest, query = _split(url)
    m = re.fullmatch(r"(?P<vid>[^:/]*):(?P<pid>[^:/]*)/?", rest)
    if m is None:
        raise _bad(url, f"device {rest!r}", "expected VID:PID in hex, e.g. 1209:5B0E")
    vid = _int(url, "VID", m.group("vid"), 0, 0xFFFF, base=16)
    pid = _int(url, "PID", m.group("pid"), 0, 0xFFFF, base=16)
    params = _query(url, query, ("serial", "backend", "seed"))
    serial = params.get("serial")
    if serial == "":
        raise _bad(url, "serial", "empty (omit it to take the first board found)")
    backend = params.get("backend")
    if backend is not None and backend not in USB_BACKENDS:
        raise _bad(url, f"backend {backend!r}", f"unknown (valid: {', '.join(USB_BACKENDS)})")
    seed = DEFAULT_SEED
    if "seed" in params:
        if backend != "emulator":
            raise _bad(url, "seed", "only meaningful with backend=emulator")
        seed = _int(url, "seed", params["seed"], 0, 2**64 - 1)
    return UsbURL(vid, pid, serial, backend, seed)
