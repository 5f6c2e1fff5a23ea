"""Property-based fuzzing (hypothesis) of the output parser and the dispatcher, on a real store,
a real context and the real embedder: no input raises, every observation encodes as UTF-8 and
stays within its length cap, and a refused call leaves the store (entries and their history) and
the context exactly as they were."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agemem.context import Context
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import Scope
from agemem.tools import AGEMEM_TOOLS, AgentMemoryState, ToolCall, parse_turn
from agemem.tools.parse import MAX_CALLS_PER_STEP
from agemem.tools.registry import MAX_OBSERVATION_CHARS

ANN = Scope(user_id="ann")
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Text that reaches the interesting paths: tags of every format, JSON punctuation, escapes that
# decode to lone surrogates, long digit runs, and arbitrary code points (surrogates included).
FRAGMENTS = [
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>",
    "<add_memory>", "</add_memory>", "<final_answer>", "<delete_memory>", "Memory 3",
    "[", "]", "{", "}", ",", ":", '"', "\\", "\\ud800", "\\udc00", "NaN", "Infinity", "-",
    '{"name": "Add_memory", "arguments": {"content": "x"}}', '"name"', '"arguments"',
    '"Retrieve_memory"', '"Delete_memory"', '"content"', '"query"', '"top_k"', "9" * 80,
    "1e999", "null", "true", "[" * 40, "]" * 40, "\ud800", "\x00", " ", "\n",
]  # fmt: skip
model_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=60).map(
    "".join
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**80), max_value=10**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["\ud800", "x" * 5000, "mem_00000000", "all", "2"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
any_values = st.one_of(json_values, st.binary(max_size=8), st.sets(st.integers(), max_size=2))

ARGUMENT_NAMES = [
    "content", "metadata", "memory_type", "memory_id", "confirmation", "query", "top_k",
    "metadata_filter", "span", "criteria",
]  # fmt: skip
arguments = st.one_of(
    st.dictionaries(st.sampled_from(ARGUMENT_NAMES), any_values, max_size=4),
    any_values,
)
tool_names = st.one_of(st.sampled_from(AGEMEM_TOOLS.names), st.text(max_size=10), st.none())


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.fixture
def state(tmp_path, embedder):
    """Ann's view of a real store with two entries, and a context with one round."""
    with SQLiteStore(tmp_path / "memory.db", embedder=embedder) as store:
        store.add("The team meeting is on May 2 in room 4.", scope=ANN)
        store.add("Bob's locker code is 4412.", scope=Scope(user_id="bob"))
        context = Context(embedder=embedder)
        context.append({"role": "system", "content": "You manage your memory."}, protected=True)
        context.append({"role": "user", "content": "The meeting moved to May 3."})
        context.append({"role": "assistant", "content": "Noted."})
        yield AgentMemoryState(store, context, scope=ANN)


def snapshot(state: AgentMemoryState):
    items = state.store.get_all()
    return (
        [(item.to_dict(), state.store.history(item.id)) for item in items],
        state.context.messages,
        state.context.tokens(),
    )


def check_observations(results) -> None:
    for result in results:
        assert encodable(result.content) and encodable(result.name)
        assert len(result.content) <= MAX_OBSERVATION_CHARS + 40


@FUZZ
@given(text=model_text, fmt=st.sampled_from(["auto", "agemem", "hermes", "atommem", "openai"]))
def test_parser_never_raises_and_returns_encodable_text(text, fmt):
    turn = parse_turn(text, fmt)
    texts = [turn.error_text(), turn.answer or "", turn.think or ""]
    texts += [issue.message for issue in turn.issues]
    texts += [call.error or "" for call in turn.tool_calls]
    assert all(encodable(t) for t in texts)
    if turn.ok:
        assert len(turn.tool_calls) <= MAX_CALLS_PER_STEP
    for call in turn.tool_calls:
        assert (call.error is None) == (call.arguments is not None)


@FUZZ
@given(
    message=st.dictionaries(
        st.sampled_from(["role", "content", "tool_calls", "reasoning_content"]),
        st.one_of(
            any_values,
            st.lists(
                st.one_of(
                    any_values,
                    st.fixed_dictionaries(
                        {
                            "id": any_values,
                            "function": st.fixed_dictionaries(
                                {"name": tool_names, "arguments": st.one_of(arguments, model_text)}
                            ),
                        }  # fmt: skip
                    ),
                ),
                max_size=4,
            ),
        ),
    )
)
def test_openai_message_parser_never_raises(message):
    turn = parse_turn(message)
    assert encodable(turn.error_text())
    for call in turn.tool_calls:
        assert (call.error is None) == (call.arguments is not None)


@FUZZ
@given(name=tool_names, args=arguments)
def test_dispatch_refused_calls_change_nothing(state, name, args):
    ids = [item.id for item in state.store.get_all()]
    if isinstance(args, dict) and "memory_id" in args and ids:
        args = {**args, "memory_id": ids[len(str(args["memory_id"])) % len(ids)]}
    before = snapshot(state)
    [result] = AGEMEM_TOOLS.dispatch([ToolCall(name, args)], state)
    check_observations([result])
    if not result.ok:
        assert snapshot(state) == before, result.content


@FUZZ
@given(text=model_text)
def test_a_parsed_step_that_runs_nothing_changes_nothing(state, text):
    before = snapshot(state)
    results = AGEMEM_TOOLS.run(parse_turn(text, "agemem"), state)
    check_observations(results)
    if not any(result.ok for result in results):
        assert snapshot(state) == before


@FUZZ
@given(
    calls=st.lists(
        st.tuples(tool_names, arguments),
        min_size=MAX_CALLS_PER_STEP + 1,
        max_size=MAX_CALLS_PER_STEP + 8,
    )
)
def test_too_many_calls_run_none(state, calls):
    before = snapshot(state)
    results = AGEMEM_TOOLS.dispatch([ToolCall(n, a) for n, a in calls], state)
    assert len(results) == len(calls) and not any(r.ok for r in results)
    assert snapshot(state) == before
