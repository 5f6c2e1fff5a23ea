"""The `Memory` library API with the real embedder, on each store backend (`store_at`: a real
SQLite file and a real Postgres + pgvector server)."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletionMessage

from agemem import Memory, MemoryTools
from agemem.api import ScopeRequired
from agemem.context import Context
from agemem.memory.store import MemoryNotFound
from agemem.tools.agemem import AGEMEM_TOOLS, AgentMemoryState


@pytest.fixture
def memory(tmp_path, embedder, store_at):
    with Memory(path=store_at(tmp_path, "memory.db"), embedder=embedder) as m:
        yield m


def _call(name: str, arguments: dict | str, call_id: str = "call_1") -> dict:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def test_add_search_update_delete_history(memory):
    added = memory.add("Maya lives in Lisbon and works as a nurse.", user_id="alice")
    memory_id = added["results"][0]["id"]
    assert memory_id.startswith("mem_")
    memory.add("The office coffee machine is broken.", user_id="alice")

    top = memory.search("Where does Maya live?", user_id="alice", limit=1)["results"][0]
    assert top["id"] == memory_id and top["score"] > 0

    memory.update(memory_id, "Maya lives in Porto and works as a nurse.", user_id="alice")
    got = memory.get(memory_id, user_id="alice")
    assert got["memory"] == "Maya lives in Porto and works as a nurse."
    memory.delete(memory_id, user_id="alice")
    assert memory.get(memory_id, user_id="alice") is None
    events = memory.history(memory_id, user_id="alice")
    assert [e["event"] for e in events] == ["ADD", "UPDATE", "DELETE"]
    with pytest.raises(MemoryNotFound):
        memory.update(memory_id, "anything", user_id="alice")


def test_add_messages_keeps_the_conversation_and_reports_duplicates(memory):
    conversation = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "I am allergic to peanuts."},
        {"role": "assistant", "content": "Noted: no peanuts in your recipes."},
    ]
    results = memory.add(conversation, user_id="alice", metadata={"source": "chat"})["results"]
    assert [r["event"] for r in results] == ["ADD", "ADD"]
    assert {r["metadata"]["role"] for r in results} == {"user", "assistant"}
    assert all(r["metadata"]["source"] == "chat" for r in results)

    # the same message again (same text, role and metadata): merged, nothing stored
    again = memory.add(conversation[1:2], user_id="alice", metadata={"source": "chat"})
    (merged,) = again["results"]
    assert (merged["event"], merged["match"]) == ("NONE", "exact")
    assert merged["id"] == results[0]["id"]
    assert len(memory.get_all(user_id="alice")["results"]) == 2
    # the same text with other metadata is another record: stored, nothing of it lost
    plain = memory.add("I am allergic to peanuts.", user_id="alice")["results"][0]
    assert plain["event"] == "ADD" and plain["id"] != results[0]["id"]


def test_scopes_never_leak(memory):
    memory.add("Alice's locker code is 4412.", user_id="alice")
    memory.add("Bob's locker code is 9981.", user_id="bob")
    for mode in ("hybrid", "dense", "bm25"):
        hits = memory.search("locker code", user_id="bob", mode=mode)["results"]
        assert [h["user_id"] for h in hits] == ["bob"], mode
    assert memory.get_all(user_id="carol")["results"] == []


def test_tools_execute_an_openai_sdk_message(memory):
    tools = memory.tools(user_id="alice")
    assert [s["function"]["name"] for s in tools.schemas] == [
        "Add_memory",
        "Update_memory",
        "Delete_memory",
        "Retrieve_memory",
    ]
    message = ChatCompletionMessage.model_validate(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [_call("Add_memory", {"content": "Alice prefers green tea."})],
        }
    )
    (reply,) = tools.execute(message)
    assert reply["role"] == "tool" and reply["tool_call_id"] == "call_1"
    stored = memory.get_all(user_id="alice")["results"]
    assert [r["memory"] for r in stored] == ["Alice prefers green tea."]
    assert stored[0]["id"] in reply["content"]

    (found,) = tools.execute(
        {"role": "assistant", "tool_calls": [_call("Retrieve_memory", {"query": "tea"})]}
    )
    assert "Alice prefers green tea." in found["content"]


def test_malformed_tool_calls_change_nothing(memory):
    memory.add("Bob's locker code is 9981.", user_id="bob")
    tools = memory.tools(user_id="alice")
    before = [r | {} for r in memory.get_all(unscoped=True)["results"]]
    bad_calls = [
        _call("Forget_everything", {}),
        _call("Add_memory", '{"content": "unclosed'),
        _call("Add_memory", {"content": "x", "priority": 3}),
        _call("Delete_memory", {"memory_id": before[0]["id"], "confirmation": True}),  # bob's
    ]
    replies = tools.execute({"role": "assistant", "tool_calls": bad_calls})
    assert len(replies) == len(bad_calls)
    assert "unknown tool" in replies[0]["content"]
    assert "JSON" in replies[1]["content"] or "json" in replies[1]["content"]
    assert "priority" in replies[2]["content"]
    assert before[0]["id"] in replies[3]["content"]
    assert memory.get_all(unscoped=True)["results"] == before


def test_context_tools_edit_the_bound_context(memory, embedder):
    context = Context(embedder=embedder)
    context.append({"role": "system", "content": "You manage memory."}, protected=True)
    context.append({"role": "user", "content": "The football match ended 3-1 for the home team."})
    context.append({"role": "user", "content": "Reminder: my dentist appointment is on Friday."})
    tools = memory.tools(user_id="alice", context=context)
    assert "Filter_context" in [s["function"]["name"] for s in tools.schemas]

    tools.execute(
        {
            "role": "assistant",
            "tool_calls": [_call("Filter_context", {"criteria": "football match score"})],
        }
    )
    contents = [m["content"] for m in tools.context.messages]
    assert "You manage memory." in contents
    assert "Reminder: my dentist appointment is on Friday." in contents
    assert not any("football" in c for c in contents)


# ---- scope on every path ------------------------------------------------------------------------

SCOPED_CALLS = {
    "add": lambda m, mid, **kw: m.add("Alice's secret PIN is 4412.", **kw),
    "search": lambda m, mid, **kw: m.search("secret PIN", **kw),
    "get": lambda m, mid, **kw: m.get(mid, **kw),
    "get_all": lambda m, mid, **kw: m.get_all(**kw),
    "history": lambda m, mid, **kw: m.history(mid, **kw),
    "update": lambda m, mid, **kw: m.update(mid, "Bob's secret PIN is 0000.", **kw),
    "delete": lambda m, mid, **kw: m.delete(mid, **kw),
    "tools": lambda m, mid, **kw: m.tools(**kw),
}


@pytest.mark.parametrize("call", SCOPED_CALLS)
def test_a_call_without_scope_raises_naming_the_scope_keys(memory, call):
    bob = memory.add("Bob's secret PIN is 9981.", user_id="bob")["results"][0]["id"]
    with pytest.raises(ScopeRequired) as err:
        SCOPED_CALLS[call](memory, bob)
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert f"Memory.{call} needs a scope" in message
    assert all(key in message for key in ("user_id", "agent_id", "run_id", "unscoped=True"))
    (entry,) = memory.get_all(unscoped=True)["results"]
    assert entry["memory"] == "Bob's secret PIN is 9981." and entry["user_id"] == "bob"
    with pytest.raises(ValueError, match="not both"):
        SCOPED_CALLS[call](memory, bob, user_id="bob", unscoped=True)
    with pytest.raises(ValueError, match="non-empty string"):
        SCOPED_CALLS[call](memory, bob, user_id="")


def test_search_without_scope_no_longer_returns_other_users_entries(memory):
    memory.add("Bob's secret PIN is 9981.", user_id="bob")
    memory.add("Alice likes green tea.", user_id="alice")
    with pytest.raises(ScopeRequired):
        memory.search("secret PIN")
    for mode in ("hybrid", "dense", "bm25"):
        hits = memory.search("secret PIN", user_id="alice", mode=mode)["results"]
        assert all(h["user_id"] == "alice" for h in hits), mode
    everyone = memory.search("secret PIN", unscoped=True)["results"]  # asked for explicitly
    assert everyone[0]["memory"] == "Bob's secret PIN is 9981."


def test_by_id_calls_treat_another_users_id_as_not_found(memory):
    bob = memory.add("Bob's secret PIN is 9981.", user_id="bob")["results"][0]["id"]
    assert memory.get(bob, user_id="alice") is None
    for call in ("update", "delete", "history"):
        with pytest.raises(MemoryNotFound, match=bob):
            SCOPED_CALLS[call](memory, bob, user_id="alice")
    assert memory.get(bob, user_id="bob")["memory"] == "Bob's secret PIN is 9981."
    assert [e["event"] for e in memory.history(bob, user_id="bob")] == ["ADD"]
    memory.delete(bob, user_id="bob")
    assert [e["event"] for e in memory.history(bob, user_id="bob")] == ["ADD", "DELETE"]
    with pytest.raises(MemoryNotFound):
        memory.history(bob, user_id="alice")


def test_unscoped_true_is_the_explicit_global_view(memory):
    memory.add("Bob's secret PIN is 9981.", user_id="bob")
    shared = memory.add("The office closes at 6pm.", unscoped=True)["results"][0]
    assert not {"user_id", "agent_id", "session_id"} & set(shared)
    assert memory.get_all(user_id="bob")["results"][0]["memory"] == "Bob's secret PIN is 9981."
    assert len(memory.get_all(unscoped=True)["results"]) == 2
    memory.update(shared["id"], "The office closes at 7pm.", unscoped=True)
    assert memory.get(shared["id"], unscoped=True)["memory"] == "The office closes at 7pm."
    memory.delete(shared["id"], unscoped=True)
    assert [e["event"] for e in memory.history(shared["id"], unscoped=True)][-1] == "DELETE"


def test_run_id_is_session_id(memory):
    added = memory.add("Step 3 failed on a timeout.", agent_id="ci", run_id="r1")["results"][0]
    assert added["session_id"] == added["run_id"] == "r1"
    assert memory.search("timeout", session_id="r1")["results"][0]["id"] == added["id"]
    assert memory.get(added["id"], run_id="r1", session_id="r1")["memory"].startswith("Step 3")
    assert memory.get(added["id"], run_id="r2") is None
    assert memory.get_all(run_id="r2")["results"] == []
    with pytest.raises(ValueError, match="one scope key"):
        memory.search("timeout", run_id="r1", session_id="r2")


def test_tools_without_a_scope_cannot_delete_anyones_entries(memory):
    bob = memory.add("Bob's secret PIN is 9981.", user_id="bob")["results"][0]["id"]
    with pytest.raises(ScopeRequired, match="user_id"):
        memory.tools()
    with pytest.raises(ScopeRequired, match="user_id"):
        MemoryTools(AgentMemoryState(memory.store, Context()), AGEMEM_TOOLS)
    delete = _call("Delete_memory", {"memory_id": bob, "confirmation": True})
    (reply,) = memory.tools(user_id="alice").execute({"role": "assistant", "tool_calls": [delete]})
    assert f"no memory with id {bob!r}" in reply["content"]
    assert memory.get(bob, user_id="bob") is not None
    (reply,) = memory.tools(unscoped=True).execute({"role": "assistant", "tool_calls": [delete]})
    assert reply["content"].startswith(f"Deleted {bob}")  # only when asked for explicitly
    assert memory.get(bob, user_id="bob") is None


# ---- deduplication ------------------------------------------------------------------------------

MONDAY, TUESDAY = "Meeting with Bob on Monday at 3pm", "Meeting with Bob on Tuesday at 3pm"
AF1234, AF1235 = "My flight is AF1234 to Paris on May 3", "My flight is AF1235 to Paris on May 3"


@pytest.mark.parametrize(("old", "new"), [(MONDAY, TUESDAY), (AF1234, AF1235)])
def test_a_near_duplicate_distinct_fact_is_kept(memory, old, new):
    first = memory.add(old, user_id="alice")["results"][0]
    second = memory.add(new, user_id="alice")["results"][0]
    assert (first["event"], second["event"]) == ("ADD", "ADD")
    stored = {r["memory"] for r in memory.get_all(user_id="alice")["results"]}
    assert stored == {old, new}
    assert memory.search(new, user_id="alice", limit=1)["results"][0]["memory"] == new


def test_near_dedupe_is_an_update_that_history_records(tmp_path, embedder, store_at):
    with Memory(path=store_at(tmp_path, "m.db"), embedder=embedder, dedupe="near") as memory:
        first = memory.add(MONDAY, user_id="alice")["results"][0]
        (result,) = memory.add(TUESDAY, user_id="alice")["results"]
        assert (result["event"], result["match"]) == ("UPDATE", "near")
        assert result["id"] == first["id"] and result["memory"] == TUESDAY
        assert result["previous_memory"] == MONDAY and result["similarity"] >= 0.95
        events = memory.history(first["id"], user_id="alice")
        assert [(e["event"], e["old_content"], e["new_content"]) for e in events] == [
            ("ADD", None, MONDAY),
            ("UPDATE", MONDAY, TUESDAY),
        ]
        # per call: this add keeps the near-duplicate as a new entry
        kept = memory.add(MONDAY, user_id="alice", dedupe="exact")["results"][0]
        assert kept["event"] == "ADD"
        assert len(memory.get_all(user_id="alice")["results"]) == 2


def test_reject_dedupe_reports_what_it_matched(memory):
    first = memory.add(MONDAY, user_id="alice")["results"][0]
    (result,) = memory.add(TUESDAY, user_id="alice", dedupe="reject")["results"]
    assert (result["event"], result["match"]) == ("NONE", "near")
    assert result["id"] == first["id"] and result["memory"] == MONDAY
    assert result["similarity"] >= 0.95
    looser = memory.add(TUESDAY, user_id="alice", dedupe="reject", dedupe_threshold=0.99)
    assert looser["results"][0]["event"] == "ADD"


def test_add_memory_tool_follows_the_dedupe_mode(tmp_path, embedder, store_at):
    add = {"role": "assistant", "tool_calls": [_call("Add_memory", {"content": TUESDAY})]}
    with Memory(path=store_at(tmp_path, "exact.db"), embedder=embedder) as memory:
        tools = memory.tools(user_id="alice")
        description = tools.toolset["Add_memory"].description
        assert "very same text" in description and "near" not in description.lower()
        memory.add(MONDAY, user_id="alice")
        assert tools.execute(add)[0]["content"].startswith("Added mem_")
        (again,) = tools.execute(add)
        assert "already holds this text" in again["content"]
        assert len(memory.get_all(user_id="alice")["results"]) == 2
    with Memory(path=store_at(tmp_path, "near.db"), embedder=embedder, dedupe="near") as memory:
        tools = memory.tools(user_id="alice")
        assert "updates it" in tools.schemas[0]["function"]["description"]
        monday = memory.add(MONDAY, user_id="alice")["results"][0]["id"]
        (reply,) = tools.execute(add)
        assert reply["content"].startswith(f"Updated {monday} instead of adding a near-duplicate")
        assert TUESDAY in reply["content"] and MONDAY in reply["content"]
        assert [r["memory"] for r in memory.get_all(user_id="alice")["results"]] == [TUESDAY]


def test_a_file_that_is_not_a_store_is_one_clear_error(tmp_path, embedder):
    """`Memory(path)` on a file that is not a store, or in a missing folder, raises the store
    error that names the file and the fix (not a raw sqlite3 error), and writes nothing."""
    from agemem.memory.storefile import StoreFileError

    garbage = tmp_path / "random.bin"
    garbage.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(StoreFileError, match="random.bin is not a memory store"):
        Memory(garbage, embedder=embedder)
    assert garbage.read_bytes() == bytes(range(256)) * 20
    with pytest.raises(StoreFileError, match="does not exist; create it first"):
        Memory(tmp_path / "missing" / "m.db", embedder=embedder)
    assert not (tmp_path / "missing").exists()


def test_search_reuses_the_vector_of_a_repeated_query(memory):
    """A repeated query's vector comes from the `Memory`'s cache: the same results, bit for bit,
    as the first search, and as a `Memory` without the cached vector."""
    memory.add("Maya lives in Lisbon.", user_id="alice")
    memory.add("The printer on floor 2 is out of toner.", user_id="alice")
    first = memory.search("Where does Maya live?", user_id="alice")
    info = memory._query_vector.cache_info()
    again = memory.search("Where does Maya live?", user_id="alice")
    assert again == first
    assert memory._query_vector.cache_info().hits == info.hits + 1
    assert not memory._query_vector("Where does Maya live?").flags.writeable  # shared: read-only
    fresh = memory.store.embedder.embed(["Where does Maya live?"])[0]
    assert (memory._query_vector("Where does Maya live?") == fresh).all()
