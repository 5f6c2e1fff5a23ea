"""The store conformance suite: every test that takes `store_at` runs on SQLite (a real file)
and on Postgres + pgvector (a real server, see conftest.py), with the real embedder
(all-MiniLM-L6-v2), in one process.

Multi-process behaviour is in test_store_processes.py, the index internals in
test_vector_index.py.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from agemem.memory.search import SearchConfig, resolve_search_config, rrf_fuse
from agemem.memory.sqlite import ImportFileError, SQLiteStore, fts_terms
from agemem.memory.store import EmbedderMismatch, MemoryNotFound, NewMemory, Scope
from agemem.memory.storefile import open_store

FACTS = [
    "Alice lives in Paris and works as a nurse at the city hospital.",
    "Bob's favourite food is sushi, especially salmon nigiri.",
    "The dentist appointment is on Tuesday at 3pm.",
    "Carol plays the violin in the Berlin symphony orchestra.",
    "The office wifi password is hunter2.",
    "Dave is allergic to peanuts and carries an epipen.",
    "The project deadline moved to the end of March.",
    "Erin adopted a golden retriever puppy named Biscuit.",
]
U1, U2 = Scope(user_id="u1"), Scope(user_id="u2")
MODES = ("hybrid", "dense", "bm25")


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed (and optionally renamed)."""

    def __init__(self, inner, name: str | None = None) -> None:
        self.inner, self.name, self.dim, self.texts = inner, name or inner.name, inner.dim, 0

    def embed(self, texts):
        self.texts += len(texts)
        return self.inner.embed(texts)


@pytest.fixture
def store(tmp_path, embedder, store_at):
    with open_store(store_at(tmp_path, "mem.db"), embedder) as s:
        yield s


@pytest.fixture(scope="module")
def fact_vectors(embedder):
    """FACTS embedded once by the real embedder; stores below get them precomputed."""
    return embedder.embed(FACTS)


def _add_facts(store: SQLiteStore, vectors: np.ndarray) -> SQLiteStore:
    store.add_many(
        [NewMemory(f, scope=U1, embedding=v) for f, v in zip(FACTS, vectors, strict=True)]
    )
    return store


@pytest.fixture
def filled(store, fact_vectors):
    return _add_facts(store, fact_vectors)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, embedder, fact_vectors, store_at):
    """A read-only store of FACTS shared by the search tests."""
    with open_store(store_at(tmp_path_factory.mktemp("corpus"), "mem.db"), embedder) as s:
        yield _add_facts(s, fact_vectors)


