"""The Postgres store's connections: concurrent transactions run on connections of their own,
never more than `connections` open, a broken one is replaced. On the session's real server."""

from __future__ import annotations

import threading
import uuid

import pytest

pytest.importorskip("psycopg", reason="the postgres extra is not installed")

from agemem.memory.embed import library_embedder  # noqa: E402
from agemem.memory.postgres import Connections, PostgresStore, split_url, with_schema  # noqa: E402
from agemem.memory.store import NewMemory, Scope, StoreError  # noqa: E402

MAYA = Scope(user_id="maya")


@pytest.fixture
def tagged_url(postgres_url):
    """A URL with a schema and an application_name of its own, so this test's connections can
    be counted in pg_stat_activity."""
    tag = f"pooltest_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in postgres_url else "?"
    return with_schema(f"{postgres_url}{separator}application_name={tag}", tag), tag


def _open_connections(url: str, tag: str) -> int:
    import psycopg

    conninfo, _ = split_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND pid <> "
            "pg_backend_pid()",
            (tag,),
        ).fetchone()[0]


def test_a_search_does_not_wait_for_an_open_write_transaction(tagged_url):
    url, _ = tagged_url
    store = PostgresStore(url, library_embedder())
    try:
        store.add_many([NewMemory("Maya lives in Porto.", scope=MAYA)])
        inside, release = threading.Event(), threading.Event()

        def writer():
            with store.transaction():
                store.add_many([NewMemory("Maya plays the violin.", scope=MAYA)])
                inside.set()
                release.wait(60)

        thread = threading.Thread(target=writer)
        thread.start()
        assert inside.wait(60)
        # The writer holds its transaction open; a read runs beside it and sees the last
        # committed state (one entry), not the uncommitted one.
        hits = store.search("Where does Maya live?", scope=MAYA)
        assert [hit.content for hit in hits] == ["Maya lives in Porto."]
        assert store.count(scope=MAYA) == 1
        release.set()
        thread.join(60)
        assert store.count(scope=MAYA) == 2
    finally:
        store.close()


def test_concurrent_calls_open_at_most_the_cap_and_lose_no_write(tagged_url):
    url, tag = tagged_url
    store = PostgresStore(url, library_embedder(), connections=2)
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            for j in range(6):
                store.add_many([NewMemory(f"Fact {i}-{j}: client {i} wrote note {j}.", scope=MAYA)])
                store.search(f"note {j} of client {i}", scope=MAYA)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        assert store.count(scope=MAYA) == 36
        assert 1 <= _open_connections(url, tag) <= 2  # idle ones stay open for the next call
    finally:
        store.close()
    assert _open_connections(url, tag) == 0


def test_a_caller_waits_for_a_connection_when_all_are_lent(tagged_url):
    import psycopg

    url, tag = tagged_url
    conninfo, _ = split_url(url)
    pool = Connections(lambda: psycopg.connect(conninfo, autocommit=True), size=2)
    first, second = pool.take(), pool.take()
    taken: list = []
    waiter = threading.Thread(target=lambda: taken.append(pool.take()))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and taken == []  # the cap holds: no third connection
    assert _open_connections(url, tag) == 2
    pool.give_back(first)
    waiter.join(10)
    assert taken == [first]  # the one given back, reused
    second.close()  # broken or closed: dropped when given back, its place freed
    pool.give_back(second)
    third = pool.take()
    assert third is not second and not third.closed
    for conn in (taken[0], third):
        pool.give_back(conn)
    pool.close()
    assert _open_connections(url, tag) == 0


def test_a_closed_store_refuses_calls_clearly(tagged_url):
    url, _ = tagged_url
    store = PostgresStore(url, library_embedder())
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.count()


def test_the_connection_cap_must_be_a_positive_whole_number(tagged_url):
    url, _ = tagged_url
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="connections"):
            PostgresStore(url, library_embedder(), connections=bad)
