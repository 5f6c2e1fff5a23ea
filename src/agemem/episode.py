"""Episode records: what every trainer and evaluator consumes, and their JSONL files.

An `Episode` holds one `StepSample` per model turn (the exact context the model saw, its raw
output, the parsed actions, the observations, token ids and per-token logprobs, the stage) and the
`EpisodeFacts` the reward is computed from (rounds, overflow events, tokens at answer time, answers,
tool calls, memory operations with ids, retrieved ids, gold answers).

File format (`save_episodes` / `load_episodes`): JSON Lines, one episode per line. Inside a line,
each step stores its context and prompt ids as a delta against the step before it
(`messages_shared` leading messages and `prompt_ids_shared` leading ids are the previous step's;
`messages_new` / `prompt_ids_new` follow), because consecutive contexts mostly repeat: this keeps
files several times smaller while loading restores every step's exact context. Loading validates
each line and raises `EpisodeFileError` naming the file and the line.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agemem.policy.base import Message
from agemem.tokens import common_prefix_length

FORMAT_VERSION = 1
EndReason = Literal["answered", "n_max", "turn_cap"]  # why the episode ended


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CallAction(_Record):
    """One tool call as parsed from the model's output (`error` when it could not be read)."""

    id: str
    name: str
    arguments: dict[str, Any] | None
    error: str | None = None


class Issue(_Record):
    code: str
    message: str
    fatal: bool


class ParsedActions(_Record):
    """The parsed turn: reasoning, tool calls, answer, and format issues."""

    format: str
    think: str | None = None
    tool_calls: list[CallAction] = Field(default_factory=list)
    answer: str | None = None
    issues: list[Issue] = Field(default_factory=list)


class Observation(_Record):
    """What one call returned to the model (`error` names the check that refused it)."""

    call_id: str
    name: str
    content: str
    error: str | None = None


class StepSample(_Record):
    """One model turn, the unit a step-wise trainer learns from.

    `messages` is exactly what the model was given; `tokens` its size by the episode's counter;
    `question` the index of the question being worked on (stage 3 / AtomMem answering), `chunk`
    the AtomMem chunk index being read.
    """

    turn: int
    stage: int
    messages: list[Message]
    text: str
    actions: ParsedActions
    observations: list[Observation] = Field(default_factory=list)
    prompt_ids: list[int] = Field(default_factory=list)
    completion_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] = Field(default_factory=list)
    tokens: int
    finish_reason: str | None = None
    question: int | None = None
    chunk: int | None = None


class GoldQuestion(_Record):
    text: str
    answers: list[str]
    category: str | None = None


class CallRecord(_Record):
    """One requested call and its outcome, in episode order."""

    turn: int
    stage: int
    name: str
    ok: bool
    error: str | None = None


class MemoryOp(_Record):
    """A change to the long-term store. `id` is the id the model saw (an alias when the episode
    shows short ids); `old_content` is set for updates and deletes."""

    turn: int
    stage: int
    id: str
    content: str | None
    old_content: str | None = None


class OverflowEvent(_Record):
    """A context over budget given to the model at `turn` (overflow is recorded, not truncated)."""

    turn: int
    stage: int
    tokens: int


class StoredMemory(_Record):
    id: str
    content: str


class RetrievedMemory(_Record):
    """An entry the agent's own Retrieve_memory returned: at which turn, for which question
    (stage 3), with the id the model saw and its content then."""

    turn: int
    question: int | None = None
    id: str
    content: str


class EpisodeFacts(_Record):
    """The raw facts a reward is computed from; nothing here is a score."""

    method: str  # "agemem", "atommem", or an evaluated baseline ("rag", "mem0-style", ...)
    questions: list[GoldQuestion]
    answers: list[str | None]  # one per question; None = not answered
    tokens_at_answer: list[int | None]  # context tokens of the step that gave each answer
    rounds: int = 0  # model turns used
    n_max: int | None = None
    t_max: int  # the budget the context is measured against (system prompt included)
    system_tokens: int = 0
    ended_by: EndReason | None = None
    overflows: list[OverflowEvent] = Field(default_factory=list)
    max_tokens: int = 0  # the largest context given to the model
    format_errors: int = 0  # turns with a fatal format issue (nothing of them was run)
    calls: list[CallRecord] = Field(default_factory=list)
    adds: list[MemoryOp] = Field(default_factory=list)
    updates: list[MemoryOp] = Field(default_factory=list)
    deletes: list[MemoryOp] = Field(default_factory=list)
    retrieved_ids: list[str] = Field(default_factory=list)  # by the agent's own retrievals
    retrieved: list[RetrievedMemory] = Field(default_factory=list)  # the same, with contents
    auto_retrieved_ids: list[str] = Field(default_factory=list)  # shown by the system (stage 1)
    final_memories: list[StoredMemory] = Field(default_factory=list)
    chunks_total: int | None = None  # AtomMem
    chunks_read: int | None = None  # AtomMem
    scratchpad: str | None = None  # AtomMem, at the end
    seconds: list[float] = Field(default_factory=list)  # wall time per question (evaluation)

    @property
    def answered(self) -> bool:
        """Every question got an answer."""
        return bool(self.answers) and all(a is not None for a in self.answers)

    @property
    def overflowed(self) -> bool:
        return bool(self.overflows)

    def tool_counts(self) -> dict[str, int]:
        """Calls that ran, per tool."""
        return dict(Counter(c.name for c in self.calls if c.ok))

    def failed_counts(self) -> dict[str, int]:
        """Refused calls, per error kind (format, unknown_tool, arguments, rejected, ...)."""
        return dict(Counter(c.error or "" for c in self.calls if not c.ok))