# ---- retrieval ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("where does alice live?", 0),
        ("what is the wifi password", 4),
        ("what is Dave allergic to", 5),
        ("what did Erin name her dog", 7),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_each_mode_finds_the_obvious_entry(corpus, mode, query, expected):
    hits = corpus.search(query, top_k=3, mode=mode)
    assert hits[0].content == FACTS[expected]
    assert all(h.score is not None for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_dense_scores_are_cosines(corpus, embedder):
    hit = corpus.search("alice nurse paris", mode="dense", top_k=1)[0]
    q = embedder.embed(["alice nurse paris"])[0]
    assert hit.score == pytest.approx(float(hit.embedding @ q), abs=1e-5)


def test_hybrid_lifts_an_entry_both_retrievers_agree_on(corpus):
    hybrid = corpus.search("nurse in Paris", mode="hybrid", top_k=len(FACTS))
    assert hybrid[0].content == FACTS[0]
    assert 0 < hybrid[-1].score < hybrid[0].score


@pytest.mark.parametrize("mode", MODES)
def test_one_users_search_never_returns_anothers_entries(store, mode):
    store.add("Alice lives in Paris.", scope=U1)
    store.add("Bob lives in Madrid.", scope=U1)
    store.add("Alice lives in Paris and loves croissants.", scope=U2)  # best match for u2 only
    hits = store.search("Alice Paris croissants", top_k=10, mode=mode, scope=U1)
    assert hits and all(h.scope == U1 for h in hits)
    assert {h.scope for h in store.search("Alice Paris croissants", top_k=10, mode=mode)} == {
        U1,
        U2,
    }
    assert store.search("Alice Paris", mode=mode, scope=Scope(user_id="nobody")) == []


def test_scope_fields_combine(store):
    store.add("Session note: buy milk", scope=Scope("u1", "agentA", "s1"))
    store.add("Session note: buy eggs", scope=Scope("u1", "agentA", "s2"))
    store.add("Session note: buy flour", scope=Scope("u1", "agentB", "s1"))
    assert store.count(scope=Scope(user_id="u1")) == 3
    assert store.count(scope=Scope(user_id="u1", agent_id="agentA")) == 2
    hits = store.search("buy", top_k=10, scope=Scope(agent_id="agentA", session_id="s2"))
    assert [h.content for h in hits] == ["Session note: buy eggs"]


# ---- metadata filters --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, embedder, store_at):
    """A read-only store of entries with metadata, shared by the filter tests."""
    rows = [
        ("Trip to Rome in May", {"kind": "travel", "year": 2023, "prio": 2.5, "done": True}),
        ("Trip to Oslo in June", {"kind": "travel", "year": 2024, "prio": 1, "done": False}),
        ("Buy a birthday gift", {"kind": "todo", "year": 2024, "day": "2024-03-01"}),
        ("Call the plumber", {"kind": "todo", "year": "2024", "day": "2024-05-20", "note": None}),
    ]
    with open_store(store_at(tmp_path_factory.mktemp("tagged"), "mem.db"), embedder) as store:
        store.add_many([NewMemory(c, metadata=m) for c, m in rows])
        yield store


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"kind": "travel"}, {"Trip to Rome in May", "Trip to Oslo in June"}),
        ({"year": 2024}, {"Trip to Oslo in June", "Buy a birthday gift"}),  # "2024" is a string
        ({"year": "2024"}, {"Call the plumber"}),
        ({"done": True}, {"Trip to Rome in May"}),
        ({"note": None}, {"Call the plumber"}),
        ({"kind": {"$in": ["todo", "other"]}}, {"Buy a birthday gift", "Call the plumber"}),
        ({"kind": {"$in": []}}, set()),
        ({"kind": {"$ne": "travel"}}, {"Buy a birthday gift", "Call the plumber"}),
        (
            {"done": {"$ne": True}},
            {"Trip to Oslo in June", "Buy a birthday gift", "Call the plumber"},
        ),
        ({"year": {"$gt": 2023}}, {"Trip to Oslo in June", "Buy a birthday gift"}),
        ({"year": {"$gte": 2023, "$lt": 2024}}, {"Trip to Rome in May"}),
        ({"prio": {"$lte": 1}}, {"Trip to Oslo in June"}),
        ({"day": {"$gte": "2024-04-01"}}, {"Call the plumber"}),
        ({"kind": "todo", "day": {"$lt": "2024-04-01"}}, {"Buy a birthday gift"}),
        ({"weird key. with \u00e9": "x"}, set()),
        # Mem0's operator names (no $), AND / OR / NOT, wildcard, substrings
        ({"kind": {"in": ["todo", "other"]}}, {"Buy a birthday gift", "Call the plumber"}),
        ({"kind": {"nin": ["todo"]}}, {"Trip to Rome in May", "Trip to Oslo in June"}),
        ({"year": {"gt": 2023, "lte": 2024}}, {"Trip to Oslo in June", "Buy a birthday gift"}),
        ({"day": "*"}, {"Buy a birthday gift", "Call the plumber"}),
        ({"note": "*"}, set()),  # present but null
        ({"kind": {"contains": "rav"}}, {"Trip to Rome in May", "Trip to Oslo in June"}),
        ({"kind": {"contains": "RAV"}}, set()),
        ({"kind": {"icontains": "RAV"}}, {"Trip to Rome in May", "Trip to Oslo in June"}),
        (
            {"OR": [{"done": True}, {"day": {"gte": "2024-04-01"}}]},
            {"Trip to Rome in May", "Call the plumber"},
        ),
        ({"AND": [{"kind": "travel"}, {"year": 2024}]}, {"Trip to Oslo in June"}),
        ({"NOT": [{"kind": "travel"}]}, {"Buy a birthday gift", "Call the plumber"}),
        ({"NOT": [{"kind": "travel"}, {"year": "2024"}]}, {"Buy a birthday gift"}),
        ({"kind": "todo", "OR": [{"NOT": [{"year": 2024}]}]}, {"Call the plumber"}),
        ({"memory_type": "semantic", "year": 2023}, {"Trip to Rome in May"}),
        ({"user_id": None, "kind": "travel"}, {"Trip to Rome in May", "Trip to Oslo in June"}),
        ({"user_id": "*"}, set()),
    ],
)
def test_metadata_filters(tagged, filters, expected):
    assert {m.content for m in tagged.get_all(filters=filters)} == expected
    hits = tagged.search("trip gift plumber", top_k=10, filters=filters)
    assert {h.content for h in hits} == expected


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"kind": {"$regex": "tr.*"}}, r"'\$regex' on 'kind'; use one of eq, ne, in, nin, gt"),
        ({"kind": {"$in": "travel"}}, "'\\$in' on 'kind' takes a list"),
        ({"year": {"$gt": None}}, "compares numbers or strings"),
        ({"kind": ["travel"]}, "use \\{'in'"),
        ({"kind": {}}, "empty dict"),
        ({'a"b': 1}, "without"),
        (["kind"], "is a dict of field"),
        ({"kind": {"contains": 3}}, "takes a string"),
        ({"user_id": 3}, "compares strings"),
        ({"OR": "kind"}, "takes a list of filters"),
        ({"kind": {"in": list(range(1001))}}, "at most 1000"),
    ],
)
def test_bad_filters_name_the_problem(tagged, filters, message):
    with pytest.raises(ValueError, match=message):
        tagged.search("trip", filters=filters)


