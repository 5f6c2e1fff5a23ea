"""Expert episodes in the worlds: the scripted expert's actions in the agent's exact text protocol,
with the memory operations an agent needs to keep a long interaction within `T_max` (SFT data).

Like the QA oracle (`agemem.env.oracle`) the expert is not a `Policy`: it reads the world's
expert (`TextWorld.expert_action`) and the episode's context size, and writes each turn as a
model would have to (`emit`). With the memory tools (`agemem-norl`, `agemem`), ours:
- the first turn stores the goal and what the first observation shows (`Add_memory`);
- when the next action round might not fit (the headroom is below the largest round so far
  plus `margin` tokens), one turn stores the progress since the last note (each action with the
  first words of what it showed) and summarizes every earlier round (`Summary_context`, span
  "all": the current observation is protected, so the one to act on stays);
- the turn after a summary, once two progress notes exist and two rounds still fit, retrieves
  stored notes (`Retrieve_memory` with the goal): the summary keeps only the latest messages'
  first sentences, the notes keep the path;
- every other turn is the expert's action in `<answer>`.
Without the tools every turn is the action. An expert with no action (off its gold path) plays
the first valid action; such an episode fails and the reward filter drops it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from agemem.agentic.loop import TOOL_METHODS, AgentEpisode, LoopSettings, Method
from agemem.agentic.world import TextWorld
from agemem.episode import Episode
from agemem.memory.embed import Embedder
from agemem.policy.base import Turn
from agemem.policy.scripted import call, emit
from agemem.progress import LoggedProgress
from agemem.summarize import Summarizer, split_sentences
from agemem.tokens import TokenCounter

NOTE_WORDS = 8  # words of an observation's first sentence kept in a progress note (ours)
MARGIN = 32  # tokens of headroom kept beyond the largest action round seen (ours)


class _Expert:
    """Writes the turns of one episode; `turn()` reads the world and the episode's context."""

    def __init__(self, world: TextWorld, run: AgentEpisode, margin: int) -> None:
        self.world, self.run, self.margin = world, run, margin
        self.tools = run.settings.method in TOOL_METHODS
        self.path: list[str] = []  # "action -> what it showed" since the last note
        self.notes = 0
        self.retrieve_next = False
        self.pending: str | None = None  # the action of the turn being played
        self.headroom_before = 0  # the context's headroom when that action was written
        self.round = 0  # the most tokens one action round has added so far

    def turn(self) -> Turn:
        state = self.world.state
        assert state is not None
        if self.tools and self.notes == 0:
            self.notes += 1
            content = f"Goal: {state.goal} At the start: {_lead(state.observation)}"
            return emit(
                "I store the goal and the start before the details leave my context.",
                [call("Add_memory", content=content, memory_type="episodic")],
            )
        if self.tools and self.retrieve_next and self.run.headroom > 2 * self.need:
            self.retrieve_next = False
            return emit(
                "My context was summarized; I look up the path I stored.",
                [call("Retrieve_memory", query=state.goal, top_k=2)],
            )
        if self.tools and self.path and self.run.headroom < self.need:
            self.notes += 1
            self.retrieve_next = self.notes > 2
            note = "Progress: " + "; ".join(self.path)
            self.path = []
            return emit(
                "My context is nearly full: I store my progress and summarize the earlier rounds.",
                [
                    call("Add_memory", content=note, memory_type="episodic"),
                    call("Summary_context", span="all"),
                ],
            )
        action = self.world.expert_action() or state.admissible[0]
        self.pending, self.headroom_before = action, self.run.headroom
        return emit(f"Next step toward the goal: {action}.", answer=action)

    def observed(self) -> None:
        """After a step: the action just played joins the path with what it showed."""
        if self.pending is not None and self.world.state is not None:
            self.path.append(f"{self.pending} -> {_lead(self.world.state.observation)}")
            self.round = max(self.round, self.headroom_before - self.run.headroom)
        self.pending = None

    @property
    def need(self) -> int:
        """Headroom the next action round needs: the largest round so far plus the margin."""
        return self.round + self.margin


def _lead(text: str) -> str:
    """The first sentence of `text`, at most `NOTE_WORDS` words."""
    sentences = split_sentences(text.replace("\n", " "))
    words = (sentences[0] if sentences else text).split()
    return " ".join(words[:NOTE_WORDS]) + (" ..." if len(words) > NOTE_WORDS else "")


def expert_episode(
    world: TextWorld,
    settings: LoopSettings,
    *,
    embedder: Embedder,
    token_counter: TokenCounter,
    summarizer: Summarizer | None = None,
    margin: int = MARGIN,
) -> Episode:
    """One expert episode of `world` under `settings` (its method decides whether memory tools
    are used); the record is the one `AgentEpisode` keeps for any policy, rewarded with the
    world's `success` and `progress`."""
    run = AgentEpisode(
        world, settings, embedder=embedder, token_counter=token_counter, summarizer=summarizer
    )
    try:
        expert = _Expert(world, run, margin)
        context = run.start()
        while context is not None:
            turn = expert.turn()
            context = run.step(turn)
            expert.observed()
        return run.episode()
    finally:
        run.close()


def expert_episodes(
    worlds: Sequence[Callable[[], TextWorld]],
    settings: LoopSettings,
    *,
    embedder: Embedder,
    token_counter: TokenCounter,
    summarizer: Summarizer | None = None,
) -> Iterator[Episode]:
    """`expert_episode` over world factories, in order; each world is closed after its
    episode."""
    for make in worlds:
        world = make()
        try:
            yield expert_episode(
                world,
                settings,
                embedder=embedder,
                token_counter=token_counter,
                summarizer=summarizer,
            )
        finally:
            world.close()


def training_episodes(
    benchmarks: Sequence[str],
    n_tasks: int,
    method: Method,
    *,
    embedder: Embedder,
    token_counter: TokenCounter,
    progress: bool = False,
) -> list[Episode]:
    """Expert episodes on the training worlds (`train_tasks`) of each benchmark, `n_tasks`
    split evenly over them (PDDL has 4), under the evaluation's rules: its `T_max` and
    `MAX_TURNS`, so what is learned is what is measured."""
    from agemem.agentic.benchmarks import MAX_TURNS, train_tasks
    from agemem.eval.benchmarks import get_benchmark

    if not benchmarks:
        raise ValueError("no benchmark given: name at least one of babyai, scienceworld, pddl, twc")
    share = -(-n_tasks // len(benchmarks))
    episodes: list[Episode] = []
    with LoggedProgress(disable=not progress) as bar:
        for benchmark in benchmarks:
            settings = LoopSettings(
                method, t_max=get_benchmark(benchmark).t_max, max_turns=MAX_TURNS[benchmark]
            )
            worlds = train_tasks(benchmark, share)
            job = bar.add_task(f"expert episodes: {benchmark}", total=len(worlds), unit="worlds")
            for episode in expert_episodes(
                worlds, settings, embedder=embedder, token_counter=token_counter
            ):
                episodes.append(episode)
                bar.advance(job)
    return episodes
