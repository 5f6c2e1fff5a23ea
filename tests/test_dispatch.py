"""Validated dispatch: every malformed call becomes an observation that names the problem, and the
store (all entries and their history) and the context (messages) stay exactly as they were."""

from __future__ import annotations

import pytest

from agemem.context import Context
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import Scope
from agemem.tools import (
    AGEMEM_TOOLS,
    ATOMMEM_TOOLS,
    AgentMemoryState,
    AtomMemState,
    ToolCall,
    begin_step,
    parse_turn,
)

ANN = Scope(user_id="ann")
MEETING = "The team meeting is on May 2 in room 4."


@pytest.fixture
def store(tmp_path, embedder):
    with SQLiteStore(tmp_path / "memory.db", embedder=embedder) as s:
        yield s


BOB_CODE = "Bob's locker code is 4412."


@pytest.fixture(scope="module")
def vectors(embedder):
    """The two entries' real embeddings, computed once: each test then opens its store fast."""
    return embedder.embed([MEETING, BOB_CODE])


@pytest.fixture
def ids(store, vectors):
    """Ann's entry and Bob's entry."""
    return {
        "MEETING": store.add(MEETING, scope=ANN, embedding=vectors[0]).item.id,
        "BOB": store.add(BOB_CODE, scope=Scope(user_id="bob"), embedding=vectors[1]).item.id,
    }


@pytest.fixture
def state(store, ids, embedder):
    """Ann's view: a context with one round over a store holding both entries."""
    context = Context(embedder=embedder)
    context.append({"role": "system", "content": "You manage your memory."}, protected=True)
    context.append({"role": "user", "content": "Remember that the meeting moved to May 3."})
    context.append({"role": "assistant", "content": "Noted."})
    return AgentMemoryState(store, context, scope=ANN)


def snapshot(store, context=None):
    items = store.get_all()
    return (
        [(item.to_dict(), store.history(item.id)) for item in items],
        None if context is None else (context.messages, context.tokens()),
    )


def agemem_step(calls_json: str) -> str:
    return f"<think>Let me do it.</think>\n<tool_call>{calls_json}</tool_call>"


CASES = {
    "unknown tool": (
        agemem_step('[{"name": "Search_memory", "arguments": {"query": "meeting"}}]'),
        "unknown_tool",
        ["unknown tool 'Search_memory'", "valid tools: Add_memory, Update_memory"],
    ),
    "unknown tool, wrong case": (
        agemem_step('[{"name": "add_memory", "arguments": {"content": "x"}}]'),
        "unknown_tool",
        ["unknown tool 'add_memory'", "Did you mean 'Add_memory'?"],
    ),
    "malformed JSON": (
        agemem_step('[{"name": "Add_memory", "arguments": {"content": "May 3"]'),
        "parse",
        ["not valid JSON", "char"],
    ),
    "trailing comma": (
        agemem_step('[{"name": "Add_memory", "arguments": {"content": "May 3"},},]'),
        "parse",
        ["trailing comma", "remove the comma"],
    ),
    "missing argument": (
        agemem_step('[{"name": "Update_memory", "arguments": {"memory_id": "MEETING"}}]'),
        "arguments",
        ["missing required argument 'content': string", "Update_memory(memory_id: string"],
    ),
    "extra argument": (
        agemem_step('[{"name": "Add_memory", "arguments": {"content": "x", "importance": 5}}]'),
        "arguments",
        ["unexpected argument 'importance'", "valid arguments: content, metadata, memory_type"],
    ),
    "mistyped argument": (
        agemem_step('[{"name": "Retrieve_memory", "arguments": {"query": "m", "top_k": "3"}}]'),
        "arguments",
        ["argument 'top_k' expects integer", 'got "3"'],
    ),
    "mistyped boolean": (
        agemem_step(
            '[{"name": "Delete_memory", "arguments": {"memory_id": "MEETING", '
            '"confirmation": "yes"}}]'
        ),
        "arguments",
        ["argument 'confirmation' expects boolean", 'got "yes"'],
    ),
    "blank content": (
        agemem_step('[{"name": "Add_memory", "arguments": {"content": "   "}}]'),
        "arguments",
        ["argument 'content' expects string", "at least 1 character"],
    ),
    "bad span": (
        agemem_step('[{"name": "Summary_context", "arguments": {"span": "last 2"}}]'),
        "arguments",
        ["argument 'span' expects string", "last N rounds", 'got "last 2"'],
    ),
    "unknown memory_id": (
        agemem_step(
            '[{"name": "Update_memory", "arguments": {"memory_id": "mem_00000000", '
            '"content": "x"}}]'
        ),
        "rejected",
        ["no memory with id 'mem_00000000'", "retrieve first"],
    ),
    "another user's memory_id": (
        agemem_step(
            '[{"name": "Delete_memory", "arguments": {"memory_id": "BOB", "confirmation": true}}]'
        ),
        "rejected",
        ["no memory with id 'BOB'"],
    ),  # fmt: skip
    "delete without confirmation": (
        agemem_step(
            '[{"name": "Delete_memory", "arguments": {"memory_id": "MEETING", '
            '"confirmation": false}}]'
        ),
        "rejected",
        ["nothing was deleted", "set confirmation to true"],
    ),
    "answer and tool call": (
        agemem_step(
            '[{"name": "Delete_memory", "arguments": {"memory_id": "MEETING", '
            '"confirmation": true}}]'
        )
        + "<answer>May 3</answer>",
        "format",
        ["never both", "nothing was run"],
    ),  # fmt: skip
    "unclosed tool_call": (
        '<think>x</think><tool_call>[{"name": "Add_memory", "arguments": {"content": "x"}}]',
        "format",
        ["<tool_call> is never closed", "</tool_call>"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_call_is_an_observation_and_changes_nothing(state, ids, case):
    text, kind, needles = CASES[case]
    for placeholder, memory_id in ids.items():
        text = text.replace(placeholder, memory_id)
        needles = [n.replace(placeholder, memory_id) for n in needles]
    before = snapshot(state.store, state.context)
    (result,) = AGEMEM_TOOLS.run(parse_turn(text), state)
    assert not result.ok and result.error == kind
    for needle in needles:
        assert needle in result.content, result.content
    assert snapshot(state.store, state.context) == before
    assert state.stats.ok == {} and state.stats.failed == {kind: 1}


def test_context_refusal_leaves_the_context_unchanged(store, embedder):
    context = Context(embedder=embedder)
    context.append({"role": "system", "content": "You manage your memory."}, protected=True)
    context.append({"role": "user", "content": "When is the meeting?"}, protected=True)
    state = AgentMemoryState(store, context, scope=ANN)
    before = snapshot(store, context)
    (result,) = AGEMEM_TOOLS.dispatch([ToolCall("Summary_context", {"span": "all"})], state)
    assert result.error == "rejected" and "nothing to summarize" in result.content
    assert snapshot(store, context) == before


def test_openai_malformed_arguments_name_the_call(state):
    before = snapshot(state.store, state.context)
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_9", "type": "function",
             "function": {"name": "Add_memory", "arguments": '{"content": "x"'}},
        ],
    }  # fmt: skip
    (result,) = AGEMEM_TOOLS.run(parse_turn(message), state)
    assert (result.call_id, result.name, result.error) == ("call_9", "Add_memory", "parse")
    assert "not valid JSON" in result.content
    assert snapshot(state.store, state.context) == before


