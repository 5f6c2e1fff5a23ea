"""Each tool's real effect on a real SQLite store file and a real Context (real embedder), and the
schemas the models see."""

from __future__ import annotations

import re

import jsonschema
import pytest
from openai.types.chat import ChatCompletionFunctionTool

from agemem.context import SUMMARY_PREFIX, Context
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import MemoryNotFound, Scope
from agemem.tools import (
    AGEMEM_TOOLS,
    ATOMMEM_SYSTEM_PROMPT,
    ATOMMEM_TOOLS,
    AgentMemoryState,
    AtomMemState,
    ToolCall,
    agemem_system_prompt,
    begin_step,
    parse_turn,
)
from agemem.tools.atommem import NO_MEMORY

MEMORY_ID = re.compile(r"\bmem_[0-9a-f]{8}\b")
ANN = Scope(user_id="ann")


@pytest.fixture
def store(tmp_path, embedder):
    with SQLiteStore(tmp_path / "memory.db", embedder=embedder) as s:
        yield s


@pytest.fixture
def state(store, embedder):
    context = Context(embedder=embedder)
    context.append({"role": "system", "content": "You manage your memory."}, protected=True)
    return AgentMemoryState(store, context, scope=ANN)


def run(state, name, **arguments):
    (result,) = AGEMEM_TOOLS.dispatch([ToolCall(name, arguments, id="c1")], state)
    return result


def add(state, content, **arguments):
    result = run(state, "Add_memory", content=content, **arguments)
    assert result.ok, result.content
    return MEMORY_ID.search(result.content).group()


# --- LTM tools ------------------------------------------------------------------------------


def test_add_memory_stores_an_entry_in_scope(state, store):
    result = run(
        state,
        "Add_memory",
        content="Ann is allergic to peanuts.",
        metadata={"source": "chat"},
        memory_type="episodic",
    )
    assert result.ok and result.name == "Add_memory" and result.call_id == "c1"
    memory_id = MEMORY_ID.search(result.content).group()
    item = store.get(memory_id)
    assert item.content == "Ann is allergic to peanuts."
    assert item.metadata["source"] == "chat" and item.memory_type == "episodic"
    assert item.scope == ANN
    assert state.added_ids == [memory_id]
    assert [e.event for e in store.history(memory_id)] == ["ADD"]


@pytest.mark.parametrize("again", ["Ann is allergic to peanuts.", "Ann is allergic to peanuts"])
def test_add_near_duplicate_is_reported_not_stored_in_reject_mode(tmp_path, embedder, again):
    """The envs' stores refuse near-duplicates ("reject") and tell the agent what to update."""
    with SQLiteStore(tmp_path / "m.db", embedder=embedder, dedupe="reject") as store:
        state = AgentMemoryState(store, Context(embedder=embedder), scope=ANN)
        first = add(state, "Ann is allergic to peanuts.")
        result = run(state, "Add_memory", content=again)
        assert result.ok and f"Not added: near-duplicate of {first}, similarity" in result.content
        assert f"Update_memory with memory_id '{first}'" in result.content
        assert store.count() == 1 and state.added_ids == [first]


def test_add_exact_duplicate_is_merged_and_a_near_one_stored_by_default(state, store):
    first = add(state, "Ann is allergic to peanuts.")
    result = run(state, "Add_memory", content="Ann is  allergic to peanuts. ")
    assert result.ok
    assert (
        result.content
        == f"Not added: {first} already holds this text: {'Ann is allergic to peanuts.'!r}."
    )
    second = add(state, "Ann is allergic to peanuts and shellfish.")
    assert store.count() == 2 and state.added_ids == [first, second]


