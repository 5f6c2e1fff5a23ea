"""What the LLM-pipeline baselines (mem0-style, a-mem-style) share: the message stream they
ingest, prompts cut to the budget, the episode record, and the answer step.

- Stream: every method sees the same messages: stage 1 the task's contextual messages as the
  agent reads them (`incoming_text`: time and speaker first), then stage 2 its distractors.
- Budget: a prompt that holds a list of items (recent messages, memories, neighbours) drops the
  last, least relevant ones until it fits `t_max`; one still over budget is sent whole and
  recorded as an `OverflowEvent`.
- Record: one `StepSample` per model call (the exact prompt, the raw output, what was read from
  it), one `CallRecord` per memory operation or failed model output, and the store at the end.
- Evidence: every stored entry keeps the ids of the contextual messages it came from in its
  metadata under `EVIDENCE_KEY`. Each answer step carries one `retrieved` observation listing
  the entries shown for that question with their evidence ids; `retrieved_evidence(episode)`
  reads them back per question (LoCoMo's evidence recall), and `facts.retrieved_ids` holds the
  same entries' store ids.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agemem.episode import (
    CallAction,
    CallRecord,
    Episode,
    EpisodeFacts,
    GoldQuestion,
    Issue,
    MemoryOp,
    Observation,
    OverflowEvent,
    ParsedActions,
    StepSample,
    StoredMemory,
)
from agemem.eval.methods.answering import answer_messages, read_answer
from agemem.eval.methods.base import RunContext
from agemem.eval.methods.lockstep import Job, Reply, run_lockstep
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import MemoryItem, MemoryStore, Scope, seeded_memory_ids
from agemem.policy.base import Message
from agemem.tasks.base import Task, incoming_text
from agemem.tokens import TokenCounter

STAGE_CONTEXT, STAGE_DISTRACTORS, STAGE_ANSWER = 1, 2, 3  # AgeMem's stage numbers
EVIDENCE_KEY = "source_ids"
RETRIEVED = "retrieved"  # the observation name of an answer step's retrieval record


@dataclass(frozen=True)
class Incoming:
    """One ingested message; `source_id` is its `ContextMessage.id` (None for distractors)."""

    stage: int
    text: str
    source_id: str | None = None


def message_stream(task: Task) -> list[Incoming]:
    contextual = [Incoming(STAGE_CONTEXT, incoming_text(m), m.id) for m in task.contextual]
    return contextual + [Incoming(STAGE_DISTRACTORS, text) for text in task.distractors]


def task_scope(method: str, index: int, task: Task) -> Scope:
    """One scope per task of a run (the position keeps repeated task ids apart)."""
    return Scope(agent_id=method, session_id=f"{index}:{task.id}")


def check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


# ---- running ---------------------------------------------------------------------------------

Steps = Job[None]  # a pipeline's model calls
Pipeline = Callable[[Task, MemoryStore, Scope, "EpisodeLog"], Steps]


def run_pipelines(
    method: str,
    tasks: Sequence[Task],
    ctx: RunContext,
    pipeline: Pipeline,
    *,
    store_path: str | Path | None,
    batch_size: int,
) -> list[Episode]:
    """One episode per task: each task's pipeline runs in its own scope of one `SQLiteStore`
    (`store_path`, or a private in-memory database when None), all in lockstep."""
    path = ":memory:" if store_path is None else store_path
    store = SQLiteStore(path, embedder=ctx.embedder, ids=seeded_memory_ids(ctx.seed))
    try:
        jobs = [
            _episode(method, i, task, store, ctx.t_max, pipeline) for i, task in enumerate(tasks)
        ]
        return run_lockstep(ctx.policy, jobs, batch_size=batch_size)
    finally:
        store.close()


class PipelineMethod:
    """What the pipeline baselines share: `run` is `run_pipelines` over each task's `steps`."""

    name: str
    batch_size: int
    store_path: str | Path | None

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> list[Episode]:
        def pipeline(task: Task, store: MemoryStore, scope: Scope, log: EpisodeLog) -> Steps:
            return self.steps(ctx, task, store, scope, log)

        return run_pipelines(
            self.name, tasks, ctx, pipeline, store_path=self.store_path, batch_size=self.batch_size
        )

    def steps(
        self, ctx: RunContext, task: Task, store: MemoryStore, scope: Scope, log: EpisodeLog
    ) -> Steps:
        """One task's model calls (a generator: see `lockstep`)."""
        raise NotImplementedError


