"""What the REST routes and the MCP tools share: scopes, by-id lookups and their errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agemem.api import Memory
from agemem.memory.store import MemoryNotFound


class NotFound(LookupError):
    """No entry with this id in the caller's tenant and scope; the same answer whether it never
    existed, was deleted, or belongs to someone else."""

    def __init__(self, memory_id: str) -> None:
        super().__init__(f"no memory with id {memory_id!r}")


@contextmanager
def lookup(memory_id: str) -> Iterator[None]:
    """Turns the store's `MemoryNotFound` into `NotFound` (one message for every unknown id)."""
    try:
        yield
    except MemoryNotFound:
        raise NotFound(memory_id) from None


def scope_args(
    user_id: str | None, agent_id: str | None, run_id: str | None, default: dict[str, str] | None
) -> dict[str, str]:
    """The scope a call names, or `default` when it names none."""
    named = {
        k: v
        for k, v in (("user_id", user_id), ("agent_id", agent_id), ("run_id", run_id))
        if v is not None
    }
    return named or dict(default or {})


def by_id_args(scope: dict[str, str]) -> dict[str, Any]:
    """Arguments of a by-id call: the scope named, or the whole tenant (the tenant's store is the
    boundary, so an id alone never reaches past it)."""
    return dict(scope) if scope else {"unscoped": True}


def get(memory: Memory, memory_id: str, scope: dict[str, str]) -> dict[str, Any]:
    record = memory.get(memory_id, **by_id_args(scope))
    if record is None:
        raise NotFound(memory_id)
    return record