def test_retrieve_shows_ids_the_model_can_copy_into_update(state, store):
    peanuts = add(state, "Ann is allergic to peanuts.")
    add(state, "Ann's flight to Tokyo leaves on Friday at 9am.")
    add(state, "The project deadline is June 12.")
    result = run(state, "Retrieve_memory", query="What food is Ann allergic to?", top_k=2)
    assert result.ok
    shown = MEMORY_ID.findall(result.content)
    assert len(shown) == 2 and shown[0] == peanuts and [i.id for i in state.retrieved] == shown
    assert "Ann is allergic to peanuts." in result.content.splitlines()[1]
    # The model copies the id it saw into Update_memory, in the AgeMem protocol.
    turn = parse_turn(
        f'<think>Correct it.</think><tool_call>[{{"name": "Update_memory", "arguments": '
        f'{{"memory_id": "{shown[0]}", "content": "Ann is allergic to peanuts and shellfish."}}}}]'
        "</tool_call>"
    )
    (update,) = AGEMEM_TOOLS.run(turn, state)
    assert update.ok and store.get(peanuts).content == "Ann is allergic to peanuts and shellfish."


def test_retrieve_respects_metadata_filter_and_scope(state, store):
    add(state, "Ann's favourite dish is ramen.", metadata={"topic": "food"})
    work = add(state, "Ann works on the billing service.", metadata={"topic": "work"})
    store.add("Bob's favourite dish is ramen.", scope=Scope(user_id="bob"))
    food = run(state, "Retrieve_memory", query="favourite dish", top_k=5)
    assert "Bob" not in food.content and "Ann's favourite dish is ramen." in food.content
    filtered = run(
        state, "Retrieve_memory", query="favourite dish", metadata_filter={"topic": "work"}
    )
    assert MEMORY_ID.findall(filtered.content) == [work]


def test_retrieve_from_an_empty_store(state):
    result = run(state, "Retrieve_memory", query="anything")
    assert result.ok and result.content == "No memory matches 'anything'."
    assert state.retrieved == []


def test_update_memory_replaces_content_and_keeps_history(state, store):
    memory_id = add(state, "The meeting is on May 2.")
    result = run(state, "Update_memory", memory_id=memory_id, content="The meeting is on May 3.")
    assert (
        result.ok and "'The meeting is on May 2.' -> 'The meeting is on May 3.'" in result.content
    )
    assert store.get(memory_id).content == "The meeting is on May 3."
    event = store.history(memory_id)[-1]
    assert (event.event, event.old_content, event.new_content) == (
        "UPDATE",
        "The meeting is on May 2.",
        "The meeting is on May 3.",
    )


def test_delete_memory_removes_the_entry(state, store):
    memory_id = add(state, "Ann lives in Lyon.")
    result = run(state, "Delete_memory", memory_id=memory_id, confirmation=True)
    assert result.ok and memory_id in result.content
    with pytest.raises(MemoryNotFound):
        store.get(memory_id)
    assert store.count() == 0


# --- STM tools ------------------------------------------------------------------------------


def chat(context, *pairs):
    for user, assistant in pairs:
        context.append({"role": "user", "content": user})
        context.append({"role": "assistant", "content": assistant})


WEATHER = (
    "It is raining again in Paris today, cold and wet weather.",
    "Cold, rainy weather in Paris again, sorry to hear that.",
)
FLIGHT = ("My flight to Tokyo leaves on Friday at 9am.", "Noted: Friday, 9am, Tokyo.")


def test_summary_context_all_replaces_the_rounds(state):
    chat(state.context, WEATHER, FLIGHT)
    before = state.context.tokens()
    result = run(state, "Summary_context", span="all")
    messages = state.context.messages
    assert result.ok and "Summarized 4 messages" in result.content
    assert f"context {before} -> {state.context.tokens()} tokens" in result.content
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"].startswith(SUMMARY_PREFIX)
    assert "Tokyo" in messages[1]["content"]


def test_summary_context_last_round_only(state):
    chat(state.context, WEATHER, FLIGHT)
    result = run(state, "Summary_context", span="1")
    messages = state.context.messages
    assert result.ok and "Summarized 2 messages" in result.content
    assert [m["content"] for m in messages[1:3]] == list(WEATHER)
    assert messages[3]["content"].startswith(SUMMARY_PREFIX) and len(messages) == 4