def test_filter_keys_are_parameters_not_sql(tagged):
    evil = {"x') OR 1=1 --": "y", "kind' OR '1'='1": "travel"}
    assert tagged.get_all(filters=evil) == []
    assert tagged.count() == 4


# ---- adds, dedupe, updates, history ------------------------------------------------------------


# Pairs the store's old default (refuse any add with cosine >= 0.95) silently dropped.
NEAR_PAIRS = [
    ("Meeting with Bob on Monday at 3pm", "Meeting with Bob on Tuesday at 3pm"),
    ("My flight is AF1234 to Paris on May 3", "My flight is AF1235 to Paris on May 3"),
]


def test_exact_duplicates_merge_and_everything_else_is_stored(store):
    first = store.add("Alice lives in Paris.", scope=U1)
    again = store.add("  Alice lives \t in Paris. ", scope=U1)  # same text, other whitespace
    assert first.event == "ADD" and first.added
    assert (again.event, again.match, again.added) == ("NONE", "exact", False)
    assert again.item.id == again.duplicate_of.id == first.item.id
    assert again.similarity == pytest.approx(1.0, abs=1e-3)
    assert store.count() == 1
    assert [e.event for e in store.history(first.item.id)] == ["ADD"]  # the merge wrote nothing
    distinct = [
        store.add("Alice resides in Paris", scope=U1),  # a near-duplicate (cosine 0.95)
        store.add("alice lives in paris.", scope=U1),  # case counts
        store.add("Alice lives in Paris.", scope=U2),  # another user
        store.add("Alice lives in Paris.", scope=Scope("u1", "agentA")),  # another exact scope
        store.add("Alice lives in Paris.", scope=U1, metadata={"src": "chat"}),
        store.add("Alice lives in Paris.", scope=U1, memory_type="episodic"),
        store.add("Alice lives in Paris.", scope=U1, dedupe="off"),
        store.add("Alice lives in Paris.", scope=U1, dedupe=False),  # False is "off"
    ]
    assert [r.event for r in distinct] == ["ADD"] * len(distinct)
    assert store.count() == 1 + len(distinct)


