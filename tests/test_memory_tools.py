"""`Memory.tools()` with every kind of model: native tool calling in OpenAI, LangChain and
Anthropic shapes, the text protocol for models without tool calling, and bad input of any kind
(a hypothesis property test). Real SQLite store, real embedder."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agemem import Memory
from agemem.context import Context
from agemem.memory.store import Scope
from agemem.tools.agemem import agemem_system_prompt

langchain_messages = pytest.importorskip("langchain_core.messages")


@pytest.fixture
def memory(tmp_path, embedder):
    with Memory(path=tmp_path / "memory.db", embedder=embedder) as m:
        yield m


def _snapshot(memory: Memory) -> list[dict[str, Any]]:
    return [item.to_dict() for item in memory.store.get_all(scope=Scope())]


ADD = {"content": "Alice prefers green tea."}


# ---- native tool calling: three SDK shapes ------------------------------------------------------


def test_execute_reads_a_langchain_ai_message_and_answers_with_tool_messages(memory):
    tools = memory.tools(user_id="alice")
    message = langchain_messages.AIMessage(
        content="",
        tool_calls=[
            {"name": "Add_memory", "args": ADD, "id": "call_a"},
            {"name": "Delete_memory", "args": {"memory_id": "mem_0"}, "id": "call_b"},
        ],
        invalid_tool_calls=[
            {"name": "Add_memory", "args": '{"content": ', "id": "call_c", "error": "bad JSON"}
        ],
    )
    added, refused, unreadable = tools.execute(message)
    assert all(isinstance(r, langchain_messages.ToolMessage) for r in (added, refused, unreadable))
    assert [r.tool_call_id for r in (added, refused, unreadable)] == ["call_a", "call_b", "call_c"]
    assert (added.status, refused.status, unreadable.status) == ("success", "error", "error")
    assert added.content.startswith("Added mem_")
    assert "missing required argument 'confirmation'" in refused.content
    assert "could not be read" in unreadable.content
    assert [r["memory"] for r in memory.get_all(user_id="alice")["results"]] == [ADD["content"]]


def test_execute_reads_an_anthropic_message_and_answers_with_tool_result_blocks(memory):
    tools = memory.tools(user_id="alice")
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Store it, then check.", "signature": "s"},
            {"type": "text", "text": "Saving that."},
            {"type": "tool_use", "id": "toolu_1", "name": "Add_memory", "input": ADD},
            {"type": "tool_use", "id": "toolu_2", "name": "Retrieve_memory", "input": {}},
        ],
        "stop_reason": "tool_use",
    }
    schemas = {s["name"]: s["input_schema"] for s in tools.anthropic_schemas}
    assert schemas["Add_memory"] == tools.toolset["Add_memory"].parameters()
    (reply,) = tools.execute(message)
    assert reply["role"] == "user"
    ok, bad = reply["content"]
    assert (ok["type"], ok["tool_use_id"], "is_error" in ok) == ("tool_result", "toolu_1", False)
    assert ok["content"].startswith("Added mem_")
    assert (bad["tool_use_id"], bad["is_error"]) == ("toolu_2", True)
    assert "missing required argument 'query'" in bad["content"]
    # a final answer (text blocks only) runs nothing and needs no reply
    answer = {"role": "assistant", "content": [{"type": "text", "text": "Green tea."}]}
    assert tools.execute(answer) == []


def test_the_native_loop_appends_the_assistant_message_before_the_tool_results(memory):
    """The README's loop, on a scripted model: what it sends is a valid OpenAI conversation."""
    tools = memory.tools(user_id="alice")
    script = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "Add_memory", "arguments": json.dumps(ADD)},
                }
            ],
        },
        {"role": "assistant", "content": "Noted: green tea."},
    ]
    messages: list[Any] = [{"role": "user", "content": "I prefer green tea."}]
    for reply in script:
        messages.append(reply)  # the assistant message first ...
        if not reply.get("tool_calls"):
            break
        messages += tools.execute(reply)  # ... then one tool message per call
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert messages[2]["tool_call_id"] == messages[1]["tool_calls"][0]["id"]


