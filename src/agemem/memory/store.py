"""The long-term memory (LTM) contract: entries, scopes, history, and the `MemoryStore` interface.

Backends implement `MemoryStore`; the embedded default is `SQLiteStore` (`agemem.memory.sqlite`).
Everything above this layer (tools, the `Memory` API, episodes) talks only to this interface.
"""

from __future__ import annotations

import random
import secrets
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

# AgeMem leaves memory_type free-form; Mem0 calls plain facts "semantic".
DEFAULT_MEMORY_TYPE = "semantic"

SearchMode = Literal["hybrid", "dense", "bm25"]
HistoryEventKind = Literal["ADD", "UPDATE", "DELETE"]
# What an add does with a duplicate in its scope (see `SQLiteStore` and the README's table):
# "exact"  an entry with the same normalised text, type and metadata is not stored again (the
#          result points at it); anything else, near-duplicates included, is stored. The default.
# "near"   as "exact", and a near-duplicate (cosine >= the threshold) becomes an UPDATE of the
#          entry it matched: the new text replaces the old, and history keeps both.
# "reject" a near-duplicate (or exact one) is not written; the result names the entry it matched
#          and the cosine, and the caller decides (AgeMem's env: the agent is told to update it).
# "off"    every add is stored.
DedupeMode = Literal["exact", "near", "reject", "off"]
DEDUPE_MODES: tuple[DedupeMode, ...] = ("exact", "near", "reject", "off")
AddEvent = Literal["ADD", "NONE", "UPDATE"]


class StoreError(Exception):
    """Base class of store errors; the message names the problem and the fix."""


class MemoryNotFound(StoreError, KeyError):
    def __init__(self, memory_id: str):
        super().__init__(memory_id)
        self.memory_id = memory_id

    def __str__(self) -> str:
        return f"no memory with id {self.memory_id!r}; retrieve first and copy an id shown there"


class EmbedderMismatch(StoreError):
    """The store file was built with another embedder (vectors would not be comparable)."""


class StoreUnavailable(StoreError):
    """The store's database server cannot be reached now (down, restarting, recovering); the
    same call may succeed later (the server answers 503)."""


def new_memory_id() -> str:
    """`mem_` + 8 hex digits, the id shape AgeMem's prompts show (e.g. `mem_a5b40d65`)."""
    return "mem_" + secrets.token_hex(4)


def seeded_memory_ids(seed: int) -> Callable[[], str]:
    """A reproducible `new_memory_id`: the same ids in the same order for the same seed.

    Episode stores use it so that an episode is a function of its task, seed and the model's
    turns: a run resumed from its journal (`agemem.eval.journal`) shows the model the ids it saw.

    >>> a, b = seeded_memory_ids(7), seeded_memory_ids(7)
    >>> [a(), a()] == [b(), b()]
    True
    """
    rng = random.Random(seed)
    return lambda: f"mem_{rng.getrandbits(32):08x}"


