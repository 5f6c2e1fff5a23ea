"""API keys: each names one tenant; only a SHA-256 hash of it is stored.

A key reads `agm_<key id>_<secret>`: the key id (12 hex digits) finds the row, the secret is 256
random bits. The store keeps the key id, the tenant and `sha256(key)`; a presented key is hashed
and compared with `hmac.compare_digest` (constant time), also when its key id is unknown. A
revoked key stays in the store, marked, so that `keys list` shows it and it never verifies again.

The key store is a SQLite file (by default `keys.db` in the server's store directory); revoking
from another process takes effect on the server's next request.

>>> import tempfile, os
>>> keys = KeyStore(os.path.join(tempfile.mkdtemp(), "keys.db"))
>>> key = keys.create("acme")
>>> keys.verify(key.token), keys.verify(key.token + "x"), keys.verify("nonsense")
('acme', None, None)
>>> keys.revoke(key.key_id), keys.verify(key.token)
(1, None)
>>> keys.close()
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agemem.serve.tenants import check_tenant

KEY_PREFIX = "agm"
_DUMMY_HASH = hashlib.sha256(b"agemem: no such key").hexdigest()
_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant);
"""


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class NewKey:
    key_id: str
    tenant: str
    token: str  # shown once, never stored


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    tenant: str
    created_at: str
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyStore:
    """The API keys in one SQLite file (created with owner-only permissions)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path).expanduser()
        if not create and not self.path.is_file():
            raise FileNotFoundError(f"no key store at {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        self._conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        if fresh:
            os.chmod(self.path, 0o600)
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def create(self, tenant: str) -> NewKey:
        tenant = check_tenant(tenant)
        key_id = secrets.token_hex(6)
        token = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        with self._lock:
            self._conn.execute(
                "INSERT INTO api_keys (key_id, tenant, key_hash, created_at) VALUES (?,?,?,?)",
                (key_id, tenant, hash_key(token), _now()),
            )
        return NewKey(key_id, tenant, token)

    def verify(self, token: str) -> str | None:
        """The tenant of an active key, or None (unknown, malformed or revoked)."""
        parts = token.split("_", 2) if isinstance(token, str) else []
        key_id = parts[1] if len(parts) == 3 and parts[0] == KEY_PREFIX else ""
        with self._lock:
            row = self._conn.execute(
                "SELECT tenant, key_hash, revoked_at FROM api_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
        expected = row[1] if row else _DUMMY_HASH
        matches = hmac.compare_digest(hash_key(token if isinstance(token, str) else ""), expected)
        if row is None or not matches or row[2] is not None:
            return None
        return row[0]

    def list(self, tenant: str | None = None) -> list[KeyInfo]:
        query = "SELECT key_id, tenant, created_at, revoked_at FROM api_keys"
        args: tuple[str, ...] = ()
        if tenant is not None:
            query, args = query + " WHERE tenant = ?", (tenant,)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY created_at, key_id", args).fetchall()
        return [KeyInfo(*row) for row in rows]

    def active_count(self) -> int:
        with self._lock:
            return self._conn.execute(
                "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL"
            ).fetchone()[0]

    def revoke(self, key_id: str | None = None, *, tenant: str | None = None) -> int:
        """Revoke one key (by id) or every key of a tenant; returns how many were active."""
        if (key_id is None) == (tenant is None):
            raise ValueError("revoke needs a key id or a tenant, not both")
        column, value = ("key_id", key_id) if key_id is not None else ("tenant", tenant)
        with self._lock:
            cursor = self._conn.execute(
                f"UPDATE api_keys SET revoked_at = ? WHERE {column} = ? AND revoked_at IS NULL",
                (_now(), value),
            )
        return cursor.rowcount

    def close(self) -> None:
        self._conn.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
