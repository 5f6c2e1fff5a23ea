"""AgeMem's progressive training strategy as a list of phases, and the tasks and env of a step.

A `Phase` runs for `steps` optimizer steps with its own task and env knobs laid over the run's
base settings; phases follow one another and the last one goes on until the run ends. AgeMem
trains memory construction, then context control under distractors, then both together; the
paper gives no phase lengths or knobs, so `progressive` (thirds, and the knobs below) is ours.

Tasks of a step are drawn from the training split with a seed made of the run seed, the step and
the process rank, so a resumed run draws the very tasks the uninterrupted run would have.

`source="mix"` trains on several sources at once: its options hold `parts`, each a `MixPart`
(a source, its options and a weight); a draw of N tasks takes from each part its share of N
(largest remainders), each part drawn with its own seed, and shuffles them together.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agemem.env import EnvConfig
from agemem.tasks import Task, TaskError, load_tasks
from agemem.tasks.synthetic import SyntheticConfig, generate_tasks


class Phase(BaseModel):
    """One stretch of training: `tasks` overrides the task options (for the synthetic source,
    any `SyntheticConfig` field), `env` overrides `EnvConfig` fields."""

    model_config = ConfigDict(extra="forbid")

    name: str
    steps: int = Field(ge=1)
    tasks: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, Any] = Field(default_factory=dict)


def progressive(steps: int) -> list[Phase]:
    """AgeMem's three phases for the synthetic curriculum, in thirds of `steps` (ours):
    1. memory construction: every fact corrected, few distractors, a budget that never binds;
    2. context control: twice the distractors under a tight budget (12 + 8 per note, the
       task generator's own scaling);
    3. integrated: the run's base tasks and env."""
    third = max(1, steps // 3)
    return [
        Phase(
            name="memory",
            steps=third,
            tasks={"n_corrections": 3, "n_distractors": 2},
            env={"t_max_margin": 1000},
        ),
        Phase(name="context", steps=third, tasks={"n_distractors": 8, "t_max": 76}),
        Phase(name="integrated", steps=max(1, steps - 2 * third)),
    ]


def hotpotqa_progressive(steps: int) -> list[Phase]:
    """AgeMem's three phases on HotpotQA, in thirds of `steps` (ours): 1. memory construction:
    the mixed stage 1, one stage-2 note; 2. context control: one distractor paragraph in stage 1,
    every other one in stage 2; 3. integrated: the run's base tasks (two in stage 1, the rest in
    stage 2)."""
    third = max(1, steps // 3)
    return [
        Phase(name="memory", steps=third, tasks={"stage2_distractors": 1}),
        Phase(name="context", steps=third, tasks={"stage1_distractors": 1}),
        Phase(name="integrated", steps=max(1, steps - 2 * third)),
    ]


def phase_at(phases: Sequence[Phase], step: int) -> tuple[int, Phase | None]:
    """(index, phase) in force at 0-based `step`; (0, None) without a curriculum."""
    if not phases:
        return 0, None
    end = 0
    for index, phase in enumerate(phases):
        end += phase.steps
        if step < end:
            return index, phase
    return len(phases) - 1, phases[-1]


def env_config(preset: str, overrides: dict[str, Any], phase: Phase | None = None) -> EnvConfig:
    """The env preset with the run's overrides, then the phase's."""
    changes = {**overrides, **(phase.env if phase else {})}
    return EnvConfig.preset(preset).with_(**{k: _tuples(v) for k, v in changes.items()})


def _tuples(value: Any) -> Any:
    """Lists from a config file as the tuples `EnvConfig` holds."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def task_options(options: dict[str, Any], phase: Phase | None = None) -> dict[str, Any]:
    return {**options, **(phase.tasks if phase else {})}


class MixPart(BaseModel):
    """One source of a `mix`: its name, its options (as for `load_split`) and its weight."""

    model_config = ConfigDict(extra="forbid")

    source: str
    weight: float = Field(gt=0)
    options: dict[str, Any] = Field(default_factory=dict)


def mix_counts(weights: Sequence[float], n: int) -> list[int]:
    """`n` split by `weights`, largest remainders first (ties to the earlier part).

    >>> mix_counts([0.6, 0.25, 0.15], 10)
    [6, 3, 1]
    """
    total = sum(weights)
    exact = [w * n / total for w in weights]
    counts = [int(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _mixed(options: dict[str, Any], split: str, limit: int, seed: int | None) -> list[Task]:
    if set(options) != {"parts"} or not isinstance(options["parts"], list) or not options["parts"]:
        raise TaskError("source 'mix' takes one option, parts: a list of {source, weight}")
    try:
        parts = [MixPart.model_validate(p) for p in options["parts"]]
    except ValueError as err:
        raise TaskError(f"source 'mix': a part is not {{source, weight, options}}: {err}") from None
    tasks: list[Task] = []
    counts = mix_counts([p.weight for p in parts], limit)
    for i, (part, n) in enumerate(zip(parts, counts, strict=True)):
        part_seed = None if seed is None else seed * 31 + i
        tasks += load_split(part.source, part.options, split, n, part_seed) if n else []
    if seed is not None:
        random.Random(seed).shuffle(tasks)
    return tasks


def load_split(
    source: str, options: dict[str, Any], split: str, limit: int, seed: int | None = None
) -> list[Task]:
    """`limit` tasks of `split` (a sample drawn with `seed`, or the first ones when None).

    For the synthetic source, `options` are `preset` plus `SyntheticConfig` fields; for `mix`,
    `parts` (module docstring)."""
    if source == "mix":
        return _mixed(options, split, limit, seed)
    if source != "synthetic":
        return load_tasks(source, split=split, limit=limit, seed=seed, **options)
    options = dict(options)
    base = SyntheticConfig.preset(options.pop("preset", "default"))
    config = dataclasses.replace(base, **options) if options else base
    return generate_tasks(split, limit=limit, seed=seed, config=config)


def step_seed(run_seed: int, step: int, rank: int = 0) -> int:
    """A seed for everything random in one step of one process (tasks, sampling, env ids)."""
    return (run_seed * 1_000_003 + step) * 1_009 + rank
