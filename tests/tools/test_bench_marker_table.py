"""bench/_results.py: a bench's block in docs/results.md is replaced between its markers only."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _results  # noqa: E402
from protocol.errors import ConfigError  # noqa: E402

BEGIN, END = "<!-- demo:begin -->", "<!-- demo:end -->"
DOC = (f"# Results\n\n## Other\nkeep   this\t\r\n\n## Demo\n\n{BEGIN}\nold table\n| a |\n{END}\n"
       "\n## After\nmore text, no final newline")


def test_replaces_only_between_the_markers() -> None:
    out = _results.replace_block(DOC, "demo", "| new |\n|---|", "Demo")
    head, tail = DOC.split(BEGIN)[0], DOC.split(END)[1]
    assert out == f"{head}{BEGIN}\n| new |\n|---|\n{END}{tail}"
    assert out.startswith(head) and out.endswith(tail)
    assert "old table" not in out


def test_idempotent_and_body_newlines_normalised() -> None:
    once = _results.replace_block(DOC, "demo", "\n\nbody\n\n", "Demo")
    assert once == _results.replace_block(once, "demo", "body", "Demo")
    assert f"{BEGIN}\nbody\n{END}" in once


@pytest.mark.parametrize("text, sep", [("# R\n\ntext\n", "\n"), ("# R\n\ntext", "\n\n"),
                                       ("# R\n\n", ""), ("", "")])
def test_creates_the_section_at_the_end_when_absent(text: str, sep: str) -> None:
    out = _results.replace_block(text, "demo", "table", "Demo (issue 5)")
    assert out == f"{text}{sep}## Demo (issue 5)\n\n{BEGIN}\ntable\n{END}\n"


def test_other_blocks_are_left_alone() -> None:
    two = _results.replace_block(DOC, "other", "x", "Other block")
    out = _results.replace_block(two, "demo", "y", "Demo")
    assert "<!-- other:begin -->\nx\n<!-- other:end -->" in out
    assert out.count("## Other block") == 1 and "old table" not in out


@pytest.mark.parametrize("text", [
    f"a\n{BEGIN}\nb\n",  # end missing
    f"a\n{END}\nb\n",  # begin missing
    f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n",  # two blocks
    f"{END}\nx\n{BEGIN}\n",  # reversed
])
def test_damaged_markers_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="fix the file by hand"):
        _results.replace_block(text, "demo", "t", "Demo")


@pytest.mark.parametrize("name", ["", "Robust", "a b", "x-->", "-lead"])
def test_bad_marker_names(name: str) -> None:
    with pytest.raises(ConfigError, match="marker name"):
        _results.markers(name)


@given(st.text(max_size=200), st.text(max_size=200), st.text(max_size=50))
def test_prefix_and_suffix_survive_byte_for_byte(head: str, tail: str, body: str) -> None:
    if "<!-- demo:" in head + tail + body:
        return
    text = f"{head}{BEGIN}old{END}{tail}"
    out = _results.replace_block(text, "demo", body, "Demo")
    assert out.startswith(head + BEGIN) and out.endswith(END + tail)
    assert out[len(head) + len(BEGIN):-len(END + tail) or None] == f"\n{body.strip(chr(10))}\n"


def test_update_writes_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    path.write_bytes(DOC.encode())
    _results.update("demo", "fresh", "Demo", path)
    assert path.read_bytes() == _results.replace_block(DOC, "demo", "fresh", "Demo").encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.md"]  # no temp file left
    missing = tmp_path / "new" / "r.md"
    _results.update("demo", "t", "Demo", missing)
    assert missing.read_text() == f"## Demo\n\n{BEGIN}\nt\n{END}\n"


def test_update_leaves_a_damaged_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    path.write_text(f"x\n{BEGIN}\n")
    with pytest.raises(ConfigError):
        _results.update("demo", "t", "Demo", path)
    assert path.read_text() == f"x\n{BEGIN}\n"


def test_pct() -> None:
    assert _results.pct(0.97222) == "97.2 %" and _results.pct(None) == "-"
    assert _results.pct(0.5, 2) == "50.00 %"


def test_update_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    path.write_bytes(b"\xff\xfe broken")
    with pytest.raises(ConfigError, match="not UTF-8"):
        _results.update("demo", "t", "Demo", path)
    assert path.read_bytes() == b"\xff\xfe broken"