# ---- the text protocol --------------------------------------------------------------------------


def test_system_prompt_comes_from_the_registry(memory, embedder):
    tools = memory.tools(user_id="alice")
    prompt = tools.system_prompt()
    assert prompt == agemem_system_prompt(tools.toolset)
    for tool in tools.toolset:  # the same signatures the schemas and the validation use
        assert f"- {tool.signature()}: {tool.description}" in prompt
    assert "<tool_call>" in prompt and "<answer>" in prompt
    assert "function-calling interface" in tools.system_prompt(native_tools=True)
    with_context = memory.tools(user_id="alice", context=Context(embedder=embedder))
    assert "Filter_context(" in with_context.system_prompt()


def test_execute_text_runs_calls_answers_and_format_errors(memory):
    tools = memory.tools(user_id="alice")
    step = tools.execute_text(
        "<think>store it</think><tool_call>["
        f'{{"name": "Add_memory", "arguments": {json.dumps(ADD)}}}, '
        '{"name": "Retrieve_memory", "arguments": {"query": "tea"}}]</tool_call>'
    )
    assert not step.done and [r.ok for r in step.results] == [True, True]
    assert ADD["content"] in step.results[1].content
    assert [m["role"] for m in step.messages] == ["tool", "tool"]
    assert step.observation.count("<tool_response>") == 2
    hermes = tools.execute_text(
        '<tool_call>{"name": "Retrieve_memory", "arguments": {"query": "tea"}}</tool_call>'
    )
    assert ADD["content"] in hermes.results[0].content
    assert tools.execute_text("<think>ok</think><answer>Green tea.</answer>").answer == "Green tea."
    before = _snapshot(memory)
    for bad in (
        '<tool_call>[{"name": "Add_memory", "arguments": {"content": "x"}}]',  # unclosed
        "<tool_call>[{'name': 'Add_memory'}]</tool_call>",  # not JSON
        "<answer>a</answer><tool_call>[]</tool_call>",  # both
        "",
        None,
        b"<answer>bytes</answer>",
    ):
        step = tools.execute_text(bad)
        assert step.answer is None and step.results and not any(r.ok for r in step.results), bad
        assert all(r.content for r in step.results)
    assert _snapshot(memory) == before


# ---- bad input never raises ---------------------------------------------------------------------


class _Unreadable:
    def model_dump(self, **_: Any) -> dict:
        raise RuntimeError("broken SDK object")


BAD_MESSAGES = [
    None,
    "Add_memory(content='x')",
    42,
    b"bytes",
    ["a", "list"],
    _Unreadable(),
    {"role": "assistant", "content": 42},
    {"role": "assistant", "content": [{"type": "text", "text": 3}]},
    {"role": "assistant", "tool_calls": 5},
    {"role": "assistant", "tool_calls": [5]},
    {"role": "assistant", "tool_calls": [{"id": "c", "function": "Add_memory"}]},
    {
        "role": "assistant",
        "tool_calls": [
            {"id": "c", "function": {"name": "Add_memory", "arguments": b'{"content": "x"}'}}
        ],
    },
    {
        "role": "assistant",
        "tool_calls": [
            {"id": "c", "function": {"name": "Add_memory", "arguments": {"content": {1, 2}}}}
        ],
    },
    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": 7, "arguments": "{}"}}]},
    {"role": "user", "content": "remember this"},
    {"role": "assistant", "content": "<tool_call>" + "[" * 5000 + "</tool_call>"},
]


@pytest.mark.parametrize("message", BAD_MESSAGES, ids=range(len(BAD_MESSAGES)))
def test_execute_answers_bad_input_with_an_error_and_changes_nothing(memory, message):
    memory.add("Bob's locker code is 9981.", user_id="bob")
    tools = memory.tools(user_id="alice")
    before = _snapshot(memory)
    replies = tools.execute(message)
    assert replies and all(r["role"] == "tool" and r["content"] for r in replies)
    assert tools.state.stats.ok == {}
    assert _snapshot(memory) == before


