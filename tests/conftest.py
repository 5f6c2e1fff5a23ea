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


# ---- store backends: the conformance suite runs on each ------------------------------------------


@pytest.fixture(scope="session")
def postgres_url():
    """A real Postgres 16 + pgvector server for this test session (per xdist worker): initdb
    into a temporary folder, listening on 127.0.0.1 at a free port; removed at the end."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    import tempfile

    from agemem.memory.pglocal import LocalPostgres

    server = LocalPostgres(tempfile.mkdtemp(prefix="agemem-pg-")).start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def store_at(request):
    """Where a test's store named NAME lives in FOLDER (a tmp_path): `store_at(folder, name)`,
    a file path for SQLite, a postgresql:// URL with a schema of its own for Postgres. Open it
    with `open_store`; the same folder and name reopen the same store."""
    import hashlib
    from pathlib import Path

    if request.param == "sqlite":
        return lambda folder, name: str(Path(folder) / name)
    from agemem.memory.postgres import with_schema

    url = request.getfixturevalue("postgres_url")

    def at(folder, name):
        digest = hashlib.sha256(f"{folder}/{name}".encode()).hexdigest()[:24]
        return with_schema(url, f"test_{digest}")

    return at