@pytest.mark.parametrize(("old", "new"), NEAR_PAIRS)
def test_near_duplicates_are_kept_by_default(store, embedder, old, new):
    a, b = embedder.embed([old, new])
    assert float(a @ b) >= 0.95  # the old default refused the second add
    results = [store.add(old, scope=U1), store.add(new, scope=U1)]
    assert [r.event for r in results] == ["ADD", "ADD"]
    assert sorted(m.content for m in store.get_all(scope=U1)) == sorted([old, new])


def test_eighty_distinct_facts_from_two_writers_keep_eighty_rows(tmp_path, embedder, store_at):
    facts = {w: [f"fact {w} number {i}" for i in range(40)] for w in "AB"}
    with (
        open_store(store_at(tmp_path, "m.db"), embedder) as a,
        open_store(store_at(tmp_path, "m.db"), embedder) as b,
    ):
        for fa, fb in zip(facts["A"], facts["B"], strict=True):
            assert a.add(fa).added and b.add(fb).added
        for writer in (a, b):  # each writer repeats them all: exact repeats merge
            repeats = writer.add_many([NewMemory(f) for f in facts["A"] + facts["B"]])
            assert {r.event for r in repeats} == {"NONE"}
        assert sorted(m.content for m in a.get_all()) == sorted(facts["A"] + facts["B"])


def test_near_mode_turns_a_near_duplicate_into_an_update_history_records(store):
    monday, tuesday = NEAR_PAIRS[0]
    first = store.add(monday, scope=U1, metadata={"source": "mail"})
    result = store.add(tuesday, scope=U1, metadata={"by": "bob"}, dedupe="near")
    assert (result.event, result.match, result.added) == ("UPDATE", "near", False)
    assert result.item.id == first.item.id and result.duplicate_of.content == monday
    assert result.similarity >= 0.95
    assert store.count() == 1
    stored = store.get(first.item.id)
    assert stored.content == tuesday and stored.metadata == {"source": "mail", "by": "bob"}
    assert store.search("meeting Tuesday", scope=U1, mode="dense", top_k=1)[0].id == first.item.id
    events = store.history(first.item.id)
    assert [(e.event, e.old_content, e.new_content) for e in events] == [
        ("ADD", None, monday),
        ("UPDATE", monday, tuesday),
    ]
    again = store.add(tuesday, scope=U1, metadata={"source": "mail", "by": "bob"}, dedupe="near")
    assert (again.event, again.match) == ("NONE", "exact")  # exact repeats still merge
    assert store.add("Carol plays the violin.", scope=U1, dedupe="near").added  # unrelated


def test_near_mode_threshold_per_call_and_per_store(tmp_path, embedder, store_at):
    with open_store(store_at(tmp_path, "near.db"), embedder, dedupe="near") as near:
        assert near.add("Alice lives in Paris.").added
        assert near.add("Alice resides in Paris", dedupe_threshold=0.99).added  # 0.95 < 0.99
        assert near.add("Alice resides in Paris.", dedupe_threshold=0.9).event == "UPDATE"
        assert near.add("Bob lives in Rome.", dedupe="exact").added
    with open_store(
        store_at(tmp_path, "strict.db"), embedder, dedupe="near", dedupe_threshold=0.999
    ) as s:
        s.add("Alice lives in Paris.")
        assert s.add("Alice resides in Paris").added
    with pytest.raises(ValueError, match="cosine"):
        open_store(store_at(tmp_path, "bad.db"), embedder, dedupe_threshold=1.5)
    with pytest.raises(ValueError, match="exact, near, reject, off"):
        open_store(store_at(tmp_path, "bad.db"), embedder, dedupe="fuzzy")
    with open_store(store_at(tmp_path, "ok.db"), embedder) as store:
        with pytest.raises(ValueError, match="exact, near, reject, off"):
            store.add("x", dedupe="similar")
        with pytest.raises(ValueError, match="cosine"):
            store.add("x", dedupe="near", dedupe_threshold=float("nan"))
        assert store.count() == 0