def normalize_content(text: str) -> str:
    """What "exact" deduplication compares: Unicode NFC, whitespace runs as one space, trimmed.
    Case and punctuation count ("PIN 12ab" and "PIN 12AB" are different facts).

    >>> normalize_content("  Meeting at \t 3pm ")
    'Meeting at 3pm'
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Scope:
    """Who an entry belongs to. A `None` field matches anything when searching."""

    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v is not None}

    def covers(self, other: Scope) -> bool:
        """Whether an entry of scope `other` is in this scope (a `None` field matches anything).

        >>> Scope(user_id="alice").covers(Scope("alice", "bot", "s1"))
        True
        >>> Scope(user_id="alice").covers(Scope(user_id="bob"))
        False
        """
        return all(getattr(other, k) == v for k, v in self.as_dict().items())


@dataclass
class MemoryItem:
    id: str
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)
    memory_type: str = DEFAULT_MEMORY_TYPE
    scope: Scope = field(default_factory=Scope)
    created_at: str = ""
    updated_at: str = ""
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    score: float | None = None  # set by search: the fused (or single-method) relevance

    def to_dict(self, with_embedding: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "content": self.content,
            "metadata": self.metadata,
            "memory_type": self.memory_type,
            **self.scope.as_dict(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if self.score is not None:
            out["score"] = self.score
        if with_embedding and self.embedding is not None:
            out["embedding"] = [float(x) for x in self.embedding]
        return out


@dataclass(frozen=True)
class NewMemory:
    """One entry to insert; `embedding` may be precomputed (benchmarks, imports)."""

    content: str
    metadata: dict[str, Any] = field(default_factory=dict)
    memory_type: str = DEFAULT_MEMORY_TYPE
    scope: Scope = field(default_factory=Scope)
    embedding: np.ndarray | None = None


@dataclass
class AddResult:
    """What an add did (see `DedupeMode`).

    `event` "ADD": `item` is the new entry. "NONE": nothing was written; `item` and
    `duplicate_of` are the entry it matched. "UPDATE" (mode "near"): `item` is the matched entry
    as updated, `duplicate_of` as it was. `match` says how it matched ("exact" or "near"),
    `similarity` the cosine between the two embeddings.
    """

    item: MemoryItem
    event: AddEvent = "ADD"
    duplicate_of: MemoryItem | None = None
    similarity: float | None = None
    match: Literal["exact", "near"] | None = None

    @property
    def added(self) -> bool:
        """Whether a new entry was stored."""
        return self.event == "ADD"


@dataclass(frozen=True)
class HistoryEvent:
    id: int
    memory_id: str
    event: HistoryEventKind
    old_content: str | None
    new_content: str | None
    created_at: str


class MemoryStore(ABC):
    """Persistent long-term memory: add / get / update / delete / search, with per-entry history."""

    @abstractmethod
    def add(
        self,
        content: str,
        *,
        metadata: dict[str, Any] | None = None,
        memory_type: str = DEFAULT_MEMORY_TYPE,
        scope: Scope = Scope(),
        embedding: np.ndarray | None = None,
        dedupe: DedupeMode | bool | None = None,
        dedupe_threshold: float | None = None,
    ) -> AddResult:
        """Store one entry. `dedupe`: a `DedupeMode` for this call (None or True: the store's
        mode; False: "off"); `dedupe_threshold`: the near-duplicate cosine for this call."""

    @abstractmethod
    def add_many(
        self,
        items: Sequence[NewMemory],
        *,
        dedupe: DedupeMode | bool | None = None,
        dedupe_threshold: float | None = None,
    ) -> list[AddResult]:
        """Insert many entries in one transaction (embedding missing ones in batches)."""

    @abstractmethod
    def get(self, memory_id: str, *, scope: Scope | None = None) -> MemoryItem:
        """Raises `MemoryNotFound`, also when the entry is not in `scope` (None: any scope)."""

    @abstractmethod
    def get_all(
        self,
        *,
        scope: Scope = Scope(),
        filters: dict[str, Any] | None = None,
        limit: int | None = None,
    ) -> list[MemoryItem]: ...

    @abstractmethod
    def update(
        self,
        memory_id: str,
        content: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        scope: Scope | None = None,
    ) -> MemoryItem:
        """Replace content and/or metadata; raises `MemoryNotFound` (also outside `scope`)."""

    @abstractmethod
    def delete(self, memory_id: str, *, scope: Scope | None = None) -> MemoryItem:
        """Remove an entry and return it as it was; raises `MemoryNotFound` (also outside
        `scope`)."""

    @abstractmethod
    def search(
        self,
        query: str,
        *,
        top_k: int = 5,
        mode: SearchMode = "hybrid",
        scope: Scope = Scope(),
        filters: dict[str, Any] | None = None,
        query_embedding: np.ndarray | None = None,
    ) -> list[MemoryItem]:
        """Best `top_k` entries in `scope` matching `filters`, best first, each with `score`."""

    @abstractmethod
    def history(self, memory_id: str, *, scope: Scope | None = None) -> list[HistoryEvent]:
        """Events of one entry, deleted or not; `MemoryNotFound` if none (or outside `scope`)."""

    @abstractmethod
    def count(self, *, scope: Scope = Scope()) -> int: ...

    @abstractmethod
    def reset(self, *, scope: Scope = Scope()) -> int:
        """Delete every entry in `scope` (all of them for an empty scope); returns how many."""

    @abstractmethod
    def export_jsonl(self, path: str | Path, *, scope: Scope = Scope()) -> int: ...

    @abstractmethod
    def import_jsonl(self, path: str | Path) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