def _episode(
    method: str, index: int, task: Task, store: MemoryStore, t_max: int, pipeline: Pipeline
) -> Job[Episode]:
    scope = task_scope(method, index, task)
    store.reset(scope=scope)  # a reused store file starts each task empty
    log = EpisodeLog(method, task, t_max)
    yield from pipeline(task, store, scope, log)
    return log.episode(store, scope)


def answer_questions(
    task: Task,
    log: EpisodeLog,
    retrieve: Callable[[str], list[MemoryItem]],
    counter: TokenCounter,
    t_max: int,
) -> Steps:
    """Stage 3: retrieve for every question, then answer them all in one round of calls."""
    prompts, shown, seconds = [], [], []
    for question in task.questions:
        began = time.perf_counter()
        items = retrieve(question.text)
        seconds.append(time.perf_counter() - began)
        prompt = answer_prompt(question.text, [item.content for item in items], counter, t_max)
        prompts.append(prompt)
        shown.append(items[: prompt.items])
    replies = yield [prompt.messages for prompt in prompts]
    for i, reply in enumerate(replies):
        log.answer(i, prompts[i], reply, shown[i], seconds[i])


# ---- prompts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """A chat for the model, its size in tokens, and how many of the offered items it holds."""

    messages: list[Message]
    tokens: int
    items: int


Build = Callable[[int], list[Message]]  # k -> the prompt holding the first k items


def fit_prompt(build: Build, n: int, counter: TokenCounter, t_max: int) -> Prompt:
    """`build(k)` with the largest k <= n whose prompt fits `t_max` (k = 0 if none does)."""
    k = n
    while True:
        messages = build(k)
        tokens = counter.count_messages(messages)
        if tokens <= t_max or k == 0:
            return Prompt(messages, tokens, k)
        k -= 1


def answer_prompt(
    question: str, memories: Sequence[str], counter: TokenCounter, t_max: int
) -> Prompt:
    """The answer chat with as many of `memories` (best first) as fit the budget."""
    return fit_prompt(
        lambda k: answer_messages(question, memories[:k], "Memories"), len(memories), counter, t_max
    )


def parsed(
    fmt: str,
    *,
    calls: Sequence[CallAction] = (),
    problem: str | None = None,
    answer: str | None = None,
) -> ParsedActions:
    """What was read from one output; `problem` marks it unreadable (a fatal `parse` issue)."""
    issues = [Issue(code="parse", message=problem, fatal=True)] if problem else []
    return ParsedActions(format=fmt, tool_calls=list(calls), answer=answer, issues=issues)


# ---- the record ----------------------------------------------------------------------------


def evidence_of(item: MemoryItem) -> list[str]:
    ids = item.metadata.get(EVIDENCE_KEY, [])
    return [str(i) for i in ids] if isinstance(ids, list) else []


def blank_facts(method: str, task: Task, t_max: int) -> EpisodeFacts:
    """The facts of an episode of `task` before anything happened: its gold questions, no
    answers yet."""
    n = len(task.questions)
    return EpisodeFacts(
        method=method,
        questions=[
            GoldQuestion(text=q.text, answers=list(q.answers), category=q.category)
            for q in task.questions
        ],
        answers=[None] * n,
        tokens_at_answer=[None] * n,
        t_max=t_max,
        seconds=[0.0] * n,
    )


