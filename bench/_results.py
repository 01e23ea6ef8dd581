"""Marker blocks in docs/results.md: a bench replaces only the text between its own markers.

Several people edit docs/results.md; a bench owns one block

    <!-- NAME:begin -->
    ...generated...
    <!-- NAME:end -->

and rewrites its content, leaving every other byte of the file as it was. A file without the
markers gets them at its end, in a new "## TITLE" section. Written atomically (temp + replace).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hostdriver.atomic import write_atomic
from protocol.errors import ConfigError

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results.md"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")


def markers(name: str) -> tuple[str, str]:
    """The begin and end marker lines of block `name` (lower-case letters, digits, - and _)."""
    if not _NAME.match(name):
        raise ConfigError(f"marker name must match [a-z0-9][a-z0-9_-]*, got {name!r}")
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_block(text: str, name: str, body: str, title: str) -> str:
    """text with block `name` holding `body` (a new section `## title` at the end if absent).

    ConfigError when the markers are unbalanced (one of them missing, repeated, or in the wrong
    order): a damaged file is refused rather than guessed at.
    """
    begin, end = markers(name)
    body = body.strip("\n")
    nb, ne = text.count(begin), text.count(end)
    if nb == 0 and ne == 0:
        sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return f"{text}{sep}## {title}\n\n{begin}\n{body}\n{end}\n"
    if nb != 1 or ne != 1:
        raise ConfigError(f"results file has {nb} {begin!r} and {ne} {end!r} markers; "
                          "expected one of each: fix the file by hand")
    i, j = text.index(begin), text.index(end)
    if j < i:
        raise ConfigError(f"results file has {end!r} before {begin!r}: fix the file by hand")
    return f"{text[:i + len(begin)]}\n{body}\n{text[j:]}"


def update(name: str, body: str, title: str,
           path: str | os.PathLike[str] = RESULTS) -> Path:
    """Replace block `name` of the results file at path with body (module doc); returns path.
    The file is read just before it is replaced, so concurrent edits elsewhere in it survive
    unless they land in the same instant."""
    p = Path(path)
    try:
        # bytes, not read_text: universal newlines would turn others' \r\n into \n
        text = p.read_bytes().decode("utf-8") if p.exists() else ""
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the results file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: the results file is not UTF-8 ({e.reason})") from None
    new = replace_block(text, name, body, title)
    if new != text:
        write_atomic(p, new.encode("utf-8"))
    return p


def load_outputs(paths: list[str], kind: str) -> list[dict]:
    """The JSON objects on the last stdout line of earlier `--json` runs (saved to files), for a
    bench's --combine; ConfigError naming the first file that is not one."""
    import json

    objs = []
    for path in paths:
        try:
            objs.append(json.loads(Path(path).read_text().strip().splitlines()[-1]))
        except (OSError, ValueError, IndexError) as e:
            raise ConfigError(f"--combine {path}: not a {kind} JSON output ({e})") from None
    return objs


def pct(x: float | None, digits: int = 1) -> str:
    """An accuracy in [0, 1] as a percentage for tables ("-" for None)."""
    return "-" if x is None else f"{100.0 * x:.{digits}f} %"
