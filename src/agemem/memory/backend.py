"""What every SQL backend of `MemoryStore` shares: input checks, embedding, the dedupe modes,
updates, JSONL export / import, and the checks of a store's recorded embedder.

`SQLStoreBase` holds the logic once; a backend (`SQLiteStore`, `PostgresStore`) supplies the
SQL through a few hooks: `_transaction`, `_get`, `_insert`, `_write_content`,
`_exact_candidates`, `_nearest`, `_taken_ids` and `_export_items`. So both backends answer every
call with the same results, events and error messages.
"""

from __future__ import annotations

import json
import math
import re
from abc import abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agemem.memory.embed import SHIPPED_EMBEDDERS, Embedder, EmbedderUnavailable
from agemem.memory.search import SearchConfig, resolve_search_config
from agemem.memory.store import (
    DEDUPE_MODES,
    DEFAULT_MEMORY_TYPE,
    AddResult,
    DedupeMode,
    EmbedderMismatch,
    MemoryItem,
    MemoryStore,
    NewMemory,
    Scope,
    StoreError,
    new_memory_id,
    normalize_content,
    utc_now,
)

SCHEMA_VERSION = 1
# Cosine at or above which modes "near" and "reject" take a new entry for a restatement of an
# existing one in its scope. Measured with all-MiniLM-L6-v2: rewordings of one fact score
# 0.96-0.99 ("Alice lives in Paris" / "Alice resides in Paris" 0.968, "... Paris." 0.990), related
# but different facts lower ("... in Lyon" 0.806, "Bob likes sushi" / "Bob dislikes sushi" 0.922).
# Facts differing only in a small token pass too ("Tuesday" / "Wednesday" 0.973, flight "AF1234" /
# "AF1235"), which is why the default mode, "exact", stores near-duplicates, and why "near" turns
# one into an UPDATE that history records, and "reject" reports what it matched.
DEFAULT_DEDUPE_THRESHOLD = 0.95
DEFAULT_DEDUPE: DedupeMode = "exact"
EMBED_BATCH = 256  # texts per embedder call in add_many / import: bounds peak memory
MAX_FTS_TERMS = 32  # BM25 over more OR-ed terms costs time and adds nothing for short memories
SQL_CHUNK = 900  # keys per `IN (...)` list, under SQLite's historic 999-variable limit
SEARCH_MODES = ("hybrid", "dense", "bm25")
ANY_SCOPE = Scope()  # the default scope: matches every entry


class ImportFileError(StoreError, ValueError):
    """A line of a JSONL import is invalid; nothing was imported."""

    def __init__(self, path: str | Path, line: int, problem: str) -> None:
        super().__init__(
            f"{path}, line {line}: {problem}. Nothing was imported; fix the line and import again."
        )
        self.line = line


def query_words(text: str) -> list[str]:
    """The distinct lower-cased words of a query, at most `MAX_FTS_TERMS` (what BM25 looks up).

    >>> query_words('(Alice AND "bob") OR alice *')
    ['alice', 'and', 'bob', 'or']
    """
    return list(dict.fromkeys(w.lower() for w in re.findall(r"\w+", text)))[:MAX_FTS_TERMS]


