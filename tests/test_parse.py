"""The output parsers on what models actually write: valid steps, several calls, malformed JSON,
unclosed tags, answer plus tool call, empty output, stray text."""

from __future__ import annotations

import pytest

from agemem.policy.base import Turn
from agemem.tools.parse import (
    ATOMMEM_TAGS,
    extract_boxed,
    parse_agemem,
    parse_atommem,
    parse_hermes,
    parse_openai,
    parse_turn,
)


def codes(turn):
    return [i.code for i in turn.issues]


# --- AgeMem protocol ------------------------------------------------------------------------

AGEMEM_TWO_CALLS = """<think>
The user corrected the date. I should update the old entry and look up the venue.
</think>
<tool_call>
[
  {"name": "Update_memory",
   "arguments": {"memory_id": "mem_a5b40d65", "content": "The meeting is on May 3"}},
  {"name": "Retrieve_memory", "arguments": {"query": "meeting venue", "top_k": 2}}
]
</tool_call>"""


def test_agemem_several_calls_in_one_array():
    turn = parse_agemem(AGEMEM_TWO_CALLS)
    assert turn.ok and turn.issues == [] and turn.fmt == "agemem"
    assert turn.think.startswith("The user corrected the date.")
    assert [(c.id, c.name) for c in turn.tool_calls] == [
        ("call_0", "Update_memory"),
        ("call_1", "Retrieve_memory"),
    ]
    assert turn.tool_calls[1].arguments == {"query": "meeting venue", "top_k": 2}
    assert all(c.error is None for c in turn.tool_calls)
    assert turn.answer is None


def test_agemem_answer():
    turn = parse_agemem("<think>The memory says Paris.</think>\n<answer> Paris </answer>\n")
    assert turn.ok and turn.answer == "Paris" and turn.tool_calls == [] and turn.issues == []


def test_agemem_tolerates_tag_case_and_spaces():
    turn = parse_agemem(
        '<Think>ok</Think> < TOOL_CALL >[{"name": "x", "arguments": {}}]</tool_call>'
    )
    assert turn.ok and turn.think == "ok" and turn.tool_calls[0].name == "x" and turn.issues == []


def test_agemem_single_object_is_accepted_and_noted():
    turn = parse_agemem(
        '<think>save</think><tool_call>{"name": "Add_memory", "arguments": {"content": "a"}}'
        "</tool_call>"
    )
    assert turn.ok and turn.tool_calls[0].arguments == {"content": "a"}
    assert codes(turn) == ["single_object"] and not turn.issues[0].fatal


def test_agemem_malformed_json_becomes_a_call_error():
    text = (
        '<think>x</think><tool_call>[{"name": "Add_memory" "arguments": {"content": "a"}}]'
        "</tool_call>"
    )
    turn = parse_agemem(text)
    assert turn.ok  # the format is fine; the call itself is unreadable
    (call,) = turn.tool_calls
    assert call.arguments is None and call.id == "call_0"
    assert "not valid JSON" in call.error and "Expecting ','" in call.error


def test_agemem_trailing_comma_is_reported_not_fixed():
    turn = parse_agemem(
        '<think>x</think><tool_call>[{"name": "Retrieve_memory", '
        '"arguments": {"query": "tea",}}]</tool_call>'
    )
    (call,) = turn.tool_calls
    assert call.arguments is None
    assert "trailing comma" in call.error and "remove the comma" in call.error


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('[{"arguments": {"query": "a"}}]', 'no "name"'),
        ('[{"name": "Retrieve_memory", "arguments": "{\\"query\\": \\"a\\"}"}]', "a JSON string"),
        ('[{"name": "Retrieve_memory"}]', "got nothing"),
        ('[{"name": "Retrieve_memory", "arguments": {}, "type": "function"}]', "'type'"),
        ('["Retrieve_memory"]', "must be a JSON object"),
    ],
)
def test_agemem_badly_shaped_call_names_the_problem(body, needle):
    turn = parse_agemem(f"<think>x</think><tool_call>{body}</tool_call>")
    (call,) = turn.tool_calls
    assert call.arguments is None and needle in call.error


