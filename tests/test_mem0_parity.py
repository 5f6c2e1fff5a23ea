"""The calls Mem0 users type, on a real SQLite file and the real embedder: one test (or more) per
row of the README's "Coming from Mem0" table."""

from __future__ import annotations

import asyncio

import pytest

from agemem import AsyncMemory, Memory
from agemem.api import ScopeRequired


@pytest.fixture
def memory(tmp_path, embedder):
    with Memory(path=tmp_path / "memory.db", embedder=embedder) as m:
        yield m


def _texts(result: dict) -> list[str]:
    return [r["memory"] for r in result["results"]]


# ---- scope as a positional argument, infer= -----------------------------------------------------


def test_user_id_is_the_second_positional_argument(memory):
    memory.add("Alice's locker code is 4412.", "alice")
    memory.add("Bob's locker code is 9981.", "bob")
    assert [r["user_id"] for r in memory.get_all("alice")["results"]] == ["alice"]
    assert _texts(memory.search("locker code", "bob")) == ["Bob's locker code is 9981."]


def test_infer_false_stores_verbatim_and_infer_true_without_a_model_is_refused_before_any_write(
    memory,
):
    added = memory.add("noted", user_id="alice", infer=False)["results"]
    assert [(r["event"], r["memory"]) for r in added] == [("ADD", "noted")]
    with pytest.raises(ValueError, match="needs a model to extract facts: Memory\\(llm="):
        memory.add("I moved to Porto.", user_id="alice", infer=True)
    with pytest.raises(ValueError, match="infer must be True or False"):
        memory.add("I moved to Porto.", user_id="alice", infer="yes")
    assert _texts(memory.get_all(user_id="alice")) == ["noted"]


# ---- message shapes -----------------------------------------------------------------------------


def test_a_single_message_dict_is_stored(memory):
    (result,) = memory.add({"role": "user", "content": "I am vegetarian."}, user_id="alice")[
        "results"
    ]
    assert (result["memory"], result["metadata"]) == ("I am vegetarian.", {"role": "user"})


def test_content_as_a_list_of_parts_is_stored_not_dropped(memory):
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "I moved to Porto."}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Noted."},
                {"type": "tool_use", "id": "t1", "name": "x", "input": {}},  # plumbing: skipped
                {"type": "text", "text": "Enjoy Porto!"},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": []},  # calls only: nothing to store
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},  # not stored
    ]
    results = memory.add(conversation, user_id="alice")["results"]
    assert [r["memory"] for r in results] == ["I moved to Porto.", "Noted.\nEnjoy Porto!"]


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "content part agemem cannot store \\('image_url'\\)",
        ),
        ([{"content": "no role"}], "message 1 has no 'role' string"),
        ([{"role": "user", "content": 42}], "message 1 content must be a string or a list"),
        (["just a string in a list"], "message 1 must be a dict"),
        (42, "messages must be a string, a message dict or a list"),
    ],
)
def test_unstorable_messages_are_refused_with_the_fix_and_nothing_is_written(
    memory, messages, error
):
    with pytest.raises(ValueError, match=error):
        memory.add(
            [{"role": "user", "content": "kept?"}, *messages]
            if isinstance(messages, list)
            else messages,
            user_id="alice",
        )
    assert memory.get_all(user_id="alice")["results"] == []


# ---- search: threshold on a cosine score, the ranking reported apart ----------------------------


def test_threshold_is_a_cosine_in_0_1_and_the_ranking_is_reported_apart(memory):
    memory.add("Maya lives in Lisbon and works as a nurse.", user_id="alice")
    memory.add("The printer on floor 2 is out of toner.", user_id="alice")
    hits = memory.search("Maya lives in Lisbon and works as a nurse.", user_id="alice")["results"]
    assert [h["rank"] for h in hits] == [1, 2]
    assert hits[0]["score"] > 0.99 and 0.0 <= hits[1]["score"] < 0.5  # cosines
    assert all(0.0 <= h["score"] <= 1.0 for h in hits)
    assert hits[0]["rank_score"] < 0.5 and hits[0]["rank_score"] != hits[0]["score"]  # RRF
    # Mem0's cut-off idiom keeps the match (with RRF scores it kept nothing)
    assert [h["memory"] for h in hits if h["score"] > 0.7] == [hits[0]["memory"]]
    kept = memory.search("Where does Maya live?", user_id="alice", threshold=0.5)["results"]
    assert _texts({"results": kept}) == ["Maya lives in Lisbon and works as a nurse."]
    assert memory.search("Where does Maya live?", user_id="alice", threshold=1.0)["results"] == []
    dense = memory.search("toner", user_id="alice", mode="dense")["results"][0]
    assert dense["rank_score"] == pytest.approx(dense["score"], abs=1e-5)


