"""The calibration cache serves a file only to the routines revision that made it."""

from __future__ import annotations

import numpy as np

import calibration
from calibration import (
    ROUTINES_REVISION,
    CalibrationResult,
    ParameterResult,
    Targets,
    cache,
    fileformat,
)


def _result(serial: int = 7) -> CalibrationResult:
    rng = np.random.default_rng(0)
    t = Targets()
    r = CalibrationResult(serial, t)
    r.add(ParameterResult("leak", t.per_neuron("leak"), rng.integers(200, 400, 512),
                          80 + 20 * rng.standard_normal(512), 80 + 0.3 * rng.standard_normal(512)))
    return r


def test_revision_is_exported_and_named_in_the_file_name(tmp_path) -> None:
    assert calibration.ROUTINES_REVISION == ROUTINES_REVISION >= 2  # bumped for 2026-11-27
    p = cache.Cache(tmp_path).put(_result())
    assert p.name.endswith(f"-r{ROUTINES_REVISION}.json")
    assert p.name.startswith(f"{7:016X}-{Targets().key()}-")


def test_same_revision_is_served(tmp_path) -> None:
    r = _result()
    cache.Cache(tmp_path).put(r)
    back = cache.Cache(tmp_path).get(7, r.targets)
    assert back is not None
    np.testing.assert_array_equal(back["leak"].codes, r["leak"].codes)


def test_a_file_of_another_revision_is_not_served(tmp_path) -> None:
    """A calibration made by an older (e.g. buggy) routine must be measured again, not loaded."""
    r = _result()
    old = cache.Cache(tmp_path, revision=ROUTINES_REVISION - 1)
    old_path = old.put(r)
    assert old.get(7, r.targets) is not None  # it is there, for its own revision
    current = cache.Cache(tmp_path)
    assert current.get(7, r.targets) is None
    newer = cache.Cache(tmp_path, revision=ROUTINES_REVISION + 1)
    assert newer.get(7, r.targets) is None
    # storing the current revision leaves the old file alone (harmless), clear() removes both
    new_path = current.put(r)
    assert new_path != old_path and old_path.is_file()
    assert current.get(7, r.targets) is not None
    assert current.clear() == 2


def test_a_file_from_before_revisions_is_not_served(tmp_path) -> None:
    """Files cached before the revision existed are named <serial>-<targets>-<version>.json."""
    r = _result()
    c = cache.Cache(tmp_path)
    legacy = c.path(7, r.targets).with_name(
        f"{7:016X}-{r.targets.key()}-{r.software_version}.json")
    legacy.parent.mkdir(parents=True, exist_ok=True)
    fileformat.save(r, legacy)
    assert fileformat.load(legacy).serial == 7  # a valid calibration file
    assert c.get(7, r.targets) is None
    assert c.clear() == 1 and not legacy.exists()


def test_default_cache_uses_the_current_revision(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STROBE_CACHE_DIR", str(tmp_path))
    c = cache.Cache()
    assert c.root == tmp_path and c.revision == ROUTINES_REVISION
    assert c.path(1, Targets()).parent == tmp_path / "calibration"