def test_agemem_one_bad_call_keeps_the_good_ones():
    turn = parse_agemem(
        '<think>x</think><tool_call>[{"name": "a", "arguments": {}}, {"name": "b"}]</tool_call>'
    )
    assert [c.error is None for c in turn.tool_calls] == [True, False]


@pytest.mark.parametrize(
    "text",
    [
        '<think>x</think><tool_call>[{"name": "Add_memory", "arguments": {"content": "a"}}]',
        "<think>x</think><answer>Paris",
        "<think>I am still thinking about <tool_call>",
    ],
)
def test_agemem_unclosed_tag_is_fatal(text):
    turn = parse_agemem(text)
    assert not turn.ok and "unclosed_tag" in codes(turn)
    assert turn.tool_calls == [] and turn.answer is None
    assert "never closed" in turn.error_text()


def test_agemem_answer_and_tool_call_is_fatal():
    turn = parse_agemem(
        '<think>x</think><tool_call>[{"name": "Add_memory", "arguments": {"content": "a"}}]'
        "</tool_call><answer>Paris</answer>"
    )
    assert not turn.ok and "answer_and_tool_call" in codes(turn)
    assert "never both" in turn.error_text()


@pytest.mark.parametrize("text", ["", "   \n  "])
def test_agemem_empty_output(text):
    turn = parse_agemem(text)
    assert not turn.ok and codes(turn) == ["empty"]


def test_agemem_no_action_and_plain_text():
    assert codes(parse_agemem("<think>hmm</think>")) == ["no_action"]
    turn = parse_agemem("The answer is Paris.")
    assert not turn.ok and turn.answer is None
    assert set(codes(turn)) == {"no_action", "text_outside_tags", "missing_think"}


def test_agemem_text_outside_tags_and_missing_think_are_soft():
    turn = parse_agemem("Sure! Here is my answer: <answer>Paris</answer>")
    assert turn.ok and turn.answer == "Paris"
    assert set(codes(turn)) == {"text_outside_tags", "missing_think"}
    assert all(not i.fatal for i in turn.issues)
    assert "Sure! Here is my answer:" in turn.issues[0].message


def test_agemem_two_answers_are_fatal():
    turn = parse_agemem("<think>x</think><answer>A</answer><answer>B</answer>")
    assert not turn.ok and "multiple_answers" in codes(turn)


def test_agemem_tags_inside_think_are_content():
    turn = parse_agemem(
        "<think>I could write <tool_call>[...]</tool_call> but I know it.</think><answer>7</answer>"
    )
    assert turn.ok and turn.tool_calls == [] and turn.answer == "7"


def test_agemem_completion_starting_inside_think():
    # Qwen3 chat templates put <think> in the prompt; the completion starts with the reasoning.
    turn = parse_agemem("I know this.\n</think>\n<answer>42</answer>")
    assert turn.ok and turn.think == "I know this." and turn.answer == "42" and turn.issues == []


def test_agemem_stray_closing_tag_and_several_blocks_are_soft():
    turn = parse_agemem(
        '<think>x</think><tool_call>[{"name": "a", "arguments": {}}]</tool_call></tool_call>'
        '<tool_call>[{"name": "b", "arguments": {}}]</tool_call>'
    )
    assert turn.ok and [c.name for c in turn.tool_calls] == ["a", "b"]
    assert set(codes(turn)) == {"stray_closing_tag", "multiple_tool_call_blocks"}


# --- Hermes / Qwen --------------------------------------------------------------------------

HERMES_TWO_CALLS = """<think>
Two lookups.
</think>

<tool_call>
{"name": "Retrieve_memory", "arguments": {"query": "Ann's birthday"}}
</tool_call>
<tool_call>
{"name": "Retrieve_memory", "arguments": {"query": "Ann's address"}}
</tool_call>"""


def test_hermes_several_tags():
    turn = parse_hermes(HERMES_TWO_CALLS)
    assert turn.ok and turn.issues == [] and turn.think == "Two lookups."
    assert [c.arguments["query"] for c in turn.tool_calls] == ["Ann's birthday", "Ann's address"]
    assert [c.id for c in turn.tool_calls] == ["call_0", "call_1"]


