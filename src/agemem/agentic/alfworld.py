"""ALFWorld (the TextWorld version of ALFRED) for users who have its game files.

ALFWorld ships no games in its wheel: they come from `alfworld-download` (several GB) into
`$ALFWORLD_DATA`. Without the `alfworld` package (which brings `textworld[pddl]`) or the data,
building a world raises `WorldUnavailable` saying what to install; the evaluation uses the
ALFWorld-like TWC game (`agemem.agentic.twc`) instead, which runs offline.

Games are the `game.tw-pddl` files under `$ALFWORLD_DATA/json_2.1.1/<split>` (AgentBoard
evaluates the 134 `valid_unseen` games). The goal is the text after "Your task is to:" in the
first observation. Progress equals success (ours: AgentBoard's ALFWorld subgoal annotations are
not part of ALFWorld). The expert is ALFWorld's hand-coded agent.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from agemem.agentic.world import TextWorld, WorldState, WorldUnavailable, normalize, refused

SPLITS = ("train", "valid_seen", "valid_unseen")
INSTALL = (
    "pip install alfworld==0.4.2 (it brings textworld[pddl]), then alfworld-download and set "
    "ALFWORLD_DATA to the download directory"
)
_TASK_MARK = "Your task is to:"


def data_dir() -> Path:
    """`$ALFWORLD_DATA`, checked; WorldUnavailable naming the fix otherwise."""
    root = os.environ.get("ALFWORLD_DATA")
    if not root:
        raise WorldUnavailable(f"ALFWorld games are not on this machine: {INSTALL}")
    path = Path(root).expanduser()
    if not (path / "json_2.1.1").is_dir():
        raise WorldUnavailable(f"ALFWORLD_DATA={path} holds no json_2.1.1 directory: {INSTALL}")
    return path


def game_files(split: str = "valid_unseen") -> list[Path]:
    """The ALFWorld games of a split, sorted (WorldUnavailable without package or data)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if importlib.util.find_spec("alfworld") is None:
        raise WorldUnavailable(f"ALFWorld needs the alfworld package: {INSTALL}")
    return sorted((data_dir() / "json_2.1.1" / split).rglob("game.tw-pddl"))


class ALFWorldWorld(TextWorld):
    """One ALFWorld game, from a `game.tw-pddl` path (see `game_files`)."""

    benchmark = "alfworld"

    def __init__(self, game_file: str | Path, max_steps: int = 50) -> None:
        super().__init__()
        try:
            import textworld
            import textworld.gym
            from alfworld.agents.environment.alfred_tw_env import (
                AlfredDemangler,
                AlfredExpert,
                AlfredExpertType,
                AlfredInfos,
            )
        except ImportError as err:
            raise WorldUnavailable(
                f"ALFWorld needs alfworld and textworld ({err}): {INSTALL}"
            ) from None
        infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
        infos.extras.append("expert_plan")
        env_id = textworld.gym.register_game(
            str(game_file),
            infos,
            max_episode_steps=max_steps,
            wrappers=[AlfredDemangler(), AlfredInfos, AlfredExpert(AlfredExpertType.HANDCODED)],
        )
        self.env: Any = textworld.gym.make(env_id)
        game = Path(game_file).parent
        self.task_id = f"alfworld/{game.parent.name}/{game.name}"

    def _reset(self) -> WorldState:
        obs, infos = self.env.reset()
        intro, _, goal = obs.partition(_TASK_MARK)
        self._goal = goal.strip() or obs.strip()
        return self._state(intro.strip(), infos, done=False)

    def _step(self, action: str) -> WorldState:
        assert self.state is not None
        wanted = normalize(action)
        if wanted not in self.state.admissible:
            return refused(self.state, action, "That action is not possible now")
        obs, _, done, infos = self.env.step(wanted)
        return self._state(obs.strip(), infos, done=bool(done))

    def expert_action(self) -> str | None:
        plan = self._infos.get("extra.expert_plan") or []
        return plan[0] if plan and self.state is not None and not self.state.done else None

    def close(self) -> None:
        self.env.close()

    def _state(self, text: str, infos: dict[str, Any], done: bool) -> WorldState:
        self._infos = infos
        won = bool(infos.get("won"))
        admissible = tuple(a for a in infos.get("admissible_commands", ()) if a != "help")
        return WorldState(text, self._goal, admissible, done or won, won, float(won))