def test_reject_mode_reports_the_near_duplicate_and_writes_nothing(tmp_path, embedder, store_at):
    """The AgeMem env's mode: the agent is told what matched and decides."""
    with open_store(store_at(tmp_path, "m.db"), embedder, dedupe="reject") as store:
        first = store.add("Alice lives in Paris.", scope=U1)
        again = store.add("Alice resides in Paris", scope=U1)
        assert first.added and (again.event, again.match, again.added) == ("NONE", "near", False)
        assert again.duplicate_of.id == again.item.id == first.item.id
        assert 0.95 <= again.similarity < 1.0
        assert store.count() == 1 and len(store.history(first.item.id)) == 1
        assert store.add("Alice lives in Lyon.", scope=U1).added  # different fact (cosine ~0.8)
        assert store.add("Alice resides in Paris", scope=U2).added  # other scope
        assert store.add("Alice resides in Paris", scope=U1, dedupe="off").added
        assert store.count() == 4


def test_add_many_checks_each_item_against_the_earlier_ones(tmp_path, embedder, store_at):
    counting = CountingEmbedder(embedder)
    with open_store(store_at(tmp_path, "m.db"), counting) as store:
        given = embedder.embed(["Precomputed vector entry"])[0]
        batch = [
            NewMemory("The cat sleeps on the sofa."),
            NewMemory("The cat sleeps on the sofa"),
            NewMemory("Precomputed vector entry", embedding=given * 3.0),
            NewMemory("The cat  sleeps on the sofa."),
            NewMemory("Quarterly taxes are due in April."),
        ]
        results = store.add_many(batch)
        assert counting.texts == 4  # the given embedding was not recomputed
        assert [r.event for r in results] == ["ADD", "ADD", "ADD", "NONE", "ADD"]
        assert results[3].duplicate_of.id == results[0].item.id
        stored = store.get(results[2].item.id).embedding
        assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-5)  # normalised on the way in
        assert store.count() == 4
        rejected = store.add_many(batch[:2] + batch[4:], dedupe="reject")
        assert [r.event for r in rejected] == ["NONE", "NONE", "NONE"]
        store.reset()
        near = store.add_many(batch[:2], dedupe="near")  # the second updates the first
        assert [r.event for r in near] == ["ADD", "UPDATE"]
        assert near[1].item.id == near[0].item.id
        assert [e.event for e in store.history(near[0].item.id)] == ["ADD", "UPDATE"]
        assert [m.content for m in store.get_all()] == ["The cat sleeps on the sofa"]


def test_by_id_calls_check_the_scope(store):
    item = store.add("Alice's PIN is 4412.", scope=Scope("u1", "agentA", "s1")).item
    inside = [U1, Scope(user_id="u1", session_id="s1"), Scope(agent_id="agentA"), None, Scope()]
    outside = [U2, Scope(user_id="u1", session_id="s2"), Scope(agent_id="agentB")]
    for scope in inside:
        assert store.get(item.id, scope=scope).id == item.id
        assert [e.event for e in store.history(item.id, scope=scope)] == ["ADD"]
    for scope in outside:
        for call in (
            lambda s: store.get(item.id, scope=s),
            lambda s: store.update(item.id, "Alice's PIN is 0000.", scope=s),
            lambda s: store.update(item.id, metadata={"x": 1}, scope=s),
            lambda s: store.delete(item.id, scope=s),
            lambda s: store.history(item.id, scope=s),
        ):
            with pytest.raises(MemoryNotFound, match=item.id):
                call(scope)
    assert (
        store.get(item.id).content == "Alice's PIN is 4412." and store.get(item.id).metadata == {}
    )
    store.update(item.id, "Alice's PIN is 9999.", scope=U1)
    store.delete(item.id, scope=U1)
    # once deleted, its history still answers to its own scope only
    assert [e.event for e in store.history(item.id, scope=U1)] == ["ADD", "UPDATE", "DELETE"]
    with pytest.raises(MemoryNotFound):
        store.history(item.id, scope=U2)
    assert len(store.history(item.id)) == 3


