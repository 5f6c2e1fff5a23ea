"""AgeMem's six memory tools, with the paper's names and arguments, and the protocol prompt.

LTM tools (Add/Update/Delete_memory) act on the store; Retrieve_memory, Summary_context and
Filter_context act on what the model sees (STM). Retrieve_memory does not edit the context itself:
its observation is the tool message the episode driver appends, which is how the retrieved entries
enter the context. Summary/Filter call the `Context` and report what changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from string import Template
from typing import Any

from pydantic import Field, field_validator

from agemem.context import DEFAULT_THETA, Context
from agemem.memory.store import (
    DEFAULT_MEMORY_TYPE,
    MemoryItem,
    MemoryNotFound,
    MemoryStore,
    Scope,
    SearchMode,
)
from agemem.tools.registry import NonEmptyStr, Tool, ToolArgs, ToolError, ToolSet, ToolStats

MAX_TOP_K = 20  # our cap on Retrieve_memory's top_k (the paper gives only the default, 3)
# Our caps on what one call may carry (the paper gives none). A memory is a self-contained fact:
# the longest supporting fact in HotpotQA is under 1,000 characters, a LoCoMo turn under 2,000.
MAX_CONTENT_CHARS = 4_000  # Add_memory / Update_memory content
MAX_QUERY_CHARS = 1_000  # Retrieve_memory query, Filter_context criteria, ids, memory_type
MAX_METADATA_CHARS = 2_000  # metadata, as JSON


@dataclass
class AgentMemoryState:
    """What the tools act on, plus what the reward counts later.

    `search_mode` defaults to "dense" because the paper's Retrieve_memory is cosine top-k;
    `filter_theta` to the paper's 0.6.
    """

    store: MemoryStore
    context: Context
    scope: Scope = field(default_factory=Scope)
    search_mode: SearchMode = "dense"
    filter_theta: float = DEFAULT_THETA
    stats: ToolStats = field(default_factory=ToolStats)  # a blocked duplicate add counts as run
    added_ids: list[str] = field(default_factory=list)  # entries Add_memory created, in order
    retrieved: list[MemoryItem] = field(default_factory=list)  # what Retrieve_memory returned


# --- arguments ------------------------------------------------------------------------------

_ID_HELP = "an id shown with a memory, e.g. mem_7"


class _MetadataArgs(ToolArgs):
    @field_validator("metadata", check_fields=False)
    @classmethod
    def _bounded_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value, ensure_ascii=False)) > MAX_METADATA_CHARS:
            raise ValueError(f"metadata is longer than {MAX_METADATA_CHARS} characters as JSON")
        return value


class AddMemoryArgs(_MetadataArgs):
    content: NonEmptyStr = Field(
        description="the fact to remember, self-contained", max_length=MAX_CONTENT_CHARS
    )
    metadata: dict[str, Any] | None = Field(None, description="e.g. source, tags, date")
    memory_type: NonEmptyStr = Field(
        DEFAULT_MEMORY_TYPE,
        description="e.g. semantic (facts), episodic (events)",
        max_length=MAX_QUERY_CHARS,
    )


class UpdateMemoryArgs(_MetadataArgs):
    memory_id: str = Field(description=_ID_HELP, max_length=MAX_QUERY_CHARS)
    content: NonEmptyStr = Field(
        description="the new content, replacing the old", max_length=MAX_CONTENT_CHARS
    )
    metadata: dict[str, Any] | None = Field(None, description="replaces the metadata if given")


class DeleteMemoryArgs(ToolArgs):
    memory_id: str = Field(description=_ID_HELP, max_length=MAX_QUERY_CHARS)
    confirmation: bool = Field(description="must be true to delete")


class RetrieveMemoryArgs(ToolArgs):
    query: NonEmptyStr = Field(description="what to look for", max_length=MAX_QUERY_CHARS)
    top_k: int = Field(3, ge=1, le=MAX_TOP_K, description=f"how many entries, 1-{MAX_TOP_K}")
    metadata_filter: dict[str, Any] | None = Field(
        None, description="only entries whose metadata has these values"
    )


class SummaryContextArgs(ToolArgs):
    span: str = Field(
        pattern=r"^(all|[1-9][0-9]*)$",
        description='"all", or "N" for the last N rounds, e.g. "2"',
    )


class FilterContextArgs(ToolArgs):
    criteria: NonEmptyStr = Field(
        description="describes the messages to drop", max_length=MAX_QUERY_CHARS
    )


# --- handlers -------------------------------------------------------------------------------


def _in_scope(item: MemoryItem, scope: Scope) -> bool:
    return all(getattr(item.scope, k) == v for k, v in scope.as_dict().items())


def _owned(state: AgentMemoryState, memory_id: str) -> MemoryItem:
    """The entry, if it exists in the state's scope; other scopes' ids read as unknown."""
    try:
        item = state.store.get(memory_id)
    except MemoryNotFound as err:
        raise ToolError(str(err)) from None
    if not _in_scope(item, state.scope):
        raise ToolError(str(MemoryNotFound(memory_id)))
    return item


def add_memory(state: AgentMemoryState, args: AddMemoryArgs) -> str:
    result = state.store.add(
        args.content, metadata=args.metadata, memory_type=args.memory_type, scope=state.scope
    )
    if result.added:
        state.added_ids.append(result.item.id)
        return f"Added {result.item.id}: {result.item.content}"
    existing = result.duplicate_of or result.item
    if result.event == "UPDATE":  # the store's dedupe mode "near"
        return (
            f"Updated {existing.id} instead of adding a near-duplicate (similarity "
            f"{result.similarity or 0:.2f}): {existing.content!r} -> {result.item.content!r}"
        )
    if result.match == "exact":
        return f"Not added: {existing.id} already holds this text: {existing.content!r}."
    similarity = "" if result.similarity is None else f", similarity {result.similarity:.2f}"
    return (
        f"Not added: near-duplicate of {existing.id}{similarity}: {existing.content!r}. "
        f"To change that entry, call Update_memory with memory_id {existing.id!r}."
    )


def update_memory(state: AgentMemoryState, args: UpdateMemoryArgs) -> str:
    old = _owned(state, args.memory_id)
    new = state.store.update(old.id, args.content, metadata=args.metadata)
    return f"Updated {new.id}: {old.content!r} -> {new.content!r}"


def delete_memory(state: AgentMemoryState, args: DeleteMemoryArgs) -> str:
    if not args.confirmation:
        raise ToolError(
            f"nothing was deleted: set confirmation to true to delete {args.memory_id!r}."
        )
    item = _owned(state, args.memory_id)
    state.store.delete(item.id)
    return f"Deleted {item.id}: {item.content!r}"


def _entry_line(item: MemoryItem) -> str:
    details = [f"score {item.score:.2f}"] if item.score is not None else []
    if item.metadata:
        details.append(f"metadata {json.dumps(item.metadata, ensure_ascii=False)}")
    suffix = f" ({'; '.join(details)})" if details else ""
    return f"[{item.id}] {item.content}{suffix}"


def retrieve_memory(state: AgentMemoryState, args: RetrieveMemoryArgs) -> str:
    try:
        items = state.store.search(
            args.query,
            top_k=args.top_k,
            mode=state.search_mode,
            scope=state.scope,
            filters=args.metadata_filter,
        )
    except ValueError as err:  # the store's own check of metadata_filter
        raise ToolError(f"metadata_filter: {err}") from None
    state.retrieved.extend(items)
    if not items:
        return f"No memory matches {args.query!r}."
    lines = "\n".join(_entry_line(item) for item in items)
    found = "1 memory" if len(items) == 1 else f"{len(items)} memories"
    return f"{found} for {args.query!r}, best first:\n{lines}"


def summary_context(state: AgentMemoryState, args: SummaryContextArgs) -> str:
    try:
        result = state.context.summary(args.span)
    except ValueError as err:
        raise ToolError(str(err)) from None
    return (
        f"Summarized {len(result.removed)} messages (span {args.span!r}) into one summary; "
        f"context {result.tokens_before} -> {result.tokens_after} tokens."
    )


def _preview(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def filter_context(state: AgentMemoryState, args: FilterContextArgs) -> str:
    try:
        result = state.context.filter(args.criteria, theta=state.filter_theta)
    except ValueError as err:
        raise ToolError(str(err)) from None
    if not result.removed:
        return (
            f"No message is similar enough to {args.criteria!r} (threshold "
            f"{state.filter_theta}); nothing was removed."
        )
    lines = "\n".join(
        f"- {r.message['role']}: {_preview(r.message.get('content') or '')!r} "
        f"(similarity {r.similarity:.2f})"
        for r in result.removed
    )
    return (
        f"Removed {len(result.removed)} messages; context {result.tokens_before} -> "
        f"{result.tokens_after} tokens:\n{lines}"
    )


# --- the tool set and the prompt ------------------------------------------------------------

AGEMEM_TOOLS: ToolSet[AgentMemoryState] = ToolSet(
    [
        Tool(
            "Add_memory",
            "Store a new entry in long-term memory. Near-duplicates are not stored twice.",
            AddMemoryArgs,
            add_memory,
        ),
        Tool(
            "Update_memory",
            "Replace the content of a long-term memory entry (e.g. with a corrected fact).",
            UpdateMemoryArgs,
            update_memory,
        ),
        Tool(
            "Delete_memory",
            "Remove an entry from long-term memory.",
            DeleteMemoryArgs,
            delete_memory,
        ),
        Tool(
            "Retrieve_memory",
            "Find the long-term memory entries most similar to a query and show them with ids.",
            RetrieveMemoryArgs,
            retrieve_memory,
        ),
        Tool(
            "Summary_context",
            "Replace the conversation so far (or its last N rounds) with a short summary.",
            SummaryContextArgs,
            summary_context,
        ),
        Tool(
            "Filter_context",
            "Drop the conversation messages that closely match a description of what to drop.",
            FilterContextArgs,
            filter_context,
        ),
    ]
)

_PROTOCOL_TAGS = """\
At every step, first reason inside <think>...</think>, then write exactly one of:
<tool_call>[{"name": "<tool>", "arguments": {...}}, ...]</tool_call>
  a JSON array of one or more calls, run in order; their results come back as tool messages.