def test_filter_context_drops_matching_messages(state):
    chat(state.context, WEATHER, FLIGHT)
    result = run(state, "Filter_context", criteria="cold rainy weather in Paris")
    assert result.ok and "Removed 2 messages" in result.content
    assert "similarity 0." in result.content
    assert [m["content"] for m in state.context.messages[1:]] == list(FLIGHT)


def test_filter_context_without_match_changes_nothing(state):
    chat(state.context, FLIGHT)
    before = state.context.messages
    result = run(state, "Filter_context", criteria="quantum chromodynamics lecture notes")
    assert result.ok and "nothing was removed" in result.content
    assert state.context.messages == before


def test_stats_count_calls_that_ran(state):
    memory_id = add(state, "Ann likes green tea.")
    run(state, "Retrieve_memory", query="tea")
    run(state, "Delete_memory", memory_id=memory_id, confirmation=False)
    assert dict(state.stats.ok) == {"Add_memory": 1, "Retrieve_memory": 1}
    assert dict(state.stats.failed) == {"rejected": 1}


def test_tool_results_become_openai_tool_messages(state):
    turn = parse_turn(
        '<think>x</think><tool_call>[{"name": "Retrieve_memory", "arguments": {"query": "tea"}},'
        ' {"name": "Filter_context", "arguments": {"criteria": "tea"}}]</tool_call>'
    )
    messages = [r.to_message() for r in AGEMEM_TOOLS.run(turn, state)]
    assert [(m["role"], m["tool_call_id"], m["name"]) for m in messages] == [
        ("tool", "call_0", "Retrieve_memory"),
        ("tool", "call_1", "Filter_context"),
    ]
    for message in messages:  # the Context accepts them as they are
        state.context.append(message)


# --- AtomMem --------------------------------------------------------------------------------


@pytest.fixture
def atom(store):
    return AtomMemState(store, scope=ANN)


def step(atom, text):
    results = ATOMMEM_TOOLS.run(parse_turn(text), atom)
    assert all(r.ok for r in results), [r.content for r in results]
    return results


def test_atommem_step_cycle(atom, store):
    assert begin_step(atom).memories == NO_MEMORY and atom.shown == []
    step(
        atom,
        "<update_memory>Q1: who is Yulia's partner? Candidate: Riccardo.</update_memory>"
        "<add_memory>Yulia Zagoruychenko dances with Riccardo Cocchi.</add_memory>"
        "<add_memory>The Blackpool festival is held every May.</add_memory>"
        "<update_query>Yulia Zagoruychenko dance partner</update_query>",
    )
    assert store.count(scope=ANN) == 2 and atom.query == "Yulia Zagoruychenko dance partner"
    view = begin_step(atom)
    assert view.scratchpad == "Q1: who is Yulia's partner? Candidate: Riccardo."
    assert view.query == atom.query and len(atom.shown) == 2
    lines = view.memories.splitlines()
    assert lines[0] == "Memory 1: Yulia Zagoruychenko dances with Riccardo Cocchi."
    assert lines[1].startswith("Memory 2: ")
    step(
        atom,
        "<modify_memory>Memory 1: Since 2025 Riccardo Cocchi dances with Emily.</modify_memory>"
        "<delete_memory>Memory 2</delete_memory>",
    )
    (item,) = store.get_all(scope=ANN)
    assert item.id == atom.shown[0] and item.content.startswith("Since 2025")


def test_atommem_empty_query_retrieves_nothing(atom, store):
    store.add("A stored fact.", scope=ANN)
    assert begin_step(atom).memories == NO_MEMORY


