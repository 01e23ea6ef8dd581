"""Board-URL grammar: canonical forms, round trips, and errors that name the bad part."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostdriver.url import (
    GRAMMAR,
    EmuURL,
    SerialURL,
    TcpURL,
    UsbURL,
    parse_board_url,
)
from protocol.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("emu://", EmuURL(1)),
        ("emu://?seed=0", EmuURL(0)),
        ("emu://?seed=42", EmuURL(42)),
        ("EMU://", EmuURL(1)),
        ("tcp://127.0.0.1:5000", TcpURL("127.0.0.1", 5000)),
        ("tcp://board7.lab:1", TcpURL("board7.lab", 1)),
        ("tcp://[::1]:65535", TcpURL("::1", 65535)),
        ("serial:///dev/ttyUSB0", SerialURL("/dev/ttyUSB0", 115200)),
        ("serial:///dev/ttyUSB0?baudrate=3000000", SerialURL("/dev/ttyUSB0", 3_000_000)),
        ("serial:/dev/pts/4", SerialURL("/dev/pts/4")),
        ("serial:loop://", SerialURL("loop://")),
        ("serial:socket://10.0.0.2:7777", SerialURL("socket://10.0.0.2:7777")),
        ("serial:spy://loop://?file=x.txt", SerialURL("spy://loop://?file=x.txt")),
        ("usb://1209:5B0E", UsbURL(0x1209, 0x5B0E)),
        ("usb://1209:5b0e?serial=00000000000000A1", UsbURL(0x1209, 0x5B0E, "00000000000000A1")),
        (
            "usb://1209:5B0E?backend=emulator&seed=3",
            UsbURL(0x1209, 0x5B0E, None, "emulator", 3),
        ),
        (
            "usb://1209:5B0E?backend=emulator",
            UsbURL(0x1209, 0x5B0E, None, "emulator", 1),
        ),
    ],
)
def test_parse_valid(text: str, expected: object) -> None:
    parsed = parse_board_url(text)
    assert parsed == expected
    assert parse_board_url(str(parsed)) == parsed


def test_canonical_strings() -> None:
    assert str(EmuURL(1)) == "emu://"
    assert str(EmuURL(0)) == "emu://?seed=0"
    assert str(SerialURL("/dev/ttyACM0", 9600)) == "serial:///dev/ttyACM0?baudrate=9600"
    assert str(UsbURL(0x1209, 0x5B0E, "S1")) == "usb://1209:5B0E?serial=S1"
    assert str(TcpURL("::1", 80)) == "tcp://[::1]:80"


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("", "URL"),
        ("localhost:5000", "scheme"),
        ("http://x:1", "scheme 'http'"),
        ("emu://host", "location 'host'"),
        ("emu://?seed=-1", "seed '-1'"),
        ("emu://?seed=abc", "seed 'abc'"),
        ("emu://?speed=1", "parameter 'speed'"),
        ("emu://?seed=1&seed=2", "parameter 'seed'"),
        ("emu://?seed", "query 'seed'"),
        ("tcp://localhost", "address 'localhost'"),
        ("tcp://localhost:0", "port '0'"),
        ("tcp://localhost:70000", "port '70000'"),
        ("tcp://localhost:http", "port 'http'"),
        ("tcp://h:1?x=1", "parameter 'x'"),
        ("tcp://h:1#frag", "fragment"),
        ("serial:", "port"),
        ("serial://host/dev/tty", "host 'host'"),
        ("serial:///dev/ttyUSB0?baudrate=0", "baudrate '0'"),
        ("serial:///dev/ttyUSB0?baud=9600", "parameter 'baud'"),
        ("serial:1bad://x", "pyserial protocol '1bad'"),
        ("usb://1209", "device '1209'"),
        ("usb://12G9:5B0E", "VID '12G9'"),
        ("usb://1209:15B0E", "PID '15B0E'"),
        ("usb://1209:5B0E?serial=", "serial"),
        ("usb://1209:5B0E?backend=winusb", "backend 'winusb'"),
        ("usb://1209:5B0E?seed=3", "seed"),
        ("usb://1209:5B0E?port=3", "parameter 'port'"),
    ],
)
def test_parse_invalid_names_part_and_shows_grammar(text: str, part: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_board_url(text)
    message = str(info.value)
    assert f": {part}:" in message.splitlines()[0]
    assert GRAMMAR in message


def test_config_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        parse_board_url("nope")


hosts = st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)
serial_strings = st.text(
    st.characters(codec="ascii", categories=("L", "N", "P")), min_size=1, max_size=20
)


@given(
    st.one_of(
        st.builds(EmuURL, st.integers(0, 2**64 - 1)),
        st.builds(TcpURL, hosts, st.integers(1, 65535)),
        st.builds(
            SerialURL,
            st.from_regex(r"/dev/[a-zA-Z0-9/_]{1,20}", fullmatch=True),
            st.integers(1, 10_000_000),
        ),
        st.builds(
            UsbURL,
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFF),
            st.none() | serial_strings,
            st.sampled_from([None, "libusb1", "libusb0", "openusb"]),
        ),
        st.builds(
            UsbURL,
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFF),
            st.none() | serial_strings,
            st.just("emulator"),
            st.integers(0, 2**64 - 1),
        ),
    )
)
def test_round_trip(url: object) -> None:
    assert parse_board_url(str(url)) == url


@given(st.text(max_size=40))
def test_fuzz_gives_url_or_config_error(text: str) -> None:
    try:
        parsed = parse_board_url(text)
    except ConfigError:
        return
    assert parse_board_url(str(parsed)) == parsed
