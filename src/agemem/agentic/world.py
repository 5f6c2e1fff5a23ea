"""The interface every interactive text environment implements, and the expert runner.

A `TextWorld` is one task of one environment (a BabyAI level and seed, a ScienceWorld task
variation, a PDDL problem, a TWC game). `reset()` starts it; `step(action)` plays one action
written as text. Both return a `WorldState`: what the agent reads, the goal, the actions valid now,
and the AgentBoard metrics (`success`; `progress`, the share of subgoals reached, in [0, 1]).

Rules every wrapper keeps (so an agent loop never needs to guard against a wrapper):
- A bad action (unknown, inapplicable, empty) never raises: it comes back as an observation that
  names the problem and lists what is valid, with `valid=False`.
- `step` after the end returns the final state again with a note; it does not raise.
- `expert_action()` is the scripted expert's next action from the current state (None when it has
  none, e.g. off a fixed gold path), so an expert plays through the same text interface.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, ClassVar

ENDED_NOTE = "The episode is over; no action has any effect now."


class WorldUnavailable(RuntimeError):
    """An environment cannot run on this machine (package, Java or data missing); the message
    says what to install or where to put the data."""


@dataclass(frozen=True)
class WorldState:
    """What one reset or step gives back. `admissible` may hold templates (ScienceWorld's
    `focus on OBJ`) where the ground actions are too many to list."""

    observation: str
    goal: str
    admissible: tuple[str, ...]
    done: bool = False
    success: bool = False
    progress: float = 0.0
    valid: bool = True  # False: the action was refused and the world did not change


class TextWorld(ABC):
    """One task of a text environment. Subclasses set `benchmark` and `task_id`."""

    benchmark: ClassVar[str]
    task_id: str

    def __init__(self) -> None:
        self._last: WorldState | None = None
        self.steps = 0  # environment actions played since reset (refused ones included)

    def reset(self) -> WorldState:
        self.steps = 0
        self._last = self._reset()
        return self._last

    def step(self, action: str) -> WorldState:
        if self._last is None:
            raise RuntimeError(f"{type(self).__name__}.step before reset(): call reset() first")
        if self._last.done:
            return replace(self._last, observation=ENDED_NOTE, valid=False)
        self.steps += 1
        if not isinstance(action, str) or not normalize(action):
            state = replace(
                self._last,
                observation=f"Empty action. {valid_list(self._last.admissible)}",
                valid=False,
            )
        else:
            state = self._step(action)
        self._last = state
        return state

    @property
    def state(self) -> WorldState | None:
        """The latest state (None before reset)."""
        return self._last

    @abstractmethod
    def _reset(self) -> WorldState: ...

    @abstractmethod
    def _step(self, action: str) -> WorldState: ...

    @abstractmethod
    def expert_action(self) -> str | None: ...

    @abstractmethod
    def close(self) -> None:
        """Release what the world holds (a JVM, a subprocess session); safe to call twice."""


def normalize(action: str) -> str:
    """Lower case, single spaces, no surrounding quotes or final period.

    >>> normalize('  "Move   Forward." ')
    'move forward'
    """
    return " ".join(action.strip().strip("\"'`").rstrip(".").lower().split())


def valid_list(admissible: tuple[str, ...]) -> str:
    """The sentence naming the valid actions.

    >>> valid_list(("turn left", "toggle"))
    'Valid actions: turn left, toggle.'
    """
    return f"Valid actions: {', '.join(admissible)}."


def refused(state: WorldState, action: str, why: str) -> WorldState:
    """`state` unchanged, with an observation saying why `action` was refused."""
    return replace(
        state, observation=f"{why} ({action!r}). {valid_list(state.admissible)}", valid=False
    )


def close_java(env: Any) -> None:
    """Close a py4j-based simulator (ScienceWorld, TextWorldExpress) and wait for its JVM to
    exit, so the package's own `__del__` finds nothing left to close (it otherwise writes to
    the dead process's pipe at interpreter exit)."""
    process = env._gateway.java_process
    if process.poll() is None:
        env.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass(frozen=True)
class ExpertRun:
    """How a scripted expert did: its actions, the final state, and whether every action it
    took was accepted by the wrapper."""

    actions: list[str]
    final: WorldState
    all_valid: bool


def run_expert(world: TextWorld, max_steps: int = 500) -> ExpertRun:
    """Play `world` from reset with its expert, through the text interface."""
    state = world.reset()
    actions: list[str] = []
    all_valid = True
    while not state.done and len(actions) < max_steps:
        action = world.expert_action()
        if action is None:
            break
        actions.append(action)
        state = world.step(action)
        all_valid = all_valid and state.valid
    return ExpertRun(actions, state, all_valid)
