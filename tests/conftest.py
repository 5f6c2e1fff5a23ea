"""Shared fixtures: the real embedder is loaded once per test session (per xdist worker)."""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per process: the suite runs as 2 xdist workers on 2 cores, and torch with
# 2 threads on a busy core pair was measured 5-30x slower per small call than with 1.
# Set before anything imports torch; subprocesses started by tests inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from agemem.memory.embed import reference_embedder  # noqa: E402


@pytest.fixture(scope="session")
def embedder():
    return reference_embedder()
