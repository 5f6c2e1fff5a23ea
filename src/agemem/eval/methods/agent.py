"""The agent methods: a policy manages its own memory through tool calls inside our envs.

- `agemem`: AgeMem's three-stage episode (`MemoryEnv`) with a trained checkpoint;
- `agemem-norl`: the same episode and tools with the base model (AgeMem's "without RL" row);
- `agemem-rag`: AgeMem's LTM tools in stage 1, its STM tools replaced by retrieval: stage 2
  offers no tool, so its distractors are appended without model turns (a turn that can do
  nothing is skipped, ours, to save compute); each stage-3 question arrives with the top-k
  memories the system retrieved for it, and the agent answers (no Retrieve_memory tool);
- `agemem-sft`: the same episode with the SFT checkpoint GRPO starts from (no RL);
- `oracle-memory`: the ceiling of memory management at the model's size: the gold-informed
  oracle (`agemem.env.oracle`, no imperfection) stores exactly the evidence, filters every
  distractor and retrieves with the question; the model then answers from what was retrieved,
  with the answer prompt every answering baseline uses (`answering`). The row's prompt tokens
  are the agent context the oracle worked in (the answer prompt is shorter);
- `atommem`: AtomMem's chunked CRUD + scratchpad loop (`AtomMemEnv`), with any policy.

Episode rules come from `RunContext.env` (the benchmark's preset; agemem and agemem-norl always
share it, so the comparison is fair). `RunContext.stage1_window` restarts the stage-1 context
(system prompt kept) every N incoming messages: LoCoMo's hundreds of turns would otherwise
outgrow the model's window; the store keeps everything the agent added. AtomMem's chunks are
`min(4,096, t_max // 2)` tokens (AtomMem: 4,096) so that a step fits the budget. All episodes
of a call run batched; each question's latency is the run's wall time over its questions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from agemem.env import PRESETS, EnvConfig, MemoryEnv, run_episodes
from agemem.env.config import LTM_TOOLS
from agemem.env.driver import drive
from agemem.env.embed_cache import cached
from agemem.env.oracle import PERFECT, Oracle
from agemem.env.record import Expert, View
from agemem.episode import Episode
from agemem.eval.methods.answering import answer_messages, read_answer
from agemem.eval.methods.base import RunContext
from agemem.policy.base import Policy, ToolSpec, Turn
from agemem.policy.scripted import emit
from agemem.tasks.base import Task
from agemem.tools.registry import ToolResult

RAG_STAGE_TOOLS = (LTM_TOOLS, (), ())
RETRIEVED_HEADER = "Memories retrieved for this question:"


class EvalMemoryEnv(MemoryEnv):
    """`MemoryEnv` with per-question retrieval by the system when stage 3 offers no tool (the
    stage-1 window is `EnvConfig.stage1_window`)."""

    def __init__(self, config: EnvConfig, *, top_k: int, **kw) -> None:
        super().__init__(config, **kw)
        self._top_k = top_k

    def _advance(self) -> None:
        super()._advance()
        if self._stage == 2 and not self.config.stage_tools[1]:
            while self._incoming:
                self._context.append({"role": "user", "content": self._incoming.popleft()})
            super()._advance()
        if self._stage == 3 and not self.done and not self.config.stage_tools[2]:
            self._retrieve_for_question()

    def _retrieve_for_question(self) -> None:
        assert self._task is not None and self._store is not None
        question = self._task.questions[self._question].text
        items = self._store.search(question, top_k=self._top_k, mode=self.config.search_mode)
        shown = [(self._aliases.show(i.id), i.content) for i in items]
        lines = "\n".join(f"[{i}] {c}" for i, c in shown) or "(none)"
        content = f"{RETRIEVED_HEADER}\n{lines}"
        self._recorder.facts.retrieved_ids.extend(i for i, _ in shown)
        self._recorder.call(3, ToolResult("system/retrieve", "", content))
        self._context.append({"role": "user", "content": content})


class AgeMemMethod:
    """AgeMem's episode with the policy given (a trained checkpoint for `agemem`)."""

    name = "agemem"
    # one think + tool-call turn (ours, CPU; the paper allows 2,048): an Add copies a stage-1
    # sentence, and the oracle's turns on the HotpotQA/LoCoMo training mix took up to 215
    # SmolLM2 tokens (mean 48)
    max_new_tokens = 224
    stage_tools: tuple[tuple[str, ...], ...] | None = None  # None: the config's own

    def config(self, ctx: RunContext) -> EnvConfig:
        config = ctx.env or PRESETS["paper"].with_(t_max=ctx.t_max)
        if ctx.stage1_window is not None:
            config = config.with_(stage1_window=ctx.stage1_window)
        if self.stage_tools is not None:
            config = config.with_(stage_tools=self.stage_tools)
        return config

    def actor(self, ctx: RunContext) -> Policy | Expert:
        """Who acts in the episodes: the run's policy."""
        return ctx.policy

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> list[Episode]:
        config = self.config(ctx)
        embedder = cached(ctx.embedder)
        envs = [
            EvalMemoryEnv(
                config,
                top_k=ctx.top_k,
                embedder=embedder,
                token_counter=ctx.token_counter,
                seed=ctx.seed * 1_000_003 + i,
            )
            for i in range(len(tasks))
        ]
        start = time.perf_counter()
        slots = [(task, f"{task.id}@{i}") for i, task in enumerate(tasks)]
        episodes = drive(self.actor(ctx), envs, slots)
        return _finish(episodes, self.name, time.perf_counter() - start)