def test_add_many_is_all_or_nothing(store):
    with pytest.raises(ValueError, match="non-empty string"):
        store.add_many([NewMemory("fine entry"), NewMemory("   ")])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        store.add_many([NewMemory("fine entry"), NewMemory("bad", embedding=np.ones(3))])
    assert store.count() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"content": ""}, "non-empty string"),
        ({"content": "x", "metadata": {"when": object()}}, "JSON-serialisable"),
        ({"content": "x", "metadata": {"v": float("nan")}}, "NaN"),
        ({"content": "x", "memory_type": ""}, "memory_type"),
        ({"content": "x", "scope": Scope(user_id=3)}, "user_id"),
        ({"content": "x", "embedding": np.zeros(384)}, "non-zero"),
    ],
)
def test_bad_add_input_is_a_clear_error(store, kwargs, message):
    with pytest.raises(ValueError, match=message):
        store.add(**kwargs)
    assert store.count() == 0


def test_history_records_add_update_delete(store):
    item = store.add("Alice lives in Paris.", metadata={"src": "chat"}).item
    store.update(item.id, "Alice lives in Lyon.")
    store.update(item.id, metadata={"src": "correction"})
    removed = store.delete(item.id)
    assert removed.content == "Alice lives in Lyon." and removed.metadata == {"src": "correction"}
    events = store.history(item.id)
    assert [(e.event, e.old_content, e.new_content) for e in events] == [
        ("ADD", None, "Alice lives in Paris."),
        ("UPDATE", "Alice lives in Paris.", "Alice lives in Lyon."),
        ("UPDATE", "Alice lives in Lyon.", "Alice lives in Lyon."),
        ("DELETE", "Alice lives in Lyon.", None),
    ]
    assert all(e.memory_id == item.id and e.created_at for e in events)
    with pytest.raises(MemoryNotFound):
        store.get(item.id)


def test_update_reembeds_only_when_content_changes(tmp_path, embedder, store_at):
    counting = CountingEmbedder(embedder)
    with open_store(store_at(tmp_path, "m.db"), counting) as store:
        item = store.add("Alice lives in Paris.").item
        counting.texts = 0
        meta_only = store.update(item.id, metadata={"k": 1})
        same = store.update(item.id, "Alice lives in Paris.")  # no change: nothing written
        assert counting.texts == 0
        assert np.array_equal(meta_only.embedding, item.embedding)
        assert len(store.history(item.id)) == 2
        moved = store.update(item.id, "Alice moved to Tokyo.")
        assert counting.texts == 1
        assert store.search("Tokyo", mode="dense", top_k=1)[0].id == item.id
        assert same.content == "Alice lives in Paris." and moved.metadata == {"k": 1}
        assert moved.updated_at > item.updated_at


@pytest.mark.parametrize("call", ["get", "update", "delete", "history"])
def test_unknown_ids_raise_memory_not_found(store, call):
    args = ("mem_00000000", "x") if call == "update" else ("mem_00000000",)
    with pytest.raises(MemoryNotFound, match="mem_00000000"):
        getattr(store, call)(*args)


def test_get_all_count_and_scoped_reset(filled, store):
    store.add("A note for the other user.", scope=U2)
    assert filled.count() == len(FACTS) + 1
    assert [m.content for m in filled.get_all(scope=U1, limit=2)] == FACTS[:2]
    assert filled.reset(scope=U2) == 1
    assert filled.count() == len(FACTS)
    assert filled.search("note for the other user", scope=U2) == []
    assert filled.reset() == len(FACTS)
    assert filled.count() == 0 and filled.search("Alice") == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"top_k": 0}, "top_k"), ({"mode": "fuzzy"}, "unknown search mode")],
)
def test_bad_search_arguments(corpus, kwargs, message):
    with pytest.raises(ValueError, match=message):
        corpus.search("alice", **kwargs)


