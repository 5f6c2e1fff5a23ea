"""`mem0-style`: Mem0's two-phase memory pipeline (Chhikara et al., 2025, arXiv 2504.19413) on our
store, embedder and policy.

Per incoming message (stage 1 messages, then stage 2 distractors: every method ingests the same
stream):
1. Extraction: the model reads the rolling conversation summary S, the last m messages and the new
   message, and lists candidate facts (`{"facts": [...]}`).
2. Update: for each fact, the s most similar stored memories (dense cosine, as Mem0's vector
   search) are shown with small integer ids, and the model calls one operation:
   ADD (new fact), UPDATE (rewrite a memory with it), DELETE (the fact contradicts a memory) or
   NOOP, as a tool call `{"name": "UPDATE", "arguments": {"id": "0", "text": "..."}}`.
3. Every `summary_every` messages the summary is refreshed from the previous summary and the recent
   messages (the paper's asynchronous summary module, run in-line here).
Stage 3: the top-k memories for the question (`RunContext.top_k`) and the question go to the
model, which answers.

Paper values: m = 10 recent messages, s = 10 similar memories. Choices of ours, where the paper
is silent: the summary is refreshed every m messages, so each message is always either in the
window or already summarized; at most `max_facts` facts per message are kept (small models can
list dozens of near-copies; each costs one update call); the prompts are ours, shorter than
Mem0's few-shot ones, which would not fit a small model's context beside the memories.

Decisions for the facts of one message are taken in parallel against the same snapshot of the
store, as Mem0's implementation does when it decides all facts in one call; an operation on an
entry an earlier decision of the same message already deleted is refused and recorded.

Fallbacks, each recorded as a failed `CallRecord`: an unreadable extraction (`mem0/extract`,
error `parse`) yields no facts, as in Mem0's implementation; an unreadable decision
(`mem0/decide`, `parse`) or an unknown operation (`unknown_tool`) changes nothing; UPDATE or
DELETE without a valid shown id fails with `arguments` (`rejected` if the entry is gone); ADD or
UPDATE without a text stores the fact itself, the information the decision is about; an empty
summary keeps the previous one (`mem0/summary`, `parse`).

Every entry's metadata holds the ids of the contextual messages its facts came from
(`pipeline.EVIDENCE_KEY`; an UPDATE merges them), so retrieved entries map back to evidence.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from agemem.episode import CallAction, Observation
from agemem.eval.methods.base import RunContext
from agemem.eval.methods.lockstep import Job, Reply
from agemem.eval.methods.pipeline import (
    EVIDENCE_KEY,
    Build,
    EpisodeLog,
    Incoming,
    PipelineMethod,
    Prompt,
    Steps,
    answer_questions,
    check_positive,
    evidence_of,
    fit_prompt,
    message_stream,
    parsed,
)
from agemem.memory.facts import EXTRACT_INSTRUCTION as EXTRACT_INSTRUCTION  # tests read it
from agemem.memory.facts import (
    OPERATIONS,
    Decision,
    decision_messages,
    extraction_messages,
    read_decision,
    read_facts,
)
from agemem.memory.llm_json import JsonReadError
from agemem.memory.store import MemoryItem, MemoryNotFound, MemoryStore, Scope
from agemem.policy.base import Message
from agemem.summarize import LLMSummarizer, strip_think
from agemem.tasks.base import Task


class Mem0StyleMethod(PipelineMethod):
    """Mem0's extract-then-update pipeline (module docstring: what is the paper's, what is ours).

    `recent_messages` (m) and `similar_memories` (s) default to the paper's 10; `summary_every`
    is how many messages pass between summary refreshes; `max_facts` caps the facts kept per
    message; `batch_size` caps the prompts per `policy.act` call (calls are batched across the
    tasks of a run); `store_path` is the SQLite file (None: a private in-memory database).
    """

    name = "mem0-style"

    def __init__(
        self,
        *,
        recent_messages: int = 10,
        similar_memories: int = 10,
        summary_every: int = 10,
        max_facts: int = 5,
        batch_size: int = 8,
        store_path: str | Path | None = None,
    ) -> None:
        self.recent_messages = check_positive("recent_messages", recent_messages)
        self.similar_memories = check_positive("similar_memories", similar_memories)
        self.summary_every = check_positive("summary_every", summary_every)
        self.max_facts = check_positive("max_facts", max_facts)
        self.batch_size = check_positive("batch_size", batch_size)
        self.store_path = store_path

    def steps(
        self, ctx: RunContext, task: Task, store: MemoryStore, scope: Scope, log: EpisodeLog
    ) -> Steps:
        return _Run(self, ctx, store, scope, log).steps(task)


class _Run:
    """One task's pipeline: its summary, its window of recent messages, its scope."""

    def __init__(
        self,
        method: Mem0StyleMethod,
        ctx: RunContext,
        store: MemoryStore,
        scope: Scope,
        log: EpisodeLog,
    ) -> None:
        self.m, self.ctx, self.store, self.scope, self.log = method, ctx, store, scope, log
        self.summary = ""
        self.window: deque[str] = deque(maxlen=method.recent_messages)

    def steps(self, task: Task) -> Steps:
        for k, incoming in enumerate(message_stream(task)):
            facts = yield from self._extract(incoming)
            yield from self._update(incoming, facts)
            self.window.append(incoming.text)
            if (k + 1) % self.m.summary_every == 0:
                yield from self._summarize(incoming.stage)
        yield from answer_questions(
            task, self.log, self._retrieve, self.ctx.token_counter, self.ctx.t_max
        )

    def _fit(self, build: Build, n: int) -> Prompt:
        return fit_prompt(build, n, self.ctx.token_counter, self.ctx.t_max)

    def _search(self, text: str, top_k: int, vector: np.ndarray | None = None) -> list[MemoryItem]:
        if not self.store.count(scope=self.scope):
            return []
        return self.store.search(
            text, top_k=top_k, mode="dense", scope=self.scope, query_embedding=vector
        )

    def _retrieve(self, question: str) -> list[MemoryItem]:
        return self._search(question, self.ctx.top_k)

    # ---- extraction ------------------------------------------------------------------------
    def _extract(self, incoming: Incoming) -> Job[list[str]]:
        window = list(self.window)

        def build(k: int) -> list[Message]:
            return extraction_messages(incoming.text, window[len(window) - k :], self.summary)

        prompt = self._fit(build, len(window))
        (reply,) = yield [prompt.messages]
        turn, problem, facts = self.log.next_turn, None, []
        try:
            facts = read_facts(reply.turn.text)
        except JsonReadError as err:
            problem = f"{err}; no facts extracted from this message"
            self.log.call(turn, incoming.stage, "mem0/extract", "parse")
        facts = facts[: self.m.max_facts]
        shown = "; ".join(facts) or "none"
        observation = Observation(call_id="extract", name="mem0/extract", content=f"facts: {shown}")
        self.log.step(incoming.stage, prompt, reply, parsed("json", problem=problem), [observation])
        return facts

    # ---- update ----------------------------------------------------------------------------
    def _update(self, incoming: Incoming, facts: list[str]) -> Steps:
        if not facts:
            return
        prompts, shown = [], []
        vectors = self.ctx.embedder.embed(facts)  # one batch for all the facts' searches
        for fact, vector in zip(facts, vectors, strict=True):
            similar = self._search(fact, self.m.similar_memories, vector)
            prompt = self._fit(self._decide_prompt(fact, similar), len(similar))
            prompts.append(prompt)
            shown.append(similar[: prompt.items])
        replies = yield [prompt.messages for prompt in prompts]
        for fact, prompt, memories, reply in zip(facts, prompts, shown, replies, strict=True):
            self._decide(incoming, fact, prompt, memories, reply)

    @staticmethod
    def _decide_prompt(fact: str, similar: list[MemoryItem]) -> Build:
        def build(k: int) -> list[Message]:
            return decision_messages(fact, [m.content for m in similar[:k]])

        return build

    def _decide(
        self,
        incoming: Incoming,
        fact: str,
        prompt: Prompt,
        shown: list[MemoryItem],
        reply: Reply,
    ) -> None:
        turn, stage = self.log.next_turn, incoming.stage
        try:
            decision = read_decision(reply.turn.text)
        except JsonReadError as err:
            self.log.call(turn, stage, "mem0/decide", "parse")
            problem = f"{err}; the store is left unchanged"
            self.log.step(stage, prompt, reply, parsed("json", problem=problem))
            return
        name, arguments = decision.name, decision.arguments
        if name in OPERATIONS:
            content = self._apply(decision, fact, shown, incoming, turn)
        else:
            self.log.call(turn, stage, "mem0/decide", "unknown_tool")
            content = f"unknown operation {name or '(none)'!r}; expected one of {OPERATIONS}"
        label = name or "(none)"
        action = CallAction(id="decide", name=label, arguments=arguments)
        observation = Observation(call_id="decide", name=f"mem0/{label}", content=content)
        self.log.step(stage, prompt, reply, parsed("json", calls=[action]), [observation])

    def _apply(
        self,
        decision: Decision,
        fact: str,
        shown: list[MemoryItem],
        incoming: Incoming,
        turn: int,
    ) -> str:
        """Run one decided operation; returns what happened, for the step's observation."""
        name = decision.name
        stage, log, call = incoming.stage, self.log, f"mem0/{name}"
        text = decision.text(fact)
        evidence = [incoming.source_id] if incoming.source_id else []
        if name == "NOOP":
            log.call(turn, stage, call)
            return "nothing changed"
        if name == "ADD":
            metadata = {EVIDENCE_KEY: evidence}
            item = self.store.add(text, metadata=metadata, scope=self.scope, dedupe=False).item
            log.call(turn, stage, call)
            log.added(turn, stage, item)
            return f"Added {item.id}: {text}"
        index = decision.index(len(shown))
        if index is None:
            log.call(turn, stage, call, "arguments")
            return f"{name} needs the id of a shown memory, 0 to {len(shown) - 1}; nothing changed"
        try:
            old = self.store.get(shown[index].id)
            if name == "DELETE":
                self.store.delete(old.id)
                log.call(turn, stage, call)
                log.deleted(turn, stage, old)
                return f"Deleted {old.id}: {old.content}"
            merged = list(dict.fromkeys(evidence_of(old) + evidence))
            new = self.store.update(old.id, text, metadata={**old.metadata, EVIDENCE_KEY: merged})
        except MemoryNotFound:
            log.call(turn, stage, call, "rejected")
            return f"memory {shown[index].id} was already deleted; nothing changed"
        log.call(turn, stage, call)
        log.updated(turn, stage, old, new)
        return f"Updated {new.id}: {old.content} -> {new.content}"

    # ---- summary ---------------------------------------------------------------------------
    def _summarize(self, stage: int) -> Steps:
        window = list(self.window)
        summarizer = LLMSummarizer(self.ctx.policy)

        def build(k: int) -> list[Message]:
            earlier = [{"role": "user", "content": f"(summary so far) {self.summary}"}]
            recent = [{"role": "user", "content": text} for text in window[len(window) - k :]]
            return summarizer.prompt((earlier if self.summary else []) + recent)

        prompt = self._fit(build, len(window))
        (reply,) = yield [prompt.messages]
        summary, problem = strip_think(reply.turn.text), None
        if summary:
            self.summary = summary
        else:
            problem = "empty summary; the previous summary is kept"
            self.log.call(self.log.next_turn, stage, "mem0/summary", "parse")
        self.log.step(stage, prompt, reply, parsed("text", problem=problem))
