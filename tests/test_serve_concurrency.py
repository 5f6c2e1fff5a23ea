"""Concurrent searches through the real `agemem serve` (its query embeddings share onnxruntime
runs, `agemem.memory.embed.Coalescer`, and repeat queries reuse their vector, `Memory`'s query
cache) return exactly what single searches return: each query is then searched again, one at a
time, by a fresh `Memory` in this process over the same SQLite file."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from serving import agemem_server, create_key

from agemem.api import Memory

pytestmark = pytest.mark.slow
NAMES = ("Ana", "Ben", "Chloe", "Dev", "Emma", "Farid")
THINGS = ("bicycle", "piano", "kayak", "camera", "violin", "tent")
PLACES = ("Lisbon", "Oslo", "Kyoto", "Lima", "Hanoi", "Perth")


def test_concurrent_searches_return_what_single_searches_return(tmp_path):
    store = tmp_path / "store"
    key = create_key(store, "acme")
    notes = [
        f"{NAMES[i % 6]} bought a {THINGS[i * 5 % 6]} in {PLACES[i * 7 % 6]} (note {i})."
        for i in range(60)
    ]
    queries = [
        (f"What {THINGS[i % 6]} did {NAMES[i * 5 % 6]} get in {PLACES[i % 4]}?", f"u{i % 2}")
        for i in range(32)
    ]
    queries += queries[:8]  # repeats: answered from the query cache
    with agemem_server(store) as server, server.client(key) as client:
        for user in ("u0", "u1"):
            messages = [{"role": "user", "content": n} for n in notes[int(user[1]) :: 2]]
            response = client.post("/memories", json={"messages": messages, "user_id": user})
            assert response.status_code == 200, response.text

        def search(query: tuple[str, str]) -> list[dict]:
            body = {"query": query[0], "user_id": query[1], "limit": 10}
            with server.client(key) as own:  # a connection per client, as the bench has
                response = own.post("/search", json=body)
            assert response.status_code == 200, response.text
            return response.json()["results"]

        with ThreadPoolExecutor(16) as pool:
            served = list(pool.map(search, queries))

    memory = Memory(store / "tenants" / "acme.db")
    try:
        for (query, user), results in zip(queries, served, strict=True):
            alone = memory.search(query, user_id=user, limit=10)["results"]
            assert len(alone) == 10
            assert results == alone, query  # same ids, texts, scores and ranks, bit for bit
    finally:
        memory.close()
