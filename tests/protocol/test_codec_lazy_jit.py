"""Compiled codec kernels load numba only when first called, and compute what their Python does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from protocol.codec import NUMBA, LazyJit

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_codecs_does_not_import_numba():
    code = ("import sys, hostdriver, hostdriver.program, protocol.records; "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert out.stdout.strip() == "False"


def _running_max(x, out):  # noqa: ANN001, ANN202
    m = x[0]
    for i in range(x.shape[0]):
        m = max(m, x[i])
        out[i] = m
    return m


def test_lazy_kernel_compiles_at_first_call_and_agrees_with_python():
    kernel = LazyJit(_running_max)
    assert kernel._compiled is None and kernel.__doc__ == _running_max.__doc__
    x = np.array([3, 1, 4, 1, 5, 9, 2, 6], np.int64)
    got, want = np.empty_like(x), np.empty_like(x)
    assert kernel(x, got) == _running_max(x, want) == 9
    np.testing.assert_array_equal(got, want)
    assert (kernel._compiled is not None) == NUMBA
