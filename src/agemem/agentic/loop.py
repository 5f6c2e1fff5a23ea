"""The agent loop over a `TextWorld`: the environment's actions beside AgeMem's memory tools.

One model turn is AgeMem's protocol: `<think>` then either `<tool_call>[...]</tool_call>` (memory
tools, run through `AGEMEM_TOOLS`' validated dispatch against the episode's `Context` and store)
or `<answer>ACTION</answer>`. Here the answer of a turn is its environment action (ours: an
interactive task has no single final answer, so the answer slot carries each action; AgeMem's
rule of never both in one step then means one environment action per turn). The environment's
observation comes back as a user message; refused actions come back as observations too.

The four methods of the benchmark table run this same loop:
- `no-memory`: no tools; the history is cut, oldest rounds first, to fit `t_max` (the usual
  window of agent benchmarks; there is nothing else the agent could do about it). It moves in
  blocks (`AgentEpisode._windowed`), so consecutive prompts share their KV.
- `rag`: no tools; the system stores every step ("action -> observation") in the store and shows
  the `top_k` memories most similar to each new observation with it; the same window.
- `agemem-norl` and `agemem`: the six memory tools; nothing is cut, an over-budget context is
  recorded as overflow (as in `MemoryEnv`), and Summary/Filter are the agent's way to stay within
  `t_max`. The two differ only in the policy the caller passes (base model or RL-trained).
  The current observation is protected, as a QA episode's question is (ours: the worlds'
  counterpart of the query): Summary_context and Filter_context never remove the observation the
  agent acts on; it becomes history when the next one arrives. With the tools, each observation
  ends with the context's size in tokens (`budget_line`, ours): the agent cannot manage a budget
  it cannot see.

Episodes are single-stage; their steps carry stage 3 (AgeMem's integrated stage: act, retrieve,
manage the context). The record reads like a QA episode for `agemem show` and the reports: the
one "question" is the goal, its gold answer is "success", and the recorded answer is the
environment's verdict ("success" / "failure"), so `Episode.correct()` is the success flag.
`reward` carries `success` (0/1) and `progress` (AgentBoard's progress rate, in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from agemem.agentic.world import TextWorld, WorldState, valid_list
from agemem.context import DEFAULT_T_MAX, Context
from agemem.env.record import EnvError, Recorder, View, memory_snapshot
from agemem.env.render import compact_protocol, stage1_message, turn_messages
from agemem.episode import Episode, EpisodeFacts, GoldQuestion
from agemem.memory.embed import Embedder
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import MemoryStore, seeded_memory_ids
from agemem.policy.base import Message, Policy, Turn
from agemem.summarize import ExtractiveSummarizer, Summarizer
from agemem.tokens import TokenCounter
from agemem.tools.agemem import AGEMEM_TOOLS, AgentMemoryState, agemem_system_prompt
from agemem.tools.parse import ParsedTurn, ToolCall, parse_turn
from agemem.tools.registry import ToolResult, ToolSet

Method = Literal["no-memory", "rag", "agemem-norl", "agemem"]
METHODS: tuple[Method, ...] = ("no-memory", "rag", "agemem-norl", "agemem")
TOOL_METHODS = ("agemem-norl", "agemem")
ENV_ACTION = "env"  # the observation name of a world action in an episode's steps
STAGE = 3  # AgeMem's integrated stage; these episodes have only this one
GOLD = "success"
_WRITES = {"Add_memory", "Update_memory", "Delete_memory"}
# Summary_context's default here (ours): the first sentence of each of the 4 latest messages.
# An interaction's latest steps matter most, and the most central sentences of a span of
# observations are its longest, most repeated ones (measured on BabyAI: the 8 central sentences
# of the paper-default summarizer outgrew the span they replaced).
SUMMARY_SENTENCES = 4
_NO_TOOLS = ToolSet[AgentMemoryState]([])
_NO_TOOLS_NOTE = "No memory tools in this run; nothing was done. Act with <answer>ACTION</answer>."

_ENV_GUIDE = """\
You act in a text environment to reach a goal. Here <answer>ACTION</answer> is your next \
environment action (write it as the valid actions are written); the environment replies with \
an observation, and the task ends when the environment says so or after {max_turns} turns."""
_MEMORY_GUIDE = """\
Memory tool calls are turns too: store what you learn about the environment with Add_memory, \
look it up with Retrieve_memory, and keep this conversation within its budget with \
Summary_context or Filter_context."""
_PLAIN_PROTOCOL = """\
At every step, first reason inside <think>...</think>, then write your next action as \
<answer>ACTION</answer>, and nothing outside these tags."""
_RAG_NOTE = "Observations come with related memories of your earlier steps."


def budget_line(tokens: int, t_max: int) -> str:
    """The line that ends each observation of the tool methods: how full the context is, so a
    policy can see when to summarize or filter (ours; the context counts itself without it).

    >>> budget_line(1530, 2048)
    'Context: 1,530 of 2,048 tokens.'
    """
    return f"Context: {tokens:,} of {t_max:,} tokens."


def system_prompt(method: Method, max_turns: int, compact: bool = False) -> str:
    """The protocol (and, with tools, AgeMem's tool documentation, or with `compact` only the
    tools' signatures) plus how actions work."""
    guide = _ENV_GUIDE.format(max_turns=max_turns)
    if method in TOOL_METHODS:
        tools = compact_protocol() if compact else agemem_system_prompt(AGEMEM_TOOLS)
        return f"{tools}\n\n{guide}\n{_MEMORY_GUIDE}"
    rag = f"\n{_RAG_NOTE}" if method == "rag" else ""
    return f"{_PLAIN_PROTOCOL}\n\n{guide}{rag}"


@dataclass(frozen=True)
class LoopSettings:
    """One benchmark run's rules. `max_turns` caps model turns, memory turns included (ours: set
    per benchmark in `agemem.agentic.benchmarks`); `top_k` is what `rag` shows per step (ours: 3,
    Retrieve_memory's default). `compact`: the tool methods' system prompt gives the tools'
    signatures only (~250 SmolLM2 tokens with the world guide instead of ~530, the form the QA
    presets train small models on; ours: at a `T_max` of 1,024 the full documentation took half
    the budget, and the scripted expert had to manage its context after every action)."""

    method: Method
    t_max: int = DEFAULT_T_MAX
    max_turns: int = 30
    top_k: int = 3
    compact: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.t_max < 1 or self.max_turns < 1 or self.top_k < 1:
            raise ValueError("t_max, max_turns and top_k must be >= 1")


class AgentEpisode:
    """One episode of a policy in a world: `start()` gives the first context, `step(turn)` the
    next one (None once the episode is over), `episode()` the record.

    The episode owns its context and a private in-memory SQLite store (closed by `close()`)
    whose ids are the same in every run (`seeded_memory_ids`), so the episode replays exactly.
    """

    def __init__(
        self,
        world: TextWorld,
        settings: LoopSettings,
        *,
        embedder: Embedder,
        token_counter: TokenCounter,
        summarizer: Summarizer | None = None,
    ) -> None:
        self.world = world
        self.settings = settings
        self._counter = token_counter
        self._tools = settings.method in TOOL_METHODS
        self._window = not self._tools  # no-memory and rag cut the history to fit t_max
        self._window_start = 0  # index of the first kept round after system prompt and goal
        self._store: MemoryStore = SQLiteStore(  # "reject": near-duplicate steps stored once
            ":memory:", embedder, ids=seeded_memory_ids(0), dedupe="reject"
        )
        summarizer = summarizer or ExtractiveSummarizer(max_sentences=SUMMARY_SENTENCES)
        self._context = Context(settings.t_max, token_counter, embedder, summarizer)
        self._state = AgentMemoryState(self._store, self._context)
        self._recorder: Recorder | None = None
        self.done = False

    @property
    def facts(self) -> EpisodeFacts:
        return self._recorder_or_fail().facts

    @property
    def headroom(self) -> int:
        """Tokens the context has left before `t_max` (negative when over it)."""
        return self._context.headroom

    def start(self) -> list[Message]:
        first, settings = self.world.reset(), self.settings
        system = {
            "role": "system",
            "content": system_prompt(settings.method, settings.max_turns, settings.compact),
        }
        self._context.append(system, protected=True)
        goal = {"role": "user", "content": f"Your goal: {first.goal}"}
        self._context.append(goal, protected=True)
        self._recorder = Recorder(
            EpisodeFacts(
                method=self.settings.method,
                questions=[
                    GoldQuestion(text=first.goal, answers=[GOLD], category=self.world.benchmark)
                ],
                answers=[None],
                tokens_at_answer=[None],
                n_max=self.settings.max_turns,
                t_max=self.settings.t_max,
                system_tokens=self._counter.count_messages([system]),
            )
        )
        self._observe(first, action=None)
        return self._show()

    def step(self, turn: Turn) -> list[Message] | None:
        if self.done or self._recorder is None:
            raise EnvError("the episode is over (or was never started): call start() first")
        parsed = parse_turn(turn, "auto")
        if parsed.ok and parsed.answer is not None:
            state = self.world.step(parsed.answer)
            error = None if state.valid else "rejected"
            action = ToolResult(ENV_ACTION, "", state.observation, error)
            self._recorder.step(turn, parsed, [action])
            self._context.append({"role": "assistant", "content": turn.text})
            self._observe(state, action=parsed.answer)
        else:
            results = self._memory_turn(parsed)
            self._recorder.step(turn, parsed, results)
            for message in turn_messages(turn, results):
                self._context.append(message)
        return self._next()

    def episode(self, group_id: str = "") -> Episode:
        """The record so far; `reward` has `success` and `progress` of the world's last state."""
        state = self.world.state
        success = bool(state and state.success)
        episode = self._recorder_or_fail().episode(
            self.world.task_id, group_id or self.world.task_id, self.world.benchmark
        )
        episode.reward = {"success": float(success), "progress": state.progress if state else 0.0}
        return episode

    def close(self) -> None:
        self._store.close()

    # ---- internals -----------------------------------------------------------------------
    def _recorder_or_fail(self) -> Recorder:
        if self._recorder is None:
            raise EnvError("no episode yet: call start() first")
        return self._recorder

    def _observe(self, state: WorldState, action: str | None) -> None:
        """Append the observation with the valid actions (with every observation: a list shown
        once could leave the context through the window, Filter or Summary), with related
        memories for `rag`; for `rag`, also store the step. With the tools, the observation ends
        with the context's size (`budget_line`)."""
        text = f"Observation: {state.observation}"
        if state.valid:  # a refused action's observation already lists them
            text += f"\n{valid_list(state.admissible)}"
        if self._tools:
            shown = [*self._context.messages, {"role": "user", "content": text}]
            text += f"\n{budget_line(self._counter.count_messages(shown), self.settings.t_max)}"
        if self.settings.method == "rag":
            query = state.observation
            related = self._store.search(query, top_k=self.settings.top_k, mode="dense")
            text = stage1_message(text, [(m.id, m.content) for m in related])
            if action is not None:
                self._store.add(f"{action} -> {state.observation}", memory_type="episodic")
        if action is not None:
            self._context.unprotect_last()  # the previous observation is history now
        self._context.append({"role": "user", "content": text}, protected=True)

    def _memory_turn(self, parsed: ParsedTurn) -> list[ToolResult]:
        """Observations for a turn without an action: format errors, or the memory tools."""
        recorder = self._recorder_or_fail()
        if not parsed.ok:
            results = (AGEMEM_TOOLS if self._tools else _NO_TOOLS).run(parsed, self._state)
        elif not self._tools:
            calls = parsed.tool_calls
            results = [ToolResult(c.name, c.id, _NO_TOOLS_NOTE, "rejected") for c in calls]
        else:
            results = [self._dispatch(call) for call in parsed.tool_calls]
        for result in results:
            recorder.call(STAGE, result)
        return results

    def _dispatch(self, call: ToolCall) -> ToolResult:
        writes = call.name in _WRITES
        before = memory_snapshot(self._store, self._state.scope) if writes else {}
        n_retrieved = len(self._state.retrieved)
        (result,) = AGEMEM_TOOLS.dispatch([call], self._state)
        recorder = self._recorder_or_fail()
        if writes and result.ok:
            after = memory_snapshot(self._store, self._state.scope)
            recorder.memory_changes(STAGE, before, after, str)
        recorder.facts.retrieved_ids.extend(i.id for i in self._state.retrieved[n_retrieved:])
        return result

    def _next(self) -> list[Message] | None:
        recorder = self._recorder_or_fail()
        facts = recorder.facts
        state = self.world.state
        if state is not None and state.done:
            facts.ended_by = "answered"
        elif facts.rounds >= self.settings.max_turns:
            facts.ended_by = "n_max"
        else:
            return self._show()
        self.done = True
        self._finish()
        return None

    def _show(self) -> list[Message]:
        messages = self._context.messages
        if self._window:
            messages = self._windowed(messages)
        tokens = self._counter.count_messages(messages)
        self._recorder_or_fail().show(View(messages, tokens, STAGE, question=0), True)
        return messages

    def _windowed(self, messages: list[Message]) -> list[Message]:
        """System prompt and goal, then the latest whole rounds (a model turn and what it got
        back) within `t_max`. The window moves in blocks (ours): once the rounds overflow, the
        oldest go until the prompt takes at most half of `t_max`, and the window stays put while
        later rounds fit. The kept rounds then open the next turns' prompts unchanged, so the
        policy's row cache serves their KV; a window sliding every turn makes each turn re-read
        all of it (~3x the prefill)."""
        head, rest = messages[:2], messages[2:]
        limit = self.settings.t_max
        if self._counter.count_messages(head + rest[self._window_start :]) <= limit:
            return head + rest[self._window_start :]
        # A round opens with the model's turn: an action then its observation, or a malformed
        # or tool turn then its tool messages (no user message at all).
        starts = [
            i for i, m in enumerate(rest) if m["role"] == "assistant" and i > self._window_start
        ]
        fits = (s for s in starts if self._counter.count_messages(head + rest[s:]) <= limit // 2)
        self._window_start = next(fits, starts[-1] if starts else self._window_start)
        return head + rest[self._window_start :]

    def _finish(self) -> None:
        recorder = self._recorder_or_fail()
        facts = recorder.facts
        state = self.world.state
        facts.answers = ["success" if state is not None and state.success else "failure"]
        facts.tokens_at_answer = [recorder.steps[-1].tokens if recorder.steps else None]
        snapshot = memory_snapshot(self._store, self._state.scope)
        recorder.final_memories(snapshot, str)


def action_counts(episode: Episode) -> tuple[int, int]:
    """(actions the world rejected, actions taken) in a world episode's record."""
    actions = [o for step in episode.steps for o in step.observations if o.name == ENV_ACTION]
    return sum(o.error is not None for o in actions), len(actions)


def run_worlds(
    worlds: Sequence[Callable[[], TextWorld]],
    policy: Policy,
    settings: LoopSettings,
    *,
    embedder: Embedder,
    token_counter: TokenCounter,
    summarizer: Summarizer | None = None,
    batch_size: int = 8,
    on_batch: Callable[[list[Episode]], None] | None = None,
) -> list[Episode]:
    """One episode per world factory, in order. Up to `batch_size` worlds run at once (one
    batched `policy.act` per turn); each world is created when its batch starts and closed at
    its end, so heavy worlds (a JVM each for ScienceWorld) are bounded by `batch_size`.
    `on_batch` gets each batch's episodes as it ends (the eval runner saves them there)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    episodes: list[Episode] = []
    for first in range(0, len(worlds), batch_size):
        batch: list[TextWorld] = []
        runs: list[AgentEpisode] = []
        try:
            for make in worlds[first : first + batch_size]:
                batch.append(make())
                runs.append(
                    AgentEpisode(
                        batch[-1],
                        settings,
                        embedder=embedder,
                        token_counter=token_counter,
                        summarizer=summarizer,
                    )
                )
            finished = _lockstep(runs, policy)
        finally:
            for run in runs:
                run.close()
            for world in batch:
                world.close()
        episodes += finished
        if on_batch is not None:
            on_batch(finished)
    return episodes


def _lockstep(runs: list[AgentEpisode], policy: Policy) -> list[Episode]:
    contexts = {i: run.start() for i, run in enumerate(runs)}
    while contexts:
        live = list(contexts)
        turns = policy.act([contexts[i] for i in live], None)
        if len(turns) != len(live):
            raise EnvError(
                f"{type(policy).__name__}.act returned {len(turns)} turns for {len(live)} "
                "contexts; a Policy must return one turn per context, in order"
            )
        for i, turn in zip(live, turns, strict=True):
            context = runs[i].step(turn)
            if context is None:
                del contexts[i]
            else:
                contexts[i] = context
    return [run.episode() for run in runs]
