"""`PostgresStore`: the long-term memory store on a Postgres server with pgvector.

Selected by a URL wherever a store path is accepted (`open_store`, `Memory(path=...)`,
`--store`, `$AGEMEM_STORE_URL`): ``postgresql://USER:PASSWORD@HOST:PORT/DB?schema=NAME``. Every
libpq URL parameter is accepted; `schema` (agemem's own, default ``agemem``) names the Postgres
schema that holds the store's tables, so one database can hold many stores (the server's
tenants are one schema each). Install with ``pip install 'agemem[postgres]'`` (psycopg 3).

Layout, in the store's schema:
- `memories`: one row per entry: `metadata` JSONB, `embedding` a pgvector `vector(dim)` (unit
  length, so cosine distance `<=>` is 1 - cosine), `fts` the `tsvector` of the content.
  Indexes: HNSW over `embedding` (`vector_cosine_ops`), GIN over `fts`, B-trees over the scope
  columns, unique `id`.
- `history`: ADD / UPDATE / DELETE events written by one trigger on `memories` (no write path
  can skip them); `deleted_scopes`: the scope of each deleted entry (the same trigger), so the
  history of a deleted entry answers to its own scope only.
- `meta`: schema version, embedder name and dimension (the same checks as SQLite's file).
- the text search configuration `agemem`: English Snowball stemming with no stop words (as
  SQLite's `porter unicode61`); diacritics are removed in Python before indexing and querying
  ("cafe" finds "café"), so no server extension besides `vector` is needed.

Search: dense is pgvector's HNSW (`hnsw.ef_search` raised to the pool asked for); a filtered
search that the graph answers with fewer than `top_k` rows is rerun exactly (sequential scan),
so filters never lose matches. The keyword side is Postgres full-text search ranked by
`ts_rank` (term frequency and length, no IDF: that is the difference from SQLite's BM25);
words matching more than `SearchConfig.max_term_matches` entries are left out as in SQLite. The
two rankings are fused by the same weighted RRF (`agemem.memory.search`).

Concurrency: each transaction runs on a connection of its own, taken from the store's
`Connections` (at most `connections` open, 4 by default, opened as concurrent calls need them
and kept open for the next), so the threads of one process (the server's) search at the same
time; every write holds a transaction-level advisory lock of the store's schema, so writers of
one store queue as they do on SQLite's file and duplicate checks see every earlier write; reads
see one snapshot. (psycopg_pool is not used: while the server is down, its `getconn` waits out
its timeout for a background reconnection, where a call here must fail at once.)

A lost connection (the server restarted, crashed, or dropped it) fails the call under way with
`StoreUnavailable` and is closed; the next call connects again, and fails the same way, at once,
while the server cannot be reached (a connection found dead before a call has sent anything is
replaced without failing it). A transaction cut off this way was not committed; one that
returned was.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

import numpy as np

from agemem.memory.backend import (
    ANY_SCOPE,
    DEFAULT_DEDUPE,
    DEFAULT_DEDUPE_THRESHOLD,
    SQLStoreBase,
    chunks,
    meta_rows_to_write,
    metadata_json,
    query_words,
    recorded_embedder,
)
from agemem.memory.embed import Embedder, library_embedder
from agemem.memory.filters import POSTGRES, scope_where
from agemem.memory.search import SearchConfig, rrf_fuse
from agemem.memory.store import (
    DedupeMode,
    HistoryEvent,
    MemoryItem,
    MemoryNotFound,
    NewMemory,
    Scope,
    SearchMode,
    StoreError,
    StoreUnavailable,
    new_memory_id,
)

URL_SCHEMES = ("postgresql://", "postgres://")
DEFAULT_SCHEMA = "agemem"
MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
_COLUMNS = (
    "rowid, id, content, metadata, memory_type, user_id, agent_id, session_id, "
    "created_at, updated_at, vector_send(embedding)"  # the float4s as stored, not as text
)
_INSERT = (
    "INSERT INTO memories (id, content, metadata, memory_type, user_id, agent_id, session_id, "
    "created_at, updated_at, embedding, fts) "
    "VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s::vector, to_tsvector('agemem', %s))"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS memories (
    rowid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    content text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{{}}',
    memory_type text NOT NULL,
    user_id text,
    agent_id text,
    session_id text,
    created_at text NOT NULL,
    updated_at text NOT NULL,
    embedding vector({dim}) NOT NULL,
    fts tsvector NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_scope ON memories (user_id, agent_id, session_id);
CREATE INDEX IF NOT EXISTS memories_agent ON memories (agent_id);
CREATE INDEX IF NOT EXISTS memories_session ON memories (session_id);
CREATE INDEX IF NOT EXISTS memories_fts ON memories USING gin (fts);
CREATE INDEX IF NOT EXISTS memories_embedding ON memories USING hnsw (embedding vector_cosine_ops);
CREATE TABLE IF NOT EXISTS history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    memory_id text NOT NULL,
    event text NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),
    old_content text,
    new_content text,
    created_at text NOT NULL
);
CREATE INDEX IF NOT EXISTS history_memory ON history (memory_id);
CREATE TABLE IF NOT EXISTS deleted_scopes (
    memory_id text PRIMARY KEY,
    user_id text,
    agent_id text,
    session_id text
);
CREATE OR REPLACE FUNCTION memories_history() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO history (memory_id, event, old_content, new_content, created_at)
        VALUES (NEW.id, 'ADD', NULL, NEW.content, NEW.created_at);
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO history (memory_id, event, old_content, new_content, created_at)
        VALUES (NEW.id, 'UPDATE', OLD.content, NEW.content, NEW.updated_at);
        RETURN NEW;
    END IF;
    INSERT INTO history (memory_id, event, old_content, new_content, created_at)
    VALUES (OLD.id, 'DELETE', OLD.content, NULL,
            to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'));
    INSERT INTO deleted_scopes (memory_id, user_id, agent_id, session_id)
    VALUES (OLD.id, OLD.user_id, OLD.agent_id, OLD.session_id)
    ON CONFLICT (memory_id) DO UPDATE SET user_id = EXCLUDED.user_id,
        agent_id = EXCLUDED.agent_id, session_id = EXCLUDED.session_id;
    RETURN OLD;
END $$;
CREATE OR REPLACE TRIGGER memories_history AFTER INSERT OR UPDATE OR DELETE ON memories
FOR EACH ROW EXECUTE FUNCTION memories_history();
"""
_TEXT_SEARCH = """
CREATE TEXT SEARCH DICTIONARY agemem_stem (TEMPLATE = snowball, Language = english);
CREATE TEXT SEARCH CONFIGURATION agemem (COPY = pg_catalog.english);
ALTER TEXT SEARCH CONFIGURATION agemem ALTER MAPPING FOR asciiword, asciihword,
    hword_asciipart, word, hword, hword_part WITH agemem_stem
"""
_SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")