def test_threshold_looks_past_the_first_limit_hits(memory):
    memory.add("Maya lives in Lisbon.", user_id="alice")
    for i in range(6):
        memory.add(f"Lisbon trams, note {i}: line 28 is crowded.", user_id="alice")
    hits = memory.search("Where does Maya live?", user_id="alice", limit=1, threshold=0.6)
    assert _texts(hits) == ["Maya lives in Lisbon."]


@pytest.mark.parametrize("threshold", [-0.1, 1.5, "0.7", True])
def test_a_bad_threshold_names_the_range(memory, threshold):
    with pytest.raises(ValueError, match="threshold"):
        memory.search("x", user_id="alice", threshold=threshold)


def test_top_k_is_limit(memory):
    for i in range(4):
        memory.add(f"Fact number {i} about tea.", user_id="alice")
    assert len(memory.search("tea", user_id="alice", top_k=2)["results"]) == 2
    assert len(memory.get_all(user_id="alice", top_k=3)["results"]) == 3
    with pytest.raises(ValueError, match="one setting"):
        memory.search("tea", user_id="alice", limit=1, top_k=2)
    with pytest.raises(ValueError, match="positive integer"):
        memory.get_all(user_id="alice", limit=0)


# ---- filters ------------------------------------------------------------------------------------


def test_filters_user_id_names_the_scope(memory):
    memory.add("Alice's locker code is 4412.", user_id="alice")
    memory.add("Bob's locker code is 9981.", user_id="bob")
    assert _texts(memory.search("locker code", filters={"user_id": "alice"})) == [
        "Alice's locker code is 4412."
    ]
    assert _texts(memory.get_all(filters={"user_id": {"eq": "bob"}})) == [
        "Bob's locker code is 9981."
    ]
    assert _texts(memory.get_all(user_id="bob", filters={"user_id": "bob"})) == [
        "Bob's locker code is 9981."
    ]
    with pytest.raises(ValueError, match="name two scopes"):
        memory.search("locker", user_id="alice", filters={"user_id": "bob"})
    with pytest.raises(ScopeRequired):  # a wildcard or an OR names no single scope
        memory.search("locker", filters={"user_id": "*"})
    everyone = memory.get_all(
        unscoped=True, filters={"OR": [{"user_id": "alice"}, {"user_id": "bob"}]}
    )
    assert len(everyone["results"]) == 2


def test_mem0_filter_operators(memory):
    rows = [
        ("Trip to Rome in May", {"kind": "travel", "year": 2023}),
        ("Trip to Oslo in June", {"kind": "travel", "year": 2024}),
        ("Buy a birthday gift", {"kind": "todo", "year": 2024, "tag": "Family"}),
    ]
    for text, metadata in rows:
        memory.add(text, user_id="alice", metadata=metadata)
    memory.add("Trip to Oslo in June", user_id="bob", metadata={"kind": "travel", "year": 2024})

    def found(filters):
        by_search = _texts(memory.search("trip gift", user_id="alice", limit=10, filters=filters))
        by_list = _texts(memory.get_all(user_id="alice", filters=filters))
        assert sorted(by_search) == sorted(by_list)
        return set(by_list)

    assert found({"kind": {"in": ["todo", "x"]}}) == {"Buy a birthday gift"}
    assert found({"kind": {"nin": ["todo"]}}) == {"Trip to Rome in May", "Trip to Oslo in June"}
    assert found({"year": {"gte": 2024}, "kind": {"ne": "todo"}}) == {"Trip to Oslo in June"}
    assert found({"tag": {"icontains": "fam"}}) == {"Buy a birthday gift"}
    assert found({"tag": {"contains": "fam"}}) == set()
    assert found({"OR": [{"year": 2023}, {"kind": "todo"}]}) == {
        "Trip to Rome in May",
        "Buy a birthday gift",
    }
    assert found({"AND": [{"kind": "travel"}, {"NOT": [{"year": 2023}]}]}) == {
        "Trip to Oslo in June"
    }
    assert found({"tag": "*"}) == {"Buy a birthday gift"}
    with pytest.raises(ValueError, match="unknown filter operator 'like'"):
        memory.search("trip", user_id="alice", filters={"kind": {"like": "tr%"}})


