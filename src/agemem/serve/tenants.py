"""Tenants: one store per tenant (see the tenant model in `agemem.serve`).

>>> check_tenant("acme-prod")
'acme-prod'
>>> check_tenant("Acme")
Traceback (most recent call last):
...
agemem.serve.tenants.InvalidTenant: tenant names are 1-63 characters of a-z, 0-9, '_' and '-', \
starting with a letter or digit; got 'Acme'
"""

from __future__ import annotations

import hashlib
import re
import threading
from abc import ABC, abstractmethod
from pathlib import Path

from agemem.api import Memory

TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
DEFAULT_STORE = Path.home() / ".agemem" / "server"
KEYS_FILE = "keys.db"  # the key store's file name inside a store directory


class InvalidTenant(ValueError):
    """A tenant name that is not a safe, case-free identifier."""


def check_tenant(name: str) -> str:
    if not isinstance(name, str) or not TENANT_NAME.fullmatch(name):
        raise InvalidTenant(
            "tenant names are 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter "
            f"or digit; got {name!r}"
        )
    return name


class TenantStores(ABC):
    """Hands out each tenant's `Memory`; the only way the server reaches a store."""

    @abstractmethod
    def open(self, tenant: str) -> Memory:
        """The tenant's memory (created empty on first use)."""

    @abstractmethod
    def default_keys_path(self) -> Path:
        """Where the key store lives unless `--keys` says otherwise."""

    @abstractmethod
    def close(self) -> None: ...


class SQLiteTenants(TenantStores):
    """One SQLite file per tenant: `ROOT/tenants/<tenant>.db`; the key store is `ROOT/keys.db`.

    Each tenant's `Memory` is opened once and shared by the server's threads (the store
    serialises its writes); other processes may open the same files at the same time.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(
                f"--store {self.root} is a file; the server's store is a directory (it holds "
                "keys.db and one tenants/<tenant>.db per tenant)"
            )
        self._memories: dict[str, Memory] = {}
        self._lock = threading.Lock()

    def path(self, tenant: str) -> Path:
        return self.root / "tenants" / f"{check_tenant(tenant)}.db"

    def open(self, tenant: str) -> Memory:
        path = self.path(tenant)
        with self._lock:
            memory = self._memories.get(tenant)
            if memory is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                memory = self._memories[tenant] = Memory(path)
            return memory

    def default_keys_path(self) -> Path:
        return self.root / KEYS_FILE

    def close(self) -> None:
        with self._lock:
            for memory in self._memories.values():
                memory.close()
            self._memories.clear()


class PostgresTenants(TenantStores):
    """One Postgres schema per tenant in the database of `url`: tenant NAME's store is schema
    `tenant_NAME` (a name too long for Postgres's 63-byte identifiers is cut and suffixed with
    16 hex digits of its SHA-256), so no query of one tenant's store can name another's tables:
    each store's connection resolves every table in its own schema (see
    `agemem.memory.postgres`). The key store stays a local SQLite file, `DEFAULT_STORE/keys.db`,
    unless `--keys` says otherwise."""

    def __init__(self, url: str) -> None:
        from agemem.memory.postgres import split_url

        self.url = url
        split_url(url)  # a bad schema parameter is refused here
        self._memories: dict[str, Memory] = {}
        self._lock = threading.Lock()

    @staticmethod
    def schema(tenant: str) -> str:
        name = f"tenant_{check_tenant(tenant)}"
        if len(name) <= 63:
            return name
        return f"{name[:46]}_{hashlib.sha256(tenant.encode()).hexdigest()[:16]}"

    def open(self, tenant: str) -> Memory:
        from agemem.memory.postgres import with_schema

        url = with_schema(self.url, self.schema(tenant))
        with self._lock:
            memory = self._memories.get(tenant)
            if memory is None:
                memory = self._memories[tenant] = Memory(url)
            return memory

    def default_keys_path(self) -> Path:
        return DEFAULT_STORE / KEYS_FILE

    def close(self) -> None:
        with self._lock:
            for memory in self._memories.values():
                memory.close()
            self._memories.clear()


def open_tenants(store: str | Path) -> TenantStores:
    """The tenant stores at `store`: a directory (SQLite, one file per tenant) or a
    postgresql:// URL (one schema per tenant)."""
    text = str(store)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresTenants(text)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"--store {scheme}://... is not supported; give a directory (SQLite, one file per "
            "tenant) or a postgresql:// URL (one schema per tenant)"
        )
    return SQLiteTenants(text)
