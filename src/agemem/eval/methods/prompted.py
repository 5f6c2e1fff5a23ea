"""The prompt-only baselines: one model call per question, the prompt built by the method.

- `no-memory`: the task's messages as one transcript (stage-1 messages, then the distractors, as
  an AgeMem episode shows them), cut from the oldest end so that the prompt fits `t_max`.
- `full-context`: the same transcript whole, or cut only where it exceeds the model's window
  (`RunContext.model_context` less `reserve` tokens for the answer; no window known: whole),
  one cut per task so that all its questions share the transcript as a cached prefix.
- `rag`: every message goes into a fresh store (the store's hybrid BM25 + dense search, which
  measured best on LoCoMo evidence recall); each question retrieves its top-k messages, shown in
  rank order as a static context. No agent decides anything.

Choices (ours, the issue leaves them open): the answer prompt and reader are those of every
answering baseline (`answering`). Questions of all tasks are batched together,
`RunContext.batch_size` prompts per `act` call, and each question's latency is its share of its
batch's wall time (plus, for rag, its retrieval and its share of indexing its task).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from agemem.episode import (
    CallRecord,
    Episode,
    ParsedActions,
    StepSample,
    StoredMemory,
)
from agemem.eval.methods.answering import answer_messages, read_answer
from agemem.eval.methods.base import RunContext
from agemem.eval.methods.pipeline import blank_facts
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import NewMemory
from agemem.policy.base import Message
from agemem.tasks.base import Task, incoming_text

TRANSCRIPT = "Information"  # the header over the task's messages in the answer prompt


def task_lines(task: Task) -> list[str]:
    """The task's messages in episode order: stage-1 messages (with speaker and time), then
    the distractors."""
    return [incoming_text(m) for m in task.contextual] + list(task.distractors)


def fit_recent(lines: list[str], question: str, budget: int | None, ctx: RunContext) -> list[str]:
    """The most recent `lines` whose prompt fits `budget` tokens (all of them when None)."""
    if budget is None:
        return lines
    overhead = ctx.token_counter.count_messages(answer_messages(question, [], TRANSCRIPT))
    room, kept = budget - overhead, 0
    for line in reversed(lines):
        room -= ctx.token_counter.count_text(f"- {line}") + 1  # +1: the newline after it
        if room < 0:
            break
        kept += 1
    chosen = lines[len(lines) - kept :]
    while (
        chosen
        and ctx.token_counter.count_messages(answer_messages(question, chosen, TRANSCRIPT)) > budget
    ):
        chosen = chosen[1:]  # the per-line estimate missed the chat framing: drop one more
    return chosen


@dataclass
class _Job:
    """One question to ask: where its answer goes, its prompt, and time already spent on it."""

    episode: int
    question: int
    messages: list[Message]
    seconds: float = 0.0
    retrieved: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # operations run for it (tool-call tables)


class PromptedMethod:
    """Shared loop of the prompt-only baselines; subclasses build each question's prompt."""

    name = "prompted"
    max_new_tokens = 32  # answers are a few words (ours)

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> list[Episode]:
        episodes = [_empty_episode(task, self.name, ctx.t_max) for task in tasks]
        jobs = [job for i, task in enumerate(tasks) for job in self.jobs(i, task, ctx)]
        for start in range(0, len(jobs), ctx.batch_size):
            self._ask(jobs[start : start + ctx.batch_size], episodes, ctx)
        return episodes

    def jobs(self, index: int, task: Task, ctx: RunContext) -> list[_Job]:
        raise NotImplementedError

    def _ask(self, batch: list[_Job], episodes: list[Episode], ctx: RunContext) -> None:
        start = time.perf_counter()
        turns = ctx.policy.act([job.messages for job in batch])
        share = (time.perf_counter() - start) / len(batch)
        for job, turn in zip(batch, turns, strict=True):
            episode = episodes[job.episode]
            facts = episode.facts
            answer = read_answer(turn.text)
            tokens = ctx.token_counter.count_messages(job.messages)
            facts.answers[job.question] = answer
            facts.tokens_at_answer[job.question] = tokens
            facts.seconds[job.question] = job.seconds + share
            facts.retrieved_ids.extend(job.retrieved)
            facts.max_tokens = max(facts.max_tokens, tokens)
            episode.steps.append(
                StepSample(
                    turn=len(episode.steps),
                    stage=3,
                    messages=job.messages,
                    text=turn.text,
                    actions=ParsedActions(format="plain", answer=answer),
                    prompt_ids=list(turn.prompt_ids),
                    completion_ids=list(turn.completion_ids),
                    logprobs=list(turn.logprobs),
                    tokens=tokens,
                    finish_reason=turn.finish_reason,
                    question=job.question,
                )
            )
            facts.calls += [
                CallRecord(turn=len(episode.steps) - 1, stage=3, name=name, ok=True)
                for name in job.calls
            ]
            facts.rounds = len(episode.steps)
            facts.ended_by = "answered"


