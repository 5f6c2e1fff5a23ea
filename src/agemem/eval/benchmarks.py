"""The benchmarks `agemem eval` runs, each with the defaults that make it affordable on a CPU.

Question-answering benchmarks load tasks from `agemem.tasks`; the interactive ones (`babyai`,
`scienceworld`, `pddl`, `twc`, and `alfworld` where its games are downloaded) are run by
`agemem.agentic.run_benchmark`, imported only then.

Defaults (ours; the papers run 7B models on GPUs with an 8,192-token window). They are sized for
SmolLM2-135M on 2 CPU cores, where a prompt costs ~7 ms per token to read and an answer token
~60 ms (measured: 3,036 prompt tokens + 32 new in 22.7 s on one thread), so prompt tokens
dominate the bill:
- `t_max`: the context budget. HotpotQA's stages hold ~1,500 tokens, so 1,024 makes the budget
  bind as AgeMem's 8,192 does on its longer inputs; LoCoMo conversations run 16-26K tokens and
  2,048 is ~10% of one; synthetic tasks carry their own budget for agents (the `synthetic`
  env preset), and 256 tokens for the prompt-only baselines; AtomMem's long HotpotQA gets 4,096.
- `batch_size`: contexts per `act` call (8: batched generation is ~5x faster per token than one
  stream, and 8 short prompts still fit the cache).
- `env_preset` + `env_overrides`: the agent methods' episode rules (`agemem.env.PRESETS`): the
  `compact` preset for HotpotQA and LoCoMo (the rules `smollm2-hotpotqa` trains under: one
  stage-1 message per prompt with its memories, the compact prompt, three stage-3 turns), the
  synthetic preset as trained on the synthetic curriculum, `paper` with `CPU_AGENT` elsewhere.
- `stage1_window`: restarts the stage-1 context every N messages where the env keeps them
  (None: the env's own window).
Every default is a CLI option (`--t-max`, `--batch-size`, ...).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from agemem.tasks import Task, TaskError, load_tasks

# Agent episodes on a CPU (ours): three stage-3 turns per question (retrieve, manage, answer;
# the env's default is 8) and only the incoming messages kept in stages 1-2, which halves an
# episode's prompt tokens. agemem and agemem-norl always run under the same rules.
CPU_AGENT: dict[str, Any] = {"stage3_max_turns": 3, "keep_stage12_turns": False}


WORLD_T_MAX = 2048


class BenchmarkError(ValueError):
    """An unknown benchmark or one that cannot run here; the message names the fix."""


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    source: str  # task source, or "agentic" for interactive environments
    split: str = "test"
    options: dict[str, Any] = field(default_factory=dict)
    t_max: int = 1024
    batch_size: int = 8
    stage1_window: int | None = None
    env_preset: str = "paper"
    env_overrides: dict[str, Any] = field(default_factory=lambda: dict(CPU_AGENT))
    default_limit: int | None = None

    @property
    def interactive(self) -> bool:
        return self.source == "agentic"


BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in (
        # Held-out seeds (the test range); the source is unbounded, so 100 unless --limit.
        BenchmarkSpec(
            "synthetic",
            "synthetic",
            t_max=256,
            env_preset="synthetic",
            env_overrides={},
            default_limit=100,
        ),
        # the fixed 707-question test split
        BenchmarkSpec("hotpotqa", "hotpotqa", env_preset="compact", env_overrides={}),
        BenchmarkSpec("hotpotqa-long", "hotpotqa-long", options={"n_docs": 200}, t_max=4096),
        # conversation 1 (the test split): one task of 419 turns and 152 questions
        BenchmarkSpec(
            "locomo", "locomo", t_max=2048, batch_size=8, env_preset="compact", env_overrides={}
        ),
        # The worlds at T_max 2,048 (ours): at 1,024 the scripted expert with the memory tools had
        # to summarize after every action on ScienceWorld and PDDL and still overflowed.
        *(
            BenchmarkSpec(n, "agentic", t_max=WORLD_T_MAX)
            for n in ("babyai", "scienceworld", "pddl", "twc")
        ),
        # needs the alfworld package and $ALFWORLD_DATA
        BenchmarkSpec("alfworld", "agentic", t_max=WORLD_T_MAX),
    )
}


def get_benchmark(name: str) -> BenchmarkSpec:
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def load_benchmark(
    spec: BenchmarkSpec, limit: int | None, options: dict[str, Any] | None = None
) -> list[Task]:
    """The benchmark's tasks in their canonical order (the first `limit`)."""
    limit = spec.default_limit if limit is None else limit
    try:
        return load_tasks(
            spec.source, spec.split, limit, None, **{**spec.options, **(options or {})}
        )
    except TaskError as err:  # TaskDataMissing included: its message says where to get the data
        raise BenchmarkError(f"{spec.name}: {err}") from None


def agentic() -> ModuleType:
    """`agemem.agentic` (its `run_benchmark` and `task_count`), or a one-line error when that
    module is not here."""
    try:
        return importlib.import_module("agemem.agentic")
    except ImportError as err:
        raise BenchmarkError(
            f"interactive benchmarks need agemem.agentic ({err}); install the "
            "agentic extra (pip install 'agemem[agentic]') or pick a QA benchmark"
        ) from None
