"""VectorIndex: exact and HNSW paths, maintenance, filtered search; and the HNSW path inside a
real SQLiteStore. Vectors come from the store bench's generator (clustered unit vectors shaped
like sentence embeddings), so recall here means what it means in the bench."""

from __future__ import annotations

import numpy as np
import pytest

from agemem.bench.store import synthetic_corpus
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import NewMemory, Scope
from agemem.memory.vector_index import VectorIndex, VectorIndexConfig

N = 3_000
LOW = VectorIndexConfig(exact_threshold=500, filtered_exact_max=100)  # forces the HNSW path


@pytest.fixture(scope="module")
def data():
    corpus = synthetic_corpus(N, 50, seed=1)
    return corpus.vectors, corpus.queries


def _exact(vectors: np.ndarray, query: np.ndarray, k: int, rows=None) -> list[int]:
    rows = np.arange(len(vectors)) if rows is None else np.asarray(rows)
    scores = vectors[rows] @ query
    return rows[np.argsort(-scores, kind="stable")[:k]].tolist()


def _index(vectors: np.ndarray, config: VectorIndexConfig | None = None) -> VectorIndex:
    index = VectorIndex(vectors.shape[1], config)
    index.load(np.arange(len(vectors)), vectors)
    return index


def _recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def test_exact_path_matches_brute_force(data):
    vectors, queries = data
    index = _index(vectors)
    assert not index.uses_ann
    for q in queries:
        keys, scores = index.search(q, 10)
        assert keys.tolist() == _exact(vectors, q, 10)
        np.testing.assert_allclose(scores, vectors[keys] @ q, rtol=1e-6)


def test_hnsw_path_agrees_with_exact_search(data):
    vectors, queries = data
    index = _index(vectors, LOW)
    assert index.uses_ann
    found = [index.search(q, 10)[0].tolist() for q in queries]
    assert _recall(found, [_exact(vectors, q, 10) for q in queries]) >= 0.95
    keys, scores = index.search(queries[0], 10)
    np.testing.assert_allclose(scores, vectors[keys] @ queries[0], rtol=1e-5)  # exact re-scores
    assert np.all(np.diff(scores) <= 0)


@pytest.mark.parametrize("config", [None, LOW], ids=["exact", "hnsw"])
def test_upsert_and_remove_are_seen_by_search(data, config):
    vectors, queries = data
    original = vectors.copy()
    index = _index(vectors, config)
    index.search(queries[0], 1)  # builds the graph on the HNSW path
    top = int(index.search(queries[0], 1)[0][0])
    index.remove(np.array([top, 10**9]))  # unknown keys are ignored
    assert top not in index and len(index) == N - 1
    assert top not in index.search(queries[0], 50)[0].tolist()
    index.upsert(np.array([7, N + 5]), np.stack([queries[1], queries[0]]))
    assert index.search(queries[0], 1)[0].tolist() == [N + 5]
    assert index.search(queries[1], 1)[0].tolist() == [7]
    assert len(index) == N
    np.testing.assert_array_equal(vectors, original)  # the index edits its own copy


def test_graph_is_dropped_when_the_index_shrinks(data):
    vectors, queries = data
    index = _index(vectors[:600], LOW)
    index.search(queries[0], 5)
    assert index.uses_ann
    index.remove(np.arange(200))
    assert not index.uses_ann
    assert index.search(queries[0], 5)[0].tolist() == _exact(
        vectors, queries[0], 5, range(200, 600)
    )


def _filtered(index, q, allowed: np.ndarray, calls: list[str]):
    allowed_set = set(allowed.tolist())

    def keep(keys):
        calls.append("keep")
        return np.array([k in allowed_set for k in keys.tolist()], dtype=bool)

    def allowed_keys():
        calls.append("scan")
        return allowed

    return index.search_filtered(
        q, 10, n_allowed=len(allowed), keep=keep, allowed_keys=allowed_keys
    )