# ---- FTS query sanitising ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ['"', "(", ")", "AND", "OR NOT", "*", "alice*", "NEAR(alice paris)", "content:alice",
     "^alice", "it's", '"unterminated', "", "   ", "-", "a" * 500, "\u00e9t\u00e9 \u2603"],
)  # fmt: skip
@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
def test_user_text_never_breaks_fts(corpus, query, mode):
    hits = corpus.search(query, top_k=3, mode=mode)
    assert isinstance(hits, list)


def test_fts_query_keeps_words_and_drops_syntax(corpus):
    assert fts_terms("") == [] and fts_terms("*()") == []
    assert fts_terms('Alice "AND" (Paris)*') == ['"alice"', '"and"', '"paris"']
    assert corpus.search('"Paris" AND (nurse', mode="bm25")[0].content == FACTS[0]


def test_bm25_leaves_out_words_most_entries_contain(corpus, embedder):
    """'the' is in 5 of the 8 facts: above max_term_matches=3 it no longer drags them in."""
    assert len(corpus.search("the violin", mode="bm25", top_k=8)) == 5
    with open_store(corpus.path, embedder, search=SearchConfig(max_term_matches=3)) as pruned:
        assert [h.content for h in pruned.search("the violin", mode="bm25", top_k=8)] == [FACTS[3]]
        assert len(pruned.search("the", mode="bm25", top_k=8)) == 5  # all common: all kept


def test_search_presets_and_fusion(corpus, embedder):
    assert resolve_search_config("keyword").bm25_weight == 2.0
    with pytest.raises(ValueError, match="unknown search preset 'nope'.*balanced"):
        open_store(corpus.path, embedder, search="nope")
    with pytest.raises(ValueError, match="pool"):
        SearchConfig(pool=0)
    fused = rrf_fuse([[1, 2, 3], [3, 4]], weights=[1.0, 1.0], rrf_k=60)
    assert [key for key, _ in fused] == [3, 1, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)


def test_bm25_stems_words(corpus):
    assert corpus.search("orchestras violins", mode="bm25", top_k=1)[0].content == FACTS[3]


# ---- export / import ---------------------------------------------------------------------------


def test_export_import_round_trip_keeps_everything(filled, tmp_path, embedder, store_at):
    filled.add("Tagged entry", metadata={"tags": ["a", "b"], "n": 3}, memory_type="episodic")
    path = tmp_path / "export.jsonl"
    assert filled.export_jsonl(path) == len(FACTS) + 1
    counting = CountingEmbedder(embedder)
    with open_store(store_at(tmp_path, "copy.db"), counting) as copy:
        assert copy.import_jsonl(path) == len(FACTS) + 1
        assert counting.texts == 0  # same embedder: stored vectors reused
        original, restored = filled.get_all(), copy.get_all()
        assert [m.to_dict() for m in restored] == [m.to_dict() for m in original]
        for a, b in zip(original, restored, strict=True):
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-7)
        assert copy.search("where does alice live", top_k=1)[0].content == FACTS[0]
        assert [e.event for e in copy.history(original[0].id)] == ["ADD"]


def test_export_of_a_scope_and_import_with_another_embedder_reembeds(
    filled, tmp_path, embedder, store_at
):
    filled.add("Only for u2", scope=U2)
    path = tmp_path / "u2.jsonl"
    assert filled.export_jsonl(path, scope=U2) == 1
    other = CountingEmbedder(embedder, name="minilm-renamed")
    with open_store(store_at(tmp_path, "other.db"), other) as copy:
        assert copy.import_jsonl(path) == 1 and other.texts == 1


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "line 2: .*JSON"),
        ('{"metadata": {}}', "line 2: content: Field required"),
        ('{"content": "   "}', "line 2: content: .*non-empty"),
        ('{"content": "x", "colour": "red"}', "line 2: colour: Extra inputs"),
        ('{"content": "x", "id": "1234"}', "line 2: id: String should match"),
        ('{"content": "x", "created_at": "yesterday"}', "line 2: created_at"),
        ('{"content": "x", "embedder": "all-MiniLM-L6-v2", "embedding": [1, 2]}', "line 2: .*384"),
        (
            '{"content": "x", "id": "mem_0000aaaa"}',
            "line 2: id mem_0000aaaa already appears on line 1",
        ),
    ],
)
def test_a_bad_import_line_changes_nothing(filled, tmp_path, bad_line, message):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"content": "A good line", "id": "mem_0000aaaa"})
    path.write_text(good + "\n" + bad_line + "\n" + good.replace("aaaa", "bbbb") + "\n")
    history_before = len(filled.get_all())
    with pytest.raises(ImportFileError, match=message):
        filled.import_jsonl(path)
    assert filled.count() == history_before
    with pytest.raises(MemoryNotFound):
        filled.get("mem_0000aaaa")


