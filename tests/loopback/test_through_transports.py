"""The whole host stack against the emulator through each transport: handshake, loopback,
playback programs, error records, link faults."""

from __future__ import annotations

import numpy as np
import pytest

import hostdriver
from protocol import instructions as ins
from protocol.addressmap import Block, SystemReg, address
from protocol.errors import BoardError
from protocol.wire import PROTOCOL_VERSION, ErrorCode
from tools.loopback import loopback_test

SCRATCH = address(Block.SYSTEM, SystemReg.SCRATCH0)


def test_handshake_reports_the_board(board_url: str, board_seed: int) -> None:
    with hostdriver.connect(board_url) as board:
        info = board.info
        assert info.serial == board_seed
        assert info.protocol_version == PROTOCOL_VERSION
        assert info.board_kind == "emulator"
        assert info.url == board_url
        # the same facts through playback: the read-only system registers
        regs = [SystemReg.SERIAL_LO, SystemReg.SERIAL_HI, SystemReg.PROTOCOL_VERSION]
        values = board.read([address(Block.SYSTEM, r) for r in regs])
        assert values.tolist() == [board_seed, 0, PROTOCOL_VERSION]


def test_loopback_echoes_small_and_fragmented_messages(board_url: str) -> None:
    rng = np.random.default_rng(0)
    with hostdriver.connect(board_url) as board:
        for size in (0, 1, 511, 16384, 16385, 200_000):  # 200 kB: 13 fragments
            payload = rng.bytes(size)
            assert board.loopback(payload) == payload
        result = loopback_test(board, 500, 64)
    assert (result["ok"], result["lost"], result["corrupted"]) == (500, 0, 0)
    assert "error" not in result


def test_register_write_read_round_trip(board_url: str) -> None:
    values = np.array([0, 1, 0xDEADBEEF, 0xFFFFFFFF], dtype=np.uint32)
    addrs = SCRATCH + np.arange(values.size)
    with hostdriver.connect(board_url) as board:
        board.write(addrs, values)
        np.testing.assert_array_equal(board.read(addrs), values)
        np.testing.assert_array_equal(board.read(addrs[::-1]), values[::-1])


def test_error_records_raise_board_error_with_trace(board_url: str) -> None:
    unmapped = address(Block.CROSSBAR, 0xFFFF)
    with hostdriver.connect(board_url) as board:
        with pytest.raises(BoardError, match="UNMAPPED_ADDRESS") as info:
            board.run(ins.program(ins.read(SCRATCH, 1), ins.read(unmapped, 1), ins.halt()))
        trace = info.value.trace
        assert len(trace.reads) == 2  # read counts stay aligned: data 0 for the bad address
        assert int(trace.errors[0]["code"]) == ErrorCode.UNMAPPED_ADDRESS
        assert int(trace.errors[0]["info32"]) == unmapped
        board.loopback(b"still alive")  # a board error leaves the link up


def test_loopback_survives_injected_faults(board_url: str) -> None:
    with hostdriver.connect(board_url, timeout=5.0) as board:
        result = loopback_test(board, 300, 32, inject_faults=0.02, seed=11)
        assert board.loopback(b"after") == b"after"  # faults were switched off again
    assert (result["ok"], result["lost"], result["corrupted"]) == (300, 0, 0)
    assert result["retransmits"] > 0  # ~12 expected: frames to the board were lost


def test_reconnect_resets_the_link(board_url: str) -> None:
    # two sessions in a row to the same board: the second SYN restarts sequence numbers
    for _ in range(2):
        with hostdriver.connect(board_url) as board:
            assert board.loopback(b"x" * 100) == b"x" * 100