def _unsplit(parts: SplitResult) -> str:
    """`urlunsplit` that keeps `//` with an empty host (`postgresql:///db?host=/socket`)."""
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query}{fragment}"


def is_postgres_url(location: Any) -> bool:
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def split_url(url: str) -> tuple[str, str]:
    """A store URL as (libpq URL without agemem's parameters, schema).

    >>> split_url("postgresql://u@db:5432/mem?schema=tenant_a&sslmode=require")
    ('postgresql://u@db:5432/mem?sslmode=require', 'tenant_a')
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    kept = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    return _unsplit(parts._replace(query=urlencode(kept))), check_schema(schema)


def with_schema(url: str, schema: str) -> str:
    """`url` naming `schema` (any schema it named is replaced).

    >>> with_schema("postgresql:///mem?host=/tmp&schema=a", "b")
    'postgresql:///mem?host=%2Ftmp&schema=b'
    """
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    return _unsplit(parts._replace(query=urlencode([*query, ("schema", check_schema(schema))])))


def redacted(url: str) -> str:
    """The URL without its password, as messages show it.

    >>> redacted("postgresql://me:secret@db/mem?schema=x")
    'postgresql://me:***@db/mem?schema=x'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return _unsplit(parts._replace(netloc=netloc))


def check_schema(name: str) -> str:
    if not _SCHEMA_NAME.fullmatch(name) or name.lower().startswith("pg_"):
        raise ValueError(
            f"schema {name!r}: give 1-63 characters of letters, digits, '_' and '-', not "
            "starting with pg_"
        )
    return name


