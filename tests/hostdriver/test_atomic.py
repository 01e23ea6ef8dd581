"""Atomic writes: a failure mid-write leaves the previous file and no temp file behind."""

from __future__ import annotations

import pytest

from hostdriver.atomic import atomic_open, write_atomic


def test_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    write_atomic(target, b"old")
    write_atomic(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_failure_mid_write_keeps_old_file_and_no_temp(tmp_path):
    target = tmp_path / "f.bin"
    write_atomic(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write(b"half")
            raise RuntimeError("board disconnected")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
