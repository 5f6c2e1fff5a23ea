"""Summarizers for AgeMem's Summary_context tool: messages in, one summary text out.

`LLMSummarizer` asks a model (any `Policy`), as the paper does. `ExtractiveSummarizer` is the
offline fallback for when no model should be called (tests, quickstart, CPU-only runs): it copies
sentences rather than rewriting them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from agemem.memory.embed import Embedder
from agemem.policy.base import Message, Policy
from agemem.tokens import message_text, render_messages


@runtime_checkable
class Summarizer(Protocol):
    def summarize(self, messages: Sequence[Message]) -> str:
        """A summary of `messages`; empty only when they hold no text."""
        ...


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


# The paper gives no summarization prompt; this one is ours. It asks to keep names, numbers and
# dates because AgeMem's preservation reward checks that the query's key entities survive.
SUMMARY_INSTRUCTION = (
    "Summarize the conversation below in at most {max_words} words. Keep every name, number, "
    "date and fact that a later question could depend on; drop greetings and repetition. "
    "Reply with the summary only."
)

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


def strip_think(text: str) -> str:
    """Drop `<think>...</think>` blocks (an unclosed one runs to the end of the text).

    >>> strip_think("<think>plan</think> Paris is the capital.")
    'Paris is the capital.'
    """
    return _THINK.sub("", text).strip()


class LLMSummarizer:
    """Summarizes with a model: one fixed prompt, one `policy.act` call, `<think>` removed."""

    def __init__(self, policy: Policy, max_words: int = 200) -> None:
        # 200 words: about a tenth of the ~2,100 prompt tokens of a HotpotQA episode in AgeMem.
        self.policy = policy
        self.max_words = _positive("max_words", max_words)

    def prompt(self, messages: Sequence[Message]) -> list[Message]:
        """The chat sent to the model: the instruction, then the transcript."""
        return [
            {"role": "system", "content": SUMMARY_INSTRUCTION.format(max_words=self.max_words)},
            {"role": "user", "content": render_messages(messages)},
        ]

    def summarize(self, messages: Sequence[Message]) -> str:
        (turn,) = self.policy.act([self.prompt(messages)])
        return strip_think(turn.text)


# Sentence ends: . ! ? followed by whitespace, or a line break. Simple on purpose; abbreviations
# such as "Dr. Smith" split early, which only shortens a kept sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """
    >>> split_sentences("Paris is big. It rains!\\nNew line")
    ['Paris is big.', 'It rains!', 'New line']
    """
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


SUMMARY_PREFIX = "[Summary of earlier context]\n"  # opens the message `Context.summary` writes


class ExtractiveSummarizer:
    """Offline fallback: keeps the span's most central sentences, verbatim, in original order.

    With an embedder, a sentence's score is its mean cosine similarity to all sentences of the span
    (the dot product with the mean vector), so sentences on the span's main thread win over
    asides. Without one, it keeps the first sentence of each message, most recent messages first
    when there are more than `max_sentences`. Each kept sentence is written as `role: sentence`;
    an earlier summary's lines are kept as they are (they are written so already).

    >>> earlier = {"role": "user", "content": SUMMARY_PREFIX + "user: It rains."}
    >>> print(ExtractiveSummarizer().summarize([earlier, {"role": "user", "content": "Go."}]))
    user: It rains.
    user: Go.
    """

    def __init__(self, embedder: Embedder | None = None, max_sentences: int = 8) -> None:
        # 8 sentences: roughly the 200-word budget of `LLMSummarizer` for prose.
        self.embedder = embedder
        self.max_sentences = _positive("max_sentences", max_sentences)

    def summarize(self, messages: Sequence[Message]) -> str:
        sentences: list[tuple[int, str, str]] = []
        for i, message in enumerate(messages):
            text = message_text(message)
            if text.startswith(SUMMARY_PREFIX):
                lines = text[len(SUMMARY_PREFIX) :].splitlines()
                sentences += [(i, "", line.strip()) for line in lines if line.strip()]
            else:
                sentences += [(i, message["role"], s) for s in split_sentences(text)]
        if not sentences:
            return ""
        if self.embedder is None:
            keep = self._leads(sentences)
        else:
            keep = self._central(self.embedder.embed([s for _, _, s in sentences]))
        kept = (sentences[k] for k in sorted(keep))
        return "\n".join(f"{role}: {s}" if role else s for _, role, s in kept)

    def _central(self, vectors: np.ndarray) -> list[int]:
        scores = vectors @ vectors.mean(axis=0)
        return [int(k) for k in np.argsort(-scores, kind="stable")[: self.max_sentences]]

    def _leads(self, sentences: list[tuple[int, str, str]]) -> list[int]:
        first: dict[int, int] = {}
        for k, (i, _, _) in enumerate(sentences):
            first.setdefault(i, k)
        return list(first.values())[-self.max_sentences :]
