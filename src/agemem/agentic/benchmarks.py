"""The benchmark task lists and `run_benchmark`, the entry point `agemem eval` dispatches to.

Each benchmark is a fixed, ordered list of world factories (nothing is sampled at run time, so
every method sees the same tasks), interleaved so that `limit=N` covers several levels, tasks or
domains. The lists are ours (AgentBoard's exact task files are not available offline):
- `babyai`: 12 BabyAI levels the minigrid bot solves in at most ~25 steps, seeds 0-9 (120 tasks).
- `scienceworld`: the 30 ScienceWorld tasks, variations 0-2, "easy" simplifications (90 tasks).
- `pddl`: pddlgym's blocks (test and train problems), gripper, easygripper and ferry (24).
- `twc`: TWC games of the test fold with 1-3 items to put away, seeds 0-19 (60 tasks).
- `alfworld`: the `valid_unseen` games under `$ALFWORLD_DATA` (when present, see `alfworld`).

`train_tasks` lists the worlds that expert episodes and training read (ours), disjoint from the
lists above by construction (a test checks the ids):
- `babyai`: the same 12 levels, seeds from 1000.
- `scienceworld`: the 30 tasks, the variations of ScienceWorld's train split from 3 on.
- `pddl`: gripper train 0 and easygripper train 0-2, the problems outside the evaluation list
  that the expert solves in minutes (its search found no first action within 60 s on gripper
  test 5, gripper train 1, 5 and 9, and ferry train 0). pddlgym ships 10 blocks problems and
  all 10 are evaluation tasks, so blocks and ferry are transfer tests.
- `twc`: the train fold, 1-3 items, seeds from 0.

`MAX_TURNS` caps model turns per episode, memory turns included (ours; the papers give none):
enough for the expert's path with room for mistakes and memory management (ScienceWorld 60: its
expert paths run to ~40 actions, and with the memory tools at `T_max` 2,048 the expert summarizes
about every fifth action).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import zip_longest

from agemem.agentic.loop import METHODS, LoopSettings, Method, run_worlds
from agemem.agentic.world import TextWorld
from agemem.env.embed_cache import cached
from agemem.episode import Episode
from agemem.eval.methods.base import RunContext

WorldFactory = Callable[[], TextWorld]

BABYAI_LEVELS = (
    "GoToRedBall",
    "GoToRedBallGrey",
    "GoToObj",
    "GoToLocal",
    "PickupLoc",
    "PickupDist",
    "PutNextLocal",
    "GoToDoor",
    "OpenDoor",
    "OpenRedDoor",
    "GoToObjDoor",
    "GoToRedBlueBall",
)
SCIENCEWORLD_VARIATIONS = 3
PDDL_PROBLEMS = (
    ("blocks", True, 5),
    ("blocks", False, 5),
    ("gripper", True, 5),
    ("easygripper", True, 5),
    ("ferry", True, 4),
)
TWC_SEEDS = 20
TRAIN_SEED = 1000  # first BabyAI seed of the training worlds
PDDL_TRAIN = (("gripper", False, range(1)), ("easygripper", False, range(3)))
MAX_TURNS = {"babyai": 40, "scienceworld": 60, "pddl": 30, "twc": 30, "alfworld": 40}
# Worlds run at once (one batched policy call per turn); ScienceWorld runs a JVM per world.
BATCH = {"babyai": 8, "scienceworld": 4, "pddl": 8, "twc": 8, "alfworld": 4}
BENCHMARKS = tuple(MAX_TURNS)


def _interleave(*groups: list[WorldFactory]) -> list[WorldFactory]:
    return [f for row in zip_longest(*groups) for f in row if f is not None]


def babyai_tasks() -> list[WorldFactory]:
    from agemem.agentic.babyai import BabyAIWorld

    return [partial(BabyAIWorld, level, seed) for seed in range(10) for level in BABYAI_LEVELS]


def scienceworld_tasks() -> list[WorldFactory]:
    from agemem.agentic.scienceworld import ScienceWorldWorld, task_names

    return [
        partial(ScienceWorldWorld, task, variation)
        for variation in range(SCIENCEWORLD_VARIATIONS)
        for task in task_names()
    ]


def pddl_tasks() -> list[WorldFactory]:
    from agemem.agentic.pddl import PDDLWorld

    groups = [
        [partial(PDDLWorld, domain, p, test=test) for p in range(n)]
        for domain, test, n in PDDL_PROBLEMS
    ]
    return _interleave(*groups)


def twc_tasks() -> list[WorldFactory]:
    from agemem.agentic.twc import TWCWorld

    return [partial(TWCWorld, seed, items) for seed in range(TWC_SEEDS) for items in (1, 2, 3)]


def alfworld_tasks() -> list[WorldFactory]:
    from agemem.agentic.alfworld import ALFWorldWorld, game_files

    return [partial(ALFWorldWorld, path) for path in game_files("valid_unseen")]


TASKS: dict[str, Callable[[], list[WorldFactory]]] = {
    "babyai": babyai_tasks,
    "scienceworld": scienceworld_tasks,
    "pddl": pddl_tasks,
    "twc": twc_tasks,
    "alfworld": alfworld_tasks,
}


def train_tasks(benchmark: str, n: int) -> list[WorldFactory]:
    """The first `n` training worlds of `benchmark` (fewer where the benchmark has fewer: PDDL
    has 4), interleaved like the evaluation lists; none is an evaluation task."""
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    if benchmark == "babyai":
        from agemem.agentic.babyai import BabyAIWorld

        rounds = -(-n // len(BABYAI_LEVELS))
        seeds = range(TRAIN_SEED, TRAIN_SEED + rounds)
        return [partial(BabyAIWorld, level, s) for s in seeds for level in BABYAI_LEVELS][:n]
    if benchmark == "scienceworld":
        from agemem.agentic.scienceworld import ScienceWorldWorld, train_variations

        split = train_variations()
        groups = [
            [
                partial(ScienceWorldWorld, task, v)
                for v in variations
                if v >= SCIENCEWORLD_VARIATIONS
            ]
            for task, variations in split.items()
        ]
        return _interleave(*groups)[:n]
    if benchmark == "pddl":
        from agemem.agentic.pddl import PDDLWorld

        groups = [
            [partial(PDDLWorld, domain, p, test=test) for p in problems]
            for domain, test, problems in PDDL_TRAIN
        ]
        return _interleave(*groups)[:n]
    if benchmark == "twc":
        from agemem.agentic.twc import TWCWorld

        seeds = range(-(-n // 3))
        return [partial(TWCWorld, s, items, fold="train") for s in seeds for items in (1, 2, 3)][:n]
    raise ValueError(
        f"no training worlds for {benchmark!r}; choose one of babyai, scienceworld, pddl, twc"
    )


def task_count(benchmark: str, limit: int | None = None) -> int:
    """How many tasks `run_benchmark(benchmark, ..., limit)` plays."""
    if benchmark not in TASKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(TASKS)}")
    return len(TASKS[benchmark]()[:limit])


def run_benchmark(
    benchmark: str,
    method: str,
    ctx: RunContext,
    limit: int | None = None,
    *,
    skip: int = 0,
    on_batch: Callable[[list[Episode]], None] | None = None,
) -> list[Episode]:
    """Episodes of `method` on the first `limit` tasks of `benchmark` (all when None), in task
    order, minus the first `skip` (played by an interrupted run); `on_batch` gets each batch's
    episodes as it ends. Batches start at `skip`, so a resumed run plays the same batches as an
    uninterrupted one when `skip` is a multiple of the batch size (the runner's case).
    `reward["success"]` (0/1) and `reward["progress"]` ([0, 1]) are AgentBoard's metrics.

    `ctx.t_max` is the context budget, `ctx.top_k` what `rag` shows per step; `agemem-norl` and
    `agemem` differ only by `ctx.policy` (the caller passes the base or the trained model).
    Raises `WorldUnavailable` when the environment cannot run here (the message says why).
    """
    if benchmark not in TASKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(TASKS)}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None; got {limit}")
    if skip < 0:
        raise ValueError(f"skip must be >= 0; got {skip}")
    worlds = TASKS[benchmark]()[:limit][skip:]
    settings = LoopSettings(
        method=_method(method), t_max=ctx.t_max, max_turns=MAX_TURNS[benchmark], top_k=ctx.top_k
    )
    return run_worlds(
        worlds,
        ctx.policy,
        settings,
        embedder=cached(ctx.embedder),
        token_counter=ctx.token_counter,
        batch_size=BATCH[benchmark],
        on_batch=on_batch,
    )


def _method(name: str) -> Method:
    return next(m for m in METHODS if m == name)