class AgeMemNoRLMethod(AgeMemMethod):
    """The same tools and episode, the base model (no RL)."""

    name = "agemem-norl"


class AgeMemSFTMethod(AgeMemMethod):
    """The same tools and episode, the SFT checkpoint GRPO starts from."""

    name = "agemem-sft"


class OracleMemoryMethod(AgeMemMethod):
    """The oracle manages memory, the model answers from what it retrieved (module docstring)."""

    name = "oracle-memory"
    max_new_tokens = 32  # the answer only, as the answering baselines (ours)

    def actor(self, ctx: RunContext) -> Expert:
        return OracleReader(ctx.policy)


class OracleReader:
    """An expert: the perfect oracle's turns, except that a question's answer comes from
    `reader` given the entries the oracle retrieved for it (one batched `act` call)."""

    def __init__(self, reader: Policy) -> None:
        self.reader = reader
        self.oracle = Oracle(rates=PERFECT)

    def act_on(self, views: Sequence[View], tools: list[ToolSpec] | None = None) -> list[Turn]:
        turns = self.oracle.act_on(views, tools)
        asking = [i for i, view in enumerate(views) if view.stage == 3 and view.retrieve_calls]
        prompts = [_answer_prompt(views[i]) for i in asking]
        replies = self.reader.act(prompts) if prompts else []
        for i, reply in zip(asking, replies, strict=True):
            answer = read_answer(reply.text) or "I don't know."
            turns[i] = emit("the memories say", answer=answer, native=tools is not None)
        return turns


def _answer_prompt(view: View) -> list:
    assert view.task is not None and view.question is not None
    question = view.task.questions[view.question].text
    return answer_messages(question, [r.content for r in view.retrieved], "Memories")


class AgeMemRagMethod(AgeMemMethod):
    """LTM tools; STM tools replaced by per-question retrieval (module docstring)."""

    name = "agemem-rag"
    stage_tools = RAG_STAGE_TOOLS


class AtomMemMethod:
    """AtomMem's CRUD + scratchpad loop over the task's input read in chunks."""

    name = "atommem"
    # a chunk step's operations and scratchpad (ours, CPU; AtomMem's model writes more): the
    # oracle's steps on 12 training pools of `smollm2-atommem` took up to 403 SmolLM2 tokens
    # (mean 100, 95th percentile 321: benchmarks/results/smollm2-atommem/oracle.json)
    max_new_tokens = 416

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> list[Episode]:
        start = time.perf_counter()
        episodes = run_episodes(
            ctx.policy,
            tasks,
            atommem_config(ctx.t_max, ctx.top_k),
            progress=False,
            embedder=ctx.embedder,
            token_counter=ctx.token_counter,
            seed=ctx.seed,
        )
        return _finish(episodes, self.name, time.perf_counter() - start)


def atommem_config(t_max: int, top_k: int) -> EnvConfig:
    """AtomMem's env within a `t_max` budget: chunks of min(4,096, t_max / 2) tokens, the
    overlap at most a quarter of a chunk, the top-k memories shown."""
    base = PRESETS["atommem"]
    chunk = min(base.chunk_tokens, max(t_max // 2, 64))
    return base.with_(
        t_max=t_max,
        chunk_tokens=chunk,
        chunk_overlap=min(base.chunk_overlap, chunk // 4),
        atommem_top_k=max(top_k, 1),
    )


def _finish(episodes: list[Episode], method: str, seconds: float) -> list[Episode]:
    """Name the method and share the wall time equally over all questions."""
    share = seconds / max(sum(len(e.facts.questions) for e in episodes), 1)
    for episode in episodes:
        episode.facts.method = method
        episode.facts.seconds = [share] * len(episode.facts.questions)
    return episodes