def test_calls_are_validated_and_run_independently(state, store):
    text = agemem_step(
        '[{"name": "Add_memory", "arguments": {"content": "Ann prefers window seats."}}, '
        '{"name": "Update_memory", "arguments": {"memory_id": "mem_00000000", "content": "x"}}, '
        '{"name": "Retrieve_memory", "arguments": {"query": "Ann seat preference", "top_k": 1}}]'
    )
    results = AGEMEM_TOOLS.run(parse_turn(text), state)
    assert [r.ok for r in results] == [True, False, True]
    assert "Ann prefers window seats." in results[2].content  # later calls see earlier effects
    assert store.count(scope=ANN) == 2
    assert dict(state.stats.ok) == {"Add_memory": 1, "Retrieve_memory": 1}


def test_a_failing_store_becomes_an_observation_not_a_crash(state, tmp_path, embedder):
    before = snapshot(state.store)
    state.store.close()  # a real fault: every later store call raises
    (result,) = AGEMEM_TOOLS.dispatch([ToolCall("Add_memory", {"content": "x"}, "c")], state)
    assert result.error == "internal" and result.content.startswith("Add_memory failed (")
    with SQLiteStore(tmp_path / "memory.db", embedder=embedder) as reopened:
        assert snapshot(reopened) == before


# --- AtomMem --------------------------------------------------------------------------------


@pytest.fixture
def atom(store, ids):
    state = AtomMemState(store, scope=ANN, scratchpad="Q1: when is the meeting?")
    state.query = "team meeting"
    begin_step(state)  # shows Memory 1 = the meeting entry
    return state


def atom_snapshot(atom):
    return snapshot(atom.store), atom.scratchpad, atom.query, list(atom.shown)


@pytest.mark.parametrize(
    ("text", "kind", "needle"),
    [
        (
            "<modify_memory>Memory 3: May 3</modify_memory>",
            "rejected",
            "this step shows Memory 1-1",
        ),
        ("<delete_memory>Memory 0</delete_memory>", "arguments", "greater than or equal to 1"),
        ("<modify_memory>the meeting: May 3</modify_memory>", "parse", "Memory i: new text"),
        ("<delete_memory>first one</delete_memory>", "parse", "'Memory i'"),
        ("<add_memory>   </add_memory>", "arguments", "at least 1 character"),
        (
            "<update_memory>x</update_memory><final_answer>\\boxed{May 3}</final_answer>",
            "format",
            "never both",
        ),
    ],
)
def test_atommem_bad_operation_changes_nothing(atom, text, kind, needle):
    before = atom_snapshot(atom)
    results = ATOMMEM_TOOLS.run(parse_turn(text), atom)
    assert [r.error for r in results] == [kind] * len(results) and results
    assert needle in results[0].content, results[0].content
    assert atom_snapshot(atom) == before


def test_atommem_index_of_an_entry_deleted_in_this_step(atom, store):
    results = ATOMMEM_TOOLS.run(
        parse_turn(
            "<delete_memory>Memory 1</delete_memory><modify_memory>Memory 1: x</modify_memory>"
        ),
        atom,
    )
    assert [r.ok for r in results] == [True, False]
    assert "Memory 1 was already deleted in this step" in results[1].content
    assert store.count(scope=ANN) == 0
