"""Training on the interactive worlds (`tasks.source = "worlds"`): which worlds, and GRPO's
rollouts on them.

`WorldTasks` reads the source's options: `benchmarks` (a list of babyai, scienceworld, pddl,
twc), `method` (default "agemem": the memory tools on), and for GRPO `pool` (training worlds per
benchmark the steps draw from; default 40, the SFT preset's share) and `max_turns` (a lower turn
cap than the evaluation's, for quick checks; default: each world's evaluation cap). Every world
is a training world (`agemem.agentic.benchmarks.train_tasks`): no evaluation seed or problem.

A GRPO step draws `tasks_per_step` worlds from the pool (seeded by the step, so a resumed run
draws what the uninterrupted one would have), plays each `k` times with the sampling policy
under the evaluation's rules (`T_max`, turn cap, compact prompt), and scores every episode with
`agemem.rewards.world_reward` (the world's progress in AgeMem's composite). The `k` episodes of
one world share its task id, so they form one GRPO group.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agemem.agentic.benchmarks import MAX_TURNS, WorldFactory, train_tasks
from agemem.agentic.loop import METHODS, LoopSettings, Method, action_counts, run_worlds
from agemem.episode import Episode
from agemem.memory.embed import Embedder
from agemem.policy.base import Policy
from agemem.rewards import RewardConfig, world_reward
from agemem.tokens import TokenCounter

WORLDS = "worlds"
WORLD_POOL = 40
WORLD_BATCH = 8  # worlds played at once (lockstep), unless generate_batch says otherwise
TRAINING_WORLDS = ("babyai", "scienceworld", "pddl", "twc")


@dataclass(frozen=True)
class WorldTasks:
    benchmarks: tuple[str, ...]
    method: Method = "agemem"
    pool: int = WORLD_POOL
    max_turns: int | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, grpo: bool = True) -> WorldTasks:
        """The source's options, checked (one clear `ValueError` per mistake)."""
        known = ("benchmarks", "method", "pool", "max_turns") if grpo else ("benchmarks", "method")
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(
                f"the worlds source takes options {', '.join(known)}; got unknown {unknown}"
            )
        benchmarks = options.get("benchmarks")
        if (
            not isinstance(benchmarks, list)
            or not benchmarks
            or any(b not in TRAINING_WORLDS for b in benchmarks)
        ):
            raise ValueError(
                f"worlds option benchmarks: a non-empty list of {', '.join(TRAINING_WORLDS)} "
                f'(such as ["babyai", "twc"]); got {benchmarks!r}'
            )
        method = options.get("method", "agemem")
        if method not in METHODS:
            raise ValueError(f"worlds option method: one of {', '.join(METHODS)}; got {method!r}")
        pool, max_turns = options.get("pool", WORLD_POOL), options.get("max_turns")
        if not _whole(pool):
            raise ValueError(f"worlds option pool: a whole number >= 1; got {pool!r}")
        if max_turns is not None and not _whole(max_turns):
            raise ValueError(f"worlds option max_turns: a whole number >= 1; got {max_turns!r}")
        return cls(tuple(benchmarks), method, pool, max_turns)

    def settings(self, benchmark: str) -> LoopSettings:
        """The evaluation's rules for `benchmark` (`max_turns` lowers its turn cap)."""
        from agemem.eval.benchmarks import get_benchmark

        cap = MAX_TURNS[benchmark]
        turns = cap if self.max_turns is None else min(cap, self.max_turns)
        return LoopSettings(self.method, t_max=get_benchmark(benchmark).t_max, max_turns=turns)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def step_worlds(spec: WorldTasks, n: int, seed: int) -> list[tuple[str, WorldFactory]]:
    """`n` (benchmark, world) pairs drawn without replacement from the pool (with replacement
    once `n` exceeds it), the same for the same seed."""
    pool = [(b, w) for b in spec.benchmarks for w in train_tasks(b, spec.pool)]
    rng = random.Random(seed)
    if n <= len(pool):
        return rng.sample(pool, n)
    return [rng.choice(pool) for _ in range(n)]


def world_rollout(
    policy: Policy,
    spec: WorldTasks,
    worlds: Sequence[tuple[str, WorldFactory]],
    reward: RewardConfig,
    *,
    k: int,
    embedder: Embedder,
    token_counter: TokenCounter,
    max_batch: int = WORLD_BATCH,
) -> list[Episode]:
    """`k` scored episodes of each world, played by `policy` (sampling) in lockstep batches of
    at most `max_batch` worlds of one benchmark; each episode's `reward` gains the parts of
    `world_reward`."""
    episodes: list[Episode] = []
    for benchmark in dict.fromkeys(b for b, _ in worlds):
        plays = [w for b, w in worlds if b == benchmark for _ in range(k)]
        episodes += run_worlds(
            plays,
            policy,
            spec.settings(benchmark),
            embedder=embedder,
            token_counter=token_counter,
            batch_size=max_batch,
        )
    for episode in episodes:
        episode.reward |= world_reward(episode, reward)
    return episodes


def world_stats(episodes: Sequence[Episode]) -> dict[str, float]:
    """Means over world episodes: success, progress, turns, format errors, invalid actions (the
    share of the world's actions it rejected), tool calls and every reward part."""
    from agemem.train.evaluate import TOOLS, mean_rows

    rows = []
    for ep in episodes:
        facts, counts = ep.facts, ep.facts.tool_counts()
        rejected, actions = action_counts(ep)
        rows.append(
            {
                "success": ep.reward.get("success", 0.0),
                "progress": ep.reward.get("progress", 0.0),
                "turns": float(len(ep.steps)),
                "format_errors": float(facts.format_errors),
                "invalid_actions": rejected / actions if actions else 0.0,
                **{f"tools/{name}": float(counts.get(name, 0)) for name in TOOLS},
                **{f"reward/{key}": value for key, value in ep.reward.items()},
            }
        )
    return mean_rows(rows)
