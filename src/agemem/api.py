"""`Memory`: the library API for people who just want memory, in the shape Mem0 users know.

Results are plain dicts (`{"results": [...]}` with a `memory` field holding the text), so code
written against Mem0's `Memory` needs few changes. `Memory.tools()` hands the AgeMem tool set,
bound to one scope, to any OpenAI-compatible chat call.

Scope rule: every call that reads or writes entries (`add`, `search`, `get`, `get_all`,
`history`, `update`, `delete`, `tools`) names a scope -- `user_id`, `agent_id` and/or `run_id`
(`session_id` is the same key) -- or passes `unscoped=True` to act on every scope (for `add`: to
store an entry that belongs to no scope). Otherwise it raises `ScopeRequired`. By id, an entry
outside the given scope behaves as one that does not exist.

Deduplication (`dedupe=`, per `Memory` and per `add`): see `agemem.memory.store.DedupeMode`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agemem.context import Context
from agemem.memory.embed import Embedder
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import (
    DEFAULT_MEMORY_TYPE,
    AddResult,
    DedupeMode,
    MemoryItem,
    MemoryNotFound,
    NewMemory,
    Scope,
    SearchMode,
)
from agemem.policy.base import Message, ToolSpec
from agemem.tools.agemem import AGEMEM_TOOLS, AgentMemoryState
from agemem.tools.parse import parse_openai
from agemem.tools.registry import ToolSet

LTM_TOOLS = ("Add_memory", "Update_memory", "Delete_memory", "Retrieve_memory")
STORED_ROLES = ("user", "assistant")  # what `add(messages)` keeps: the conversation, not prompts
SCOPE_KEYS = ("user_id", "agent_id", "run_id")  # run_id is session_id under Mem0's name

# Add_memory's description for each dedupe mode (what the model is told an add does)
_ADD_DESCRIPTIONS: dict[str, str] = {
    "exact": "Store a new entry in long-term memory. The very same text is not stored twice.",
    "near": "Store a new entry in long-term memory. A near-duplicate of an entry updates it.",
    "off": "Store a new entry in long-term memory.",
}


class ScopeRequired(ValueError):
    """A `Memory` call named no scope (`user_id`, `agent_id`, `run_id`/`session_id`) and did not
    pass `unscoped=True`."""


def _scope(
    call: str,
    user_id: str | None,
    agent_id: str | None,
    session_id: str | None,
    run_id: str | None,
    unscoped: bool,
) -> Scope | None:
    """The scope a call acts in, or None for `unscoped=True` (every scope)."""
    if run_id is not None and session_id is not None and run_id != session_id:
        raise ValueError(
            f"Memory.{call}: run_id and session_id are one scope key; got run_id={run_id!r} and "
            f"session_id={session_id!r}"
        )
    session = session_id if session_id is not None else run_id
    for name, value in (("user_id", user_id), ("agent_id", agent_id), ("run_id", session)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"Memory.{call}: {name} must be a non-empty string, got {value!r}")
    if not isinstance(unscoped, bool):
        raise ValueError(f"Memory.{call}: unscoped must be True or False, got {unscoped!r}")
    scope = Scope(user_id, agent_id, session)
    if unscoped:
        if scope.as_dict():
            raise ValueError(f"Memory.{call}: give a scope or unscoped=True, not both")
        return None
    if not scope.as_dict():
        every = "store an entry of no scope" if call == "add" else "act on every scope"
        raise ScopeRequired(
            f"Memory.{call} needs a scope: pass user_id, agent_id or run_id (alias session_id), "
            f"or unscoped=True to {every}"
        )
    return scope


def _record(item: MemoryItem) -> dict[str, Any]:
    """An entry as Mem0 shapes it: the text under `memory`, the session under `run_id` too."""
    record = item.to_dict()
    record["memory"] = record.pop("content")
    if "session_id" in record:
        record["run_id"] = record["session_id"]
    return record


def _added(result: AddResult) -> dict[str, Any]:
    """A result as Mem0 shapes it. `event` "ADD": a new entry; "NONE": nothing written, the
    record is the entry matched; "UPDATE": that entry now holds the new text (`previous_memory`:
    its old text)."""
    record = _record(result.item)
    record["event"] = result.event
    if result.event != "ADD":
        record["match"] = result.match
        record["similarity"] = result.similarity
    if result.event == "UPDATE" and result.duplicate_of is not None:
        record["previous_memory"] = result.duplicate_of.content
    return record


@dataclass
class MemoryTools:
    """AgeMem's tools bound to a store, a scope and a context, for OpenAI-style tool calling.

    The state's scope must name a user, agent or session unless `unscoped` is True: tools bound
    to no scope would let the model read, change and delete every user's entries.
    """

    state: AgentMemoryState
    toolset: ToolSet[AgentMemoryState]
    unscoped: bool = False

    def __post_init__(self) -> None:
        if not self.state.scope.as_dict() and not self.unscoped:
            raise ScopeRequired(
                "MemoryTools needs a scope: bind the state to a user_id, agent_id or run_id "
                "(session_id), or pass unscoped=True to let the tools act on every scope"
            )

    @property
    def schemas(self) -> list[ToolSpec]:
        """Pass as `tools=` to `chat.completions.create`."""
        return self.toolset.openai_tools()

    @property
    def context(self) -> Context:
        """The messages Summary_context / Filter_context act on (when those tools are enabled)."""
        return self.state.context

    def execute(self, message: Any) -> list[Message]:
        """Run the tool calls of an assistant message; one `tool` message answers each call.

        `message` is a dict or an OpenAI SDK message object. Invalid calls are answered with an
        error text the model can act on; they change nothing.
        """
        if hasattr(message, "model_dump"):
            message = message.model_dump(exclude_none=True)
        turn = parse_openai(message)
        return [result.to_message() for result in self.toolset.run(turn, self.state)]


class Memory:
    """Long-term memory in one SQLite file, scoped by user / agent / run (session).

    Every call names its scope (see the module docstring); `dedupe` is what an add does with a
    duplicate in its scope, unless the call says otherwise: "exact" (default: the same text is
    stored once, near-duplicates are stored), "near" (a near-duplicate, cosine >=
    `dedupe_threshold`, updates the entry it matched; history keeps the old text), "reject" (a
    near-duplicate is not stored; the result names the entry it matched), "off".

    >>> import tempfile, os
    >>> memory = Memory(path=os.path.join(tempfile.mkdtemp(), "memory.db"))
    >>> memory.add("Maya lives in Lisbon.", user_id="alice")["results"][0]["event"]
    'ADD'
    >>> memory.search("Where does Maya live?", user_id="alice")["results"][0]["memory"]
    'Maya lives in Lisbon.'
    >>> memory.search("Where does Maya live?", user_id="bob")["results"]
    []
    >>> memory.search("Where does Maya live?")
    Traceback (most recent call last):
    ...
    agemem.api.ScopeRequired: Memory.search needs a scope: pass user_id, agent_id or run_id \