def test_import_assigns_ids_and_embeds_plain_lines(store, tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(
        '{"content": "Penguins live in the southern hemisphere."}\n\n'
        '{"content": "Owls hunt at night.", "user_id": "u1", "metadata": {"src": "book"}}\n'
    )
    assert store.import_jsonl(path) == 2
    hit = store.search("nocturnal birds of prey", mode="dense", top_k=1, scope=U1)[0]
    assert hit.content == "Owls hunt at night." and hit.metadata == {"src": "book"}
    assert hit.id.startswith("mem_") and hit.created_at


def test_import_refuses_ids_already_in_the_store(filled, tmp_path):
    path = tmp_path / "again.jsonl"
    filled.export_jsonl(path)
    with pytest.raises(ImportFileError, match="line 1: id mem_.* already exists"):
        filled.import_jsonl(path)
    assert filled.count() == len(FACTS)


# ---- the file ----------------------------------------------------------------------------------


def test_reopening_with_another_embedder_is_refused(tmp_path, embedder, store_at):
    path = store_at(tmp_path, "m.db")
    open_store(path, embedder).close()
    with pytest.raises(EmbedderMismatch) as err:
        open_store(path, CountingEmbedder(embedder, name="other-model"))
    message = str(err.value)
    assert "'all-MiniLM-L6-v2'" in message and "'other-model'" in message
    assert "export_jsonl" in message and "import_jsonl" in message


def test_file_layout_wal_and_tables(tmp_path, embedder, fact_vectors):
    _add_facts(SQLiteStore(tmp_path / "mem.db", embedder), fact_vectors).close()
    conn = sqlite3.connect(tmp_path / "mem.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["embedder_name"] == "all-MiniLM-L6-v2" and meta["embedder_dim"] == "384"
    blob = conn.execute("SELECT embedding FROM memories LIMIT 1").fetchone()[0]
    assert len(blob) == 384 * 4
    assert (
        conn.execute(
            "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'violin'"
        ).fetchone()[0]
        == 1
    )
    conn.close()


def test_two_handles_on_one_file_see_each_others_writes(tmp_path, embedder, store_at):
    """Each handle has its own in-memory index, caught up from the history change feed."""
    with (
        open_store(store_at(tmp_path, "m.db"), embedder) as a,
        open_store(store_at(tmp_path, "m.db"), embedder) as b,
    ):
        kept = a.add("The boat is moored in harbour seven.").item
        gone = a.add("The spare key is under the flowerpot.").item
        assert b.search("where is the boat", mode="dense", top_k=1)[0].id == kept.id
        a.delete(gone.id)
        a.update(kept.id, "The boat moved to harbour nine.")
        hits = b.search("spare key flowerpot boat harbour", mode="dense", top_k=5)
        assert [h.id for h in hits] == [kept.id]
        assert hits[0].content == "The boat moved to harbour nine."
        assert b.add("The boat moved to harbour nine.").duplicate_of.id == kept.id
        a.reset()  # bumps the generation: b reloads in full
        b.add("A fresh start.")
        assert [h.content for h in a.search("fresh start", mode="dense")] == ["A fresh start."]


def test_in_memory_store(embedder):
    with SQLiteStore(":memory:", embedder) as store:
        store.add("Ephemeral fact about comets.")
        assert store.search("comets", top_k=1)[0].content == "Ephemeral fact about comets."
