"""What both episode kinds share: the step result, and the recorder that turns each model turn
into a `StepSample` and keeps the episode's facts (calls, memory changes, overflow)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agemem.episode import (
    CallAction,
    CallRecord,
    Episode,
    EpisodeFacts,
    Issue,
    MemoryOp,
    Observation,
    OverflowEvent,
    ParsedActions,
    RetrievedMemory,
    StepSample,
    StoredMemory,
)
from agemem.memory.store import MemoryStore, Scope
from agemem.policy.base import Message, ToolSpec, Turn
from agemem.tasks.base import ContextMessage, Task
from agemem.tools.parse import ParsedTurn
from agemem.tools.registry import ToolResult


class EnvError(RuntimeError):
    """The environment was used out of order (e.g. `step` before `reset`); names the fix."""


@dataclass
class StepResult:
    """The whole next context (Summary/Filter may have rewritten it), whether the episode is
    over, and what happened (`stage`, `observations`, `answer`, `tokens`)."""

    context: list[Message]
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class View:
    """The context given to the model, waiting for its turn, and the record of what it shows:
    the state an expert reads instead of parsing the rendered text.

    `incoming`: the stage-1 message on show; `related`: the memories shown with it (the id the
    model sees, content); `note`: the stage-2 distractor on show; `question`: the question being
    worked on (stage 3, AtomMem answering); `retrieve_calls` / `retrieved`: how many of the
    agent's Retrieve_memory calls ran for it so far and what they returned; `chunk` /
    `chunk_text`: the AtomMem chunk being read, with `related` holding that step's numbered
    memories ("1", content) and `scratchpad` the scratchpad as it stands; `method`: the
    episode kind.
    """

    messages: list[Message]
    tokens: int
    stage: int
    question: int | None = None
    chunk: int | None = None
    task: Task | None = None
    incoming: ContextMessage | None = None
    related: list[tuple[str, str]] = field(default_factory=list)
    note: str | None = None
    retrieve_calls: int = 0
    retrieved: list[RetrievedMemory] = field(default_factory=list)
    chunk_text: str | None = None
    scratchpad: str | None = None
    method: str = "agemem"


@runtime_checkable
class Expert(Protocol):
    """Writes turns from the environment's records of the pending turns (`env.view`), one per
    view, in order: an actor that may know what a model must not (the oracle knows the gold).
    `run_episodes` and `drive` take one wherever they take a `Policy`."""

    def act_on(self, views: Sequence[View], tools: list[ToolSpec] | None = None) -> list[Turn]: ...


def parsed_actions(parsed: ParsedTurn) -> ParsedActions:
    return ParsedActions(
        format=parsed.fmt,
        think=parsed.think,
        tool_calls=[
            CallAction(id=c.id, name=c.name, arguments=c.arguments, error=c.error)
            for c in parsed.tool_calls
        ],
        answer=parsed.answer,
        issues=[Issue(code=i.code, message=i.message, fatal=i.fatal) for i in parsed.issues],
    )


def memory_snapshot(store: MemoryStore, scope: Scope) -> dict[str, str]:
    """id -> content of every entry in scope."""
    return {item.id: item.content for item in store.get_all(scope=scope)}


class Recorder:
    """Accumulates one episode: steps as the model saw them, and the facts."""

    def __init__(self, facts: EpisodeFacts) -> None:
        self.facts = facts
        self.steps: list[StepSample] = []
        self.view: View | None = None

    @property
    def turn(self) -> int:
        """Index of the next model turn."""
        return len(self.steps)

    def show(self, view: View, budget_checked: bool) -> None:
        """Remember what the model is given; an over-budget context is an overflow event."""
        self.view = view
        self.facts.max_tokens = max(self.facts.max_tokens, view.tokens)
        if budget_checked and view.tokens > self.facts.t_max:
            self.facts.overflows.append(
                OverflowEvent(turn=self.turn, stage=view.stage, tokens=view.tokens)
            )

    def step(self, turn: Turn, parsed: ParsedTurn, results: list[ToolResult]) -> StepSample:
        if self.view is None:
            raise EnvError("step() before reset(): call reset(task) first")
        view = self.view
        sample = StepSample(
            turn=self.turn,
            stage=view.stage,
            messages=view.messages,
            text=turn.text,
            actions=parsed_actions(parsed),
            observations=[
                Observation(call_id=r.call_id, name=r.name, content=r.content, error=r.error)
                for r in results
            ],
            prompt_ids=list(turn.prompt_ids),
            completion_ids=list(turn.completion_ids),
            logprobs=list(turn.logprobs),
            tokens=view.tokens,
            finish_reason=turn.finish_reason,
            question=view.question,
            chunk=view.chunk,
        )
        self.steps.append(sample)
        self.facts.rounds = len(self.steps)
        self.facts.format_errors += not parsed.ok
        self.view = None
        return sample

    def call(self, stage: int, result: ToolResult) -> None:
        self.facts.calls.append(
            CallRecord(
                turn=self.turn, stage=stage, name=result.name, ok=result.ok, error=result.error
            )
        )

    def memory_changes(
        self, stage: int, before: dict[str, str], after: dict[str, str], shown: Callable[[str], str]
    ) -> None:
        """Adds, updates and deletes between two snapshots; `shown` maps a store id to the id
        the model sees."""
        turn = self.turn
        for memory_id, content in after.items():
            if memory_id not in before:
                self.facts.adds.append(
                    MemoryOp(turn=turn, stage=stage, id=shown(memory_id), content=content)
                )
            elif before[memory_id] != content:
                self.facts.updates.append(
                    MemoryOp(
                        turn=turn,
                        stage=stage,
                        id=shown(memory_id),
                        content=content,
                        old_content=before[memory_id],
                    )
                )
        for memory_id, content in before.items():
            if memory_id not in after:
                self.facts.deletes.append(
                    MemoryOp(
                        turn=turn,
                        stage=stage,
                        id=shown(memory_id),
                        content=None,
                        old_content=content,
                    )
                )

    def retrieved(self, shown_id: str, content: str, question: int | None) -> None:
        """An entry the agent's Retrieve_memory returned at the current turn (`shown_id`: the id
        the model saw)."""
        self.facts.retrieved_ids.append(shown_id)
        self.facts.retrieved.append(
            RetrievedMemory(turn=self.turn, question=question, id=shown_id, content=content)
        )

    def final_memories(self, snapshot: dict[str, str], shown: Callable[[str], str]) -> None:
        self.facts.final_memories = [
            StoredMemory(id=shown(i), content=c) for i, c in snapshot.items()
        ]

    def episode(self, task_id: str, group_id: str, family: str) -> Episode:
        return Episode(
            task_id=task_id, group_id=group_id, family=family, steps=self.steps, facts=self.facts
        )
