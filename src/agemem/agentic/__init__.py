"""Interactive text environments (BabyAI, ScienceWorld, PDDL, TWC, ALFWorld) with AgeMem's memory
tools beside each environment's own actions, and the benchmark runner `agemem eval` calls.

Each environment's package is imported only when its worlds are built, so importing this
package needs none of them.
"""

from agemem.agentic.benchmarks import BENCHMARKS, MAX_TURNS, TASKS, run_benchmark, task_count
from agemem.agentic.loop import METHODS, AgentEpisode, LoopSettings, run_worlds, system_prompt
from agemem.agentic.world import (
    ExpertRun,
    TextWorld,
    WorldState,
    WorldUnavailable,
    run_expert,
)

__all__ = [
    "BENCHMARKS",
    "MAX_TURNS",
    "METHODS",
    "TASKS",
    "AgentEpisode",
    "ExpertRun",
    "LoopSettings",
    "TextWorld",
    "WorldState",
    "WorldUnavailable",
    "run_benchmark",
    "run_expert",
    "run_worlds",
    "system_prompt",
    "task_count",
]
