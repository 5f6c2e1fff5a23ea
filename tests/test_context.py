"""The context window on real components: the real embedder, a real HF tokenizer and summarizers."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pytest
from transformers import AutoTokenizer

from agemem.context import SUMMARY_PREFIX, SUMMARY_ROLE, Context
from agemem.memory.embed import default_model_path
from agemem.policy.base import Message, ToolSpec, Turn
from agemem.summarize import LLMSummarizer
from agemem.tokens import HFTokenCounter

SYSTEM = {"role": "system", "content": "You answer questions using your memory tools."}
QUERY = {"role": "user", "content": "Which city hosted the 1889 World's Fair?"}
FOOTBALL = [  # distractors: cosine >= 0.64 to the criteria below with all-MiniLM-L6-v2
    {"role": "user", "content": "The football match ended 3-1 after two late goals."},
    {"role": "user", "content": "Football fans celebrated the goals scored in the match."},
    {"role": "user", "content": "The football striker scored two goals in the match."},
]
OTHER = [  # unrelated: cosine <= 0.16 to the criteria
    {"role": "user", "content": "Photosynthesis turns sunlight and water into glucose."},
    {"role": "user", "content": "The Eiffel Tower in Paris was completed in 1889."},
    {"role": "user", "content": "Let sourdough rise overnight, then bake it at 230 degrees."},
]
CRITERIA = "goals scored in football matches"


def fact(k: int) -> str:
    return f"Fact {k}: the vault code is {k}{k}{k}. The vault is in the basement. Keep it secret."


def note(k: int) -> str:
    return f"Noted fact {k}. I will remember the code."


def reply(text: str) -> Message:
    return {"role": "assistant", "content": text}


class CountingEmbedder:
    """The real embedder, wrapped to record which texts it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.seen: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.append(list(texts))
        return self.inner.embed(texts)


