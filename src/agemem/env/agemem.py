"""`MemoryEnv`: AgeMem's three-stage episode over one task, one store and one context.

Stage 1 (memory construction): the task's contextual messages arrive one per turn, each shown
with the top-k memories the system retrieved for it (with their ids); the agent may Add, Update
or Delete. Stage 2 (context under distractors): the context is reset (the system prompt and the
store are kept) and distractors arrive one per turn; the agent may Filter or Summarize. Stage 3:
each question is appended, protected from Filter/Summary; the agent retrieves, manages its
context and answers. Only the stage's tools run (`EnvConfig.stage_tools`); other calls get an
observation naming the tools allowed now.

Turn rules (ours where the paper is silent):
- Stages 1-2 take exactly one turn per incoming message; the next message arrives whatever the
  turn did. `<tool_call>[]</tool_call>` (or, with native tools, a reply without calls) lets a
  message pass; an `<answer>` there is refused with an observation (there is no question yet).
- The calls of a turn run in order against the context the model saw; then the model's message
  and one tool message per call are appended (in stages 1-2 only if `keep_stage12_turns`).
- A turn with a fatal format issue runs nothing and gets the format error as its observation.
- Stage 3 gives each question up to `stage3_max_turns` turns; at the cap the question stays
  unanswered and the next one comes. `n_max` caps the whole episode. Overflow (a context over
  `t_max` given to the model in `budget_stages`) is recorded, never truncated: the reward
  penalises it (unless `EnvConfig.over_budget="drop_oldest"`, a baseline's sliding window).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from agemem.context import Context, ContextMark
from agemem.env.aliases import IdAliases
from agemem.env.base import EpisodeEnv
from agemem.env.config import PRESETS, EnvConfig
from agemem.env.record import EnvError, Recorder, StepResult, View, memory_snapshot
from agemem.env.render import (
    QUESTION_PREFIX,
    stage1_message,
    system_prompt,
    turn_messages,
)
from agemem.episode import EpisodeFacts, GoldQuestion
from agemem.memory.embed import Embedder
from agemem.memory.store import MemoryStore, Scope
from agemem.policy.base import Message, ToolSpec, Turn
from agemem.summarize import Summarizer
from agemem.tasks.base import ContextMessage, Task, incoming_text
from agemem.tokens import TokenCounter
from agemem.tools.agemem import AGEMEM_TOOLS, AgentMemoryState
from agemem.tools.parse import ParsedTurn, ToolCall, parse_turn
from agemem.tools.registry import ToolResult

ANY_SCOPE = Scope()
_WRITES = {"Add_memory", "Update_memory", "Delete_memory"}


class MemoryEnv(EpisodeEnv):
    """One AgeMem episode at a time: `reset(task)` gives the first context, `step(turn)` the next.

    The env owns the context and the tool state. Without a `store`, each `reset` opens a fresh
    private SQLite store (`:memory:`) that `close()` (or the next reset) closes; a given store is
    used as is and never closed here. `token_counter` should be the policy's
    (`HFTokenCounter(tokenizer)`); the default approximates. `seed` draws the id aliases and
    the store's ids.
    """

    method = "agemem"
    other_env = "AtomMemEnv"

    def __init__(
        self,
        config: EnvConfig = PRESETS["paper"],
        *,
        store: MemoryStore | None = None,
        embedder: Embedder | None = None,
        token_counter: TokenCounter | None = None,
        summarizer: Summarizer | None = None,
        scope: Scope = ANY_SCOPE,
        seed: int = 0,
    ) -> None:
        super().__init__(
            config, store=store, embedder=embedder, token_counter=token_counter, seed=seed
        )
        self._summarizer = summarizer
        self._scope = scope
        self._rng = random.Random(seed)
        self._stage = 1
        self._stage3_start: ContextMark = ()  # the context each question starts from
        self._on_show: tuple[ContextMessage | None, list[tuple[str, str]], str | None] = (
            None,
            [],
            None,
        )  # the stage-1 message and its memories, or the stage-2 note, now on show

    # ---- public --------------------------------------------------------------------------
    @property
    def stage(self) -> int:
        return self._stage

    @property
    def context(self) -> list[Message]:
        return self._context.messages

    def tools(self) -> list[ToolSpec] | None:
        """The current stage's tools as OpenAI schemas when `native_tools`, else None (the system
        prompt describes them)."""
        if not self.config.native_tools:
            return None
        return AGEMEM_TOOLS.select(*self.config.stage_tools[self._stage - 1]).openai_tools()

    def reset(self, task: Task) -> list[Message]:
        self.close()
        self._task = task
        self._store = self._given_store or self._new_store()
        prompt = system_prompt(self.config.native_tools, self.config.system_prompt == "compact")
        system = {"role": "system", "content": prompt}
        system_tokens = self._counter.count_messages([system])
        t_max = self.config.budget_for(task)
        t_max += system_tokens if self.config.budget_excludes_system else 0
        self._context = Context(t_max, self._counter, self.embedder, self._summarizer)
        self._context.append(system, protected=True)
        self._state = AgentMemoryState(
            self._store,
            self._context,
            scope=self._scope,
            search_mode=self.config.search_mode,
            filter_theta=self.config.filter_theta,
        )
        self._aliases = IdAliases(self.config.id_space, self._rng)
        self._recorder = Recorder(
            EpisodeFacts(
                method="agemem",
                questions=[
                    GoldQuestion(text=q.text, answers=list(q.answers), category=q.category)
                    for q in task.questions
                ],
                answers=[None] * len(task.questions),
                tokens_at_answer=[None] * len(task.questions),
                n_max=self.config.n_max,
                t_max=t_max,
                system_tokens=system_tokens,
            )
        )
        self._stage, self._question, self._q_turns = 1, 0, 0
        self._incoming = deque(task.contextual)
        self.done = False
        self._advance()
        return self._show()

    def step(self, turn: Turn) -> StepResult:
        if self.done:
            raise EnvError("the episode is over (or was never started): call reset(task)")
        stage = self._stage
        parsed = parse_turn(turn, "openai" if self.config.native_tools else "auto")
        answer, results = self._outcome(parsed, stage)
        answered_tokens = self._recorder.view.tokens if self._recorder.view else 0
        self._recorder.step(turn, parsed, results)
        if stage == 3 or self.config.keep_stage12_turns:
            for message in turn_messages(turn, results):
                self._context.append(message)
        self._after_turn(stage, answer, answered_tokens)
        info = {"stage": stage, "answer": answer, "observations": [r.content for r in results]}
        if self.done:
            self._finish()
            return StepResult(self._context.messages, True, info)
        return StepResult(self._show(), False, info)

    # ---- internals -----------------------------------------------------------------------
    def _advance(self) -> None:
        """Bring the next incoming message (changing stage when one runs out), or end."""
        task = self._task
        assert task is not None
        if self._stage == 1 and self._incoming:
            self._present_stage1(self._incoming.popleft())
            return
        if self._stage == 1:
            self._stage = 2
            if self.config.stage2_reset:
                self._context.reset(keep_system=True)
            self._incoming = deque(task.distractors)
        if self._stage == 2 and self._incoming:
            note = self._incoming.popleft()
            self._on_show = (None, [], note)
            self._context.append({"role": "user", "content": note})
            return
        self._on_show = (None, [], None)
        if self._stage != 3:
            self._stage, self._stage3_start = 3, self._context.mark()
        if self._question >= len(task.questions):
            self.done = True
            return
        if self._question and not self.config.carry_questions:
            self._context.rewind(self._stage3_start)
        text = QUESTION_PREFIX + task.questions[self._question].text
        self._context.append({"role": "user", "content": text}, protected=True)

    def _outcome(self, parsed: ParsedTurn, stage: int) -> tuple[str | None, list[ToolResult]]:
        """The answer (stage 3 only) and the observations of one parsed turn."""
        if not parsed.ok:
            results = AGEMEM_TOOLS.run(parsed, self._state)
            for result in results:
                self._recorder.call(stage, result)
            return None, results
        if parsed.answer is None:
            return None, [self._run_call(call, stage) for call in parsed.tool_calls]
        if stage == 3:
            return parsed.answer, []
        if parsed.fmt == "openai":
            return None, []  # with native tools, a reply without calls is how a message passes
        note = (
            f"There is no question yet: nothing to answer. This message has passed; stage "
            f"{stage} continues."
        )
        return None, [ToolResult("", "", note, "rejected")]

    def _present_stage1(self, message: ContextMessage) -> None:
        text = incoming_text(message)
        related: list[tuple[str, str]] = []
        if self.config.auto_retrieve_k and self._store is not None:
            items = self._store.search(
                text,
                top_k=self.config.auto_retrieve_k,
                mode=self.config.search_mode,
                scope=self._scope,
            )
            related = [(self._aliases.show(item.id), item.content) for item in items]
            self._recorder.facts.auto_retrieved_ids.extend(i for i, _ in related)
        window = self.config.stage1_window
        shown = sum(m["role"] != "system" for m in self._context.messages)
        if window is not None and shown >= window:
            self._context.reset(keep_system=True)
        self._on_show = (message, related, None)
        self._context.append({"role": "user", "content": stage1_message(text, related)})

    def _show(self) -> list[Message]:
        if self.config.over_budget == "drop_oldest":
            self._context.drop_oldest()
        messages = self._context.messages
        question = self._question if self._stage == 3 else None
        incoming, related, note = self._on_show
        view = View(
            messages,
            self._context.tokens(),
            self._stage,
            question=question,
            task=self._task,
            incoming=incoming,
            related=related,
            note=note,
            **self._retrievals(question),
        )
        self._recorder.show(view, budget_checked=self._stage in self.config.budget_stages)
        return messages

    def _retrievals(self, question: int | None) -> dict[str, Any]:
        """The Retrieve_memory calls that ran for `question` so far, and what they returned."""
        if question is None:
            return {}
        facts = self._recorder.facts
        turns = {s.turn for s in self._recorder.steps if s.question == question}
        calls = [c for c in facts.calls if c.ok and c.name == "Retrieve_memory" and c.turn in turns]
        found = [r for r in facts.retrieved if r.question == question]
        return {"retrieve_calls": len(calls), "retrieved": found}

    def _run_call(self, call: ToolCall, stage: int) -> ToolResult:
        allowed = self.config.stage_tools[stage - 1]
        if call.error is None and call.name in AGEMEM_TOOLS.names and call.name not in allowed:
            result = ToolResult(
                call.name,
                call.id,
                (
                    f"{call.name} is not available in stage {stage}; nothing was done. "
                    f"Tools allowed now: {', '.join(allowed)}."
                ),
                "rejected",
            )
        else:
            result = self._dispatch(call, stage, allowed)
        self._recorder.call(stage, result)
        return result

    def _dispatch(self, call: ToolCall, stage: int, allowed: tuple[str, ...]) -> ToolResult:
        if call.arguments and isinstance(call.arguments.get("memory_id"), str):
            real = self._aliases.real(call.arguments["memory_id"])
            call = ToolCall(call.name, {**call.arguments, "memory_id": real}, call.id, call.raw)
        writes = call.name in _WRITES and self._store is not None
        before = memory_snapshot(self._store, self._scope) if writes else {}
        n_retrieved = len(self._state.retrieved)
        (result,) = AGEMEM_TOOLS.select(*allowed).dispatch([call], self._state)
        if writes and result.ok:
            after = memory_snapshot(self._store, self._scope)
            self._recorder.memory_changes(stage, before, after, self._aliases.show)
        question = self._question if stage == 3 else None
        for item in self._state.retrieved[n_retrieved:]:
            self._recorder.retrieved(self._aliases.show(item.id), item.content, question)
        return ToolResult(
            result.name, result.call_id, self._aliases.shown_text(result.content), result.error
        )

    def _after_turn(self, stage: int, answer: str | None, tokens: int) -> None:
        facts = self._recorder.facts
        if stage in (1, 2):
            self._advance()
        else:
            self._q_turns += 1
            if answer is not None or self._q_turns >= self.config.stage3_max_turns:
                if answer is not None:
                    facts.answers[self._question] = answer
                    facts.tokens_at_answer[self._question] = tokens
                facts.ended_by = "answered" if answer is not None else "turn_cap"
                self._question, self._q_turns = self._question + 1, 0
                self._advance()
        if not self.done and self.config.n_max is not None and facts.rounds >= self.config.n_max:
            self.done = True
            facts.ended_by = "n_max"

    def _finish(self) -> None:
        if self._store is not None:
            snapshot = memory_snapshot(self._store, self._scope)
            self._recorder.final_memories(snapshot, self._aliases.show)
