"""The short-term memory (STM): the agent's context window and AgeMem's two operations on it.

Messages are OpenAI chat dicts (`role`, `content`, optionally `name`, `tool_calls`,
`tool_call_id`). Each is held with a `protected` flag: the system prompt and the current query are
appended protected, and neither `summary` nor `filter` ever removes a protected message.

Definitions chosen here (the paper leaves them open):
- A *round* is a user message plus the assistant and tool messages that follow it up to the next
  user message. System messages belong to no round, nor do messages before the first user message.
- `summary` puts its output in ONE `user` message starting with `SUMMARY_PREFIX`, at the position of
  the first message it replaced. `user`, as Letta does, because every chat template accepts a user
  message after the system prompt, while several reject a second system message or an assistant
  message right after the system prompt. Being a user message, a summary starts a round of its own.
- An assistant message carrying `tool_calls` and the tool messages right after it are removed
  together by `filter` (the group goes when any member reaches theta): chat APIs reject a tool
  result without its call and a call without its results.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from agemem.memory.embed import Embedder, library_embedder
from agemem.policy.base import Message
from agemem.summarize import SUMMARY_PREFIX, ExtractiveSummarizer, Summarizer
from agemem.tokens import ApproxTokenCounter, TokenCounter, message_text

ROLES = ("system", "user", "assistant", "tool")
DEFAULT_T_MAX = 8192  # AgeMem's context budget
DEFAULT_THETA = 0.6  # AgeMem's filter threshold; results are insensitive to it in [0.4, 0.8]
SUMMARY_ROLE = "user"


@dataclass(frozen=True)
class SummaryResult:
    removed: list[Message]
    summary: str  # the summarizer's text, without `SUMMARY_PREFIX`
    tokens_before: int
    tokens_after: int


@dataclass(frozen=True)
class FilteredMessage:
    message: Message
    similarity: float  # cosine similarity of this message to the criteria


@dataclass(frozen=True)
class FilterResult:
    removed: list[FilteredMessage]
    tokens_before: int
    tokens_after: int


class _Entry(BaseModel):
    message: Message
    protected: bool = False


ContextMark = tuple[_Entry, ...]  # what `Context.mark` returns and `Context.rewind` takes


class _Snapshot(BaseModel):
    """The saved form of a context (`to_json` / `from_json`)."""

    t_max: int
    entries: list[_Entry]


class Context:
    """The agent's context window: messages, token accounting against `t_max`, summary, filter.

    `token_counter` defaults to `ApproxTokenCounter` (pass `HFTokenCounter(tokenizer)` for exact
    counts), `embedder` to the shared `library_embedder()` (loaded at the first filter or summary),
    and `summarizer` to an `ExtractiveSummarizer` over that embedder.

    >>> ctx = Context(t_max=50)
    >>> ctx.append({"role": "system", "content": "You are helpful."}, protected=True)
    >>> ctx.append({"role": "user", "content": "What is the capital of France?"})
    >>> ctx.append({"role": "assistant", "content": "Paris."})
    >>> len(ctx.rounds()), ctx.overflow
    (1, False)
    """

    def __init__(
        self,
        t_max: int = DEFAULT_T_MAX,
        token_counter: TokenCounter | None = None,
        embedder: Embedder | None = None,
        summarizer: Summarizer | None = None,
    ) -> None:
        if isinstance(t_max, bool) or not isinstance(t_max, int) or t_max < 1:
            raise ValueError(f"t_max must be a positive number of tokens; got {t_max!r}")
        self.t_max = t_max
        self._counter = token_counter or ApproxTokenCounter()
        self._embedder = embedder
        self._summarizer = summarizer
        self._entries: list[_Entry] = []
        self._tokens: int | None = None  # cached count, cleared by every change
        self._vectors: dict[str, np.ndarray] = {}  # message text -> embedding, for `filter`

    # ---- reading -------------------------------------------------------------------------
    @property
    def messages(self) -> list[Message]:
        """A deep copy: editing it does not change the context."""
        return [copy.deepcopy(e.message) for e in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def tokens(self) -> int:
        if self._tokens is None:
            self._tokens = self._counter.count_messages([e.message for e in self._entries])
        return self._tokens

    @property
    def overflow(self) -> bool:
        return self.tokens() > self.t_max

    @property
    def headroom(self) -> int:
        """Tokens left before `t_max`; negative by the overflow amount when over it."""
        return self.t_max - self.tokens()

    def rounds(self) -> list[list[Message]]:
        """The rounds, oldest first (see the module docstring for the definition)."""
        return [[copy.deepcopy(self._entries[i].message) for i in r] for r in self._round_indices()]

    @property
    def token_counter(self) -> TokenCounter:
        """Read-only, like the embedder: the cached count and embeddings depend on them."""
        return self._counter

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = library_embedder()
        return self._embedder

    @property
    def summarizer(self) -> Summarizer:
        if self._summarizer is None:
            self._summarizer = ExtractiveSummarizer(self.embedder)
        return self._summarizer

    # ---- changing ------------------------------------------------------------------------
    def append(self, message: Message, *, protected: bool = False) -> None:
        if not isinstance(protected, bool):
            raise ValueError(f"protected must be True or False; got {protected!r}")
        self._commit([*self._entries, _Entry(message=_checked(message), protected=protected)])

    def unprotect_last(self) -> None:
        """Clear the protected flag of the latest protected message: the current query, or a
        world's current observation, once a newer one takes its place (call it only after
        appending something protected, or the system prompt is the one released).

        >>> ctx = Context(t_max=12)
        >>> ctx.append({"role": "user", "content": "one two three"}, protected=True)
        >>> ctx.unprotect_last()
        >>> ctx.append({"role": "user", "content": "four five six"}, protected=True)
        >>> ctx.append({"role": "user", "content": "seven eight nine"})
        >>> [m["content"] for m in ctx.drop_oldest()]
        ['one two three']
        """
        for i in range(len(self._entries) - 1, -1, -1):
            if self._entries[i].protected:
                entries = list(self._entries)
                entries[i] = _Entry(message=entries[i].message, protected=False)
                self._commit(entries)
                return

    def mark(self) -> ContextMark:
        """The context as it is now, for `rewind` (entries are replaced, never changed)."""
        return tuple(self._entries)

    def rewind(self, mark: ContextMark) -> None:
        """Return to the context `mark` saw, dropping whatever came since."""
        self._commit(list(mark))

    def reset(self, keep_system: bool = True) -> None:
        """Empty the context, keeping the system messages unless `keep_system` is False."""
        keep = [e for e in self._entries if keep_system and e.message["role"] == "system"]
        self._commit(keep)

    def drop_oldest(self) -> list[Message]:
        """Drop the oldest non-protected messages until the context fits `t_max` (a sliding
        window), never the latest message, and return what was dropped. A tool-calling
        assistant message goes with its tool results, as in `filter`. A context that its
        protected messages and its latest message alone put over `t_max` stays over it.

        >>> ctx = Context(t_max=12)
        >>> for text in ("one two three", "four five six", "seven eight nine"):
        ...     ctx.append({"role": "user", "content": text})
        >>> [m["content"] for m in ctx.drop_oldest()], ctx.overflow
        (['one two three'], False)
        """
        removed: list[Message] = []
        while self.overflow:
            units = self._removable_units()
            if units and units[-1][-1] == len(self._entries) - 1:
                units = units[:-1]  # the latest message stays
            if not units:
                break
            removed += [copy.deepcopy(self._entries[i].message) for i in units[0]]
            self._commit(self._without(set(units[0])))
        return removed

    def summary(self, span: str | int = "all") -> SummaryResult:
        """Replace the non-protected messages of the span with one summary message.

        `span` is "all" (every round) or "N" (the last N rounds; all of them when there are fewer).
        """
        n = _parse_span(span)
        rounds = self._round_indices()
        chosen = rounds if n is None else rounds[-n:]
        indices = [i for r in chosen for i in r if not self._entries[i].protected]
        if not indices:
            raise ValueError(
                f"nothing to summarize: span {span!r} holds no removable messages "
                "(protected messages such as the system prompt and the query are always kept)"
            )
        removed = [copy.deepcopy(self._entries[i].message) for i in indices]
        text = self.summarizer.summarize(copy.deepcopy(removed)).strip()
        if not text:
            raise ValueError("the summarizer returned an empty summary; the context is unchanged")
        before = self.tokens()
        note = _Entry(message={"role": SUMMARY_ROLE, "content": SUMMARY_PREFIX + text})
        self._commit(self._without(set(indices), insert=(indices[0], note)))
        return SummaryResult(removed, text, before, self.tokens())

    def filter(self, criteria: str, theta: float = DEFAULT_THETA) -> FilterResult:
        """Drop the non-protected messages whose cosine similarity to `criteria` is >= theta."""
        criteria, theta = _check_criteria(criteria), _check_theta(theta)
        before = self.tokens()
        units = self._removable_units()
        flat = [i for unit in units for i in unit]
        if not flat:
            return FilterResult([], before, before)
        similarity = dict(zip(flat, self._similarities(criteria, flat).tolist(), strict=True))
        dropped = [i for unit in units if max(similarity[i] for i in unit) >= theta for i in unit]
        removed = [
            FilteredMessage(copy.deepcopy(self._entries[i].message), similarity[i]) for i in dropped
        ]
        self._commit(self._without(set(dropped)))
        return FilterResult(removed, before, self.tokens())

    # ---- saving --------------------------------------------------------------------------
    def to_json(self) -> str:
        """The messages, their protected flags and t_max (not the counter/embedder/summarizer)."""
        return _Snapshot(t_max=self.t_max, entries=self._entries).model_dump_json()

    @classmethod
    def from_json(
        cls,
        text: str,
        *,
        token_counter: TokenCounter | None = None,
        embedder: Embedder | None = None,
        summarizer: Summarizer | None = None,
    ) -> Context:
        snapshot = _Snapshot.model_validate_json(text)
        context = cls(snapshot.t_max, token_counter, embedder, summarizer)
        for entry in snapshot.entries:
            context.append(entry.message, protected=entry.protected)
        return context

    # ---- internals -----------------------------------------------------------------------
    def _commit(self, entries: list[_Entry]) -> None:
        self._entries = entries
        self._tokens = None

    def _without(self, drop: set[int], insert: tuple[int, _Entry] | None = None) -> list[_Entry]:
        """The entries minus `drop`, with `insert` = (position, entry) placed before position."""
        out = []
        for i, entry in enumerate(self._entries):
            if insert is not None and i == insert[0]:
                out.append(insert[1])
            if i not in drop:
                out.append(entry)
        return out

    def _round_indices(self) -> list[list[int]]:
        rounds: list[list[int]] = []
        for i, entry in enumerate(self._entries):
            role = entry.message["role"]
            if role == "user":
                rounds.append([i])
            elif role != "system" and rounds:
                rounds[-1].append(i)
        return rounds

    def _removable_units(self) -> list[list[int]]:
        """Non-protected indices, grouped: a tool-calling assistant message with its results."""
        units: list[list[int]] = []
        for i, entry in enumerate(self._entries):
            if entry.protected:
                continue
            answers_call = (
                entry.message["role"] == "tool"
                and units
                and units[-1][-1] == i - 1
                and self._entries[units[-1][0]].message.get("tool_calls")
            )
            if answers_call:
                units[-1].append(i)
            else:
                units.append([i])
        return units

    def _similarities(self, criteria: str, indices: list[int]) -> np.ndarray:
        """Cosine similarities of the messages at `indices` to `criteria`.

        Message embeddings are cached by text (only for texts still in the context), so repeated
        filters embed just the criteria and the new messages.
        """
        texts = [message_text(self._entries[i].message) for i in indices]
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        vectors = self.embedder.embed([criteria, *missing])
        fresh = dict(zip(missing, vectors[1:], strict=True))
        self._vectors = {t: fresh[t] if t in fresh else self._vectors[t] for t in texts}
        return np.stack([self._vectors[t] for t in texts]) @ vectors[0]


def _checked(message: Any) -> Message:
    """A validated deep copy of an OpenAI chat message; ValueError naming the problem otherwise."""
    example = "{'role': 'user', 'content': 'Hello'}"
    if not isinstance(message, dict):
        raise ValueError(
            f"a message must be a dict such as {example}; got {type(message).__name__}"
        )
    if message.get("role") not in ROLES:
        raise ValueError(f"message role must be one of {ROLES}; got {message.get('role')!r}")
    content = message.get("content")
    if not (isinstance(content, str) or (content is None and message.get("tool_calls"))):
        raise ValueError(
            "message content must be a string (it may be None only beside tool_calls); "
            f"got {type(content).__name__}"
        )
    try:
        return json.loads(json.dumps(message))
    except (TypeError, ValueError) as e:
        raise ValueError(f"a message must be JSON-serializable: {e}") from None


def _parse_span(span: Any) -> int | None:
    """None for "all", else the number of last rounds."""
    problem = f"span must be 'all' or a positive number of last rounds such as '2'; got {span!r}"
    if isinstance(span, str) and span.strip().lower() == "all":
        return None
    if isinstance(span, str) and span.strip().isdecimal():
        span = int(span)
    if isinstance(span, bool) or not isinstance(span, int) or span < 1:
        raise ValueError(problem)
    return span


def _check_criteria(criteria: Any) -> str:
    if not isinstance(criteria, str) or not criteria.strip():
        raise ValueError(
            f"criteria must be a non-empty text describing the messages to drop; got {criteria!r}"
        )
    return criteria.strip()


def _check_theta(theta: Any) -> float:
    valid = isinstance(theta, numbers.Real) and not isinstance(theta, bool)
    if not valid or not math.isfinite(theta) or not 0.0 <= theta <= 1.0:
        raise ValueError(
            f"theta must be a number in [0, 1] (AgeMem uses {DEFAULT_THETA}); got {theta!r}"
        )
    return float(theta)
