"""Run the training tests single-threaded: the tensors are small, and intra-op threads on a
shared 2-core machine cost far more in synchronisation than they gain (10x slower measured)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