# ---- property: no exception on any input; nothing changes unless a call was valid --------------

NAMES = [
    "Add_memory",
    "Update_memory",
    "Delete_memory",
    "Retrieve_memory",
    "Summary_context",
    "Filter_context",
    "add_memory",
    "",
]
KEYS = [
    "content",
    "memory_id",
    "confirmation",
    "query",
    "top_k",
    "metadata",
    "span",
    "criteria",
    "metadata_filter",
    "memory_type",
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ANY = JSON | st.binary(max_size=10) | st.sets(st.integers(), max_size=2)
ARGUMENTS = st.dictionaries(st.sampled_from(KEYS), ANY, max_size=3) | ANY | JSON.map(json.dumps)
NAME = st.sampled_from(NAMES) | st.text(max_size=12) | ANY
CALL_ID = st.text(max_size=6) | st.integers() | st.none()
OPENAI = st.builds(
    lambda calls, content: {"role": "assistant", "content": content, "tool_calls": calls},
    st.lists(
        st.builds(
            lambda i, n, a: {"id": i, "type": "function", "function": {"name": n, "arguments": a}},
            CALL_ID,
            NAME,
            ARGUMENTS,
        )
        | ANY,
        max_size=3,
    )
    | ANY,
    st.none() | st.text(max_size=40) | ANY,
)
LANGCHAIN = st.builds(
    lambda calls: {"type": "ai", "content": "", "tool_calls": calls},
    st.lists(
        st.builds(lambda n, a, i: {"name": n, "args": a, "id": i}, NAME, ARGUMENTS, CALL_ID),
        max_size=3,
    ),
)
ANTHROPIC = st.builds(
    lambda blocks: {"role": "assistant", "type": "message", "content": blocks},
    st.lists(
        st.builds(
            lambda i, n, a: {"type": "tool_use", "id": i, "name": n, "input": a},
            CALL_ID,
            NAME,
            ARGUMENTS,
        )
        | st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=20) | ANY),
        max_size=3,
    ),
)
TEXT = st.builds(
    lambda calls, wrap: wrap.format(json.dumps(calls, default=repr)),
    st.lists(
        st.fixed_dictionaries(
            {"name": NAME.filter(lambda n: isinstance(n, str)), "arguments": JSON}
        ),
        max_size=2,
    ),
    st.sampled_from(
        [
            "<tool_call>{}</tool_call>",
            "<think>x</think><tool_call>{}</tool_call>",
            "{}",
            "<tool_call>{}",
            "<answer>{}</answer>",
        ]
    ),
) | st.text(max_size=60)
MESSAGES = OPENAI | LANGCHAIN | ANTHROPIC | ANY | TEXT


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, embedder):
    with Memory(tmp_path_factory.mktemp("fuzz") / "memory.db", embedder=embedder) as memory:
        memory.add("Bob's locker code is 9981.", user_id="bob")
        memory.add("Alice likes green tea.", user_id="alice")
        yield memory


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(message=MESSAGES, as_text=st.booleans())
def test_property_execute_never_raises_and_changes_nothing_unless_a_call_was_valid(
    fuzzed, embedder, message, as_text
):
    context = Context(embedder=embedder)
    context.append({"role": "system", "content": "You manage memory."}, protected=True)
    context.append({"role": "user", "content": "The football match ended 3-1."})
    tools = fuzzed.tools(user_id="alice", context=context)
    store_before, context_before = _snapshot(fuzzed), json.dumps(context.messages)
    if as_text:
        step = tools.execute_text(message)
        results = step.results
        assert step.answer is None or not results
    else:
        replies = tools.execute(message)
        assert isinstance(replies, list)
        for reply in replies:
            reply = reply if isinstance(reply, dict) else {"role": "tool", "content": reply.content}
            assert reply["role"] in ("tool", "user") and reply["content"]
        results = []
    if sum(tools.state.stats.ok.values()) == 0:
        assert _snapshot(fuzzed) == store_before
        assert json.dumps(context.messages) == context_before
    assert all(isinstance(r.content, str) and r.content for r in results)
