"""The one task shape every source produces, and the registry behind `load_tasks`.

A `Task` carries AgeMem's three stages: `contextual` (stage 1, I_q, one message per turn),
`distractors` (stage 2) and `questions` (stage 3). AgeMem asks one question per task; LoCoMo and
AtomMem's long-context setting group several, so `questions` is a list and `query`/`answer` read
the first. Gold answers and supporting facts are for rewards and metrics, never for the agent.

Sources are registered by name; the built-in ones are imported only when first asked for, so
`load_tasks("synthetic", ...)` never reads HotpotQA or LoCoMo.
"""

from __future__ import annotations

import importlib
import inspect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError


class TaskError(ValueError):
    """Bad task data or a bad request for tasks; the message names the problem and the fix."""


class TaskDataMissing(TaskError, FileNotFoundError):
    """A data file a source needs is not on this machine; the message says where to get it."""


@dataclass(frozen=True)
class ContextMessage:
    """One stage-1 message. `id` names it for evidence (LoCoMo `D1:3`, a HotpotQA title...)."""

    content: str
    speaker: str | None = None
    timestamp: str | None = None  # as the source writes it (LoCoMo: "1:56 pm on 8 May, 2023")
    id: str | None = None


def incoming_text(message: ContextMessage) -> str:
    """A stage-1 message as the agent reads it: time and speaker first when the source has them
    (LoCoMo's questions ask who said what, and when).

    >>> incoming_text(ContextMessage("Hi!", speaker="Mel", timestamp="8 May 2023"))
    '[8 May 2023] Mel: Hi!'
    """
    text = f"{message.speaker}: {message.content}" if message.speaker else message.content
    return f"[{message.timestamp}] {text}" if message.timestamp else text


@dataclass(frozen=True)
class Question:
    """One stage-3 question. Any of `answers` counts as correct; `evidence` lists the ids of the
    `contextual` messages that support it. `adversarial_answer` is the wrong answer an
    adversarial question baits (LoCoMo category 5), kept so metrics can count who took the bait."""

    text: str
    answers: tuple[str, ...]
    category: str | None = None
    evidence: tuple[str, ...] = ()
    adversarial_answer: str | None = None

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise TaskError("a question has empty text; give the question to ask")
        if not self.answers or not all(a.strip() for a in self.answers):
            raise TaskError(f"question {self.text!r} has no (or an empty) answer; give >= 1 answer")


@dataclass(frozen=True)
class Task:
    """One episode's data: stage 1 `contextual`, stage 2 `distractors`, stage 3 `questions`."""

    id: str
    family: str
    contextual: list[ContextMessage]
    distractors: list[str]
    questions: list[Question]
    supporting_facts: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable values only

    def __post_init__(self) -> None:
        if not self.id:
            raise TaskError("a task has an empty id; give each task a unique id")
        if not self.questions:
            raise TaskError(f"task {self.id!r} has no questions; give at least one Question")

    @property
    def query(self) -> str:
        """The first question's text (AgeMem's q)."""
        return self.questions[0].text

    @property
    def answer(self) -> str:
        """The first question's first gold answer (AgeMem's A_q)."""
        return self.questions[0].answers[0]

    def to_dict(self) -> dict[str, Any]:
        return _TASK_ADAPTER.dump_python(self, mode="json")

    def to_json(self) -> str:
        return _TASK_ADAPTER.dump_json(self).decode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        return _validated(lambda: _TASK_ADAPTER.validate_python(data))

    @classmethod
    def from_json(cls, text: str | bytes) -> Task:
        return _validated(lambda: _TASK_ADAPTER.validate_json(text))


_TASK_ADAPTER = TypeAdapter(Task)


def _validated(parse: Callable[[], Task]) -> Task:
    """Turn pydantic's multi-line report into one line naming the first bad field."""
    try:
        return parse()
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise TaskError(
            f"invalid task data at {where}: {first['msg']} ({e.error_count()} error(s)); "
            "expected the shape Task.to_dict()/to_json() writes"
        ) from None


@dataclass(frozen=True)
class TaskSource:
    """A named family of tasks. `load(split=, limit=, seed=, **options)` returns the tasks;
    `splits[0]` is the default split. `seed=None` means the source's canonical order."""

    name: str
    splits: tuple[str, ...]
    load: Callable[..., list[Task]]


# Built-in sources: name -> module defining `SOURCE`; imported on first use.
_BUILTIN = {
    "synthetic": "agemem.tasks.synthetic",
    "hotpotqa": "agemem.tasks.hotpotqa",
    "hotpotqa-long": "agemem.tasks.hotpotqa_long",
    "locomo": "agemem.tasks.locomo",
}
_REGISTRY: dict[str, TaskSource] = {}
_COMMON = ("split", "limit", "seed")  # arguments every source's `load` takes


def register_source(source: TaskSource) -> None:
    """Make `source` loadable by name (replaces a source of the same name)."""
    _REGISTRY[source.name] = source


def available_sources() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_source(name: str) -> TaskSource:
    if name not in _REGISTRY and name in _BUILTIN:
        register_source(importlib.import_module(_BUILTIN[name]).SOURCE)
    if name not in _REGISTRY:
        raise TaskError(
            f"unknown task source {name!r}; choose one of {available_sources()} "
            "or register yours with register_source()"
        )
    return _REGISTRY[name]


def load_tasks(
    name: str,
    split: str | None = None,
    limit: int | None = None,
    seed: int | None = None,
    **options: Any,
) -> list[Task]:
    """Load tasks from a registered source, e.g. `load_tasks("hotpotqa", split="test")`.

    `split=None` takes the source's default; `limit` caps the count; `seed` picks a reproducible
    random sample/order (None: canonical order). `options` go to the source (e.g. `n_docs=400`).
    """
    source = get_source(name)
    split = split or source.splits[0]
    if split not in source.splits:
        raise TaskError(f"source {name!r} has no split {split!r}; use one of {source.splits}")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise TaskError(f"limit must be a non-negative int or None, got {limit!r}")
    try:
        inspect.signature(source.load).bind(split=split, limit=limit, seed=seed, **options)
    except TypeError:
        accepted = [p for p in inspect.signature(source.load).parameters if p not in _COMMON]
        raise TaskError(
            f"source {name!r} does not accept options {sorted(options)}; it accepts {accepted}"
        ) from None
    return source.load(split=split, limit=limit, seed=seed, **options)


T = TypeVar("T")


def select(items: Sequence[T], limit: int | None, seed: int | None) -> list[T]:
    """The shared `limit`/`seed` rule for finite sources: shuffle with `seed` (if any), then cut."""
    chosen = list(items)
    if seed is not None:
        random.Random(seed).shuffle(chosen)
    return chosen if limit is None else chosen[:limit]