<answer>...</answer>
  your final answer; it ends the task.
Never write <tool_call> and <answer> in the same step, and write nothing outside these tags."""

_PROTOCOL_NATIVE = """\
Call tools through the function-calling interface; several calls per step are allowed. When you
are done, reply without tool calls and put your final answer in <answer>...</answer>."""

_PROMPT = Template("""\
You manage your own memory while you work. Long-term memory is a store of entries that persists \
between tasks. Short-term memory is this conversation: it has a limited token budget, so keep it \
lean (summarize or filter what you no longer need) and keep what the task needs.

$protocol

Tools (? marks an optional argument):
$tools

Memory ids look like mem_7: copy them exactly, as shown with memories, into \
Update_memory or Delete_memory.""")


def agemem_system_prompt(
    tools: ToolSet[AgentMemoryState] = AGEMEM_TOOLS, *, native_tools: bool = False
) -> str:
    """The system prompt documenting the protocol and `tools` (signatures from the registry).

    `native_tools=True` is for backends that pass `tools.openai_tools()` to the model (OpenAI
    tool calling) instead of the AgeMem tag protocol.

    >>> "- Delete_memory(memory_id: string, confirmation: boolean)" in agemem_system_prompt()
    True
    """
    listing = "\n".join(f"- {tool.signature()}: {tool.description}" for tool in tools)
    protocol = _PROTOCOL_NATIVE if native_tools else _PROTOCOL_TAGS
    return _PROMPT.substitute(protocol=protocol, tools=listing)
