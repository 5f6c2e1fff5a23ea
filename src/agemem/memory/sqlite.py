"""`SQLiteStore`: the embedded long-term memory store, one SQLite file shared by processes.

Layout of the file:
- `memories`: one row per entry, the embedding as a float32 BLOB (unit length, so a dot product
  is the cosine similarity).
- `memories_fts`: an FTS5 index over `content` (external content, kept in sync by triggers),
  tokenized with `porter unicode61 remove_diacritics 2` so that "running" finds "run" and
  "cafe" finds "café".
- `history`: ADD / UPDATE / DELETE events with old and new content, written by triggers so that
  no write path can skip them. It doubles as the change feed that keeps every process's
  in-memory vector index in step with the file (rows with an id above the last one applied).
- `deleted_scopes`: the scope of each deleted entry (written by a trigger), so that the history of
  a deleted entry stays readable to its own scope and to no other.
- `meta`: schema version, embedder name and dimension, and a `generation` counter that reset
  and import bump to make every process reload its index in full.
- `graph_cache`: the last HNSW graph a process built for a large store, with the state it
  reflects, so that other processes restore it instead of rebuilding (see `vector_index`).

Concurrency: WAL journal, `busy_timeout`, every write in `BEGIN IMMEDIATE` (so writers queue
instead of failing half-way), every search in one read transaction (one consistent snapshot).
Duplicate checks run inside the write transaction, so two processes cannot both insert the same
fact.

Deduplication (`DedupeMode`, per store and per call): "exact" (the default) keeps one entry per
normalised text in a scope and stores every other add; "near" also turns a near-duplicate into an
UPDATE of the entry it matched (history keeps the old text); "reject" writes nothing for a
near-duplicate and reports what it matched (AgeMem's env, where the agent decides); "off" stores
everything.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agemem.memory.embed import (
    SHIPPED_EMBEDDERS,
    Embedder,
    EmbedderUnavailable,
    library_embedder,
)
from agemem.memory.filters import CASEFOLD_SQL, casefold, compile_filters
from agemem.memory.search import SearchConfig, resolve_search_config, rrf_fuse
from agemem.memory.store import (
    DEDUPE_MODES,
    DEFAULT_MEMORY_TYPE,
    AddResult,
    DedupeMode,
    EmbedderMismatch,
    HistoryEvent,
    MemoryItem,
    MemoryNotFound,
    MemoryStore,
    NewMemory,
    Scope,
    SearchMode,
    StoreError,
    new_memory_id,
    normalize_content,
    utc_now,
)
from agemem.memory.vector_index import VectorIndex, VectorIndexConfig

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
# Long enough to wait out another process's bulk insert of tens of thousands of rows; a writer
# stuck for longer than this is a bug worth surfacing as `sqlite3.OperationalError`.
DEFAULT_BUSY_TIMEOUT_S = 30.0
EMBED_BATCH = 256  # texts per embedder call in add_many / import: bounds peak memory
MAX_FTS_TERMS = 32  # BM25 over more OR-ed terms costs time and adds nothing for short memories
_SQL_CHUNK = 900  # keys per `IN (...)` list, under SQLite's historic 999-variable limit
SEARCH_MODES = ("hybrid", "dense", "bm25")
ANY_SCOPE = Scope()  # the default scope: matches every entry
_SCOPE_COLUMNS = ("user_id", "agent_id", "session_id")
_INSERT = (
    "INSERT INTO memories (id, content, metadata, memory_type, user_id, agent_id, session_id, "
    "created_at, updated_at, embedding) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_COLUMNS = (
    "rowid, id, content, metadata, memory_type, user_id, agent_id, session_id, "
    "created_at, updated_at, embedding"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memories (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: index keys stay unambiguous
    id TEXT NOT NULL UNIQUE,
    content TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    memory_type TEXT NOT NULL,
    user_id TEXT,
    agent_id TEXT,
    session_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_scope ON memories (user_id, agent_id, session_id);
CREATE INDEX IF NOT EXISTS memories_agent ON memories (agent_id);
CREATE INDEX IF NOT EXISTS memories_session ON memories (session_id);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),
    old_content TEXT,
    new_content TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_memory ON history (memory_id);
-- Who a deleted entry belonged to: its history stays readable to that scope only.
CREATE TABLE IF NOT EXISTS deleted_scopes (
    memory_id TEXT PRIMARY KEY,
    user_id TEXT,
    agent_id TEXT,
    session_id TEXT
);
-- The last HNSW graph a process built or brought up to date, with the state it reflects, so
-- that a process opening a large store starts from it instead of rebuilding (see _reload).
CREATE TABLE IF NOT EXISTS graph_cache (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL,
    last_history INTEGER NOT NULL,
    config TEXT NOT NULL,
    graph BLOB NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    content, content='memories', content_rowid='rowid',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content);
    INSERT INTO history (memory_id, event, old_content, new_content, created_at)
    VALUES (new.id, 'ADD', NULL, new.content, new.created_at);
END;
CREATE TRIGGER IF NOT EXISTS memories_au AFTER UPDATE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content)
    VALUES ('delete', old.rowid, old.content);
    INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content);
    INSERT INTO history (memory_id, event, old_content, new_content, created_at)
    VALUES (new.id, 'UPDATE', old.content, new.content, new.updated_at);
END;
-- The deletion time comes from SQLite (millisecond precision, same ISO shape as utc_now()).
CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content)
    VALUES ('delete', old.rowid, old.content);
    INSERT INTO history (memory_id, event, old_content, new_content, created_at)
    VALUES (old.id, 'DELETE', old.content, NULL, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'));
END;
CREATE TRIGGER IF NOT EXISTS memories_ad_scope AFTER DELETE ON memories BEGIN
    INSERT OR REPLACE INTO deleted_scopes (memory_id, user_id, agent_id, session_id)
    VALUES (old.id, old.user_id, old.agent_id, old.session_id);
END;
"""