def test_atommem_as_openai_function_tools(atom, store):
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "a", "type": "function",
             "function": {"name": "create", "arguments": '{"content": "Bo is 7."}'}},
            {"id": "b", "type": "function",
             "function": {"name": "read", "arguments": '{"query": "Bo age"}'}},
        ],
    }  # fmt: skip
    results = ATOMMEM_TOOLS.run(parse_turn(message), atom)
    assert [r.call_id for r in results] == ["a", "b"] and all(r.ok for r in results)
    assert begin_step(atom).memories == "Memory 1: Bo is 7."


# --- schemas --------------------------------------------------------------------------------

PAPER_ARGUMENTS = {  # tool: (arguments in order, required ones); AgeMem paper, tool table
    "Add_memory": (["content", "metadata", "memory_type"], ["content"]),
    "Update_memory": (["memory_id", "content", "metadata"], ["memory_id", "content"]),
    "Delete_memory": (["memory_id", "confirmation"], ["memory_id", "confirmation"]),
    "Retrieve_memory": (["query", "top_k", "metadata_filter"], ["query"]),
    "Summary_context": (["span"], ["span"]),
    "Filter_context": (["criteria"], ["criteria"]),
}


def walk(schema):
    yield schema
    for value in schema.values():
        if isinstance(value, dict):
            yield from walk(value)


@pytest.mark.parametrize("tools", [AGEMEM_TOOLS, ATOMMEM_TOOLS], ids=["agemem", "atommem"])
def test_schemas_are_valid_openai_function_tools(tools):
    for spec in tools.openai_tools():
        ChatCompletionFunctionTool.model_validate(spec)
        function = spec["function"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", function["name"]) and function["description"]
        parameters = function["parameters"]
        jsonschema.Draft202012Validator.check_schema(parameters)
        assert parameters["type"] == "object" and parameters["additionalProperties"] is False
        assert not any("title" in node or "anyOf" in node for node in walk(parameters))
        assert set(parameters["required"]) <= set(parameters["properties"])


def test_agemem_schemas_have_the_paper_arguments():
    found = {
        spec["function"]["name"]: (
            list(spec["function"]["parameters"]["properties"]),
            spec["function"]["parameters"]["required"],
        )
        for spec in AGEMEM_TOOLS.openai_tools()
    }
    assert found == PAPER_ARGUMENTS
    retrieve = AGEMEM_TOOLS["Retrieve_memory"].parameters()["properties"]
    assert retrieve["top_k"]["default"] == 3


@pytest.mark.parametrize(
    ("name", "arguments", "valid"),
    [
        ("Retrieve_memory", {"query": "tea", "top_k": 2}, True),
        ("Retrieve_memory", {"query": "tea", "top_k": "2"}, False),
        ("Retrieve_memory", {"query": "tea", "k": 2}, False),
        ("Delete_memory", {"memory_id": "mem_a5b40d65", "confirmation": True}, True),
        ("Delete_memory", {"memory_id": "mem_a5b40d65", "confirmation": "true"}, False),
        ("Summary_context", {"span": "all"}, True),
        ("Summary_context", {"span": "3"}, True),
        ("Summary_context", {"span": "last 3"}, False),
        ("Update_memory", {"memory_id": "mem_a5b40d65"}, False),
    ],
)
def test_schema_and_validation_agree(name, arguments, valid):
    tool = AGEMEM_TOOLS[name]
    schema_ok = jsonschema.Draft202012Validator(tool.parameters()).is_valid(arguments)
    try:
        tool.args.model_validate(arguments)
        model_ok = True
    except ValueError:
        model_ok = False
    assert schema_ok is model_ok is valid


def test_system_prompts_document_every_tool():
    prompt = agemem_system_prompt()
    for tool in AGEMEM_TOOLS:
        assert tool.signature() in prompt
    assert "<tool_call>[" in prompt and "<answer>" in prompt
    native = agemem_system_prompt(AGEMEM_TOOLS.select("Retrieve_memory"), native_tools=True)
    assert "function-calling" in native and "Add_memory(" not in native
    for tag in ("<update_memory>", "<update_query>", "<add_memory>", "<modify_memory>"):
        assert tag in ATOMMEM_SYSTEM_PROMPT