def _empty_episode(task: Task, method: str, t_max: int) -> Episode:
    facts = blank_facts(method, task, t_max)
    return Episode(task_id=task.id, group_id=task.id, family=task.family, steps=[], facts=facts)


class NoMemoryMethod(PromptedMethod):
    """The context only, truncated at `t_max` (oldest messages dropped first)."""

    name = "no-memory"

    def jobs(self, index: int, task: Task, ctx: RunContext) -> list[_Job]:
        lines = task_lines(task)
        return [
            _Job(
                index,
                q,
                answer_messages(
                    question.text, fit_recent(lines, question.text, ctx.t_max, ctx), TRANSCRIPT
                ),
            )
            for q, question in enumerate(task.questions)
        ]


class FullContextMethod(PromptedMethod):
    """Everything in the prompt, cut only where it exceeds the model's window."""

    name = "full-context"

    def __init__(self, *, reserve: int = 256) -> None:
        self.reserve = reserve  # tokens left free for the answer and the chat framing (ours)

    def jobs(self, index: int, task: Task, ctx: RunContext) -> list[_Job]:
        """One cut per task, made for its longest question, so every question's prompt starts
        with the same transcript: a prefix-caching policy computes its KV once per task, not
        once per question (LoCoMo: an 8k-token prefill per question is minutes on a CPU)."""
        budget = None if ctx.model_context is None else ctx.model_context - self.reserve
        longest = max((q.text for q in task.questions), key=ctx.token_counter.count_text)
        lines = fit_recent(task_lines(task), longest, budget, ctx)
        return [
            _Job(index, q, answer_messages(question.text, lines, TRANSCRIPT))
            for q, question in enumerate(task.questions)
        ]


class RagMethod(PromptedMethod):
    """Store every message; each question retrieves its top-k (`RunContext.top_k`)."""

    name = "rag"

    def jobs(self, index: int, task: Task, ctx: RunContext) -> list[_Job]:
        start = time.perf_counter()
        with SQLiteStore(":memory:", ctx.embedder) as store:
            results = store.add_many([NewMemory(line) for line in task_lines(task)], dedupe=False)
            self.stored[task.id] = [
                StoredMemory(id=r.item.id, content=r.item.content) for r in results
            ]
            indexing = (time.perf_counter() - start) / len(task.questions)
            jobs = []
            for q, question in enumerate(task.questions):
                t0 = time.perf_counter()
                items = store.search(question.text, top_k=ctx.top_k)
                seconds = indexing + time.perf_counter() - t0
                prompt = answer_messages(question.text, [i.content for i in items], "Retrieved")
                ids = [i.id for i in items]
                jobs.append(_Job(index, q, prompt, seconds, ids, ["rag/retrieve"]))
        return jobs

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> list[Episode]:
        self.stored: dict[str, list[StoredMemory]] = {}
        episodes = super().run(tasks, ctx)
        for episode in episodes:
            episode.facts.final_memories = self.stored.pop(episode.task_id, [])
        return episodes