class ImportFileError(StoreError, ValueError):
    """A line of a JSONL import is invalid; nothing was imported."""

    def __init__(self, path: str | Path, line: int, problem: str) -> None:
        super().__init__(
            f"{path}, line {line}: {problem}. Nothing was imported; fix the line and import again."
        )
        self.line = line


# ---- query building -----------------------------------------------------------------------------


def fts_terms(text: str) -> list[str]:
    """User text as safe FTS5 terms: its distinct words, each quoted (so every FTS5 operator --
    `AND`, `NEAR`, `*`, `^`, `:`, parentheses, quotes -- is a plain word or gone).

    >>> fts_terms('(alice AND "bob") OR *')
    ['"alice"', '"and"', '"bob"', '"or"']
    """
    words = dict.fromkeys(w.lower() for w in re.findall(r"\w+", text))
    return [f'"{w}"' for w in words][:MAX_FTS_TERMS]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _where(
    scope: Scope, filters: dict[str, Any] | None = None, *, exact_scope: bool = False
) -> tuple[str, list[Any]]:
    """WHERE clause + parameters for a scope (None matches anything unless `exact_scope`)."""
    clauses: list[str] = []
    params: list[Any] = []
    for column in _SCOPE_COLUMNS:
        value = getattr(scope, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
        elif exact_scope:
            clauses.append(f"{column} IS NULL")
    if filters is not None:
        sql, extra = compile_filters(filters)
        clauses.append(sql)
        params.extend(extra)
    return " AND ".join(clauses) or "1", params


def _chunks(values: Sequence[Any], size: int = _SQL_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


# ---- validation ---------------------------------------------------------------------------------


def _check_content(content: Any) -> str:
    if not isinstance(content, str) or not content.strip():
        raise ValueError(f"memory content must be a non-empty string, got {content!r}")
    return content


def _metadata_json(metadata: Any) -> str:
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise ValueError(f"metadata must be a dict with string keys, got {metadata!r}")
    try:
        return json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable (no NaN/inf): {exc}") from None


def _check_threshold(value: Any) -> float:
    if not _is_number(value) or not -1.0 <= value <= 1.0:
        raise ValueError(f"dedupe_threshold is a cosine in [-1, 1], got {value!r}")
    return float(value)


def _check_dedupe(value: Any) -> DedupeMode:
    if not isinstance(value, str) or value not in DEDUPE_MODES:
        raise ValueError(f"dedupe must be one of {', '.join(DEDUPE_MODES)}, got {value!r}")
    return value  # type: ignore[return-value]


def _exact_phrase(text: str) -> str:
    """`text` as one FTS5 phrase: FTS5 tokenizes it as it tokenized the stored entries, so an
    entry with the same normalised text contains this phrase."""
    return '"' + text.replace('"', '""') + '"'


def _check_entry(item: NewMemory) -> None:
    _check_content(item.content)
    _metadata_json(item.metadata)
    if not isinstance(item.memory_type, str) or not item.memory_type:
        raise ValueError(f"memory_type must be a non-empty string, got {item.memory_type!r}")
    for column in _SCOPE_COLUMNS:
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
        return _check_content(value)

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


# ---- the store ----------------------------------------------------------------------------------


class SQLiteStore(MemoryStore):
    """Long-term memory in one SQLite file: hybrid search, duplicate checks, history.

    `path` may be ":memory:" for a private throwaway store (no WAL, one process).
    `embedder`: a store is written by one embedder, recorded in the file; opening it with
    another raises `EmbedderMismatch`. Without one, an existing store opens with the embedder it
    records (when agemem ships it: `SHIPPED_EMBEDDERS`), a new one with `library_embedder()`.
    `search`: a `SearchConfig` or preset name (see `agemem.memory.search`).
    `dedupe`: what an add does with a duplicate in its scope, unless the call says otherwise
    (`DedupeMode`: "exact" by default, "near", "reject", "off").
    `dedupe_threshold`: the near-duplicate cosine of "near" and "reject" (see
    `DEFAULT_DEDUPE_THRESHOLD`).
    `ids`: where new ids come from (`seeded_memory_ids(seed)` for reproducible episodes).
    """

    def __init__(
        self,
        path: str | Path,
        embedder: Embedder | None = None,
        *,
        search: SearchConfig | str = "balanced",
        index: VectorIndexConfig | None = None,
        dedupe: DedupeMode = DEFAULT_DEDUPE,
        dedupe_threshold: float = DEFAULT_DEDUPE_THRESHOLD,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        ids: Callable[[], str] = new_memory_id,
    ) -> None:
        self.dedupe = _check_dedupe(dedupe)
        self.dedupe_threshold = _check_threshold(dedupe_threshold)
        self.path = str(path)
        self.search_config = resolve_search_config(search)
        self._new_id = ids
        self._lock = threading.RLock()
        self._rowid_of: dict[str, int] = {}
        self._generation: int | None = None  # None: the index must be loaded in full
        self._last_history = 0
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            self.embedder = embedder or self._recorded_embedder() or library_embedder()
            self._index = VectorIndex(self.embedder.dim, index)
            self._setup(busy_timeout_s)
        except BaseException:
            self._conn.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, embedder={self.embedder.name!r})"

    def _recorded_embedder(self) -> Embedder | None:
        """The embedder an existing store names, when agemem ships it (see `SHIPPED_EMBEDDERS`);
        None for a new file, or one that names another embedder (`_check_meta` then says so)."""
        try:
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'embedder_name'"
            ).fetchone()
        except sqlite3.Error:
            return None  # a new file (no meta table yet), or not a store: `_setup` tells which
        if row is None or row[0] not in SHIPPED_EMBEDDERS:
            return None
        try:
            return SHIPPED_EMBEDDERS[row[0]]()
        except EmbedderUnavailable as err:
            raise EmbedderUnavailable(
                f"{self.path} was written by embedder {row[0]!r}, the only one that can read it; "
                f"{err}"
            ) from None

    # ---- connection and schema ---------------------------------------------------------------

    def _setup(self, busy_timeout_s: float) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        conn.create_function(CASEFOLD_SQL, 1, casefold, deterministic=True)  # icontains
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL stays consistent after any crash; a power cut may lose the last
        # commits, the price of not syncing the disk on every small agent write.
        conn.execute("PRAGMA synchronous = NORMAL")
        with self._transaction(write=True):
            for statement in _split_sql(_SCHEMA):
                conn.execute(statement)
            self._check_meta()

    def _check_meta(self) -> None:
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        name, dim = self.embedder.name, int(self.embedder.dim)
        if not meta:
            rows = [
                ("schema_version", str(SCHEMA_VERSION)),
                ("embedder_name", name),
                ("embedder_dim", str(dim)),
                ("generation", "0"),
            ]
            self._conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows)
            return
        if int(meta["schema_version"]) > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} uses store schema {meta['schema_version']}, newer than this "
                f"agemem's {SCHEMA_VERSION}; upgrade agemem to open it"
            )
        if (meta["embedder_name"], int(meta["embedder_dim"])) != (name, dim):
            raise EmbedderMismatch(
                f"{self.path} was built with embedder {meta['embedder_name']!r} "
                f"(dim {meta['embedder_dim']}), but was opened with {name!r} (dim {dim}); "
                f"vectors of different embedders cannot be compared. Open it with "
                f"{meta['embedder_name']!r}, or move the entries: export_jsonl() with the old "
                f"embedder, then import_jsonl() into a new file opened with {name!r} "
                "(entries are re-embedded)."
            )

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction; writers take the lock up front (BEGIN IMMEDIATE) and queue on it."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ---- keeping the in-memory index in step with the file -----------------------------------

    def _sync(self) -> None:
        """Apply what any process changed since the last sync (call inside a transaction)."""
        try:
            conn = self._conn
            generation = int(
                conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]
            )
            if generation != self._generation:
                self._reload(generation)
                return
            changes = conn.execute(
                "SELECT id, memory_id FROM history WHERE id > ? ORDER BY id", (self._last_history,)
            ).fetchall()
            if len(changes) > len(self._index):  # mostly new: one bulk load is cheaper
                self._reload(generation)
            elif changes:
                self._apply(list(dict.fromkeys(m for _, m in changes)))
                self._last_history = changes[-1][0]
        except BaseException:
            self._generation = None  # half-applied: start over next time
            raise

    def _reload(self, generation: int) -> None:
        conn = self._conn
        self._last_history = conn.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()[0]
        rows = conn.execute("SELECT rowid, id, embedding FROM memories").fetchall()
        keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        self._rowid_of = {r[1]: r[0] for r in rows}
        vectors = self._vectors([r[2] for r in rows])
        cached = (
            self._cached_graph(generation)
            if len(rows) >= self._index.config.exact_threshold
            else None
        )
        try:
            self._index.load(keys, vectors, **(cached or {}))
        except (RuntimeError, ValueError):  # an unreadable cache only costs a rebuild
            self._index.load(keys, vectors)
        self._generation = generation

    def _graph_config(self) -> str:
        cfg = self._index.config
        return f"i8-cos dim={self.embedder.dim} M={cfg.connectivity} ef_add={cfg.expansion_add}"

    def _cached_graph(self, generation: int) -> dict[str, Any] | None:
        """The saved graph if it was built from this generation with this configuration, and
        the rowids of entries changed since it was saved."""
        row = self._conn.execute(
            "SELECT generation, last_history, config, graph FROM graph_cache"
        ).fetchone()
        if row is None or (row[0], row[2]) != (generation, self._graph_config()):
            return None
        changed = self._conn.execute(
            "SELECT DISTINCT memory_id FROM history WHERE id > ?", (row[1],)
        ).fetchall()
        rowids = [self._rowid_of[m] for (m,) in changed if m in self._rowid_of]
        return {"graph": row[3], "changed": np.array(rowids, dtype=np.int64)}

    def _save_graph(self) -> None:
        """Store this process's graph for the next process to start from, once it holds enough
        work: a fresh build, or edits to a tenth of it (replaying those costs a new process a
        few seconds at 100k entries; writing the graph costs this one a fraction of a second)."""
        index = self._index
        with self._lock:
            if self.path == ":memory:" or index.unsaved_changes < max(1_000, len(index) // 10):
                return
            state = (self._generation, self._last_history)
            graph = index.graph_bytes()
            if graph is None or self._generation is None:
                return
            with self._transaction(write=True) as conn:
                saved = conn.execute("SELECT generation, last_history FROM graph_cache").fetchone()
                if saved is not None and tuple(saved) >= state:
                    return  # another process saved a fresher one
                conn.execute(
                    "INSERT OR REPLACE INTO graph_cache VALUES (1, ?, ?, ?, ?)",
                    (*state, self._graph_config(), graph),
                )

    def _apply(self, memory_ids: list[str]) -> None:
        found: dict[str, tuple[int, bytes]] = {}
        for chunk in _chunks(memory_ids):
            sql = f"SELECT rowid, id, embedding FROM memories WHERE id IN ({_marks(len(chunk))})"
            for rowid, memory_id, blob in self._conn.execute(sql, chunk):
                found[memory_id] = (rowid, blob)
        stale = [  # deleted, or re-imported under a new rowid
            self._rowid_of.pop(m)
            for m in memory_ids
            if m in self._rowid_of and self._rowid_of[m] != found.get(m, (None,))[0]
        ]
        self._index.remove(np.array(stale, dtype=np.int64))
        if found:
            for memory_id, (rowid, _) in found.items():
                self._rowid_of[memory_id] = rowid
            keys = np.array([rowid for rowid, _ in found.values()], dtype=np.int64)
            self._index.upsert(keys, self._vectors([blob for _, blob in found.values()]))

    def _vectors(self, blobs: list[bytes]) -> np.ndarray:
        flat = np.frombuffer(b"".join(blobs), dtype="<f4")
        return flat.astype(np.float32).reshape(len(blobs), self.embedder.dim)

    @property
    def vector_index(self) -> VectorIndex:
        """This process's in-memory index (read it, e.g. `uses_ann`; the store maintains it)."""
        return self._index

    def refresh_index(self) -> None:
        """Catch the in-memory index up with the file now (otherwise the next search does),
        building the HNSW graph if the store is large enough to use one."""
        with self._transaction(write=False):
            self._sync()
            self._index.prepare()
        self._save_graph()

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
        parts = [self.embedder.embed(list(chunk)) for chunk in _chunks(texts, EMBED_BATCH)]
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

    # ---- rows --------------------------------------------------------------------------------

    def _item(self, row: Sequence[Any], score: float | None = None) -> MemoryItem:
        _, memory_id, content, metadata, mtype, user, agent, session, created, updated, blob = row
        return MemoryItem(
            id=memory_id,
            content=content,
            metadata=json.loads(metadata),
            memory_type=mtype,
            scope=Scope(user, agent, session),
            created_at=created,
            updated_at=updated,
            embedding=self._vectors([blob])[0],
            score=score,
        )

    def _get(self, memory_id: str, scope: Scope | None = None) -> MemoryItem:
        """The entry, if it exists in `scope` (any scope for None); else `MemoryNotFound`."""
        where, params = _where(scope or ANY_SCOPE)
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM memories WHERE id = ? AND {where}", (memory_id, *params)
        ).fetchone()
        if row is None:
            raise MemoryNotFound(memory_id)
        return self._item(row)

    def _items(self, ranked: Sequence[tuple[int, float]]) -> list[MemoryItem]:
        """Rows for `(rowid, score)` pairs, in the given order."""
        rows: dict[int, Sequence[Any]] = {}
        for chunk in _chunks([int(rowid) for rowid, _ in ranked]):
            sql = f"SELECT {_COLUMNS} FROM memories WHERE rowid IN ({_marks(len(chunk))})"
            rows.update((row[0], row) for row in self._conn.execute(sql, chunk))
        return [self._item(rows[int(r)], float(s)) for r, s in ranked if int(r) in rows]

    def _fresh_ids(self, n: int, reserved: Collection[str] = ()) -> list[str]:
        """`n` new ids, unique in the file and not `reserved`: 8 hex digits collide after
        ~10^5 entries."""
        ids: dict[str, None] = {}
        while len(ids) < n:
            batch = [
                i
                for i in dict.fromkeys(self._new_id() for _ in range(n - len(ids)))
                if i not in ids and i not in reserved
            ]
            taken: set[str] = set()
            for chunk in _chunks(batch):
                sql = f"SELECT id FROM memories WHERE id IN ({_marks(len(chunk))})"
                taken.update(r[0] for r in self._conn.execute(sql, chunk))
            ids.update((i, None) for i in batch if i not in taken)
        return list(ids)

    # ---- writes ------------------------------------------------------------------------------

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
        """Store `items` in one transaction, each checked against the file and the earlier items
        of the batch as `dedupe` says (None or True: the store's mode; False: "off")."""
        mode = self._dedupe_mode(dedupe)
        threshold = self.dedupe_threshold
        if dedupe_threshold is not None:
            threshold = _check_threshold(dedupe_threshold)
        for item in items:
            _check_entry(item)
        vectors = self._embeddings_for(items)
        with self._transaction(write=True) as conn:
            if mode in ("near", "reject"):  # near-duplicates are found through the index
                self._sync()
            ids = iter(self._fresh_ids(len(items)))
            if mode == "off":
                results = [
                    AddResult(self._new_item(next(ids), item, vec))
                    for item, vec in zip(items, vectors, strict=True)
                ]
                conn.executemany(_INSERT, [self._row(r.item) for r in results])
            else:
                batch: list[tuple[MemoryItem, np.ndarray]] = []  # this batch's writes, as now
                results = [
                    self._add_checked(item, vec, ids, mode, threshold, batch)
                    for item, vec in zip(items, vectors, strict=True)
                ]
        self._save_graph()
        return results

    def _dedupe_mode(self, dedupe: DedupeMode | bool | None) -> DedupeMode:
        if dedupe is None or dedupe is True:
            return self.dedupe
        if dedupe is False:
            return "off"
        return _check_dedupe(dedupe)

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
        self._conn.execute(_INSERT, self._row(new))
        batch.append((new, vec))
        return AddResult(new)

    def _exact_duplicate(self, item: NewMemory) -> MemoryItem | None:
        """An entry of exactly this scope with the same normalised text, type and metadata.
        Candidates come from the FTS index (they contain the text as a phrase); a text without
        a letter or digit has no FTS tokens, so its scope is scanned instead."""
        key = normalize_content(item.content)
        metadata = json.loads(_metadata_json(item.metadata))
        where, params = _where(item.scope, exact_scope=True)
        sql = f"SELECT {_COLUMNS} FROM memories WHERE {where} AND memory_type = ?"
        params.append(item.memory_type)
        if re.search(r"[^\W_]", key):
            sql += " AND rowid IN (SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?)"
            params.append(_exact_phrase(key))
        else:
            sql += " AND length(content) >= ?"
            params.append(len(key))
        for row in self._conn.execute(sql, params):
            if normalize_content(row[2]) == key and json.loads(row[3]) == metadata:
                return self._item(row)
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
        self._conn.execute(
            "UPDATE memories SET content = ?, metadata = ?, updated_at = ?, embedding = ? "
            "WHERE id = ?",
            (
                new.content,
                _metadata_json(new.metadata),
                new.updated_at,
                vec.astype("<f4").tobytes(),
                new.id,
            ),
        )
        return new

    def _row(self, item: MemoryItem) -> tuple[Any, ...]:
        assert item.embedding is not None
        return (
            item.id, item.content, _metadata_json(item.metadata), item.memory_type,
            item.scope.user_id, item.scope.agent_id, item.scope.session_id,
            item.created_at, item.updated_at, item.embedding.astype("<f4").tobytes(),
        )  # fmt: skip

    def _duplicate(
        self,
        vec: np.ndarray,
        scope: Scope,
        pending: list[tuple[MemoryItem, np.ndarray]],
        threshold: float,
    ) -> tuple[MemoryItem, float] | None:
        """The most similar entry with exactly this scope (stored, or earlier in the batch: a
        linear scan, so bulk loads of distinct entries should pass dedupe="off"), if its cosine
        reaches `threshold`. Call with the index synced."""
        where, params = _where(scope, exact_scope=True)
        keys, scores = self._dense(vec, 1, where, params)
        candidates: list[tuple[float, MemoryItem | int]] = [
            (float(s), int(k)) for k, s in zip(keys, scores, strict=True)
        ]
        candidates += [(float(v @ vec), item) for item, v in pending if item.scope == scope]
        if not candidates:
            return None
        sim, found = max(candidates, key=lambda c: c[0])
        if sim < threshold:
            return None
        if isinstance(found, int):
            found = replace(self._items([(found, sim)])[0], score=None)
        return found, sim

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
            _check_content(content)
        if metadata is not None:
            _metadata_json(metadata)
        before = self.get(memory_id, scope=scope)  # embed outside the write lock
        vec = None if content in (None, before.content) else self._embed([content])[0]
        with self._transaction(write=True) as conn:
            old = self._get(memory_id, scope)
            new = replace(
                old,
                content=old.content if content is None else content,
                metadata=old.metadata if metadata is None else dict(metadata),
            )
            if (new.content, new.metadata) == (old.content, old.metadata):
                return old
            if new.content != old.content:  # vec is None if another process changed it since
                new.embedding = vec if vec is not None else self._embed([new.content])[0]
            new.updated_at = utc_now()
            assert new.embedding is not None
            conn.execute(
                "UPDATE memories SET content = ?, metadata = ?, updated_at = ?, embedding = ? "
                "WHERE id = ?",
                (
                    new.content,
                    _metadata_json(new.metadata),
                    new.updated_at,
                    new.embedding.astype("<f4").tobytes(),
                    memory_id,
                ),
            )
        return new

    def delete(self, memory_id: str, *, scope: Scope | None = None) -> MemoryItem:
        with self._transaction(write=True) as conn:
            old = self._get(memory_id, scope)
            conn.execute("DELETE FROM memories WHERE id = ?", (memory_id,))
        return old

    def reset(self, *, scope: Scope = ANY_SCOPE) -> int:
        """Delete every entry in `scope`; each deletion is kept in `history`."""
        where, params = _where(scope)
        with self._transaction(write=True) as conn:
            removed = conn.execute(f"DELETE FROM memories WHERE {where}", params).rowcount
            self._bump_generation()
        return removed

    def _bump_generation(self) -> None:
        self._conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
        )
        self._conn.execute("DELETE FROM graph_cache")  # built for the old generation

    # ---- reads -------------------------------------------------------------------------------

    def get(self, memory_id: str, *, scope: Scope | None = None) -> MemoryItem:
        with self._lock:
            return self._get(memory_id, scope)

    def get_all(
        self,
        *,
        scope: Scope = ANY_SCOPE,
        filters: dict[str, Any] | None = None,
        limit: int | None = None,
    ) -> list[MemoryItem]:
        """Entries in insertion order."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        where, params = _where(scope, filters)
        sql = f"SELECT {_COLUMNS} FROM memories WHERE {where} ORDER BY rowid LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, [*params, -1 if limit is None else limit]).fetchall()
        return [self._item(row) for row in rows]

    def _owned_by(self, memory_id: str, scope: Scope) -> bool:
        """Whether the entry, live or deleted, belongs to `scope`."""
        for table, key in (("memories", "id"), ("deleted_scopes", "memory_id")):
            row = self._conn.execute(
                f"SELECT user_id, agent_id, session_id FROM {table} WHERE {key} = ?",
                (memory_id,),
            ).fetchone()
            if row is not None:
                return scope.covers(Scope(*row))
        return False

    def count(self, *, scope: Scope = ANY_SCOPE) -> int:
        where, params = _where(scope)
        with self._lock:
            return self._conn.execute(
                f"SELECT count(*) FROM memories WHERE {where}", params
            ).fetchone()[0]

    def history(self, memory_id: str, *, scope: Scope | None = None) -> list[HistoryEvent]:
        """Events of one entry, oldest first (kept after deletion); `MemoryNotFound` if none, or
        if the entry (or, once deleted, the entry it was) is outside `scope` (None: any). Entries
        deleted by a version of agemem that did not yet record their scope answer only to None."""
        with self._transaction(write=False):
            if scope is not None and scope.as_dict() and not self._owned_by(memory_id, scope):
                raise MemoryNotFound(memory_id)
            rows = self._conn.execute(
                "SELECT id, memory_id, event, old_content, new_content, created_at FROM history "
                "WHERE memory_id = ? ORDER BY id",
                (memory_id,),
            ).fetchall()
        if not rows:
            raise MemoryNotFound(memory_id)
        return [HistoryEvent(*row) for row in rows]

    # ---- search ------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        top_k: int = 5,
        mode: SearchMode = "hybrid",
        scope: Scope = ANY_SCOPE,
        filters: dict[str, Any] | None = None,
        query_embedding: np.ndarray | None = None,
    ) -> list[MemoryItem]:
        """Best `top_k` entries, best first. `score`: cosine for "dense", BM25 relevance
        (FTS5's bm25() negated, higher is better) for "bm25", fused RRF score for "hybrid"."""
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {SEARCH_MODES}")
        if not isinstance(query, str):
            raise ValueError(f"query must be a string, got {query!r}")
        where, params = _where(scope, filters)
        vec = None if mode == "bm25" else self._query_vector(query, query_embedding)
        with self._transaction(write=False):
            if mode == "bm25":
                ranked = self._bm25(query, top_k, where, params)
            else:
                assert vec is not None
                self._sync()
                if mode == "dense":
                    ranked = list(zip(*self._dense(vec, top_k, where, params), strict=True))
                else:
                    ranked = self._hybrid(query, vec, top_k, where, params)
            items = self._items(ranked)
        self._save_graph()
        return items

    def _dense(
        self, vec: np.ndarray, k: int, where: str, params: list[Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rowids and cosines of the `k` nearest entries matching `where` (index synced)."""
        if where == "1":
            return self._index.search(vec, k)
        n_allowed = self._conn.execute(
            f"SELECT count(*) FROM memories WHERE {where}", params
        ).fetchone()[0]
        return self._index.search_filtered(
            vec,
            k,
            n_allowed=n_allowed,
            keep=lambda keys: self._admits(keys, where, params),
            allowed_keys=lambda: self._allowed(where, params),
        )

    def _allowed(self, where: str, params: list[Any]) -> np.ndarray:
        """Every rowid that passes `where`."""
        rows = self._conn.execute(f"SELECT rowid FROM memories WHERE {where}", params)
        return np.array([r[0] for r in rows], dtype=np.int64)

    def _admits(self, keys: np.ndarray, where: str, params: list[Any]) -> np.ndarray:
        """Mask of the rowids that pass `where`."""
        admitted: set[int] = set()
        for chunk in _chunks(keys.tolist()):
            sql = f"SELECT rowid FROM memories WHERE rowid IN ({_marks(len(chunk))}) AND {where}"
            admitted.update(r[0] for r in self._conn.execute(sql, [*chunk, *params]))
        return np.fromiter((k in admitted for k in keys.tolist()), dtype=bool, count=len(keys))

    def _bm25(self, query: str, k: int, where: str, params: list[Any]) -> list[tuple[int, float]]:
        """BM25 over the query's words, OR-ed so partial matches rank too (see
        `SearchConfig.max_term_matches` for the words left out)."""
        terms = fts_terms(query)
        limit = self.search_config.max_term_matches
        kept = [t for t in terms if self._term_matches(t, limit + 1) <= limit] or terms
        if not kept:
            return []
        sql = (
            "SELECT m.rowid, -bm25(memories_fts) FROM memories_fts "
            "JOIN memories AS m ON m.rowid = memories_fts.rowid "
            f"WHERE memories_fts MATCH ? AND {where} ORDER BY bm25(memories_fts) LIMIT ?"
        )
        return [tuple(r) for r in self._conn.execute(sql, [" OR ".join(kept), *params, k])]

    def _term_matches(self, term: str, cap: int) -> int:
        """How many entries contain `term`, counting no further than `cap` (cheap either way)."""
        sql = "SELECT count(*) FROM (SELECT 1 FROM memories_fts WHERE memories_fts MATCH ? LIMIT ?)"
        return self._conn.execute(sql, (term, cap)).fetchone()[0]

    def _hybrid(
        self, query: str, vec: np.ndarray, k: int, where: str, params: list[Any]
    ) -> list[tuple[int, float]]:
        cfg = self.search_config
        pool = cfg.pool_for(k)
        dense_keys, _ = self._dense(vec, pool, where, params)
        bm25_keys = [rowid for rowid, _ in self._bm25(query, pool, where, params)]
        fused = rrf_fuse(
            [dense_keys.tolist(), bm25_keys], [cfg.dense_weight, cfg.bm25_weight], cfg.rrf_k
        )
        return fused[:k]

    # ---- export / import ---------------------------------------------------------------------

    def export_jsonl(self, path: str | Path, *, scope: Scope = ANY_SCOPE) -> int:
        """One JSON object per line, embeddings and embedder name included; returns the count."""
        where, params = _where(scope)
        count = 0
        with (
            self._transaction(write=False) as conn,
            Path(path).open("w", encoding="utf-8") as out,
        ):
            for row in conn.execute(
                f"SELECT {_COLUMNS} FROM memories WHERE {where} ORDER BY rowid", params
            ):
                record = self._item(row).to_dict(with_embedding=True)
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
        with self._transaction(write=True) as conn:
            self._check_new_ids(path, records)
            given = {it.id for it in items if it.id}
            fresh = iter(self._fresh_ids(len(items) - len(given), reserved=given))
            for item in items:
                item.id = item.id or next(fresh)
            conn.executemany(_INSERT, [self._row(it) for it in items])
            self._bump_generation()
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
            _metadata_json(record.metadata)
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
        taken: list[str] = []
        for chunk in _chunks(list(line_of)):
            sql = f"SELECT id FROM memories WHERE id IN ({_marks(len(chunk))})"
            taken += [row[0] for row in self._conn.execute(sql, chunk)]
        if taken:
            first = min(taken, key=line_of.__getitem__)
            raise ImportFileError(
                path, line_of[first], f"id {first} already exists in {self.path}; "
                "delete it there first or import into a fresh store",
            )  # fmt: skip


def _split_sql(script: str) -> list[str]:
    """Statements of a script (triggers kept whole), so they run inside our transaction:
    `executescript` would COMMIT first."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not current.strip():
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