class EpisodeLog:
    """Builds one task's `Episode` as its pipeline runs."""

    def __init__(self, method: str, task: Task, t_max: int) -> None:
        self.task = task
        self.facts = blank_facts(method, task, t_max)
        self.steps: list[StepSample] = []

    @property
    def next_turn(self) -> int:
        """The turn index the next recorded call will get (operations it causes cite it)."""
        return len(self.steps)

    def step(
        self,
        stage: int,
        prompt: Prompt,
        reply: Reply,
        actions: ParsedActions,
        observations: Sequence[Observation] = (),
        question: int | None = None,
    ) -> int:
        """Record one model call; returns its turn index."""
        turn = len(self.steps)
        t = reply.turn
        self.steps.append(
            StepSample(
                turn=turn,
                stage=stage,
                messages=prompt.messages,
                text=t.text,
                actions=actions,
                observations=list(observations),
                prompt_ids=list(t.prompt_ids),
                completion_ids=list(t.completion_ids),
                logprobs=list(t.logprobs),
                tokens=prompt.tokens,
                finish_reason=t.finish_reason,
                question=question,
            )
        )
        facts = self.facts
        facts.rounds = len(self.steps)
        facts.max_tokens = max(facts.max_tokens, prompt.tokens)
        facts.format_errors += any(i.fatal for i in actions.issues)
        if prompt.tokens > facts.t_max:
            facts.overflows.append(OverflowEvent(turn=turn, stage=stage, tokens=prompt.tokens))
        return turn

    def call(self, turn: int, stage: int, name: str, error: str | None = None) -> None:
        """One memory operation (or a model output that could not be used: `error` set)."""
        self.facts.calls.append(
            CallRecord(turn=turn, stage=stage, name=name, ok=error is None, error=error)
        )

    def added(self, turn: int, stage: int, item: MemoryItem) -> None:
        self.facts.adds.append(MemoryOp(turn=turn, stage=stage, id=item.id, content=item.content))

    def updated(self, turn: int, stage: int, old: MemoryItem, new: MemoryItem) -> None:
        self.facts.updates.append(
            MemoryOp(
                turn=turn, stage=stage, id=new.id, content=new.content, old_content=old.content
            )
        )

    def deleted(self, turn: int, stage: int, old: MemoryItem) -> None:
        self.facts.deletes.append(
            MemoryOp(turn=turn, stage=stage, id=old.id, content=None, old_content=old.content)
        )

    def answer(
        self,
        question: int,
        prompt: Prompt,
        reply: Reply,
        shown: Sequence[MemoryItem],
        retrieval_seconds: float,
    ) -> None:
        """Record question `question`'s answer call. `shown`: the entries in its prompt. Its
        latency is the retrieval time plus its share of the batched answer call (Mem0's
        "total latency": search and answer, not ingestion)."""
        answer = read_answer(reply.turn.text)
        record = [{"id": item.id, "evidence": evidence_of(item)} for item in shown]
        observation = Observation(
            call_id=f"q{question}", name=RETRIEVED, content=json.dumps(record, ensure_ascii=False)
        )
        self.step(
            STAGE_ANSWER, prompt, reply, parsed("text", answer=answer), [observation], question
        )
        facts = self.facts
        facts.answers[question] = answer
        facts.tokens_at_answer[question] = prompt.tokens
        facts.seconds[question] = retrieval_seconds + reply.seconds
        facts.retrieved_ids.extend(item.id for item in shown)

    def episode(self, store: MemoryStore, scope: Scope) -> Episode:
        self.facts.ended_by = "answered"
        self.facts.final_memories = [
            StoredMemory(id=item.id, content=item.content) for item in store.get_all(scope=scope)
        ]
        return Episode(
            task_id=self.task.id,
            group_id=self.task.id,
            family=self.task.family,
            steps=self.steps,
            facts=self.facts,
        )


def retrieved_evidence(episode: Episode) -> list[list[str]]:
    """Per question, the evidence ids (contextual message ids) of the entries retrieved for its
    answer, best first, without repeats; [] for a question with no answer step."""
    out: list[list[str]] = [[] for _ in episode.facts.questions]
    for step in episode.steps:
        if step.question is None or not 0 <= step.question < len(out):
            continue
        for observation in step.observations:
            if observation.name != RETRIEVED:
                continue
            ids = [e for entry in json.loads(observation.content) for e in entry["evidence"]]
            out[step.question] = list(dict.fromkeys(ids))
    return out