def test_hermes_plain_text_is_the_answer():
    turn = parse_hermes("<think>easy</think>\n\nThe capital of France is Paris.")
    assert turn.ok and turn.answer == "The capital of France is Paris." and turn.issues == []


def test_hermes_malformed_second_call():
    turn = parse_hermes(
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "b", "arguments": {"x": 1}</tool_call>'
    )
    assert turn.ok and turn.tool_calls[0].error is None
    assert turn.tool_calls[1].arguments is None and "not valid JSON" in turn.tool_calls[1].error


def test_hermes_preamble_and_array_are_soft():
    turn = parse_hermes(
        'Let me check.\n<tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]'
        "</tool_call>"
    )
    assert turn.ok and turn.answer is None and len(turn.tool_calls) == 2
    assert set(codes(turn)) == {"array_in_hermes", "text_outside_tags"}


def test_hermes_answer_tag_with_call_is_fatal():
    turn = parse_hermes(
        '<tool_call>{"name": "a", "arguments": {}}</tool_call><answer>done</answer>'
    )
    assert not turn.ok and "answer_and_tool_call" in codes(turn)


def test_hermes_empty_and_unclosed():
    assert codes(parse_hermes("")) == ["empty"]
    turn = parse_hermes('<tool_call>{"name": "a", "arguments": {}}')
    assert not turn.ok and codes(turn) == ["unclosed_tag"] and turn.answer is None


# --- OpenAI messages ------------------------------------------------------------------------


def openai_call(name, arguments, call_id="call_abc"):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_openai_tool_calls_with_reasoning():
    message = {
        "role": "assistant",
        "content": None,
        "reasoning_content": "Need two calls.",
        "tool_calls": [
            openai_call("Add_memory", '{"content": "Ann likes tea"}', "call_1"),
            openai_call("Retrieve_memory", {"query": "tea"}, "call_2"),
        ],
    }
    turn = parse_openai(message)
    assert turn.ok and turn.fmt == "openai" and turn.think == "Need two calls."
    assert [(c.id, c.name, c.arguments) for c in turn.tool_calls] == [
        ("call_1", "Add_memory", {"content": "Ann likes tea"}),
        ("call_2", "Retrieve_memory", {"query": "tea"}),
    ]
    assert turn.issues == []


def test_openai_malformed_arguments_keep_name_and_id():
    turn = parse_openai(
        {"role": "assistant", "tool_calls": [openai_call("Add_memory", '{"content": "a",}')]}
    )
    (call,) = turn.tool_calls
    assert (call.name, call.id, call.arguments) == ("Add_memory", "call_abc", None)
    assert "trailing comma" in call.error and call.raw == '{"content": "a",}'


def test_openai_arguments_not_an_object():
    turn = parse_openai({"role": "assistant", "tool_calls": [openai_call("a", '"text"')]})
    assert "must be a JSON object (got a JSON string)" in turn.tool_calls[0].error


def test_openai_content_only_is_the_answer_and_parts_are_joined():
    content = [{"type": "text", "text": "<think>x</think>"}, {"type": "text", "text": "Paris"}]
    turn = parse_openai({"role": "assistant", "content": content})
    assert turn.ok and turn.answer == "Paris" and turn.think == "x"


def test_openai_preamble_next_to_calls_is_not_an_answer():
    turn = parse_openai(
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [openai_call("Retrieve_memory", '{"query": "a"}')],
        }
    )
    assert turn.ok and turn.answer is None and codes(turn) == ["text_outside_tags"]


def test_openai_answer_tag_next_to_calls_is_fatal():
    turn = parse_openai(
        {
            "role": "assistant",
            "content": "<answer>Paris</answer>",
            "tool_calls": [openai_call("Retrieve_memory", '{"query": "a"}')],
        }
    )
    assert not turn.ok and "answer_and_tool_call" in codes(turn)


def test_openai_empty_message_and_missing_ids():
    assert codes(parse_openai({"role": "assistant", "content": None})) == ["empty"]
    call = {"type": "function", "function": {"name": "a", "arguments": "{}"}}
    turn = parse_openai({"role": "assistant", "tool_calls": [call, openai_call("b", "{}", "x")]})
    assert [c.id for c in turn.tool_calls] == ["call_0", "x"]


