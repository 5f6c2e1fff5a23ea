"""What both episode envs share: config checks, the per-episode store, the embedder, the record."""

from __future__ import annotations

from typing import ClassVar

from agemem.env.config import EnvConfig, EnvConfigError
from agemem.env.record import EnvError, Recorder, View
from agemem.episode import Episode
from agemem.memory.embed import Embedder, default_embedder
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import MemoryStore, seeded_memory_ids
from agemem.tasks.base import Task
from agemem.tokens import ApproxTokenCounter, TokenCounter


class EpisodeEnv:
    """Base of `MemoryEnv` and `AtomMemEnv`. Without a `store`, each `reset` opens a fresh
    private SQLite store (`:memory:`) that `close()` closes; a given store is never closed here.
    `seed` fixes the ids that store gives out (`seeded_memory_ids`), so that an episode replays
    exactly from the same turns."""

    method: ClassVar[str]
    other_env: ClassVar[str]  # the env to use for the other method, named in config errors
    _recorder: Recorder

    def __init__(
        self,
        config: EnvConfig,
        *,
        store: MemoryStore | None,
        embedder: Embedder | None,
        token_counter: TokenCounter | None,
        seed: int,
    ) -> None:
        if config.method != self.method:
            raise EnvConfigError(
                f"{type(self).__name__} runs {self.method} episodes; config {config.name!r} is "
                f"{config.method!r} (use {self.other_env} or make_env)"
            )
        self.config = config
        self._given_store = store
        self._embedder = embedder
        self._counter = token_counter or ApproxTokenCounter()
        self._seed = seed
        self._store: MemoryStore | None = None
        self._task: Task | None = None
        self.done = True

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    @property
    def view(self) -> View:
        """What the model is being shown now, waiting for its turn (see `View`)."""
        if self.done or self._recorder.view is None:
            raise EnvError("no turn is pending: call reset(task), or the episode is over")
        return self._recorder.view

    def episode(self, group_id: str = "") -> Episode:
        """The record of the current (finished or running) episode."""
        if self._task is None:
            raise EnvError("no episode yet: call reset(task) first")
        task = self._task
        return self._recorder.episode(task.id, group_id or task.id, task.family)

    def close(self) -> None:
        """Close the store this env opened (a store passed in stays open)."""
        if self._store is not None and self._store is not self._given_store:
            self._store.close()
        self._store = None

    def _new_store(self) -> MemoryStore:
        threshold = self.config.dedupe_threshold
        extra = {} if threshold is None else {"dedupe_threshold": threshold}
        # "reject": a near-duplicate add is refused and the agent is told which entry it matched,
        # so the agent itself decides whether to update it (the env's behaviour since the start)
        return SQLiteStore(
            ":memory:",
            self.embedder,
            ids=seeded_memory_ids(self._seed),
            dedupe="reject",
            **extra,
        )
