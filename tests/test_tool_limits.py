"""The parser's and the dispatcher's limits on hostile model output, each answered with an
observation that names the limit; the store and the context stay as they were."""

from __future__ import annotations

import json

import pytest

from agemem.context import Context
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import Scope
from agemem.tools import AGEMEM_TOOLS, AgentMemoryState, ToolCall, parse_turn
from agemem.tools.agemem import MAX_CONTENT_CHARS
from agemem.tools.parse import MAX_CALLS_PER_STEP, MAX_OUTPUT_CHARS
from agemem.tools.registry import MAX_OBSERVATION_CHARS, ToolResult

ANN = Scope(user_id="ann")


@pytest.fixture
def state(tmp_path, embedder):
    with SQLiteStore(tmp_path / "memory.db", embedder=embedder) as store:
        store.add("The team meeting is on May 2 in room 4.", scope=ANN)
        context = Context(embedder=embedder)
        context.append({"role": "user", "content": "Remember the meeting."})
        yield AgentMemoryState(store, context, scope=ANN)


def snapshot(state):
    items = state.store.get_all()
    return [(i.to_dict(), state.store.history(i.id)) for i in items], state.context.messages


def step(calls: str) -> str:
    return f"<think>go</think><tool_call>{calls}</tool_call>"


@pytest.mark.parametrize(
    "text",
    [
        "<tool_call>" + "[" * 1000 + "</tool_call>",
        step("[" * 1000 + "]" * 1000),
        "<tool_call>" + '{"name": "a", "arguments": ' * 600 + "</tool_call>",
    ],
)
def test_deep_nesting_is_a_call_error_not_a_recursion_error(text):
    turn = parse_turn(text)
    [call] = turn.tool_calls
    assert call.arguments is None and "deeper than 16 levels" in call.error


def test_a_number_of_thousands_of_digits_is_a_call_error(state):
    before = snapshot(state)
    text = step('[{"name": "Retrieve_memory", "arguments": {"query": "m", "top_k": ' + "9" * 5000)
    results = AGEMEM_TOOLS.run(parse_turn(text + "}}]"), state)
    assert [r.error for r in results] == ["parse"]
    assert "a number in the call has 5000 characters (at most 64)" in results[0].content
    assert snapshot(state) == before


def test_nan_and_infinity_are_refused():
    [call] = parse_turn(step('[{"name": "a", "arguments": {"x": NaN}}]')).tool_calls
    assert "NaN is not JSON" in call.error


def test_a_thousand_calls_in_one_step_run_none(state):
    before = snapshot(state)
    calls = [{"name": "Add_memory", "arguments": {"content": f"fact {i}"}} for i in range(1000)]
    turn = parse_turn(step(json.dumps(calls)))
    assert not turn.ok and f"more than {MAX_CALLS_PER_STEP}" in turn.error_text()
    results = AGEMEM_TOOLS.run(turn, state)
    assert len(results) == 1000 and {r.error for r in results} == {"format"}
    # the same list handed straight to dispatch (e.g. a native tool-calling backend)
    direct = AGEMEM_TOOLS.dispatch([ToolCall(c["name"], c["arguments"]) for c in calls], state)
    assert {r.error for r in direct} == {"format"}
    assert snapshot(state) == before


def test_an_over_long_step_is_fatal():
    turn = parse_turn("<think>" + "x" * MAX_OUTPUT_CHARS + "</think><answer>a</answer>")
    assert not turn.ok and turn.issues[0].code == "too_long"


def test_a_huge_entry_is_refused_and_not_echoed(state):
    before = snapshot(state)
    call = {"name": "Add_memory", "arguments": {"content": "A" * 50_000}}
    [result] = AGEMEM_TOOLS.run(parse_turn(step(json.dumps([call]))), state)
    assert result.error == "arguments"
    assert f"at most {MAX_CONTENT_CHARS} characters" in result.content
    assert len(result.content) < 1000
    [direct] = AGEMEM_TOOLS.dispatch([ToolCall("Add_memory", {"content": "A" * 10**7})], state)
    assert direct.error == "arguments" and len(direct.content) < 1000
    assert parse_turn(step(json.dumps([{**call, "arguments": {"content": "A" * 200_000}}]))).errors
    assert snapshot(state) == before


def test_observations_are_capped(state):
    long = "B" * (MAX_CONTENT_CHARS - 10)
    for i in range(4):
        state.store.add(f"{i} {long}", scope=ANN)
    call = {"name": "Retrieve_memory", "arguments": {"query": "B", "top_k": 5}}
    [result] = AGEMEM_TOOLS.run(parse_turn(step(json.dumps([call]))), state)
    assert result.ok and len(result.content) < MAX_OBSERVATION_CHARS + 40
    assert result.content.endswith("more characters cut]")


def test_lone_surrogates_never_reach_an_observation(state):
    before = snapshot(state)
    call = '[{"name": "Add_memory", "arguments": {"content": "caf\\ud800"}}]'
    [result] = AGEMEM_TOOLS.run(parse_turn(step(call)), state)
    assert result.error == "parse" and "unpaired surrogate" in result.content
    result.content.encode("utf-8")
    unknown = AGEMEM_TOOLS.dispatch([ToolCall("Add_\ud800", {"content": "x"})], state)
    unknown[0].content.encode("utf-8")
    assert snapshot(state) == before
    assert parse_turn("<think>\udc00</think><answer>Paris\ud800</answer>").answer == "Paris\ufffd"
    assert ToolResult("x", "c1", "bad \ud800 text").content == "bad \ufffd text"