(alias session_id), or unscoped=True to act on every scope
    >>> memory.close()
    """

    def __init__(
        self,
        path: str | Path = "agemem.db",
        *,
        embedder: Embedder | None = None,
        search: str = "balanced",
        dedupe: DedupeMode = "exact",
        dedupe_threshold: float | None = None,
    ) -> None:
        options: dict[str, Any] = {"search": search, "dedupe": dedupe}
        if dedupe_threshold is not None:
            options["dedupe_threshold"] = dedupe_threshold
        self.store = SQLiteStore(path, embedder, **options)

    def add(
        self,
        messages: str | Sequence[Message],
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        unscoped: bool = False,
        metadata: dict[str, Any] | None = None,
        memory_type: str = DEFAULT_MEMORY_TYPE,
        dedupe: DedupeMode | None = None,
        dedupe_threshold: float | None = None,
    ) -> dict[str, Any]:
        """Store a text, or each user/assistant message of a conversation, as it is said.

        Each result has an `event`: "ADD", "NONE" (an exact duplicate, or with
        `dedupe="reject"` a near-duplicate: nothing written, the record is the entry matched) or
        "UPDATE" (`dedupe="near"`: the entry matched now holds the new text). `dedupe` and
        `dedupe_threshold` override this `Memory`'s settings for this call."""
        scope = _scope("add", user_id, agent_id, session_id, run_id, unscoped) or Scope()
        entries = [
            NewMemory(text, {**(metadata or {}), **extra}, memory_type, scope)
            for text, extra in self._texts(messages)
        ]
        results = self.store.add_many(entries, dedupe=dedupe, dedupe_threshold=dedupe_threshold)
        return {"results": [_added(r) for r in results]}

    @staticmethod
    def _texts(messages: str | Sequence[Message]) -> list[tuple[str, dict[str, Any]]]:
        if isinstance(messages, str):
            return [(messages, {})]
        return [
            (m["content"], {"role": m["role"]})
            for m in messages
            if m.get("role") in STORED_ROLES and isinstance(m.get("content"), str) and m["content"]
        ]

    def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        unscoped: bool = False,
        limit: int = 5,
        filters: dict[str, Any] | None = None,
        mode: SearchMode = "hybrid",
    ) -> dict[str, Any]:
        """Best `limit` entries in the scope, by hybrid (BM25 + vector) rank unless `mode` says."""
        scope = _scope("search", user_id, agent_id, session_id, run_id, unscoped)
        hits = self.store.search(
            query, top_k=limit, mode=mode, scope=scope or Scope(), filters=filters
        )
        return {"results": [_record(hit) for hit in hits]}

    def get(
        self,
        memory_id: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        unscoped: bool = False,
    ) -> dict[str, Any] | None:
        """The entry, or None if there is none with this id in the scope."""
        scope = _scope("get", user_id, agent_id, session_id, run_id, unscoped)
        try:
            return _record(self.store.get(memory_id, scope=scope))
        except MemoryNotFound:
            return None

    def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        unscoped: bool = False,
        filters: dict[str, Any] | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """The scope's entries (at most `limit`), oldest first."""
        scope = _scope("get_all", user_id, agent_id, session_id, run_id, unscoped)
        items = self.store.get_all(scope=scope or Scope(), filters=filters, limit=limit)
        return {"results": [_record(item) for item in items]}

    def update(
        self,
        memory_id: str,
        data: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        unscoped: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Replace an entry's text (and metadata, when given); raises `MemoryNotFound` if there
        is no entry with this id in the scope."""
        scope = _scope("update", user_id, agent_id, session_id, run_id, unscoped)
        return _record(self.store.update(memory_id, data, metadata=metadata, scope=scope))

    def delete(
        self,
        memory_id: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        unscoped: bool = False,
    ) -> dict[str, Any]:
        """Remove an entry; raises `MemoryNotFound` if there is no entry with this id in the
        scope. Its history stays readable in that scope."""
        scope = _scope("delete", user_id, agent_id, session_id, run_id, unscoped)
        return _record(self.store.delete(memory_id, scope=scope))

    def history(
        self,
        memory_id: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        unscoped: bool = False,
    ) -> list[dict[str, Any]]:
        """ADD / UPDATE / DELETE events of an entry, deleted or not, oldest first; raises
        `MemoryNotFound` if the entry is not (or was not) in the scope."""
        scope = _scope("history", user_id, agent_id, session_id, run_id, unscoped)
        return [vars(event).copy() for event in self.store.history(memory_id, scope=scope)]

    def reset(self) -> None:
        """Delete every entry of every scope."""
        self.store.reset()

    def tools(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        unscoped: bool = False,
        context: Context | None = None,
    ) -> MemoryTools:
        """The tool set for one scope: the model can read and change that scope's entries only
        (`unscoped=True`: every scope's).

        Without `context` the model gets the four store tools (Add / Update / Delete /
        Retrieve). With a `Context` it also gets Summary_context and Filter_context, which then
        edit that context: use `tools.context.messages` as the conversation you send.
        """
        scope = _scope("tools", user_id, agent_id, session_id, run_id, unscoped)
        toolset = AGEMEM_TOOLS if context is not None else AGEMEM_TOOLS.select(*LTM_TOOLS)
        described = _ADD_DESCRIPTIONS.get(self.store.dedupe)
        if described is not None:
            add = replace(toolset["Add_memory"], description=described)
            toolset = ToolSet(add if t.name == add.name else t for t in toolset)
        state = AgentMemoryState(
            store=self.store,
            context=context if context is not None else Context(),
            scope=scope or Scope(),
        )
        return MemoryTools(state, toolset, unscoped=scope is None)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
