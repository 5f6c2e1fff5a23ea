"""AgeMem's progressive training strategy as a list of phases, and the tasks and env of a step.

A `Phase` runs for `steps` optimizer steps with its own task and env knobs laid over the run's
base settings; phases follow one another and the last one goes on until the run ends. AgeMem
trains memory construction, then context control under distractors, then both together; the
paper gives no phase lengths or knobs, so `progressive` (thirds, and the knobs below) is ours.

Tasks of a step are drawn from the training split with a seed made of the run seed, the step and
the process rank, so a resumed run draws the very tasks the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agemem.env import EnvConfig
from agemem.tasks import Task, load_tasks
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


def load_split(
    source: str, options: dict[str, Any], split: str, limit: int, seed: int | None = None
) -> list[Task]:
    """`limit` tasks of `split` (a sample drawn with `seed`, or the first ones when None).

    For the synthetic source, `options` are `preset` plus `SyntheticConfig` fields."""
    if source != "synthetic":
        return load_tasks(source, split=split, limit=limit, seed=seed, **options)
    options = dict(options)
    base = SyntheticConfig.preset(options.pop("preset", "default"))
    config = dataclasses.replace(base, **options) if options else base
    return generate_tasks(split, limit=limit, seed=seed, config=config)


def step_seed(run_seed: int, step: int, rank: int = 0) -> int:
    """A seed for everything random in one step of one process (tasks, sampling, env ids)."""
    return (run_seed * 1_000_003 + step) * 1_009 + rank
