"""Summarizers: the LLM one through a scripted model, the extractive one on the real embedder."""

from __future__ import annotations

import pytest

from agemem.policy.base import Message, Policy, ToolSpec, Turn
from agemem.summarize import (
    ExtractiveSummarizer,
    LLMSummarizer,
    Summarizer,
    split_sentences,
    strip_think,
)


class ScriptedModel:
    """Test double of a language model (the model is outside the code under test): records the
    chats it is given and answers each with a fixed text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls: list[list[list[Message]]] = []

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        self.calls.append(contexts)
        return [Turn(text=self.text) for _ in contexts]


SPAN = [
    {"role": "user", "content": "Scott Derrickson was born in Denver. He directed Sinister."},
    {"role": "assistant", "content": "Noted: Derrickson, born in Denver, directed Sinister."},
]


def test_llm_summarizer_sends_the_messages_and_returns_the_text_without_think():
    model = ScriptedModel("<think>Two facts.</think>\nDerrickson: born Denver; directed Sinister.")
    summarizer = LLMSummarizer(model, max_words=50)
    assert isinstance(model, Policy) and isinstance(summarizer, Summarizer)

    assert summarizer.summarize(SPAN) == "Derrickson: born Denver; directed Sinister."
    (contexts,) = model.calls
    (prompt,) = contexts
    assert "at most 50 words" in prompt[0]["content"]
    assert "user: Scott Derrickson was born in Denver." in prompt[-1]["content"]
    assert "assistant: Noted: Derrickson" in prompt[-1]["content"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>a</think>b", "b"),
        ("b", "b"),
        ("<think>never closed", ""),
        ("x <think>1</think> y <think>2</think> z", "x  y  z"),
    ],
)
def test_strip_think(text, expected):
    assert strip_think(text) == expected


def test_split_sentences_on_punctuation_and_line_breaks():
    assert split_sentences("One. Two?  Three!\n\nFour") == ["One.", "Two?", "Three!", "Four"]
    assert split_sentences("  ") == []


def test_extractive_keeps_the_central_sentences_in_original_order(embedder):
    messages = [
        {"role": "user", "content": "Paris is the capital of France. My cat likes tuna."},
        {"role": "user", "content": "The Eiffel Tower stands in Paris, France."},
        {"role": "assistant", "content": "The Louvre museum is also in Paris."},
    ]
    summary = ExtractiveSummarizer(embedder, max_sentences=3).summarize(messages)
    assert summary.splitlines() == [
        "user: Paris is the capital of France.",
        "user: The Eiffel Tower stands in Paris, France.",
        "assistant: The Louvre museum is also in Paris.",
    ]


def test_extractive_without_embedder_keeps_first_sentences_of_the_latest_messages():
    messages = [
        {"role": "user", "content": "First one. Detail."},
        {"role": "assistant", "content": "Second one. Detail."},
        {"role": "user", "content": "Third one. Detail."},
    ]
    summary = ExtractiveSummarizer(max_sentences=2).summarize(messages)
    assert summary == "assistant: Second one.\nuser: Third one."


def test_extractive_of_messages_without_text_is_empty(embedder):
    assert ExtractiveSummarizer(embedder).summarize([{"role": "user", "content": ""}]) == ""


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "5"])
def test_sizes_must_be_positive_integers(bad):
    with pytest.raises(ValueError, match="max_words must be a positive integer"):
        LLMSummarizer(ScriptedModel("x"), max_words=bad)
    with pytest.raises(ValueError, match="max_sentences must be a positive integer"):
        ExtractiveSummarizer(max_sentences=bad)
