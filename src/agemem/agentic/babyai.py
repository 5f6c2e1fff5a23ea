"""BabyAI (minigrid's BabyAI levels) as a text world: what the agent sees, in words.

The observation describes the agent's 7x7 egocentric view (minigrid's partial observation, walls
block sight): every object with its colour and where it is relative to the agent ("2 steps ahead
and 1 to your left"), what is directly in front, how far the wall ahead is, and what the agent
carries. Actions are minigrid's primitive ones in words (`ACTIONS`); minigrid's `done` action is
left out because BabyAI ignores it unless `BABYAI_DONE_ACTIONS` is set.

Metrics (ours where AgentBoard's BabyAI subgoal annotations are not available): success is the
level's own verdict (reward > 0); progress is the share of the instruction's clauses completed
(a "pick up X and then go to Y" mission is 0.5 after the pick-up), read from the verifier.

The expert is minigrid's `BabyAIBot`, a planner that searches the grid breadth-first; its actions
go through this wrapper as text.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from agemem.agentic.world import TextWorld, WorldState, WorldUnavailable, normalize, refused

try:
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the BabyAI levels with gymnasium)
    from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT
    from minigrid.envs.babyai.core.verifier import ActionInstr, SeqInstr
    from minigrid.utils.baby_ai_bot import BabyAIBot
except ImportError as err:  # pragma: no cover - depends on the install
    _MISSING: ImportError | None = err
else:
    _MISSING = None

# Text action -> minigrid action index (minigrid.core.actions.Actions).
ACTIONS = {
    "turn left": 0,
    "turn right": 1,
    "move forward": 2,
    "pick up": 3,
    "drop": 4,
    "toggle": 5,
}
ALIASES = {
    "left": "turn left",
    "right": "turn right",
    "forward": "move forward",
    "go forward": "move forward",
    "pickup": "pick up",
    "open": "toggle",
}
_NAME_OF = {index: name for name, index in ACTIONS.items()}
_DOOR_STATES = {0: "open", 1: "closed", 2: "locked"}
_VIEW_CENTER, _VIEW_BOTTOM = 3, 6  # the agent's cell in minigrid's 7x7 egocentric image
_SKIP = {"unseen", "empty", "wall", "floor", "agent"}


def check_available() -> None:
    if _MISSING is not None:
        raise WorldUnavailable(
            f"BabyAI needs minigrid ({_MISSING}); install it: pip install minigrid==3.2.0"
        )


class BabyAIWorld(TextWorld):
    """One BabyAI level at one seed, e.g. `BabyAIWorld("GoToRedBall", seed=3)`."""

    benchmark = "babyai"

    def __init__(self, level: str, seed: int = 0) -> None:
        check_available()
        super().__init__()
        env_id = level if level.startswith("BabyAI-") else f"BabyAI-{level}"
        env_id = env_id if env_id.endswith(("-v0", "-v1")) else f"{env_id}-v0"
        if env_id not in gym.registry:
            known = sorted(k[7:-3] for k in gym.registry if k.startswith("BabyAI-"))
            raise ValueError(f"unknown BabyAI level {level!r}; levels: {', '.join(known)}")
        self.env = gym.make(env_id)
        self.seed = seed
        self.task_id = f"babyai/{env_id[7:]}/seed{seed}"
        self._bot: Any = None
        self._suggested: int | None = None
        self._taken: int | None = None

    @property
    def raw(self) -> Any:
        return self.env.unwrapped

    def _reset(self) -> WorldState:
        with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints rejected samples
            obs, _ = self.env.reset(seed=self.seed)
        self._bot, self._suggested, self._taken = BabyAIBot(self.env), None, None
        self._goal = str(obs["mission"])
        return self._state(self._describe(obs), done=False, success=False)

    def _step(self, action: str) -> WorldState:
        name = normalize(action)
        name = ALIASES.get(name, name)
        if name not in ACTIONS:
            return refused(self._last_state(), action, "Unknown action")
        raw, index = self.raw, ACTIONS[name]
        before = _snapshot(raw)
        obs, reward, terminated, truncated, _ = self.env.step(index)
        self._taken = index
        feedback = _feedback(name, before, _snapshot(raw))
        text = f"{feedback} {self._describe(obs)}".strip()
        success = bool(terminated and reward > 0)
        if truncated and not success:
            text += f" The step limit ({raw.max_steps}) is reached."
        return self._state(text, done=bool(terminated or truncated), success=success)

    def expert_action(self) -> str | None:
        if self._bot is None or self.state is None or self.state.done:
            return None
        if self._suggested is None or self._taken is not None:  # replan once per action played
            taken = None if self._taken == self._suggested else self._taken
            self._suggested, self._taken = int(self._bot.replan(taken)), None
        return _NAME_OF.get(self._suggested)  # None for `done`: the bot thinks it is over

    def close(self) -> None:
        self.env.close()

    # ---- internals -----------------------------------------------------------------------
    def _last_state(self) -> WorldState:
        assert self.state is not None
        return self.state

    def _state(self, text: str, *, done: bool, success: bool) -> WorldState:
        progress = 1.0 if success else _progress(self.raw.instrs)
        return WorldState(text, self._goal, tuple(ACTIONS), done, success, progress)

    def _describe(self, obs: dict[str, Any]) -> str:
        image = obs["image"]
        seen: list[tuple[int, str]] = []
        for i in range(image.shape[0]):
            for j in range(image.shape[1]):
                kind = IDX_TO_OBJECT[int(image[i, j, 0])]
                if kind in _SKIP or (i, j) == (_VIEW_CENTER, _VIEW_BOTTOM):
                    continue
                ahead, right = _VIEW_BOTTOM - j, i - _VIEW_CENTER
                thing = _thing(kind, int(image[i, j, 1]), int(image[i, j, 2]))
                seen.append((ahead + abs(right), f"{thing} {_where(ahead, right)}"))
        listed = "; ".join(t for _, t in sorted(seen))
        parts = [f"You see {listed}." if seen else "You see no objects."]
        parts.append(_ahead(image))
        carrying = self.raw.carrying
        held = _thing(carrying.type, carrying.color) if carrying else "nothing"
        parts.append(f"You carry {held}.")
        return " ".join(parts)


def _thing(kind: str, color: int | str, state: int = 0) -> str:
    color = color if isinstance(color, str) else IDX_TO_COLOR[color]
    if kind == "wall":
        return "a wall"
    if kind == "door":
        return f"a {_DOOR_STATES.get(state, 'closed')} {color} door"
    return f"a {color} {kind}"


def _steps(n: int) -> str:
    return f"{n} step{'s' if n != 1 else ''}"


def _where(ahead: int, right: int) -> str:
    """Position relative to the agent, e.g. `2 steps ahead and 1 step to your left`."""
    side = "" if right == 0 else f"{_steps(abs(right))} to your {'right' if right > 0 else 'left'}"
    if ahead == 0:
        return side
    return f"{_steps(ahead)} ahead" + (f" and {side}" if side else "")


def _ahead(image: Any) -> str:
    """What is straight ahead: the object directly in front, or the distance to a wall."""
    for distance in range(1, _VIEW_BOTTOM + 1):
        kind = IDX_TO_OBJECT[int(image[_VIEW_CENTER, _VIEW_BOTTOM - distance, 0])]
        if kind in ("empty", "floor"):
            continue
        if kind == "unseen":
            return "The way ahead is out of sight."
        cell = image[_VIEW_CENTER, _VIEW_BOTTOM - distance]
        thing = "a wall" if kind == "wall" else _thing(kind, int(cell[1]), int(cell[2]))
        if distance == 1:
            return f"Directly in front of you is {thing}."
        return f"Straight ahead, {thing} is {_steps(distance)} away."
    return "The way ahead is clear."


def _snapshot(raw: Any) -> tuple[Any, ...]:
    """What an action can change: position, direction, what is carried, the cell in front."""
    front = raw.grid.get(*raw.front_pos)
    front_desc = None
    if front is not None:
        front_desc = (front.type, front.color, getattr(front, "is_open", None))
    carrying = None if raw.carrying is None else (raw.carrying.type, raw.carrying.color)
    return tuple(raw.agent_pos), int(raw.agent_dir), carrying, front_desc


def _feedback(name: str, before: tuple[Any, ...], after: tuple[Any, ...]) -> str:
    """A sentence when an action had no effect, so the agent learns why."""
    if before != after or name in ("turn left", "turn right"):
        return ""
    front = before[3]
    blocker = "nothing" if front is None else _thing(front[0], front[1], _door_state(front[2]))
    if name == "move forward":
        return f"You cannot move forward: {blocker} is in the way."
    if name == "pick up":
        if before[2] is not None:
            return f"You cannot pick up: you already carry a {before[2][1]} {before[2][0]}."
        return f"You cannot pick up {blocker}."
    if name == "drop":
        if before[2] is None:
            return "You cannot drop: you carry nothing."
        return f"You cannot drop here: {blocker} is in front of you."
    if front is not None and front[0] == "door":
        return f"The {front[1]} door is locked: toggle it while carrying a {front[1]} key."
    return f"Toggling {blocker} has no effect."


def _door_state(is_open: bool | None) -> int:
    return 0 if is_open else 1


def _progress(instr: Any) -> float:
    """Share of the mission's clauses done (`SeqInstr` keeps `a_done`/`b_done` per branch)."""
    done, total = _clauses(instr)
    return done / total if total else 0.0


def _clauses(instr: Any, finished: bool = False) -> tuple[int, int]:
    if isinstance(instr, SeqInstr):
        a_done, a_total = _clauses(instr.instr_a, getattr(instr, "a_done", False) == "success")
        b_done, b_total = _clauses(instr.instr_b, getattr(instr, "b_done", False) == "success")
        return a_done + b_done, a_total + b_total
    if isinstance(instr, ActionInstr):
        return int(finished), 1
    return 0, 1