@pytest.mark.parametrize(
    ("n_allowed", "path"),
    [(80, ["scan"]), (1_500, ["keep"]), (0, [])],
    ids=["small-set-exact", "large-set-ann", "empty"],
)
def test_filtered_search_picks_its_path_and_stays_accurate(data, n_allowed, path):
    vectors, queries = data
    index = _index(vectors, LOW)
    allowed = np.random.default_rng(0).choice(N, n_allowed, replace=False)
    found, truth = [], []
    for q in queries:
        calls: list[str] = []
        keys, _ = _filtered(index, q, allowed, calls)
        assert calls == path
        assert set(keys.tolist()) <= set(allowed.tolist())
        found.append(keys.tolist())
        truth.append(_exact(vectors, q, 10, allowed))
    if n_allowed:
        assert _recall(found, truth) >= 0.95


def test_filtered_search_falls_back_to_exact_when_too_few_survive(data):
    vectors, queries = data
    index = _index(vectors, LOW)
    q = queries[0]
    far = np.array(_exact(vectors, -q, 150))  # the rows least like q: the graph never returns them
    calls: list[str] = []
    keys, _ = _filtered(index, q, far, calls)
    assert calls == ["keep", "scan"]
    assert keys.tolist() == _exact(vectors, q, 10, far)


def test_config_is_validated():
    with pytest.raises(ValueError, match="exact_threshold"):
        VectorIndexConfig(exact_threshold=0)
    with pytest.raises(ValueError, match="filter_margin"):
        VectorIndexConfig(filter_margin=0.5)


def test_store_uses_hnsw_above_its_threshold(tmp_path, embedder, data):
    """Through a real store: HNSW dense search (plain and scoped) agrees with exact search."""
    vectors, queries = data
    users = [f"u{i % 4}" for i in range(N)]
    items = [
        NewMemory(f"entry {i}", scope=Scope(user_id=users[i]), embedding=vectors[i])
        for i in range(N)
    ]
    with SQLiteStore(tmp_path / "m.db", embedder, index=LOW) as store:
        ids = [r.item.id for r in store.add_many(items, dedupe=False)]
        row = {memory_id: i for i, memory_id in enumerate(ids)}
        store.refresh_index()
        assert store.vector_index.uses_ann
        u0 = np.flatnonzero(np.array(users) == "u0")
        plain, scoped, truth, scoped_truth = [], [], [], []
        for q in queries:
            plain.append(
                [row[h.id] for h in store.search("", mode="dense", top_k=10, query_embedding=q)]
            )
            hits = store.search(
                "", mode="dense", top_k=10, scope=Scope(user_id="u0"), query_embedding=q
            )
            assert {h.scope.user_id for h in hits} == {"u0"}
            scoped.append([row[h.id] for h in hits])
            truth.append(_exact(vectors, q, 10))
            scoped_truth.append(_exact(vectors, q, 10, u0))
        assert _recall(plain, truth) >= 0.95
        assert _recall(scoped, scoped_truth) >= 0.95


def test_a_new_process_starts_from_the_saved_graph(tmp_path, embedder, data):
    """The graph one handle built is saved in the file; a later handle restores it and
    replays what changed since (adds, deletes, an update) instead of rebuilding."""
    vectors, queries = data
    path = tmp_path / "m.db"
    with SQLiteStore(path, embedder, index=LOW) as first:
        ids = [
            r.item.id
            for r in first.add_many(
                [NewMemory(f"entry {i}", embedding=v) for i, v in enumerate(vectors)], dedupe=False
            )
        ]
        first.refresh_index()  # builds the graph and saves it
        new = first.add_many([NewMemory(f"late entry {i}", embedding=queries[i]) for i in range(5)])
        for memory_id in ids[:3]:
            first.delete(memory_id)
        moved = first.update(ids[3], "The lighthouse keeper feeds the seagulls at dawn.")
    with SQLiteStore(path, embedder, index=LOW) as second:
        second.refresh_index()
        assert second.vector_index.uses_ann
        assert second.vector_index.unsaved_changes == 3 + 5 + 2  # replayed, not rebuilt
        for i, result in enumerate(new):
            hit = second.search("", mode="dense", top_k=1, query_embedding=queries[i])[0]
            assert hit.id == result.item.id
        hit = second.search("who feeds the seagulls", mode="dense", top_k=1)[0]
        assert hit.id == moved.id
        found = {
            h.id
            for q in queries[5:]
            for h in second.search("", mode="dense", top_k=50, query_embedding=q)
        }
        assert not found & set(ids[:3])
