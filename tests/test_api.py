"""The `Memory` library API on a real SQLite file and the real embedder."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletionMessage

from agemem import Memory
from agemem.context import Context
from agemem.memory.store import MemoryNotFound


@pytest.fixture
def memory(tmp_path, embedder):
    with Memory(path=tmp_path / "memory.db", embedder=embedder) as m:
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

    memory.update(memory_id, "Maya lives in Porto and works as a nurse.")
    assert memory.get(memory_id)["memory"] == "Maya lives in Porto and works as a nurse."
    memory.delete(memory_id)
    assert memory.get(memory_id) is None
    assert [e["event"] for e in memory.history(memory_id)] == ["ADD", "UPDATE", "DELETE"]
    with pytest.raises(MemoryNotFound):
        memory.update(memory_id, "anything")


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

    again = memory.add("I am allergic to peanuts.", user_id="alice")["results"][0]
    assert again["event"] == "NONE" and again["id"] == results[0]["id"]
    assert len(memory.get_all(user_id="alice")["results"]) == 2


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
    before = [r | {} for r in memory.get_all()["results"]]
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
    assert memory.get_all()["results"] == before


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