class ScriptedModel:
    """Test double of a language model (outside the code under test): records the chats it gets
    and answers with a fixed text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls: list[list[list[Message]]] = []

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        self.calls.append(contexts)
        return [Turn(text=self.text) for _ in contexts]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture
def ctx(embedder) -> Context:
    """System prompt, three rounds (u1/a1, u2/a2, u3/a3), then the protected query."""
    context = Context(embedder=embedder)
    context.append(SYSTEM, protected=True)
    for k in (1, 2, 3):
        context.append({"role": "user", "content": fact(k)})
        context.append(reply(note(k)))
    context.append(QUERY, protected=True)
    return context


@pytest.fixture
def distracted(embedder) -> Context:
    context = Context(embedder=embedder)
    context.append(SYSTEM, protected=True)
    for a, b in zip(FOOTBALL, OTHER, strict=True):
        context.append(a)
        context.append(b)
    context.append(QUERY, protected=True)
    return context


# ---- tokens and overflow -----------------------------------------------------------------------
def test_overflow_is_detected_as_messages_are_appended(tokenizer):
    counter = HFTokenCounter(tokenizer)
    context = Context(t_max=40, token_counter=counter)
    context.append(SYSTEM, protected=True)
    seen = []
    for k in range(6):
        context.append({"role": "user", "content": f"Message number {k} about the weather."})
        expected = counter.count_messages(context.messages)
        assert context.tokens() == expected
        assert context.headroom == 40 - expected
        assert context.overflow == (expected > 40)
        seen.append(context.overflow)
    assert seen[0] is False and seen[-1] is True
    assert seen == sorted(seen)  # once over, it stays over while messages only arrive


def test_token_count_is_the_tokenizers_own(tokenizer):
    context = Context(token_counter=HFTokenCounter(tokenizer))
    for message in (SYSTEM, *FOOTBALL, QUERY):
        context.append(message)
    rendered = "\n".join(f"{m['role']}: {m['content']}" for m in (SYSTEM, *FOOTBALL, QUERY))
    assert context.tokens() == len(tokenizer.tokenize(rendered))


def test_token_count_follows_the_chat_template(tokenizer):
    templated = copy.deepcopy(tokenizer)
    templated.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    context = Context(token_counter=HFTokenCounter(templated))
    context.append(QUERY)
    expected = templated.apply_chat_template([QUERY], tokenize=True, return_dict=True)
    assert context.tokens() == len(expected["input_ids"])


# ---- messages and rounds -----------------------------------------------------------------------
def test_messages_is_a_copy(ctx):
    messages = ctx.messages
    messages[0]["content"] = "changed"
    messages.clear()
    assert ctx.messages[0] == SYSTEM and len(ctx) == 8


def test_appended_message_is_copied(embedder):
    message = {"role": "user", "content": "original"}
    context = Context(embedder=embedder)
    context.append(message)
    message["content"] = "changed"
    assert context.messages == [{"role": "user", "content": "original"}]


def test_rounds_start_at_user_messages_and_skip_system_ones():
    context = Context()
    context.append(reply("before any user message"))
    context.append(SYSTEM)
    context.append({"role": "user", "content": "q1"})
    context.append(reply("a1"))
    context.append({"role": "system", "content": "retrieved memory"})
    context.append({"role": "tool", "content": "t1", "tool_call_id": "c1"})
    context.append({"role": "user", "content": "q2"})
    assert [[m["content"] for m in r] for r in context.rounds()] == [["q1", "a1", "t1"], ["q2"]]


def test_reset_keeps_system_messages_only_when_asked(ctx):
    ctx.reset()
    assert ctx.messages == [SYSTEM] and ctx.rounds() == []
    ctx.reset(keep_system=False)
    assert ctx.messages == [] and ctx.tokens() == 0


# ---- summary -----------------------------------------------------------------------------------
def test_summary_all_replaces_every_round_but_keeps_protected(ctx):
    before = ctx.tokens()
    result = ctx.summary("all")
    assert [m["content"] for m in result.removed] == [
        fact(1),
        note(1),
        fact(2),
        note(2),
        fact(3),
        note(3),
    ]
    system, summary, query = ctx.messages
    assert system == SYSTEM and query == QUERY
    assert summary == {"role": SUMMARY_ROLE, "content": SUMMARY_PREFIX + result.summary}
    assert "vault code" in result.summary
    assert (result.tokens_before, result.tokens_after) == (before, ctx.tokens())
    assert result.tokens_after < result.tokens_before


def test_summary_of_last_two_rounds(ctx):
    result = ctx.summary("2")
    # the last two rounds are (u3, a3) and the protected query's round, which has nothing removable
    assert [m["content"] for m in result.removed] == [fact(3), note(3)]
    contents = [m["content"] for m in ctx.messages]
    assert contents[:5] == [SYSTEM["content"], fact(1), note(1), fact(2), note(2)]
    assert contents[5].startswith(SUMMARY_PREFIX) and "333" in contents[5]
    assert contents[6] == QUERY["content"]


def test_summary_span_as_int_and_larger_than_the_rounds(ctx, embedder):
    other = Context.from_json(ctx.to_json(), embedder=embedder)
    assert len(ctx.summary(2).removed) == 2
    assert len(other.summary("10").removed) == 6  # more rounds asked than exist: all of them


def test_summary_with_an_llm_summarizer_puts_its_text_in_the_context(ctx):
    model = ScriptedModel("<think>Three codes.</think>The vault codes were 111, 222 and 333.")
    context = Context.from_json(ctx.to_json(), summarizer=LLMSummarizer(model))
    result = context.summary("all")
    (contexts,) = model.calls
    transcript = contexts[0][-1]["content"]
    for k in (1, 2, 3):
        assert f"user: {fact(k)}" in transcript
        assert f"assistant: {note(k)}" in transcript
    assert QUERY["content"] not in transcript and SYSTEM["content"] not in transcript
    assert result.summary == "The vault codes were 111, 222 and 333."
    assert context.messages == [
        SYSTEM,
        {"role": "user", "content": SUMMARY_PREFIX + "The vault codes were 111, 222 and 333."},
        QUERY,
    ]


def test_summary_of_nothing_is_an_error(embedder):
    context = Context(embedder=embedder)
    context.append(SYSTEM, protected=True)
    context.append(QUERY, protected=True)
    with pytest.raises(ValueError, match="nothing to summarize"):
        context.summary("all")
    assert context.messages == [SYSTEM, QUERY]


def test_empty_summary_leaves_the_context_unchanged(ctx):
    saved = ctx.to_json()
    context = Context.from_json(saved, summarizer=LLMSummarizer(ScriptedModel("<think>hm")))
    with pytest.raises(ValueError, match="empty summary"):
        context.summary("all")
    assert context.to_json() == saved


@pytest.mark.parametrize("span", ["abc", "0", "-1", "", "2.5", 0, -2, 1.5, True, None])
def test_invalid_span_is_rejected_and_changes_nothing(ctx, span):
    saved = ctx.to_json()
    with pytest.raises(ValueError, match=r"span must be 'all' or a positive number"):
        ctx.summary(span)
    assert ctx.to_json() == saved


# ---- filter ------------------------------------------------------------------------------------
def test_filter_drops_the_distractors_and_keeps_the_rest(distracted):
    before = distracted.tokens()
    result = distracted.filter(CRITERIA)
    assert [r.message for r in result.removed] == FOOTBALL
    assert all(r.similarity >= 0.6 for r in result.removed)
    assert distracted.messages == [SYSTEM, *OTHER, QUERY]
    assert (result.tokens_before, result.tokens_after) == (before, distracted.tokens())
    assert result.tokens_after < before


def test_filter_never_drops_protected_messages(embedder):
    context = Context(embedder=embedder)
    question = {"role": "user", "content": "How many goals did the striker score in the match?"}
    context.append(question, protected=True)
    context.append(FOOTBALL[2])
    result = context.filter(CRITERIA, theta=0.0)
    assert [r.message for r in result.removed] == [FOOTBALL[2]]
    assert context.messages == [question]


def test_filter_result_is_the_same_across_the_papers_theta_range(distracted, embedder):
    twin = Context.from_json(distracted.to_json(), embedder=embedder)
    low = distracted.filter(CRITERIA, theta=0.4)
    mid = twin.filter(CRITERIA, theta=0.6)
    assert [r.message for r in low.removed] == [r.message for r in mid.removed] == FOOTBALL


def test_theta_boundaries(distracted, embedder):
    saved = distracted.to_json()
    everything = Context.from_json(saved, embedder=embedder).filter(CRITERIA, theta=0.0)
    # theta 0 drops every non-negative similarity: only the baking tip is below 0
    assert [r.message for r in everything.removed] == [
        FOOTBALL[0],
        OTHER[0],
        FOOTBALL[1],
        OTHER[1],
        FOOTBALL[2],
    ]
    assert Context.from_json(saved, embedder=embedder).filter(CRITERIA, theta=1.0).removed == []

    sims = {r.message["content"]: r.similarity for r in everything.removed}
    edge = sims[FOOTBALL[0]["content"]]
    at = Context.from_json(saved, embedder=embedder).filter(CRITERIA, theta=edge)
    assert FOOTBALL[0] in [r.message for r in at.removed]  # similarity == theta: dropped
    above = Context.from_json(saved, embedder=embedder).filter(
        CRITERIA, theta=float(np.nextafter(edge, 1.0))
    )
    assert FOOTBALL[0] not in [r.message for r in above.removed]


def test_filter_removes_a_tool_call_with_its_result(embedder):
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "Retrieve_memory", "arguments": "{}"},
    }
    context = Context(embedder=embedder)
    context.append(SYSTEM, protected=True)
    context.append({"role": "assistant", "content": None, "tool_calls": [call]})
    context.append({"role": "tool", "tool_call_id": "c1", "content": FOOTBALL[2]["content"]})
    context.append(OTHER[1])
    result = context.filter(CRITERIA)
    assert [r.message["role"] for r in result.removed] == ["assistant", "tool"]
    assert result.removed[0].similarity < 0.6 <= result.removed[1].similarity
    assert context.messages == [SYSTEM, OTHER[1]]


def test_repeated_filters_embed_only_new_texts(embedder):
    counting = CountingEmbedder(embedder)
    context = Context(embedder=counting)
    for message in OTHER:
        context.append(message)
    context.filter(CRITERIA)
    assert counting.seen[-1] == [CRITERIA] + [m["content"] for m in OTHER]
    context.filter("baking bread")
    assert counting.seen[-1] == ["baking bread"]  # removed the baking tip, embedded no message
    context.append(FOOTBALL[0])
    context.filter(CRITERIA)
    assert counting.seen[-1] == [CRITERIA, FOOTBALL[0]["content"]]


def test_filter_with_nothing_removable_embeds_nothing(embedder):
    counting = CountingEmbedder(embedder)
    context = Context(embedder=counting)
    context.append(QUERY, protected=True)
    result = context.filter(CRITERIA)
    assert result.removed == [] and counting.seen == [] and context.messages == [QUERY]


@pytest.mark.parametrize(
    ("criteria", "theta", "problem"),
    [
        ("", 0.6, "criteria must be a non-empty text"),
        ("   ", 0.6, "criteria must be a non-empty text"),
        (None, 0.6, "criteria must be a non-empty text"),
        (CRITERIA, -0.1, r"theta must be a number in \[0, 1\]"),
        (CRITERIA, 1.5, r"theta must be a number in \[0, 1\]"),
        (CRITERIA, float("nan"), r"theta must be a number in \[0, 1\]"),
        (CRITERIA, "0.6", r"theta must be a number in \[0, 1\]"),
        (CRITERIA, True, r"theta must be a number in \[0, 1\]"),
    ],
)
def test_invalid_filter_arguments_change_nothing(distracted, criteria, theta, problem):
    saved = distracted.to_json()
    with pytest.raises(ValueError, match=problem):
        distracted.filter(criteria, theta)
    assert distracted.to_json() == saved


# ---- validation and saving ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ("hello", "must be a dict"),
        ({"role": "bot", "content": "hi"}, "role must be one of"),
        ({"content": "hi"}, "role must be one of"),
        ({"role": "user", "content": 5}, "content must be a string"),
        ({"role": "user"}, "content must be a string"),
        ({"role": "user", "content": "hi", "extra": object()}, "JSON-serializable"),
    ],
)
def test_invalid_messages_are_rejected_and_change_nothing(ctx, message, problem):
    saved = ctx.to_json()
    with pytest.raises(ValueError, match=problem):
        ctx.append(message)
    assert ctx.to_json() == saved


def test_protected_must_be_a_bool(ctx):
    with pytest.raises(ValueError, match="protected must be True or False"):
        ctx.append(QUERY, protected="yes")


@pytest.mark.parametrize("t_max", [0, -5, 8192.0, True])
def test_t_max_must_be_a_positive_int(t_max):
    with pytest.raises(ValueError, match="t_max must be a positive number of tokens"):
        Context(t_max=t_max)


def test_json_round_trip_keeps_messages_flags_and_budget(ctx, embedder):
    ctx.t_max = 1234
    restored = Context.from_json(ctx.to_json(), embedder=embedder)
    assert restored.messages == ctx.messages and restored.t_max == 1234
    restored.summary("all")  # protected flags survived: system prompt and query are kept
    assert restored.messages[0] == SYSTEM and restored.messages[-1] == QUERY


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"entries": []}',
        '{"t_max": 0, "entries": []}',
        '{"t_max": 10, "entries": [{"message": {"role": "bot", "content": "x"}}]}',
    ],
)
def test_from_json_rejects_bad_records(text):
    with pytest.raises(ValueError):
        Context.from_json(text)