def chunks(values: Sequence[Any], size: int = SQL_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_content(content: Any) -> str:
    if not isinstance(content, str) or not content.strip():
        raise ValueError(f"memory content must be a non-empty string, got {content!r}")
    return content


def metadata_json(metadata: Any) -> str:
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise ValueError(f"metadata must be a dict with string keys, got {metadata!r}")
    try:
        return json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable (no NaN/inf): {exc}") from None


def check_threshold(value: Any) -> float:
    if not is_number(value) or not -1.0 <= value <= 1.0:
        raise ValueError(f"dedupe_threshold is a cosine in [-1, 1], got {value!r}")
    return float(value)


def check_dedupe(value: Any) -> DedupeMode:
    if not isinstance(value, str) or value not in DEDUPE_MODES:
        raise ValueError(f"dedupe must be one of {', '.join(DEDUPE_MODES)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_entry(item: NewMemory) -> None:
    check_content(item.content)
    metadata_json(item.metadata)
    if not isinstance(item.memory_type, str) or not item.memory_type:
        raise ValueError(f"memory_type must be a non-empty string, got {item.memory_type!r}")
    for column in ("user_id", "agent_id", "session_id"):
        value = getattr(item.scope, column)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"scope {column} must be a string or None, got {value!r}")


class _ImportRecord(BaseModel):
    """One JSONL line, as `export_jsonl` writes it."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=r"^mem_[0-9a-f]{1,32}$")
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    memory_type: str = Field(default=DEFAULT_MEMORY_TYPE, min_length=1)
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    embedding: list[float] | None = None
    embedder: str | None = None

    @field_validator("content")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        return check_content(value)

    @field_validator("created_at", "updated_at")
    @classmethod
    def _iso_time(cls, value: str | None) -> str | None:
        if value is not None:
            datetime.fromisoformat(value)  # ValueError names the bad value
        return value


def _pydantic_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


class StoreEmbedderUnavailable(StoreError, EmbedderUnavailable):
    """A store records a shipped embedder whose packages this install lacks; the message names
    the store and the extra to install (a `StoreError`, so the CLI answers it in one line)."""


def recorded_embedder(where: str, name: str | None) -> Embedder | None:
    """The shipped embedder a store records (see `SHIPPED_EMBEDDERS`); None for a new store or
    one that names another embedder (the meta check then says so)."""
    if name is None or name not in SHIPPED_EMBEDDERS:
        return None
    try:
        return SHIPPED_EMBEDDERS[name]()
    except EmbedderUnavailable as err:
        raise StoreEmbedderUnavailable(
            f"{where} was written by embedder {name!r}, the only one that can read it; {err}"
        ) from None


def meta_rows_to_write(where: str, meta: dict[str, str], embedder: Embedder) -> list[tuple]:
    """The meta rows a new store writes ([] for an existing one that this agemem and this
    embedder can open); raises `StoreError` / `EmbedderMismatch` otherwise."""
    name, dim = embedder.name, int(embedder.dim)
    if not meta:
        return [
            ("schema_version", str(SCHEMA_VERSION)),
            ("embedder_name", name),
            ("embedder_dim", str(dim)),
            ("generation", "0"),
        ]
    if int(meta["schema_version"]) > SCHEMA_VERSION:
        raise StoreError(
            f"{where} uses store schema {meta['schema_version']}, newer than this "
            f"agemem's {SCHEMA_VERSION}; upgrade agemem to open it"
        )
    if (meta["embedder_name"], int(meta["embedder_dim"])) != (name, dim):
        raise EmbedderMismatch(
            f"{where} was built with embedder {meta['embedder_name']!r} "
            f"(dim {meta['embedder_dim']}), but was opened with {name!r} (dim {dim}); "
            f"vectors of different embedders cannot be compared. Open it with "
            f"{meta['embedder_name']!r}, or move the entries: export_jsonl() with the old "
            f"embedder, then import_jsonl() into a new store opened with {name!r} "
            "(entries are re-embedded)."
        )
    return []


class SQLStoreBase(MemoryStore):
    """The backend-independent part of a store (see the module docstring)."""

    embedder: Embedder
    path: str

    def _configure(
        self,
        search: SearchConfig | str,
        dedupe: DedupeMode,
        dedupe_threshold: float,
        ids: Callable[[], str] = new_memory_id,
    ) -> None:
        self.dedupe = check_dedupe(dedupe)
        self.dedupe_threshold = check_threshold(dedupe_threshold)
        self.search_config = resolve_search_config(search)
        self._new_id = ids

    @property
    def where(self) -> str:
        """The store's location as error messages name it."""
        return self.path

    # ---- hooks -------------------------------------------------------------------------------

    @abstractmethod
    def _transaction(self, *, write: bool) -> AbstractContextManager[Any]:
        """One transaction; writers of one store queue (one at a time)."""

    @abstractmethod
    def _get(self, memory_id: str, scope: Scope | None = None) -> MemoryItem:
        """The entry, if it exists in `scope` (any scope for None); else `MemoryNotFound`."""

    @abstractmethod
    def _insert(self, items: Sequence[MemoryItem]) -> None:
        """Insert new entries (inside a write transaction)."""

    @abstractmethod
    def _write_content(self, item: MemoryItem) -> None:
        """Store `item`'s content, metadata, updated_at and embedding under its id."""

    @abstractmethod
    def _exact_candidates(self, item: NewMemory, key: str) -> Iterable[MemoryItem]:
        """Entries of exactly `item`'s scope and type that may have the normalised text `key`
        (a superset: the caller compares)."""

    @abstractmethod
    def _nearest(self, vec: np.ndarray, scope: Scope) -> tuple[MemoryItem, float] | None:
        """The stored entry of exactly `scope` nearest to `vec`, with its cosine."""

    @abstractmethod
    def _taken_ids(self, ids: Sequence[str]) -> set[str]:
        """Those of `ids` already in the store."""

    @abstractmethod
    def _export_items(self, scope: Scope) -> Iterable[MemoryItem]:
        """Entries of `scope` in insertion order (inside a read transaction)."""

    def _before_checked_adds(self) -> None:
        """Called in the write transaction before near-duplicate checks."""

    def _after_write(self) -> None:
        """Called after a write transaction of adds commits."""

    def _after_import(self) -> None:
        """Called inside the import's write transaction."""

    # ---- embeddings --------------------------------------------------------------------------

    def _unit(self, vector: Any, what: str) -> np.ndarray:
        """A given embedding as a unit float32 vector (so dot products are cosines)."""
        vec = np.asarray(vector, dtype=np.float32)
        dim = self.embedder.dim
        if vec.shape != (dim,):
            raise ValueError(
                f"{what} has shape {vec.shape}; embedder {self.embedder.name!r} makes ({dim},)"
            )
        norm = float(np.linalg.norm(vec))
        if not math.isfinite(norm) or norm == 0.0:
            raise ValueError(f"{what} must be finite and non-zero")
        return vec / norm

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        parts = [self.embedder.embed(list(chunk)) for chunk in chunks(texts, EMBED_BATCH)]
        out = np.concatenate(parts) if parts else np.zeros((0, self.embedder.dim), np.float32)
        if out.shape != (len(texts), self.embedder.dim):
            raise StoreError(
                f"embedder {self.embedder.name!r} returned shape {out.shape} for {len(texts)} "
                f"texts; expected ({len(texts)}, {self.embedder.dim})"
            )
        return out.astype(np.float32, copy=False)

    def _embeddings_for(self, items: Sequence[NewMemory]) -> np.ndarray:
        """Given embeddings validated, missing ones computed in batches."""
        out = np.zeros((len(items), self.embedder.dim), dtype=np.float32)
        missing = [i for i, it in enumerate(items) if it.embedding is None]
        for i, it in enumerate(items):
            if it.embedding is not None:
                out[i] = self._unit(it.embedding, f"embedding of item {i}")
        if missing:
            out[missing] = self._embed([items[i].content for i in missing])
        return out

    def _query_vector(self, query: str, embedding: np.ndarray | None) -> np.ndarray:
        if embedding is not None:
            return self._unit(embedding, "query_embedding")
        return self._embed([query])[0]

    @staticmethod
    def _check_search(query: Any, top_k: Any, mode: Any) -> None:
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {SEARCH_MODES}")
        if not isinstance(query, str):
            raise ValueError(f"query must be a string, got {query!r}")

    @staticmethod
    def _check_limit(limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")

    # ---- adds --------------------------------------------------------------------------------

    def get(self, memory_id: str, *, scope: Scope | None = None) -> MemoryItem:
        with self._transaction(write=False):
            return self._get(memory_id, scope)

    def add(
        self,
        content: str,
        *,
        metadata: dict[str, Any] | None = None,
        memory_type: str = DEFAULT_MEMORY_TYPE,
        scope: Scope = ANY_SCOPE,
        embedding: np.ndarray | None = None,
        dedupe: DedupeMode | bool | None = None,
        dedupe_threshold: float | None = None,
    ) -> AddResult:
        item = NewMemory(content, metadata or {}, memory_type, scope, embedding)
        return self.add_many([item], dedupe=dedupe, dedupe_threshold=dedupe_threshold)[0]

    def add_many(
        self,
        items: Sequence[NewMemory],
        *,
        dedupe: DedupeMode | bool | None = None,
        dedupe_threshold: float | None = None,
    ) -> list[AddResult]:
        """Store `items` in one transaction, each checked against the store and the earlier
        items of the batch as `dedupe` says (None or True: the store's mode; False: "off")."""
        mode = self._dedupe_mode(dedupe)
        threshold = self.dedupe_threshold
        if dedupe_threshold is not None:
            threshold = check_threshold(dedupe_threshold)
        for item in items:
            check_entry(item)
        vectors = self._embeddings_for(items)
        with self._transaction(write=True):
            if mode in ("near", "reject"):
                self._before_checked_adds()
            ids = iter(self._fresh_ids(len(items)))
            if mode == "off":
                results = [
                    AddResult(self._new_item(next(ids), item, vec))
                    for item, vec in zip(items, vectors, strict=True)
                ]
                self._insert([r.item for r in results])
            else:
                batch: list[tuple[MemoryItem, np.ndarray]] = []  # this batch's writes, as now
                results = [
                    self._add_checked(item, vec, ids, mode, threshold, batch)
                    for item, vec in zip(items, vectors, strict=True)
                ]
        self._after_write()
        return results

    def _dedupe_mode(self, dedupe: DedupeMode | bool | None) -> DedupeMode:
        if dedupe is None or dedupe is True:
            return self.dedupe
        if dedupe is False:
            return "off"
        return check_dedupe(dedupe)

    @staticmethod
    def _new_item(memory_id: str, item: NewMemory, vec: np.ndarray) -> MemoryItem:
        now = utc_now()
        return MemoryItem(
            memory_id, item.content, dict(item.metadata), item.memory_type, item.scope, now, now,
            vec,
        )  # fmt: skip

    def _add_checked(
        self,
        item: NewMemory,
        vec: np.ndarray,
        ids: Iterator[str],
        mode: DedupeMode,
        threshold: float,
        batch: list[tuple[MemoryItem, np.ndarray]],
    ) -> AddResult:
        """One add of a checked batch, written at once so that the next item's checks see it."""
        if mode in ("exact", "near"):
            same = self._exact_duplicate(item)
            if same is not None:
                assert same.embedding is not None
                return AddResult(same, "NONE", same, float(same.embedding @ vec), "exact")
        if mode in ("near", "reject"):
            match = self._duplicate(vec, item.scope, batch, threshold)
            if match is not None:
                found, similarity = match
                if mode == "reject":
                    return AddResult(found, "NONE", found, similarity, "near")
                updated = self._replace_near(found, item, vec)
                batch[:] = [(it, v) for it, v in batch if it.id != found.id]
                batch.append((updated, vec))
                return AddResult(updated, "UPDATE", found, similarity, "near")
        new = self._new_item(next(ids), item, vec)
        self._insert([new])
        batch.append((new, vec))
        return AddResult(new)

    def _exact_duplicate(self, item: NewMemory) -> MemoryItem | None:
        """An entry of exactly this scope with the same normalised text, type and metadata."""
        key = normalize_content(item.content)
        metadata = json.loads(metadata_json(item.metadata))
        for found in self._exact_candidates(item, key):
            if normalize_content(found.content) == key and found.metadata == metadata:
                return found
        return None

    def _replace_near(self, old: MemoryItem, item: NewMemory, vec: np.ndarray) -> MemoryItem:
        """Mode "near": the new text replaces the matched entry's (history records the UPDATE
        with both texts); the new metadata is merged over the old; type and scope stay."""
        new = replace(
            old,
            content=item.content,
            metadata={**old.metadata, **item.metadata},
            updated_at=utc_now(),
            embedding=vec,
            score=None,
        )
        self._write_content(new)
        return new

    def _duplicate(
        self,
        vec: np.ndarray,
        scope: Scope,
        pending: list[tuple[MemoryItem, np.ndarray]],
        threshold: float,
    ) -> tuple[MemoryItem, float] | None:
        """The most similar entry with exactly this scope (stored, or earlier in the batch: a
        linear scan, so bulk loads of distinct entries should pass dedupe="off"), if its cosine
        reaches `threshold`."""
        candidates: list[tuple[float, MemoryItem]] = []
        stored = self._nearest(vec, scope)
        if stored is not None:
            candidates.append((stored[1], replace(stored[0], score=None)))
        candidates += [(float(v @ vec), item) for item, v in pending if item.scope == scope]
        if not candidates:
            return None
        sim, found = max(candidates, key=lambda c: c[0])
        return (found, sim) if sim >= threshold else None

    def _fresh_ids(self, n: int, reserved: Collection[str] = ()) -> list[str]:
        """`n` new ids, unique in the store and not `reserved`: 8 hex digits collide after
        ~10^5 entries."""
        ids: dict[str, None] = {}
        while len(ids) < n:
            batch = [
                i
                for i in dict.fromkeys(self._new_id() for _ in range(n - len(ids)))
                if i not in ids and i not in reserved
            ]
            taken = self._taken_ids(batch)
            ids.update((i, None) for i in batch if i not in taken)
        return list(ids)

    # ---- updates -----------------------------------------------------------------------------

    def update(
        self,
        memory_id: str,
        content: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        scope: Scope | None = None,
    ) -> MemoryItem:
        """Replace content and/or metadata (metadata is replaced, not merged); the embedding is
        recomputed only when the content changes. A no-op update writes nothing. An entry
        outside `scope` (None: any) is not found."""
        if content is not None:
            check_content(content)
        if metadata is not None:
            metadata_json(metadata)
        before = self.get(memory_id, scope=scope)  # embed outside the write lock
        vec = None if content in (None, before.content) else self._embed([content])[0]
        with self._transaction(write=True):
            old = self._get(memory_id, scope)
            new = replace(
                old,
                content=old.content if content is None else content,
                metadata=old.metadata if metadata is None else dict(metadata),
            )
            if (new.content, new.metadata) == (old.content, old.metadata):
                return old
            if new.content != old.content:  # vec is None if another writer changed it since
                new.embedding = vec if vec is not None else self._embed([new.content])[0]
            new.updated_at = utc_now()
            self._write_content(new)
        return new

    # ---- export / import ---------------------------------------------------------------------

    def export_jsonl(self, path: str | Path, *, scope: Scope = ANY_SCOPE) -> int:
        """One JSON object per line, embeddings and embedder name included; returns the count."""
        count = 0
        with self._transaction(write=False), Path(path).open("w", encoding="utf-8") as out:
            for item in self._export_items(scope):
                record = item.to_dict(with_embedding=True)
                record["embedder"] = self.embedder.name
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        return count

    def import_jsonl(self, path: str | Path) -> int:
        """Load an export, all or nothing. Ids are kept (an id already in the store is an error);
        stored embeddings are reused when they come from this store's embedder, else re-embedded."""
        records = self._read_import(path)
        items = [self._imported_item(line, rec, path) for line, rec in records]
        missing = [i for i, (_, rec) in enumerate(records) if not self._reusable(rec)]
        for i, vec in zip(missing, self._embed([items[i].content for i in missing]), strict=True):
            items[i].embedding = vec
        with self._transaction(write=True):
            self._check_new_ids(path, records)
            given = {it.id for it in items if it.id}
            fresh = iter(self._fresh_ids(len(items) - len(given), reserved=given))
            for item in items:
                item.id = item.id or next(fresh)
            self._insert(items)
            self._after_import()
        return len(items)

    def _read_import(self, path: str | Path) -> list[tuple[int, _ImportRecord]]:
        records: list[tuple[int, _ImportRecord]] = []
        first_line: dict[str, int] = {}
        with Path(path).open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = _ImportRecord.model_validate_json(line)
                except ValidationError as exc:
                    raise ImportFileError(path, number, _pydantic_problem(exc)) from None
                if record.id is not None:
                    if record.id in first_line:
                        raise ImportFileError(
                            path, number, f"id {record.id} already appears on line "
                            f"{first_line[record.id]}",
                        )  # fmt: skip
                    first_line[record.id] = number
                records.append((number, record))
        return records

    def _reusable(self, record: _ImportRecord) -> bool:
        return record.embedding is not None and record.embedder == self.embedder.name

    def _imported_item(self, line: int, record: _ImportRecord, path: str | Path) -> MemoryItem:
        now = utc_now()
        try:
            metadata_json(record.metadata)
            vec = self._unit(record.embedding, "embedding") if self._reusable(record) else None
        except ValueError as exc:
            raise ImportFileError(path, line, str(exc)) from None
        return MemoryItem(
            id=record.id or "",
            content=record.content,
            metadata=record.metadata,
            memory_type=record.memory_type,
            scope=Scope(record.user_id, record.agent_id, record.session_id),
            created_at=record.created_at or now,
            updated_at=record.updated_at or record.created_at or now,
            embedding=vec,
        )

    def _check_new_ids(self, path: str | Path, records: list[tuple[int, _ImportRecord]]) -> None:
        line_of = {rec.id: line for line, rec in records if rec.id is not None}
        taken = self._taken_ids(list(line_of))
        if taken:
            first = min(taken, key=line_of.__getitem__)
            raise ImportFileError(
                path, line_of[first], f"id {first} already exists in {self.where}; "
                "delete it there first or import into a fresh store",
            )  # fmt: skip
