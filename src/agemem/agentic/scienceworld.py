"""ScienceWorld as a text world (the `scienceworld` package runs the simulator in Java 17).

Metrics (AgentBoard's): progress is the task score over 100 (ScienceWorld scores its subgoals);
success is a score of 100. A failed task (score -100) ends the episode with progress 0.
Admissible actions are the action templates (`focus on OBJ`, ...): the ground list runs to
thousands. The simulator parses free text itself; an input it cannot match comes back as
"No known action matches that input." with `valid=False`, and costs no step of the task.
The expert replays the gold action sequence the package generates.

`simplification` defaults to "easy" (ours; AgentBoard runs ScienceWorld with simplifications:
teleporting, no electrical actions, open doors...).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from typing import Any

from agemem.agentic.world import (
    TextWorld,
    WorldState,
    WorldUnavailable,
    close_java,
    normalize,
    refused,
)

try:
    from scienceworld import ScienceWorldEnv
except ImportError as err:  # pragma: no cover - depends on the install
    _MISSING: ImportError | None = err
else:
    _MISSING = None

NO_MATCH = "No known action matches that input."
BLOCKED = ("reset task",)  # would restart the task inside the episode
_FAILED = -100


def check_available() -> None:
    if _MISSING is not None:
        raise WorldUnavailable(
            f"ScienceWorld needs the scienceworld package ({_MISSING}): "
            "pip install scienceworld==1.2.3"
        )
    if shutil.which("java") is None:
        raise WorldUnavailable("ScienceWorld runs on Java: install a Java 17 runtime (java)")


def task_names() -> list[str]:
    """The 30 ScienceWorld task names (starts a simulator for a moment)."""
    check_available()
    env = ScienceWorldEnv("")
    try:
        return list(env.get_task_names())
    finally:
        close_java(env)


def train_variations() -> dict[str, list[int]]:
    """Each task's variations in ScienceWorld's own train split (starts a simulator for a
    moment)."""
    check_available()
    env = ScienceWorldEnv("")
    try:
        split = {}
        for task in env.get_task_names():
            env.load(task, 0)
            split[task] = sorted(env.get_variations_train())
        return split
    finally:
        close_java(env)


class ScienceWorldWorld(TextWorld):
    """One ScienceWorld task variation, e.g. `ScienceWorldWorld("boil", variation=0)`.
    Each world runs its own simulator process (about 2 s to start)."""

    benchmark = "scienceworld"

    def __init__(
        self,
        task: str,
        variation: int = 0,
        *,
        simplification: str = "easy",
        step_limit: int = 100,
    ) -> None:
        check_available()
        super().__init__()
        self.env: Any = ScienceWorldEnv("", envStepLimit=step_limit)
        names = list(self.env.get_task_names())
        if task not in names:
            close_java(self.env)
            raise ValueError(f"unknown ScienceWorld task {task!r}; tasks: {', '.join(names)}")
        self.task, self.variation, self.simplification = task, variation, simplification
        self.task_id = f"scienceworld/{task}/var{variation}"
        self._gold: list[str] = []
        self._next, self._on_path = 0, True

    def _reset(self) -> WorldState:
        self.env.load(self.task, self.variation, self.simplification, generateGoldPath=True)
        obs, info = self.env.reset()
        self._gold = list(self.env.get_gold_action_sequence())
        self._next, self._on_path = 0, True
        self._goal = self.env.get_task_description()
        self._templates = tuple(a for a in self.env.get_possible_actions() if a not in BLOCKED)
        return self._state(f"{obs.strip()}\n{info['inv'].strip()}", info["score"], done=False)

    def _step(self, action: str) -> WorldState:
        assert self.state is not None
        if normalize(action) in BLOCKED:
            return refused(self.state, action, "Restarting the task is not allowed")
        obs, _, done, info = self.env.step(action.strip())
        if obs.strip() == NO_MATCH:  # the simulator refused it without taking a step
            state = self._state(f"{NO_MATCH} ({action!r})", info["score"], done=False)
            return replace(state, valid=False)
        expected = self._gold[self._next] if self._next < len(self._gold) else None
        self._on_path = self._on_path and action.strip() == expected
        self._next += 1
        return self._state(obs.strip(), info["score"], done=bool(done))

    def expert_action(self) -> str | None:
        if not self._on_path or self._next >= len(self._gold):
            return None
        return self._gold[self._next]

    def close(self) -> None:
        close_java(self.env)

    def _state(self, text: str, score: float, done: bool) -> WorldState:
        success = score >= 100
        progress = 0.0 if score <= _FAILED else min(max(score, 0), 100) / 100
        return WorldState(text, self._goal, self._templates, done or success, success, progress)
