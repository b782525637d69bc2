"""Fixtures shared by several test modules (only what more than one module needs lives here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run a module with one intra-op thread, restoring the previous count afterwards.

    Tiny tensors: one thread is as fast and immune to OpenMP stalls on shared cores. Opt in per
    module with ``pytestmark = pytest.mark.usefixtures("one_thread")`` (not autouse: the other
    modules keep torch's default).
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frame / preprocessing cache shared by the tests of one module (tiny suites reuse it)."""
    return tmp_path_factory.mktemp("cache")
