"""Shared fixtures: the real embedder is loaded once per test session."""

from __future__ import annotations

import pytest

from agemem.memory.embed import default_embedder


@pytest.fixture(scope="session")
def embedder():
    return default_embedder()
