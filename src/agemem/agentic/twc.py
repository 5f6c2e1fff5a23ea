"""TWC (TextWorld Commonsense, the `twc` game of textworld-express) as a text world: an
ALFWorld-like household where the agent picks up objects and puts them where they belong.

Metrics: success is the game's `tasksuccess`; progress its normalised score (the share of items
taken and put away, in [0, 1]), the AgentBoard progress rate for a game with scored subgoals.
Actions are checked against the game's `validActions` before they reach the game, so a refused
action costs no game move. The expert replays the gold path the game generates.

Game parameters (ours; AgentBoard's ALFWorld has no twc counterpart): one room, no doors, 1-3
items to put away, the `test` fold; `game_params` changes them.
"""

from __future__ import annotations

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
    from textworld_express import TextWorldExpressEnv
except ImportError as err:  # pragma: no cover - depends on the install
    _MISSING: ImportError | None = err
else:
    _MISSING = None

DEFAULT_PARAMS = "numLocations=1,numItemsToPutAway={items},includeDoors=0,limitInventorySize=0"
FOLDS = ("train", "dev", "test")


def check_available() -> None:
    if _MISSING is not None:
        raise WorldUnavailable(
            f"TWC needs textworld-express ({_MISSING}) and Java 8+; install it: "
            "pip install textworld-express==1.1.0"
        )


class TWCWorld(TextWorld):
    """One TWC game: `TWCWorld(seed=0, items=2)` (or explicit `game_params`)."""

    benchmark = "twc"

    def __init__(
        self,
        seed: int = 0,
        items: int = 1,
        *,
        fold: str = "test",
        game_params: str | None = None,
        step_limit: int = 100,
    ) -> None:
        check_available()
        if fold not in FOLDS:
            raise ValueError(f"fold must be one of {FOLDS}; got {fold!r}")
        super().__init__()
        self.seed, self.fold = seed, fold
        self.params = game_params or DEFAULT_PARAMS.format(items=items)
        self.task_id = f"twc/{fold}/items{items}/seed{seed}"
        self.env: Any = TextWorldExpressEnv(envStepLimit=step_limit)
        self.env.load(gameName="twc", gameParams=self.params)
        self._gold: list[str] = []
        self._next = 0  # index of the next gold action while the agent stays on the gold path
        self._on_path = True

    def _reset(self) -> WorldState:
        obs, infos = self.env.reset(seed=self.seed, gameFold=self.fold, generateGoldPath=True)
        gold = list(self.env.getGoldActionSequence())
        self._gold = gold[1:] if gold and gold[0] == "look around" else gold
        self._next, self._on_path = 0, True
        self._goal = infos["taskDescription"]
        return self._state(obs, infos, done=False)

    def _step(self, action: str) -> WorldState:
        assert self.state is not None
        wanted = normalize(action)
        match = next((a for a in self.state.admissible if a.lower() == wanted), None)
        if match is None:  # refused before the game sees it: the world is unchanged
            return refused(self.state, action, "That action is not possible now")
        expected = self._gold[self._next] if self._next < len(self._gold) else None
        self._on_path = self._on_path and match == expected
        self._next += 1
        obs, _, done, infos = self.env.step(match)
        return self._state(obs, infos, done=bool(done))

    def expert_action(self) -> str | None:
        if not self._on_path or self._next >= len(self._gold):
            return None
        return self._gold[self._next]

    def close(self) -> None:
        close_java(self.env)

    def _state(self, obs: str, infos: dict[str, Any], done: bool) -> WorldState:
        success = bool(infos.get("tasksuccess"))
        progress = min(max(float(infos.get("score", 0.0)), 0.0), 1.0)
        admissible = tuple(sorted(infos.get("validActions", ())))
        return WorldState(obs.strip(), self._goal, admissible, done, success, progress)