def fold_text(text: str) -> str:
    """What full-text search indexes and queries: diacritics removed (as SQLite's
    `remove_diacritics 2`).

    >>> fold_text("Café déjà vu")
    'Cafe deja vu'
    """
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _vector_text(vec: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in vec) + "]"


def _no_nul(text: str, what: str) -> str:
    if "\x00" in text:
        raise ValueError(f"{what} contains a NUL character, which Postgres text cannot hold")
    return text


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "a postgresql:// store needs psycopg: pip install 'agemem[postgres]'"
        ) from None
    return psycopg


def _pgvector() -> Any:
    """pgvector's `Vector` (its Python package reads the binary form of the `vector` type)."""
    try:
        from pgvector import Vector
    except ImportError:
        raise StoreError(
            "a postgresql:// store needs pgvector: pip install 'agemem[postgres]'"
        ) from None
    return Vector


class Connections:
    """At most `size` open connections, each lent to one transaction at a time: an idle one
    when there is one (replaced if it died while idle), else a new one while fewer than `size`
    are open, else the next one given back. `connect` opens and prepares one, or raises
    (`StoreUnavailable` when the server cannot be reached: at once, never after a wait)."""

    def __init__(self, connect: Callable[[], Any], size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"connections: give a whole number of at least 1, not {size!r}")
        self._connect, self.size = connect, size
        self._idle: list[Any] = []
        self._open = 0  # idle, lent, and being opened
        self._ready = threading.Condition()
        self._closed = False

    def take(self) -> Any:
        with self._ready:
            while not self._closed and not self._idle and self._open >= self.size:
                self._ready.wait()
            if self._closed:
                raise StoreError("the store is closed")
            while self._idle:
                conn = self._idle.pop()
                if not conn.broken:
                    return conn
                conn.close()  # died while idle: its place is reopened below
                self._open -= 1
            self._open += 1
        try:
            return self._connect()
        except BaseException:
            self._dropped()
            raise

    def give_back(self, conn: Any) -> None:
        """A connection back after its transaction; a broken one (or any, once closed) is
        closed and its place freed."""
        if conn.broken or conn.closed or self._closed:
            conn.close()
            self._dropped()
            return
        with self._ready:
            self._idle.append(conn)
            self._ready.notify()

    def _dropped(self) -> None:
        with self._ready:
            self._open -= 1
            self._ready.notify()

    def close(self) -> None:
        """Close the idle connections now and each lent one when it is given back."""
        with self._ready:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._ready.notify_all()
        for conn in idle:
            conn.close()