# --- AtomMem --------------------------------------------------------------------------------

ATOMMEM_STEP = """<update_memory>
1. Q1: Yulia's partner was Riccardo Cocchi until 2024.
</update_memory>
<update_query>dance partner; Yulia Zagoruychenko</update_query>
<add_memory>Riccardo Cocchi partners Emily in the 2025 season.</add_memory>
<modify_memory>Memory 1: Yulia's partner in 2025 is unknown.</modify_memory>
Entries 2 and 3 are duplicates. <delete_memory>Memory 3</delete_memory>"""


def test_atommem_several_ops_in_order():
    turn = parse_atommem(ATOMMEM_STEP)
    assert turn.ok and turn.answer is None
    assert [(c.name, c.arguments) for c in turn.tool_calls] == [
        (
            "scratchpad",
            {"content": "1. Q1: Yulia's partner was Riccardo Cocchi until 2024."},
        ),
        ("read", {"query": "dance partner; Yulia Zagoruychenko"}),
        ("create", {"content": "Riccardo Cocchi partners Emily in the 2025 season."}),
        ("update", {"index": 1, "content": "Yulia's partner in 2025 is unknown."}),
        ("delete", {"index": 3}),
    ]
    assert codes(turn) == ["text_outside_tags"] and turn.ok


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("<modify_memory>the first one: new text</modify_memory>", "Memory i: new text"),
        ("<modify_memory>Memory 2 new text</modify_memory>", "Memory i: new text"),
        ("<delete_memory>2</delete_memory>", "'Memory i'"),
    ],
)
def test_atommem_bad_index_op_is_a_call_error(text, needle):
    (call,) = parse_atommem(text).tool_calls
    assert call.arguments is None and needle in call.error


def test_atommem_answer_and_boxed():
    turn = parse_atommem("<final_answer>\\boxed{Riccardo Cocchi}</final_answer>")
    assert turn.ok and extract_boxed(turn.answer) == "Riccardo Cocchi"
    assert extract_boxed("no box") is None and extract_boxed("\\boxed{open") is None


def test_atommem_answer_with_operation_is_fatal():
    turn = parse_atommem("<add_memory>x</add_memory><final_answer>\\boxed{A}</final_answer>")
    assert not turn.ok and "answer_and_tool_call" in codes(turn)
    assert "<final_answer>" in turn.error_text()


def test_atommem_no_tags_and_unclosed():
    assert "no_action" in codes(parse_atommem("I will read on."))
    assert codes(parse_atommem("<add_memory>half a fact")) == ["unclosed_tag"]


# --- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "fmt"),
    [
        (AGEMEM_TWO_CALLS, "agemem"),
        ("<think>x</think><answer>1</answer>", "agemem"),
        (HERMES_TWO_CALLS, "hermes"),
        (ATOMMEM_STEP, "atommem"),
        ({"role": "assistant", "content": "hi"}, "openai"),
        (Turn(text="", tool_calls=[openai_call("a", "{}")]), "openai"),
        (Turn(text="<think>x</think><answer>1</answer>"), "agemem"),
    ],
)
def test_parse_turn_detects_the_format(output, fmt):
    assert parse_turn(output).fmt == fmt


def test_parse_turn_plain_text_is_agemem_without_action_unless_told_hermes():
    assert "no_action" in codes(parse_turn("Paris."))
    assert parse_turn("Paris.", fmt="hermes").answer == "Paris."
    assert parse_turn("Paris.", fmt="openai").answer == "Paris."


def test_parse_turn_rejects_bad_format_names():
    with pytest.raises(ValueError, match="unknown format"):
        parse_turn("x", fmt="xml")
    with pytest.raises(ValueError, match="OpenAI format"):
        parse_turn({"role": "assistant", "content": "x"}, fmt="agemem")


def test_atommem_tags_cover_every_operation():
    assert sorted(ATOMMEM_TAGS.values()) == ["create", "delete", "read", "scratchpad", "update"]
