"""Where a store lives by default, and whether a file can be opened as one.

The default store is ``~/.agemem/memory.db`` for the `Memory` library and for every CLI command
(`agemem chat`, `agemem store search|add|delete`): one memory per user account, whatever the
working directory, so what `agemem chat` stored is what `Memory()` reads. ``$AGEMEM_STORE``
overrides it; an explicit ``path`` / ``--store`` overrides both.

`check_store_file` tells an unreadable file apart before anything is written to it or an embedder
is loaded: a directory, a file that is not SQLite (random bytes, text), a truncated or damaged
SQLite file, or another program's SQLite database (which a store would otherwise extend with its
own tables). Each is a `StoreFileError` whose one-line message names the file and the fix.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agemem.memory.store import StoreError

if TYPE_CHECKING:
    from agemem.memory.embed import Embedder

DEFAULT_STORE = "~/.agemem/memory.db"
STORE_ENV = "AGEMEM_STORE"
STORE_URL_ENV = "AGEMEM_STORE_URL"  # a postgresql:// URL: the default store is that database
SQLITE_HEADER = b"SQLite format 3\x00"
_STORE_TABLES = {"meta", "memories", "history"}
_META_KEYS = {"schema_version", "embedder_name", "embedder_dim"}
Integrity = Literal["quick", "full"]


class StoreFileError(StoreError):
    """A path that cannot be opened as a memory store; the message names the file and the fix."""


def default_store_path() -> Path:
    """``$AGEMEM_STORE`` or ``~/.agemem/memory.db``; its folder is created."""
    path = Path(os.environ.get(STORE_ENV) or DEFAULT_STORE).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def is_store_url(location: object) -> bool:
    """Whether `location` names a database server (`postgresql://...`) rather than a file."""
    return isinstance(location, str) and "://" in location


def default_store_location() -> str | Path:
    """``$AGEMEM_STORE_URL`` when set, else `default_store_path()`."""
    return os.environ.get(STORE_URL_ENV) or default_store_path()


def open_store(location: str | Path, embedder: Embedder | None = None, **options: Any) -> Any:
    """The store at `location`: a ``postgresql://`` URL (`PostgresStore`, the `postgres`
    extra) or a file path (`SQLiteStore`, ":memory:" included). `options` are the stores'
    own (`search`, `dedupe`, `dedupe_threshold`, `ids`). The one place a store is opened from
    a path or a URL.

    >>> open_store("mysql://db/x")
    Traceback (most recent call last):
    ...
    agemem.memory.storefile.StoreFileError: mysql://db/x: unknown store URL; give a \
postgresql://USER@HOST/DB URL or a .db file path
    """
    if is_store_url(location):
        from agemem.memory.postgres import is_postgres_url

        if not is_postgres_url(location):
            raise StoreFileError(
                f"{location}: unknown store URL; give a postgresql://USER@HOST/DB URL or a .db "
                "file path"
            )
        from agemem.memory.postgres import PostgresStore

        return PostgresStore(str(location), embedder, **options)
    from agemem.memory.sqlite import SQLiteStore

    if str(location) != ":memory:":  # the cheap checks: a directory, not SQLite, another schema
        check_store_file(location, must_exist=False, integrity=None)
    return SQLiteStore(location, embedder, **options)


def _damaged(path: Path, problem: str) -> StoreFileError:
    return StoreFileError(
        f"{path} is a damaged SQLite file ({problem}); restore it from a backup or an "
        "`agemem store export`, or pass another store"
    )


def check_store_file(
    path: str | Path, *, must_exist: bool = True, integrity: Integrity | None = "quick"
) -> None:
    """Raise `StoreFileError` unless `path` is an agemem store (or, with ``must_exist=False``,
    a path where one can be created). `integrity`: run SQLite's ``PRAGMA quick_check`` (page
    structure, O(file)) or ``integrity_check`` ("full": also that every index matches its table).
    """
    path = Path(path)
    if path.is_dir():
        raise StoreFileError(f"{path} is a directory, not a store file; pass a .db file path")
    if not path.exists():
        if must_exist:
            raise StoreFileError(f"no store at {path}; pass the path of an existing .db file")
        if not path.parent.is_dir():
            raise StoreFileError(
                f"cannot create {path}: folder {path.parent} does not exist; create it first"
            )
        return
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as err:
        problem = f"cannot read {path} ({err.strerror}); check its permissions"
        raise StoreFileError(problem) from None
    if not header:
        return  # an empty file is an empty SQLite database: a new store
    if header != SQLITE_HEADER:
        raise StoreFileError(
            f"{path} is not a memory store (not an SQLite database); pass a .db file written "
            "by agemem"
        )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise _damaged(path, str(err)) from None
    try:
        _check_schema(path, conn)
        if integrity is not None:
            pragma = "quick_check" if integrity == "quick" else "integrity_check"
            rows = conn.execute(f"PRAGMA {pragma}(3)").fetchall()
            if [r[0] for r in rows] != ["ok"]:
                lines = [x for r in rows for x in str(r[0]).splitlines() if not x.startswith("***")]
                raise _damaged(path, f"PRAGMA {pragma}: {'; '.join(lines)[:300]}")
    except sqlite3.DatabaseError as err:
        raise _damaged(path, str(err)) from None
    finally:
        conn.close()


def _check_schema(path: Path, conn: sqlite3.Connection) -> None:
    tables = {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not row[0].startswith("sqlite_")
    }
    if not tables:
        return  # an empty database: a new store
    foreign = f"{path} is an SQLite database of another program"
    fix = "pass a store written by agemem, or a new file name"
    if not tables >= _STORE_TABLES:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreFileError(f"{foreign} (tables: {shown}), not a memory store; {fix}")
    try:
        keys = {row[0] for row in conn.execute("SELECT key FROM meta")}
    except sqlite3.OperationalError:
        keys = set()
    if not keys >= _META_KEYS:
        raise StoreFileError(f"{foreign} (its meta table lacks the store's keys); {fix}")
