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
fact. `transaction()` makes several writes one transaction (the calls inside it nest as
savepoints): all of them commit, or none.

Deduplication (`DedupeMode`, per store and per call): "exact" (the default) keeps one entry per
normalised text in a scope and stores every other add; "near" also turns a near-duplicate into an
UPDATE of the entry it matched (history keeps the old text); "reject" writes nothing for a
near-duplicate and reports what it matched (AgeMem's env, where the agent decides); "off" stores
everything.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from agemem.memory.backend import (
    ANY_SCOPE,
    DEFAULT_DEDUPE,
    DEFAULT_DEDUPE_THRESHOLD,
    SEARCH_MODES,
    ImportFileError,
    SQLStoreBase,
    chunks,
    meta_rows_to_write,
    metadata_json,
    query_words,
    recorded_embedder,
)
from agemem.memory.embed import Embedder, library_embedder
from agemem.memory.filters import CASEFOLD_SQL, casefold, scope_where
from agemem.memory.search import SearchConfig, rrf_fuse
from agemem.memory.store import (
    DedupeMode,
    HistoryEvent,
    MemoryItem,
    MemoryNotFound,
    NewMemory,
    Scope,
    SearchMode,
    new_memory_id,
)
from agemem.memory.vector_index import VectorIndex, VectorIndexConfig

# Long enough to wait out another process's bulk insert of tens of thousands of rows; a writer
# stuck for longer than this is a bug worth surfacing as `sqlite3.OperationalError`.
DEFAULT_BUSY_TIMEOUT_S = 30.0
__all__ = [
    "ANY_SCOPE",
    "DEFAULT_DEDUPE_THRESHOLD",
    "SEARCH_MODES",
    "ImportFileError",
    "SQLiteStore",
    "fts_terms",
]
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


# ---- query building -----------------------------------------------------------------------------


def fts_terms(text: str) -> list[str]:
    """User text as safe FTS5 terms: its distinct words, each quoted (so every FTS5 operator --
    `AND`, `NEAR`, `*`, `^`, `:`, parentheses, quotes -- is a plain word or gone).

    >>> fts_terms('(alice AND "bob") OR *')
    ['"alice"', '"and"', '"bob"', '"or"']
    """
    return [f'"{w}"' for w in query_words(text)]


def _where(
    scope: Scope, filters: dict[str, Any] | None = None, *, exact_scope: bool = False
) -> tuple[str, list[Any]]:
    return scope_where(scope, filters, exact_scope=exact_scope)


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _exact_phrase(text: str) -> str:
    """`text` as one FTS5 phrase: FTS5 tokenizes it as it tokenized the stored entries, so an
    entry with the same normalised text contains this phrase."""
    return '"' + text.replace('"', '""') + '"'


# ---- the store ----------------------------------------------------------------------------------


class SQLiteStore(SQLStoreBase):
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
        self._configure(search, dedupe, dedupe_threshold, ids)
        self.path = str(path)
        self._lock = threading.RLock()
        self._depth = 0  # open transactions of the thread holding the lock (nested: savepoints)
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
        return recorded_embedder(self.path, None if row is None else row[0])

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
        rows = meta_rows_to_write(self.path, meta, self.embedder)
        self._conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows)

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction; writers take the lock up front (BEGIN IMMEDIATE) and queue on it.
        Inside `transaction()` it is a savepoint of that transaction."""
        with self._lock:
            if self._depth:
                yield from self._savepoint()
                return
            index_state = (self._generation, self._last_history)
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if (self._generation, self._last_history) != index_state:
                    self._generation = None  # the index saw rolled-back writes: reload it
                raise
            finally:
                self._depth = 0
            self._conn.execute("COMMIT")

    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        name = f"nested_{self._depth}"
        self._conn.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield self._conn
        except BaseException:
            self._conn.execute(f"ROLLBACK TO {name}")
            self._conn.execute(f"RELEASE {name}")
            raise
        finally:
            self._depth -= 1
        self._conn.execute(f"RELEASE {name}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Several writes (`add_many`, `update`, `delete`, ...) as one transaction: they commit
        together when the block ends, or none of them does when it raises. Other writers, of
        this process or another, wait until then."""
        with self._transaction(write=True):
            yield

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
        for chunk in chunks(memory_ids):
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
        for chunk in chunks([int(rowid) for rowid, _ in ranked]):
            sql = f"SELECT {_COLUMNS} FROM memories WHERE rowid IN ({_marks(len(chunk))})"
            rows.update((row[0], row) for row in self._conn.execute(sql, chunk))
        return [self._item(rows[int(r)], float(s)) for r, s in ranked if int(r) in rows]

    def _taken_ids(self, ids: Sequence[str]) -> set[str]:
        taken: set[str] = set()
        for chunk in chunks(ids):
            sql = f"SELECT id FROM memories WHERE id IN ({_marks(len(chunk))})"
            taken.update(r[0] for r in self._conn.execute(sql, chunk))
        return taken

    # ---- writes ------------------------------------------------------------------------------

    def _before_checked_adds(self) -> None:
        self._sync()  # near-duplicates are found through the index

    def _after_write(self) -> None:
        self._save_graph()

    def _after_import(self) -> None:
        self._bump_generation()

    def _insert(self, items: Sequence[MemoryItem]) -> None:
        self._conn.executemany(_INSERT, [self._row(it) for it in items])

    def _write_content(self, item: MemoryItem) -> None:
        assert item.embedding is not None
        self._conn.execute(
            "UPDATE memories SET content = ?, metadata = ?, updated_at = ?, embedding = ? "
            "WHERE id = ?",
            (
                item.content,
                metadata_json(item.metadata),
                item.updated_at,
                item.embedding.astype("<f4").tobytes(),
                item.id,
            ),
        )

    def _exact_candidates(self, item: NewMemory, key: str) -> Iterable[MemoryItem]:
        """Candidates come from the FTS index (they contain the text as a phrase); a text
        without a letter or digit has no FTS tokens, so its scope is scanned instead."""
        where, params = _where(item.scope, exact_scope=True)
        sql = f"SELECT {_COLUMNS} FROM memories WHERE {where} AND memory_type = ?"
        params.append(item.memory_type)
        if re.search(r"[^\W_]", key):
            sql += " AND rowid IN (SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?)"
            params.append(_exact_phrase(key))
        else:
            sql += " AND length(content) >= ?"
            params.append(len(key))
        return [self._item(row) for row in self._conn.execute(sql, params)]

    def _row(self, item: MemoryItem) -> tuple[Any, ...]:
        assert item.embedding is not None
        return (
            item.id, item.content, metadata_json(item.metadata), item.memory_type,
            item.scope.user_id, item.scope.agent_id, item.scope.session_id,
            item.created_at, item.updated_at, item.embedding.astype("<f4").tobytes(),
        )  # fmt: skip

    def _nearest(self, vec: np.ndarray, scope: Scope) -> tuple[MemoryItem, float] | None:
        """Through this process's index (synced by `_before_checked_adds`)."""
        where, params = _where(scope, exact_scope=True)
        keys, scores = self._dense(vec, 1, where, params)
        if not len(keys):
            return None
        return self._items([(int(keys[0]), float(scores[0]))])[0], float(scores[0])

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

    def get_all(
        self,
        *,
        scope: Scope = ANY_SCOPE,
        filters: dict[str, Any] | None = None,
        limit: int | None = None,
    ) -> list[MemoryItem]:
        """Entries in insertion order."""
        self._check_limit(limit)
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
        self._check_search(query, top_k, mode)
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
        for chunk in chunks(keys.tolist()):
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

    # ---- export ------------------------------------------------------------------------------

    def _export_items(self, scope: Scope) -> Iterable[MemoryItem]:
        where, params = _where(scope)
        sql = f"SELECT {_COLUMNS} FROM memories WHERE {where} ORDER BY rowid"
        return (self._item(row) for row in self._conn.execute(sql, params))


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