class PostgresStore(SQLStoreBase):
    """Long-term memory in one schema of a Postgres database with pgvector (see the module
    docstring). The options are `SQLiteStore`'s; `schema` overrides the URL's; `connections`
    caps the connections the store opens (one per concurrent transaction)."""

    def __init__(
        self,
        url: str,
        embedder: Embedder | None = None,
        *,
        schema: str | None = None,
        search: SearchConfig | str = "balanced",
        dedupe: DedupeMode = DEFAULT_DEDUPE,
        dedupe_threshold: float = DEFAULT_DEDUPE_THRESHOLD,
        ids: Callable[[], str] = new_memory_id,
        connect_timeout_s: float = 10.0,
        connections: int = 4,
    ) -> None:
        self._configure(search, dedupe, dedupe_threshold, ids)
        conninfo, url_schema = split_url(url)
        self.schema = check_schema(schema) if schema is not None else url_schema
        self.path = with_schema(url, self.schema)
        self._conninfo, self._connect_timeout = conninfo, max(1, int(connect_timeout_s))
        self._vector = _pgvector()
        self._search_path: Any = None  # the SET search_path of `_setup`, run on every connection
        self._lock_key = f"agemem:{self.schema}"
        self._lent = threading.local()  # .conn: the connection of this thread's transaction
        self._connections = Connections(self._connect, connections)
        try:
            self._setup()
            with self._transaction(write=False):
                recorded = self._recorded_embedder()
            self.embedder = embedder or recorded or library_embedder()
            with self._transaction(write=True):
                self._create_tables()
        except BaseException:
            self._connections.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({redacted(self.path)!r}, embedder={self.embedder.name!r})"

    @property
    def where(self) -> str:
        return redacted(self.path)

    # ---- connection and schema ---------------------------------------------------------------

    def _connect(self) -> Any:
        """A new connection, its search_path set to the store's schema (once `_setup` chose it)."""
        psycopg = _psycopg()
        try:
            conn = psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg.OperationalError as err:
            raise StoreUnavailable(
                f"cannot connect to {redacted(self._conninfo)}: {str(err).strip()}; check the "
                "URL and that the server is running"
            ) from None
        try:
            if self._search_path is not None:
                conn.execute(self._search_path)
        except psycopg.OperationalError as err:
            conn.close()
            raise StoreUnavailable(
                f"{self.where}: lost the connection to the database server while opening it "
                f"({str(err).strip() or type(err).__name__})"
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def _conn(self) -> Any:
        """The connection of the current thread's transaction."""
        conn = getattr(self._lent, "conn", None)
        if conn is None:
            raise RuntimeError("PostgresStore: SQL outside a transaction")
        return conn

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, params)

    def _setup(self) -> None:
        """The `vector` extension (created when missing and allowed), the store's schema, and a
        search_path that resolves every name to it first (set on every connection)."""
        from psycopg import errors, sql

        with self._transaction(write=True, key="agemem:setup") as conn:
            found = self._execute(
                "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()
            if found is None:
                try:
                    with conn.transaction():
                        self._execute("CREATE EXTENSION IF NOT EXISTS vector")
                except errors.InsufficientPrivilege:
                    raise StoreError(
                        f"{self.where}: the pgvector extension is not installed in this database "
                        "and this user may not create it; run CREATE EXTENSION vector as an "
                        "administrator"
                    ) from None
                except errors.FeatureNotSupported as err:
                    raise StoreError(f"{self.where}: pgvector is not available: {err}") from None
                found = self._execute(
                    "SELECT extnamespace::regnamespace::text FROM pg_extension "
                    "WHERE extname = 'vector'"
                ).fetchone()
            schema = sql.Identifier(self.schema)
            self._execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            path = sql.SQL("SET search_path TO {}, {}").format(schema, sql.Identifier(found[0]))
            self._execute(path)  # this connection's; SET in a transaction lasts past its commit
        self._search_path = path

    def _recorded_embedder(self) -> Embedder | None:
        exists = self._execute(
            "SELECT to_regclass(quote_ident(current_schema()) || '.meta')"
        ).fetchone()[0]
        if exists is None:
            return None
        row = self._execute("SELECT value FROM meta WHERE key = 'embedder_name'").fetchone()
        return recorded_embedder(self.where, None if row is None else row[0])

    def _create_tables(self) -> None:
        self._execute(_SCHEMA.format(dim=int(self.embedder.dim)))  # one script, no parameters
        has_config = self._execute(
            "SELECT 1 FROM pg_ts_config WHERE cfgname = 'agemem' "
            "AND cfgnamespace = current_schema()::regnamespace"
        ).fetchone()
        if has_config is None:
            self._execute(_TEXT_SEARCH)
        meta = dict(self._execute("SELECT key, value FROM meta").fetchall())
        rows = meta_rows_to_write(self.where, meta, self.embedder)
        for row in rows:
            self._execute("INSERT INTO meta (key, value) VALUES (%s, %s)", row)

    @contextmanager
    def _transaction(self, *, write: bool, key: str | None = None) -> Iterator[Any]:
        """One transaction on a connection of its own (a savepoint of the thread's transaction
        inside `transaction()`); writers of one store hold its advisory lock, so they queue; a
        read sees one snapshot."""
        from psycopg import OperationalError

        conn = getattr(self._lent, "conn", None)
        if conn is not None:  # nested in this thread's transaction
            with self._unavailable_on_loss(), conn.transaction():
                if write:
                    self._advisory_lock(key)
                yield conn
            return
        conn = self._connections.take()
        self._lent.conn = conn
        try:
            with self._unavailable_on_loss(), ExitStack() as stack:
                try:
                    stack.enter_context(conn.transaction())
                except OperationalError:
                    if not conn.broken:
                        raise
                    # lost while idle (the server restarted since): nothing was done yet
                    conn.close()
                    conn = self._lent.conn = self._connect()
                    stack.enter_context(conn.transaction())
                if not write:
                    self._execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                else:
                    self._advisory_lock(key)
                yield conn
        finally:
            self._lent.conn = None
            self._connections.give_back(conn)

    def _advisory_lock(self, key: str | None) -> None:
        self._execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key or self._lock_key,)
        )

    @contextmanager
    def _unavailable_on_loss(self) -> Iterator[None]:
        """The thread's connection lost under way becomes `StoreUnavailable` (other errors
        pass)."""
        from psycopg import OperationalError

        try:
            yield
        except OperationalError as err:
            if not self._conn.broken:
                raise
            raise StoreUnavailable(
                f"{self.where}: lost the connection to the database server "
                f"({str(err).strip() or type(err).__name__}); the call was not completed"
            ) from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Several writes as one transaction: they commit together when the block ends, or none
        of them does when it raises. Other writers of this store wait until then."""
        with self._transaction(write=True):
            yield

    def close(self) -> None:
        self._connections.close()

    # ---- rows --------------------------------------------------------------------------------

    def _item(self, row: Sequence[Any], score: float | None = None) -> MemoryItem:
        _, memory_id, content, metadata, mtype, user, agent, session, created, updated, vec = row
        return MemoryItem(
            id=memory_id,
            content=content,
            metadata=metadata,
            memory_type=mtype,
            scope=Scope(user, agent, session),
            created_at=created,
            updated_at=updated,
            embedding=self._vector.from_binary(vec).to_numpy().copy(),
            score=score,
        )

    def _get(self, memory_id: str, scope: Scope | None = None) -> MemoryItem:
        where, params = _where(scope or ANY_SCOPE)
        row = self._execute(
            f"SELECT {_COLUMNS} FROM memories WHERE id = %s AND {where}", (memory_id, *params)
        ).fetchone()
        if row is None:
            raise MemoryNotFound(memory_id)
        return self._item(row)

    def _items(self, ranked: Sequence[tuple[int, float]]) -> list[MemoryItem]:
        """Rows for `(rowid, score)` pairs, in the given order."""
        keys = [int(rowid) for rowid, _ in ranked]
        rows = {
            row[0]: row
            for row in self._execute(
                f"SELECT {_COLUMNS} FROM memories WHERE rowid = ANY(%s)", (keys,)
            )
        }
        return [self._item(rows[int(r)], float(s)) for r, s in ranked if int(r) in rows]

    def _taken_ids(self, ids: Sequence[str]) -> set[str]:
        taken: set[str] = set()
        for chunk in chunks(ids):
            rows = self._execute("SELECT id FROM memories WHERE id = ANY(%s)", (list(chunk),))
            taken.update(r[0] for r in rows)
        return taken

    # ---- writes ------------------------------------------------------------------------------

    def _row(self, item: MemoryItem) -> tuple[Any, ...]:
        assert item.embedding is not None
        content = _no_nul(item.content, "content")
        return (
            item.id, content, _no_nul(metadata_json(item.metadata), "metadata"),
            item.memory_type, item.scope.user_id, item.scope.agent_id, item.scope.session_id,
            item.created_at, item.updated_at, _vector_text(item.embedding), fold_text(content),
        )  # fmt: skip

    def _insert(self, items: Sequence[MemoryItem]) -> None:
        rows = [self._row(it) for it in items]
        with self._conn.cursor() as cur:
            cur.executemany(_INSERT, rows)

    def _write_content(self, item: MemoryItem) -> None:
        assert item.embedding is not None
        content = _no_nul(item.content, "content")
        self._execute(
            "UPDATE memories SET content = %s, metadata = %s::jsonb, updated_at = %s, "
            "embedding = %s::vector, fts = to_tsvector('agemem', %s) WHERE id = %s",
            (
                content,
                _no_nul(metadata_json(item.metadata), "metadata"),
                item.updated_at,
                _vector_text(item.embedding),
                fold_text(content),
                item.id,
            ),
        )

    def _exact_candidates(self, item: NewMemory, key: str) -> Iterable[MemoryItem]:
        """Candidates come from the full-text index (they contain the text as a phrase); a text
        without a letter or digit has no lexemes, so its scope is scanned instead."""
        where, params = _where(item.scope, exact_scope=True)
        sql = f"SELECT {_COLUMNS} FROM memories WHERE {where} AND memory_type = %s"
        params.append(item.memory_type)
        if re.search(r"[^\W_]", key):
            sql += " AND fts @@ phraseto_tsquery('agemem', %s)"
            params.append(fold_text(key))
        else:
            sql += " AND length(content) >= %s"
            params.append(len(key))
        return [self._item(row) for row in self._execute(sql, params)]

    def _nearest(self, vec: np.ndarray, scope: Scope) -> tuple[MemoryItem, float] | None:
        where, params = _where(scope, exact_scope=True)
        ranked = self._dense(vec, 1, where, params)
        if not ranked:
            return None
        return self._items(ranked)[0], ranked[0][1]

    def delete(self, memory_id: str, *, scope: Scope | None = None) -> MemoryItem:
        with self._transaction(write=True):
            old = self._get(memory_id, scope)
            self._execute("DELETE FROM memories WHERE id = %s", (memory_id,))
        return old

    def reset(self, *, scope: Scope = ANY_SCOPE) -> int:
        """Delete every entry in `scope`; each deletion is kept in `history`."""
        where, params = _where(scope)
        with self._transaction(write=True):
            return self._execute(f"DELETE FROM memories WHERE {where}", params).rowcount

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
        sql = f"SELECT {_COLUMNS} FROM memories WHERE {where} ORDER BY rowid LIMIT %s"
        with self._transaction(write=False):
            rows = self._execute(sql, [*params, limit]).fetchall()
        return [self._item(row) for row in rows]

    def count(self, *, scope: Scope = ANY_SCOPE) -> int:
        where, params = _where(scope)
        with self._transaction(write=False):
            row = self._execute(f"SELECT count(*) FROM memories WHERE {where}", params).fetchone()
        return int(row[0])

    def history(self, memory_id: str, *, scope: Scope | None = None) -> list[HistoryEvent]:
        """Events of one entry, oldest first (kept after deletion); `MemoryNotFound` if none, or
        if the entry (or, once deleted, the entry it was) is outside `scope` (None: any)."""
        with self._transaction(write=False):
            if scope is not None and scope.as_dict() and not self._owned_by(memory_id, scope):
                raise MemoryNotFound(memory_id)
            rows = self._execute(
                "SELECT id, memory_id, event, old_content, new_content, created_at FROM history "
                "WHERE memory_id = %s ORDER BY id",
                (memory_id,),
            ).fetchall()
        if not rows:
            raise MemoryNotFound(memory_id)
        return [HistoryEvent(*row) for row in rows]

    def _owned_by(self, memory_id: str, scope: Scope) -> bool:
        row = self._execute(
            "SELECT user_id, agent_id, session_id, 0 AS live FROM memories WHERE id = %s "
            "UNION ALL SELECT user_id, agent_id, session_id, 1 FROM deleted_scopes "
            "WHERE memory_id = %s ORDER BY live LIMIT 1",
            (memory_id, memory_id),
        ).fetchone()
        return row is not None and scope.covers(Scope(*row[:3]))

    def _export_items(self, scope: Scope) -> Iterable[MemoryItem]:
        where, params = _where(scope)
        sql = f"SELECT {_COLUMNS} FROM memories WHERE {where} ORDER BY rowid"
        return [self._item(row) for row in self._execute(sql, params)]

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
        """Best `top_k` entries, best first. `score`: cosine for "dense", Postgres's `ts_rank`
        for "bm25", the fused RRF score for "hybrid"."""
        self._check_search(query, top_k, mode)
        where, params = _where(scope, filters)
        vec = None if mode == "bm25" else self._query_vector(query, query_embedding)
        with self._transaction(write=False):
            if mode == "bm25":
                ranked = self._bm25(query, top_k, where, params)
            elif mode == "dense":
                assert vec is not None
                ranked = self._dense(vec, top_k, where, params)
            else:
                assert vec is not None
                cfg = self.search_config
                pool = cfg.pool_for(top_k)
                dense = [key for key, _ in self._dense(vec, pool, where, params)]
                keyword = [key for key, _ in self._bm25(query, pool, where, params)]
                weights = [cfg.dense_weight, cfg.bm25_weight]
                ranked = rrf_fuse([dense, keyword], weights, cfg.rrf_k)[:top_k]
            return self._items(ranked)

    def _dense(
        self, vec: np.ndarray, k: int, where: str, params: list[Any]
    ) -> list[tuple[int, float]]:
        """Rowids and cosines of the `k` nearest entries matching `where`: the HNSW graph
        first, an exact scan when the graph's candidates left fewer than `k` after filtering."""
        text = _vector_text(vec)
        sql = (
            f"SELECT rowid, 1 - (embedding <=> %s::vector) FROM memories WHERE {where} "
            "ORDER BY embedding <=> %s::vector LIMIT %s"
        )
        args = [text, *params, text, k]
        self._execute(f"SET LOCAL hnsw.ef_search = {min(MAX_EF_SEARCH, max(40, 2 * k))}")
        rows = self._execute(sql, args).fetchall()
        if len(rows) < k:
            allowed = self._execute(f"SELECT count(*) FROM memories WHERE {where}", params)
            if allowed.fetchone()[0] > len(rows):
                self._execute("SET LOCAL enable_indexscan = off")
                rows = self._execute(sql, args).fetchall()
                self._execute("SET LOCAL enable_indexscan = on")
        return [(int(r[0]), float(r[1])) for r in rows]

    def _bm25(self, query: str, k: int, where: str, params: list[Any]) -> list[tuple[int, float]]:
        """Full-text search over the query's words, OR-ed so partial matches rank too (see
        `SearchConfig.max_term_matches` for the words left out)."""
        words = [fold_text(w) for w in query_words(query)]
        limit = self.search_config.max_term_matches
        counts = self._term_matches(words, limit + 1)
        kept = [w for w, n in zip(words, counts, strict=True) if n <= limit] or words
        if not kept:
            return []
        tsquery = " || ".join(["plainto_tsquery('agemem', %s)"] * len(kept))
        sql = (
            f"SELECT rowid, ts_rank(fts, q, 1) FROM memories, ({'SELECT ' + tsquery}) AS x(q) "
            f"WHERE fts @@ q AND {where} ORDER BY 2 DESC, rowid LIMIT %s"
        )
        rows = self._execute(sql, [*kept, *params, k]).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def _term_matches(self, words: Sequence[str], cap: int) -> list[int]:
        """How many entries contain each of `words`, counting no further than `cap`: one query
        (one round trip) for all of them."""
        count = (
            "(SELECT count(*) FROM (SELECT 1 FROM memories "
            "WHERE fts @@ plainto_tsquery('agemem', %s) LIMIT %s) AS t)"
        )
        counts: list[int] = []
        for start in range(0, len(words), 1000):  # well under Postgres's 65,535 parameters
            chunk = words[start : start + 1000]
            sql = "SELECT " + ", ".join([count] * len(chunk))
            counts += self._execute(sql, [a for w in chunk for a in (w, cap)]).fetchone()
        return counts


def _where(
    scope: Scope, filters: dict[str, Any] | None = None, *, exact_scope: bool = False
) -> tuple[str, list[Any]]:
    return scope_where(scope, filters, exact_scope=exact_scope, dialect=POSTGRES)