# ---- delete_all, from_config, AsyncMemory -------------------------------------------------------


def test_delete_all_removes_one_scope_and_keeps_its_history(memory):
    alice = memory.add("Alice's locker code is 4412.", user_id="alice")["results"][0]["id"]
    memory.add("Alice likes tea.", user_id="alice")
    memory.add("Bob's locker code is 9981.", user_id="bob")
    assert memory.delete_all(user_id="alice") == {"message": "Deleted 2 memories.", "deleted": 2}
    assert memory.get_all(user_id="alice")["results"] == []
    assert _texts(memory.get_all(user_id="bob")) == ["Bob's locker code is 9981."]
    assert [e["event"] for e in memory.history(alice, user_id="alice")] == ["ADD", "DELETE"]
    with pytest.raises(ScopeRequired, match="Memory.delete_all needs a scope"):
        memory.delete_all()
    assert memory.delete_all(unscoped=True)["deleted"] == 1


def test_from_config_maps_mem0_sections(tmp_path, embedder):
    path = tmp_path / "from_config.db"
    config = {
        "version": "v1.1",
        "vector_store": {"provider": "sqlite", "config": {"path": str(path)}},
        "dedupe": "near",
    }
    with Memory.from_config(config, embedder=embedder) as memory:
        memory.add("Maya lives in Lisbon.", "alice")
        assert memory.store.dedupe == "near"
    assert path.exists()


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"llm": {"provider": "openai"}}, "llm provider 'openai' needs config.model"),
        ({"llm": {"provider": "ollama", "config": {}}}, "llm provider 'ollama' is not available"),
        ({"history_db_path": "h.db"}, "history is kept in the store file"),
        ({"vector_store": {"provider": "qdrant", "config": {}}}, "provider 'qdrant' is not"),
        ({"vector_store": {"provider": "sqlite", "config": {"host": "x"}}}, "\\['host'\\]"),
        ({"embedder": {"provider": "ollama", "config": {}}}, "provider 'ollama' is not"),
        (
            {"path": "a.db", "vector_store": {"provider": "sqlite", "config": {"path": "b.db"}}},
            "differ",
        ),
        (["path"], "takes a dict"),
    ],
)
def test_from_config_refuses_what_it_cannot_honour(tmp_path, config, error):
    with pytest.raises(ValueError, match=error):
        Memory.from_config(config)


def test_async_memory_has_the_same_calls(tmp_path, embedder):
    async def main():
        async with AsyncMemory(tmp_path / "async.db", embedder=embedder) as memory:
            await asyncio.gather(
                *(memory.add(f"Fact {i}: Alice owns {i} cats.", "alice") for i in range(8))
            )
            await memory.add("Bob likes tea.", user_id="bob")
            hits = await memory.search("How many cats?", "alice", top_k=3, threshold=0.3)
            listed = await memory.get_all(filters={"user_id": "alice"})
            first = listed["results"][0]["id"]
            await memory.update(first, "Alice owns no cats.", user_id="alice")
            history = await memory.history(first, user_id="alice")
            deleted = await memory.delete_all(user_id="alice")
            bob = await memory.get_all("bob")
            with pytest.raises(ScopeRequired):
                await memory.search("cats")
            (reply,) = await memory.tools(user_id="bob").aexecute(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "function": {
                                "name": "Retrieve_memory",
                                "arguments": '{"query": "tea"}',
                            },
                        }
                    ],
                }
            )
            return hits, listed, history, deleted, bob, reply

    hits, listed, history, deleted, bob, reply = asyncio.run(main())
    assert len(hits["results"]) == 3 and all("cats" in h["memory"] for h in hits["results"])
    assert len(listed["results"]) == 8
    assert [e["event"] for e in history] == ["ADD", "UPDATE"]
    assert deleted["deleted"] == 8
    assert _texts(bob) == ["Bob likes tea."]
    assert "Bob likes tea." in reply["content"]