class Episode(_Record):
    task_id: str
    group_id: str
    family: str
    steps: list[StepSample]
    facts: EpisodeFacts
    reward: dict[str, float] = Field(default_factory=dict)

    def correct(self) -> list[bool]:
        """Per question: the answer matches a gold answer after SQuAD normalisation."""
        return [
            answer is not None and exact_match(answer, q.answers)
            for answer, q in zip(self.facts.answers, self.facts.questions, strict=True)
        ]

    def to_line(self) -> str:
        """One JSONL line (steps delta-encoded, fields at their default left out)."""
        data = self.model_dump(mode="json", exclude={"steps"}, exclude_defaults=True)
        data["format"] = FORMAT_VERSION
        data["steps"] = _encode_steps(self.steps)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_line(cls, line: str) -> Episode:
        """Parse one line; `ValueError` with a one-line reason when it is not a valid episode."""
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"not JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        if data.pop("format", None) != FORMAT_VERSION:
            raise ValueError(f"not an agemem episode (format {FORMAT_VERSION} expected)")
        data["steps"] = _decode_steps(data.get("steps"))
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ValueError(_first_problem(err)) from None


# ---- delta encoding ------------------------------------------------------------------------


def _encode_steps(steps: list[StepSample]) -> list[dict[str, Any]]:
    out, prev = [], None
    for step in steps:
        data = step.model_dump(
            mode="json", exclude={"messages", "prompt_ids"}, exclude_defaults=True
        )
        m_shared = common_prefix_length(prev.messages, step.messages) if prev else 0
        p_shared = common_prefix_length(prev.prompt_ids, step.prompt_ids) if prev else 0
        data |= {
            "messages_shared": m_shared,
            "messages_new": step.messages[m_shared:],
            "prompt_ids_shared": p_shared,
            "prompt_ids_new": step.prompt_ids[p_shared:],
        }
        out.append(data)
        prev = step
    return out


def _decode_steps(steps: Any) -> Any:
    if not isinstance(steps, list):
        return steps  # validation reports it
    prev_messages: list[Any] = []
    prev_ids: list[Any] = []
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise ValueError(f"steps.{i}: expected an object")
        step = dict(step)
        messages = _undelta(step, "messages", prev_messages, i)
        prompt_ids = _undelta(step, "prompt_ids", prev_ids, i)
        step |= {"messages": messages, "prompt_ids": prompt_ids}
        out.append(step)
        prev_messages, prev_ids = messages, prompt_ids
    return out


def _undelta(step: dict[str, Any], key: str, previous: list[Any], index: int) -> list[Any]:
    shared, new = step.pop(f"{key}_shared", None), step.pop(f"{key}_new", None)
    if not isinstance(shared, int) or not isinstance(new, list):
        raise ValueError(f"steps.{index}: {key}_shared (int) and {key}_new (list) are required")
    if not 0 <= shared <= len(previous):
        raise ValueError(
            f"steps.{index}: {key}_shared={shared} but the previous step has {len(previous)}"
        )
    return previous[:shared] + new


def _first_problem(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    return f"{where}: {first['msg']} ({err.error_count()} problem(s))"


# ---- files ---------------------------------------------------------------------------------


class EpisodeFileError(ValueError):
    """A line of an episode file is not a valid episode; the message names file and line."""


def save_episodes(episodes: Iterable[Episode], path: str | Path, *, append: bool = False) -> int:
    """Write episodes as JSONL (one per line); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("a" if append else "w", encoding="utf-8") as f:
        for episode in episodes:
            f.write(episode.to_line() + "\n")
            n += 1
    return n


def load_episodes(path: str | Path) -> list[Episode]:
    """Read a JSONL episode file; blank lines are skipped."""
    path = Path(path)
    if path.is_dir():
        raise EpisodeFileError(f"{path} is a directory; pass an episode .jsonl file inside it")
    if not path.is_file():
        raise EpisodeFileError(f"{path}: no such file; write one with save_episodes()")
    episodes = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise EpisodeFileError(
                    f"{path}:{number}: not UTF-8 text (byte {err.start}); pass an episode "
                    "file written by agemem (episodes.jsonl)"
                ) from None
            if not line.strip():
                continue
            try:
                episodes.append(Episode.from_line(line))
            except ValueError as err:
                raise EpisodeFileError(f"{path}:{number}: {err}") from None
            except (RecursionError, TypeError, KeyError, AttributeError, IndexError) as err:
                raise EpisodeFileError(
                    f"{path}:{number}: not an agemem episode ({type(err).__name__})"
                ) from None
    return episodes


# ---- answer matching -----------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces.

    >>> normalize_answer("The  Eiffel-Tower.")
    'eiffeltower'
    """
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match(answer: str, golds: Iterable[str]) -> bool:
    """
    >>> exact_match("rome .", ["Rome"])
    True
    """
    norm = normalize_answer(answer)
    return any(norm == normalize_answer(g) for g in golds)
