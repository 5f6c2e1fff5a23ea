"""`Memory`: the library API for people who just want memory, in the shape Mem0 users know.

Results are plain dicts (`{"results": [...]}` with a `memory` field holding the text), so code
written against Mem0's `Memory` needs few changes. `Memory.tools()` hands the AgeMem tool set,
bound to one scope, to any OpenAI-compatible chat call.

Scope rule: every call that reads or writes entries (`add`, `search`, `get`, `get_all`,
`history`, `update`, `delete`, `tools`) names a scope -- `user_id`, `agent_id` and/or `run_id`
(`session_id` is the same key) -- or passes `unscoped=True` to act on every scope (for `add`: to
store an entry that belongs to no scope). Otherwise it raises `ScopeRequired`. By id, an entry
outside the given scope behaves as one that does not exist.

A scope may also come as Mem0's `filters={"user_id": ...}`: a top-level equality on `user_id`,
`agent_id` or `run_id` (`session_id`) in `filters` names the scope. Filters follow Mem0's grammar
(`agemem.memory.filters`).

Deduplication (`dedupe=`, per `Memory` and per `add`): see `agemem.memory.store.DedupeMode`.

Search results are in ranking order (hybrid BM25 + vector unless `mode` says); each has `score`,
the cosine similarity of the entry and the query clipped to [0, 1] (what `threshold` compares),
`rank` (its place in the ranking, from 1) and `rank_score` (the value the ranking used: the RRF
fusion value for "hybrid", BM25 relevance for "bm25", the cosine for "dense").

`AsyncMemory` has the same calls as coroutines.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agemem.context import Context
from agemem.memory.embed import Embedder
from agemem.memory.filters import WILDCARD
from agemem.memory.infer import HOW_TO_CONFIGURE, Outcome, infer_add, resolve_llm
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
from agemem.memory.storefile import default_store_location, open_store
from agemem.policy.base import Message, ToolSpec
from agemem.tools.agemem import AGEMEM_TOOLS, AgentMemoryState, agemem_system_prompt
from agemem.tools.messages import UnreadableMessage, read_message, replies, unreadable_result
from agemem.tools.parse import parse_turn
from agemem.tools.registry import ToolResult, ToolSet

LTM_TOOLS = ("Add_memory", "Update_memory", "Delete_memory", "Retrieve_memory")
STORED_ROLES = ("user", "assistant")  # what `add(messages)` keeps: the conversation, not prompts
SCOPE_KEYS = ("user_id", "agent_id", "run_id")  # run_id is session_id under Mem0's name
TEXT_PARTS = ("text", "input_text", "output_text")  # content parts `add` stores
# content parts that are tool plumbing, not conversation: `add` skips them like a null content
PROTOCOL_PARTS = ("tool_use", "tool_result", "thinking", "redacted_thinking", "refusal")
THRESHOLD_POOL = 4  # with `threshold`, search ranks this many times `limit` before cutting
QUERY_CACHE_SIZE = 1024  # search queries whose vectors a `Memory` keeps (LRU)

# Add_memory's description for each dedupe mode (what the model is told an add does)
_ADD_DESCRIPTIONS: dict[str, str] = {
    "exact": "Store a new entry in long-term memory. The very same text is not stored twice.",
    "near": "Store a new entry in long-term memory. A near-duplicate of an entry updates it.",
    "off": "Store a new entry in long-term memory.",
}


class LLMRequired(ValueError):
    """`Memory.add(infer=True)` with no model configured; the message says how to give one."""


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


def _equality(condition: Any) -> Any:
    """The value a filter condition is equal to (a plain value or `{"eq": value}`), else None."""
    if isinstance(condition, Mapping):
        if len(condition) == 1 and next(iter(condition)) in ("eq", "$eq"):
            return next(iter(condition.values()))
        return None
    return condition


def _filter_scope(call: str, filters: Any) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Scope keys named by top-level equalities in `filters` (Mem0's `filters={"user_id": ...}`),
    and the rest of the filters."""
    if filters is None:
        return {}, None
    if not isinstance(filters, Mapping):
        raise ValueError(
            f"Memory.{call}: filters must be a dict, e.g. {{'user_id': 'alice', 'topic': "
            f"{{'in': ['a', 'b']}}}}, got {filters!r}"
        )
    ids: dict[str, str] = {}
    rest: dict[str, Any] = {}
    for key, condition in filters.items():
        name = "run_id" if key == "session_id" else key
        value = _equality(condition)
        if name in SCOPE_KEYS and isinstance(value, str) and value and value != WILDCARD:
            if ids.get(name, value) != value:
                raise ValueError(f"Memory.{call}: filters name two {name} values; give one")
            ids[name] = value
        else:
            rest[key] = condition
    return ids, rest or None


def _scope_and_filters(
    call: str,
    user_id: str | None,
    agent_id: str | None,
    session_id: str | None,
    run_id: str | None,
    unscoped: bool,
    filters: Any,
) -> tuple[Scope | None, dict[str, Any] | None]:
    """`_scope` with the scope keys `filters` names merged in (they must agree with the
    arguments), and the filters left to apply."""
    named, rest = _filter_scope(call, filters)
    given = {
        "user_id": user_id,
        "agent_id": agent_id,
        "run_id": session_id if session_id is not None else run_id,
    }
    for key, value in named.items():
        if given[key] is not None and given[key] != value:
            raise ValueError(
                f"Memory.{call}: {key}={given[key]!r} and filters {{{key!r}: {value!r}}} name "
                "two scopes; give one"
            )
    user = user_id if user_id is not None else named.get("user_id")
    agent = agent_id if agent_id is not None else named.get("agent_id")
    run = run_id if run_id is not None or session_id is not None else named.get("run_id")
    return _scope(call, user, agent, session_id, run, unscoped), rest


def _check_limit(call: str, limit: Any, top_k: Any) -> int:
    """`limit`, or Mem0's newer name for it, `top_k`."""
    if top_k is not None:
        if limit is not None and limit != top_k:
            raise ValueError(f"Memory.{call}: limit and top_k are one setting; give one")
        limit = top_k
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"Memory.{call}: limit (top_k) must be a positive integer, got {limit!r}")
    return limit


def _check_threshold(threshold: Any) -> float | None:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ValueError(f"Memory.search: threshold is a similarity in [0, 1], got {threshold!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"Memory.search: threshold must be in [0, 1] (cosine), got {threshold!r}")
    return float(threshold)


def _similarity(item: MemoryItem, query: np.ndarray) -> float:
    """The entry's cosine with the query (both unit vectors), clipped to [0, 1]."""
    if item.embedding is None:
        return 0.0
    return min(1.0, max(0.0, float(np.dot(item.embedding, query))))


def _content_text(call: str, index: int, content: Any) -> str:
    """A message's content as the text `add` stores: a string, or the text parts of a list of
    parts (OpenAI `[{"type": "text", "text": ...}]`); media parts are refused, tool plumbing
    parts skipped."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = [content] if isinstance(content, Mapping) else content
    if not isinstance(parts, list | tuple):
        raise ValueError(
            f"Memory.{call}: message {index} content must be a string or a list of parts, got "
            f"{type(content).__name__}"
        )
    texts = []
    for part in parts:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if isinstance(part, str):
            texts.append(part)
        elif kind in TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind not in PROTOCOL_PARTS:
            raise ValueError(
                f"Memory.{call}: message {index} has a content part agemem cannot store "
                f"({kind or type(part).__name__!r}); it stores text: pass the text, or a "
                'description, as {"type": "text", "text": ...}'
            )
    return "\n".join(t for t in texts if t)


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


def _transcript(texts: list[tuple[str, dict[str, Any]]]) -> str:
    """A conversation as one text for the fact extraction: `role: text` lines."""
    return "\n".join(f"{extra.get('role', 'user')}: {text}" for text, extra in texts)


def _inferred(outcome: Outcome) -> dict[str, Any]:
    """One decision of `add(infer=True)` as Mem0 shapes it: the entry under `memory` and the
    `event`; an UPDATE's old text under `previous_memory`; a NONE on no shown memory has
    `id` None and the fact under `memory`."""
    if outcome.added is not None:
        record = _added(outcome.added)
    elif outcome.item is not None:
        record = _record(outcome.item)
    else:
        record = {"id": None, "memory": outcome.fact}
    record["event"] = outcome.event
    if outcome.previous is not None:
        record["previous_memory"] = outcome.previous
    if outcome.reason is not None:
        record["reason"] = outcome.reason
    return record


@dataclass(frozen=True)
class TextStep:
    """What `MemoryTools.execute_text` did with one model output in the text protocol.

    `answer`: the model's final answer (then no call ran and the loop is done), else None.
    `results`: one observation per call (format errors included). Send them back as
    `messages` (one `tool` message each, as `agemem chat` does; for chat templates that render
    the tool role) or as `observation` (one text, each result in `<tool_response>` tags, for a
    `user` message: servers without tool support take user and assistant turns only).
    """

    answer: str | None
    results: list[ToolResult] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.answer is not None

    @property
    def messages(self) -> list[Message]:
        return [result.to_message() for result in self.results]

    @property
    def observation(self) -> str:
        return "\n".join(f"<tool_response>\n{r.content}\n</tool_response>" for r in self.results)


@dataclass
class MemoryTools:
    """AgeMem's tools bound to a store, a scope and a context, for any chat model.

    - Native tool calling: pass `schemas` as `tools=`, append the assistant message, then what
      `execute(message)` returns. `execute` reads OpenAI, LangChain and Anthropic messages.
    - Models without tool calling: put `system_prompt()` first (it documents the text protocol,
      `<tool_call>[{"name": ..., "arguments": {...}}]</tool_call>` or `<answer>...</answer>`),
      and hand each output to `execute_text(text)`.
    - LangChain / LangGraph: `langchain()` (the `agemem[langchain]` extra).

    Schemas, the prompt's signatures and argument validation all come from the one typed tool
    registry (`agemem.tools.registry`). The state's scope must name a user, agent or session
    unless `unscoped` is True: tools bound to no scope would let the model read, change and
    delete every user's entries.
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
    def anthropic_schemas(self) -> list[dict[str, Any]]:
        """Pass as `tools=` to Anthropic's `messages.create` (the same JSON schemas)."""
        return [
            {"name": tool.name, "description": tool.description, "input_schema": tool.parameters()}
            for tool in self.toolset
        ]

    @property
    def context(self) -> Context:
        """The messages Summary_context / Filter_context act on (when those tools are enabled)."""
        return self.state.context

    def system_prompt(self, *, native_tools: bool = False) -> str:
        """The system prompt for these tools: the text protocol and each tool's signature
        (`native_tools=True`: the guidance for a model that calls `schemas` natively).

        >>> import tempfile, os
        >>> memory = Memory(os.path.join(tempfile.mkdtemp(), "m.db"))
        >>> prompt = memory.tools(user_id="alice").system_prompt()
        >>> "<tool_call>" in prompt and "- Retrieve_memory(query: string" in prompt
        True
        >>> memory.close()
        """
        return agemem_system_prompt(self.toolset, native_tools=native_tools)

    def execute(self, message: Any) -> list[Any]:
        """Run the tool calls of an assistant message; return the messages to append after it.

        `message`: an OpenAI message (dict or SDK object), a LangChain `AIMessage` or an
        Anthropic message (dict or SDK object). The replies come in the same shape: OpenAI
        `tool` messages, LangChain `ToolMessage`s, or one Anthropic `user` message of
        `tool_result` blocks; none for an answer without calls. Never raises on bad input:
        invalid calls, and messages that cannot be read (None, a string, integer content, bytes
        arguments), are answered with an error text the model can act on; they change nothing.
        """
        try:
            turn, shape = read_message(message)
        except UnreadableMessage as err:
            result = unreadable_result(err)
            self.state.stats.record(result)
            return [result.to_message()]
        return replies(self.toolset.run(turn, self.state), shape)

    async def aexecute(self, message: Any) -> list[Any]:
        """`execute` in a worker thread, for async code."""
        return await asyncio.to_thread(self.execute, message)

    def execute_text(self, text: Any) -> TextStep:
        """Run one model output written in the text protocol (`system_prompt()`): its calls, or
        its answer (`<answer>`; plain text without tags is read as the answer too). Never
        raises on bad input; a malformed output comes back as a format error to show the model.

        >>> import tempfile, os
        >>> memory = Memory(os.path.join(tempfile.mkdtemp(), "m.db"))
        >>> tools = memory.tools(user_id="alice")
        >>> step = tools.execute_text('<think>keep it</think><tool_call>[{"name": "Add_memory", '
        ...                           '"arguments": {"content": "Alice likes tea."}}]</tool_call>')
        >>> step.done, step.results[0].content.startswith("Added mem_")
        (False, True)
        >>> tools.execute_text("<answer>Tea.</answer>").answer
        'Tea.'
        >>> memory.close()
        """
        if not isinstance(text, str):
            message = f"expected the model's output text, got {type(text).__name__}"
            result = unreadable_result(UnreadableMessage(message))
            self.state.stats.record(result)
            return TextStep(None, [result])
        try:
            turn = parse_turn(text)
        except Exception as err:  # the parser's own limits; nothing ran
            message = f"the output could not be parsed ({type(err).__name__})"
            result = unreadable_result(UnreadableMessage(message))
            self.state.stats.record(result)
            return TextStep(None, [result])
        if turn.ok and turn.answer is not None and not turn.tool_calls:
            return TextStep(turn.answer)
        return TextStep(None, self.toolset.run(turn, self.state))

    def langchain(self) -> list[Any]:
        """These tools as LangChain `StructuredTool`s (for LangGraph's agents too); needs the
        `agemem[langchain]` extra. See `agemem.tools.langchain`."""
        from agemem.tools.langchain import langchain_tools

        return langchain_tools(self)


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
        path: str | Path | None = None,
        *,
        embedder: Embedder | None = None,
        search: str = "balanced",
        dedupe: DedupeMode = "exact",
        dedupe_threshold: float | None = None,
        llm: Any = None,
    ) -> None:
        options: dict[str, Any] = {"search": search, "dedupe": dedupe}
        if dedupe_threshold is not None:
            options["dedupe_threshold"] = dedupe_threshold
        self.llm = resolve_llm(llm)  # checked before the store opens; a model loads at first use
        # None: ~/.agemem/memory.db (or $AGEMEM_STORE), the store `agemem chat` uses too
        path = default_store_location() if path is None else path
        self.store = open_store(path, embedder, **options)
        # The vectors of the last QUERY_CACHE_SIZE distinct search queries, by exact text: a
        # text's vector never changes, so a repeated query skips the embedder (thread-safe).
        self._query_vector = functools.lru_cache(maxsize=QUERY_CACHE_SIZE)(self._embed_query)

    def _embed_query(self, query: str) -> np.ndarray:
        vector = self.store.embedder.embed([query])[0].copy()  # not a view of a batch
        vector.flags.writeable = False  # shared by every search of this text
        return vector

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, embedder: Embedder | None = None) -> Memory:
        """A `Memory` from a config dict: agemem's own keys (`path`, `search`, `dedupe`,
        `dedupe_threshold`) and the Mem0 sections that map onto them: `vector_store`
        (provider "sqlite", `config.path`), `embedder` (provider "huggingface" with a local
        sentence-transformers `model`, or "openai" with `model`, `api_key`, `openai_base_url`,
        `embedding_dims`), `llm` (the model of `add(infer=True)`: provider "openai" with `model`,
        `openai_base_url` or `base_url`, `api_key`, `temperature`, `max_tokens`, `json_schema`,
        `timeout`; or "agemem", the embedded model, with `model`, a preset such as
        "smollm2-135m", `backend` and `max_tokens`) and `version` (accepted; results are always
        `{"results": [...]}`).
        Anything else is refused with the keys that are understood. `embedder`, an `Embedder`
        object, takes the place of the `embedder` section.

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "m.db")
        >>> memory = Memory.from_config({"vector_store": {"provider": "sqlite",
        ...                              "config": {"path": path}}, "dedupe": "near"})
        >>> memory.store.path == path, memory.store.dedupe
        (True, 'near')
        >>> memory.close()
        """
        if embedder is not None and isinstance(config, Mapping) and "embedder" in config:
            raise ValueError("Memory.from_config: give embedder= or an embedder section, not both")
        options = _config_options(config)
        if embedder is not None:
            options["embedder"] = embedder
        return cls(**options)

    def add(
        self,
        messages: str | Message | Sequence[Message],
        user_id: str | None = None,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        unscoped: bool = False,
        metadata: dict[str, Any] | None = None,
        memory_type: str = DEFAULT_MEMORY_TYPE,
        dedupe: DedupeMode | None = None,
        dedupe_threshold: float | None = None,
        infer: bool = False,
        llm: Any = None,
    ) -> dict[str, Any]:
        """Store a text, a message dict, or each user/assistant message of a conversation: as
        it is said (`infer=False`, the default), or as the facts a model extracts from it
        (`infer=True`).

        A message's content may be a string or a list of parts (its text parts are joined with
        newlines); system and tool messages, and assistant messages without text (tool calls
        only), are not stored. Each result has an `event`: "ADD", "NONE" (an exact duplicate,
        or with `dedupe="reject"` a near-duplicate: nothing written, the record is the entry
        matched) or "UPDATE" (`dedupe="near"`: the entry matched now holds the new text).
        `dedupe` and `dedupe_threshold` override this `Memory`'s settings for this call.

        `infer=True` (Mem0's flow, `agemem.memory.infer`): the model (`llm=` here, else this
        `Memory`'s) lists the facts in the messages and decides for each, against the similar
        memories of the scope, to ADD it, UPDATE a memory (`previous_memory`: its old text),
        DELETE one, or do nothing ("NONE"); all decisions are applied in one transaction. The
        result also holds `facts`; when an output of the model cannot be used, nothing is
        stored and `error` says why.

        >>> import tempfile, os
        >>> from agemem.memory.infer import ScriptedFactModel  # a model's outputs, replayed
        >>> model = ScriptedFactModel(['{"facts": ["Maya lives in Lisbon"]}',
        ...                            '{"name": "ADD", "arguments": {}}'])
        >>> memory = Memory(os.path.join(tempfile.mkdtemp(), "m.db"), llm=model)
        >>> added = memory.add([{"role": "user", "content": "I'm Maya, I live in Lisbon."}],
        ...                    user_id="maya", infer=True)
        >>> [(r["event"], r["memory"]) for r in added["results"]], added["facts"]
        ([('ADD', 'Maya lives in Lisbon')], ['Maya lives in Lisbon'])
        >>> memory.close()
        """
        if infer is not True and infer is not False:
            raise ValueError(f"Memory.add: infer must be True or False, got {infer!r}")
        if llm is not None and not infer:
            raise ValueError("Memory.add: llm= serves infer=True; pass infer=True or drop llm")
        scope = _scope("add", user_id, agent_id, session_id, run_id, unscoped) or Scope()
        texts = self._texts(messages)
        if infer:
            return self._infer(texts, scope, llm, metadata, memory_type, dedupe, dedupe_threshold)
        entries = [
            NewMemory(text, {**(metadata or {}), **extra}, memory_type, scope)
            for text, extra in texts
        ]
        results = self.store.add_many(entries, dedupe=dedupe, dedupe_threshold=dedupe_threshold)
        return {"results": [_added(r) for r in results]}

    def _infer(
        self,
        texts: list[tuple[str, dict[str, Any]]],
        scope: Scope,
        llm: Any,
        metadata: dict[str, Any] | None,
        memory_type: str,
        dedupe: DedupeMode | None,
        dedupe_threshold: float | None,
    ) -> dict[str, Any]:
        """`add(infer=True)`: one model call extracts the facts of the conversation, one batch
        decides them (`agemem.memory.infer.infer_add`)."""
        own = resolve_llm(llm, "Memory.add") if llm is not None else None
        model = own if own is not None else self.llm
        if model is None:
            raise LLMRequired(
                f"Memory.add(infer=True) needs a model to extract facts: {HOW_TO_CONFIGURE}, or "
                "llm= on this call; or pass infer=False to store the messages as they are"
            )
        if not texts:
            return {"results": [], "facts": []}
        conversation = texts[0][0] if len(texts) == 1 else _transcript(texts)
        try:
            done = infer_add(
                self.store,
                model,
                conversation,
                scope,
                metadata=metadata,
                memory_type=memory_type,
                dedupe=dedupe,
                dedupe_threshold=dedupe_threshold,
            )
        finally:
            if own is not None:
                own.close()
        result: dict[str, Any] = {
            "results": [_inferred(outcome) for outcome in done.outcomes],
            "facts": done.facts,
        }
        if done.error is not None:
            result["error"] = done.error
        return result

    @staticmethod
    def _texts(messages: Any) -> list[tuple[str, dict[str, Any]]]:
        if isinstance(messages, str):
            return [(messages, {})]
        if isinstance(messages, Mapping):
            messages = [messages]
        if not isinstance(messages, list | tuple):
            raise ValueError(
                "Memory.add: messages must be a string, a message dict or a list of message "
                f"dicts, got {type(messages).__name__}"
            )
        texts = []
        for index, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise ValueError(
                    f"Memory.add: message {index} must be a dict with 'role' and 'content', "
                    f"got {type(message).__name__}"
                )
            role = message.get("role")
            if not isinstance(role, str):
                raise ValueError(
                    f"Memory.add: message {index} has no 'role' string; give 'user' or "
                    "'assistant' (system and tool messages are not stored)"
                )
            text = _content_text("add", index, message.get("content"))
            if role in STORED_ROLES and text.strip():
                texts.append((text, {"role": role}))
        return texts

    def search(
        self,
        query: str,
        user_id: str | None = None,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        unscoped: bool = False,
        limit: int | None = None,
        top_k: int | None = None,
        threshold: float | None = None,
        filters: dict[str, Any] | None = None,
        mode: SearchMode = "hybrid",
    ) -> dict[str, Any]:
        """Best `limit` entries (default 5; `top_k` is the same setting) in the scope, in
        ranking order: hybrid (BM25 + vector) unless `mode` says. `threshold` keeps only
        entries whose `score` (cosine with the query, in [0, 1]) is at least that; `rank` and
        `rank_score` report the ranking. `filters`: Mem0's grammar (`agemem.memory.filters`).

        >>> import tempfile, os
        >>> memory = Memory(os.path.join(tempfile.mkdtemp(), "m.db"))
        >>> _ = memory.add("Maya lives in Lisbon.", "alice")
        >>> _ = memory.add("The printer on floor 2 is out of toner.", "alice")
        >>> hits = memory.search("Where does Maya live?", filters={"user_id": "alice"},
        ...                      threshold=0.5)["results"]
        >>> [(h["memory"], h["rank"], h["score"] > 0.5) for h in hits]
        [('Maya lives in Lisbon.', 1, True)]
        >>> memory.close()
        """
        scope, rest = _scope_and_filters(
            "search", user_id, agent_id, session_id, run_id, unscoped, filters
        )
        limit = _check_limit("search", 5 if limit is None and top_k is None else limit, top_k)
        threshold = _check_threshold(threshold)
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"Memory.search: query must be a non-empty string, got {query!r}")
        vector = self._query_vector(query)
        pool = limit if threshold is None else limit * THRESHOLD_POOL
        hits = self.store.search(
            query,
            top_k=pool,
            mode=mode,
            scope=scope or Scope(),
            filters=rest,
            query_embedding=vector,
        )
        results = []
        for rank, hit in enumerate(hits, start=1):
            score = _similarity(hit, vector)
            if threshold is not None and score < threshold:
                continue
            record = _record(hit)
            record.update(score=score, rank=rank, rank_score=hit.score)
            results.append(record)
            if len(results) == limit:
                break
        return {"results": results}

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
        user_id: str | None = None,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        unscoped: bool = False,
        filters: dict[str, Any] | None = None,
        limit: int | None = None,
        top_k: int | None = None,
    ) -> dict[str, Any]:
        """The scope's entries (at most `limit`, default 100; `top_k` is the same setting),
        oldest first. `filters` as in `search`."""
        scope, rest = _scope_and_filters(
            "get_all", user_id, agent_id, session_id, run_id, unscoped, filters
        )
        limit = _check_limit("get_all", 100 if limit is None and top_k is None else limit, top_k)
        items = self.store.get_all(scope=scope or Scope(), filters=rest, limit=limit)
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

    def delete_all(
        self,
        user_id: str | None = None,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        unscoped: bool = False,
    ) -> dict[str, Any]:
        """Remove every entry of the scope (`unscoped=True`: of every scope, as `reset`);
        each deletion is kept in history. Returns `{"message": ..., "deleted": n}`."""
        scope = _scope("delete_all", user_id, agent_id, session_id, run_id, unscoped)
        deleted = self.store.reset(scope=scope or Scope())
        noun = "memory" if deleted == 1 else "memories"
        return {"message": f"Deleted {deleted} {noun}.", "deleted": deleted}

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
        if self.llm is not None:
            self.llm.close()
        self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- from_config --------------------------------------------------------------------------------

_OWN_KEYS = ("path", "search", "dedupe", "dedupe_threshold")
_MEM0_KEYS = ("vector_store", "embedder", "llm", "version")
_STORE_PROVIDERS = ("sqlite", "agemem")


def _section(config: Mapping[str, Any], name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """A Mem0 section `{"provider": ..., "config": {...}}`'s config, its keys checked."""
    section = config[name]
    if not isinstance(section, Mapping) or set(section) - {"provider", "config"}:
        raise ValueError(
            f"Memory.from_config: {name!r} must be {{'provider': ..., 'config': {{...}}}}, "
            f"got {section!r}"
        )
    options = section.get("config") or {}
    if not isinstance(options, Mapping):
        raise ValueError(f"Memory.from_config: {name}.config must be a dict, got {options!r}")
    unknown = sorted(set(options) - set(keys))
    if unknown:
        raise ValueError(
            f"Memory.from_config: {name}.config keys {unknown} are not understood; use "
            f"{', '.join(keys)}"
        )
    return dict(options)


def _embedder_from(config: Mapping[str, Any]) -> Embedder:
    from agemem.memory.embed import OpenAIEmbedder, SentenceTransformerEmbedder

    provider = (
        config["embedder"].get("provider") if isinstance(config["embedder"], Mapping) else None
    )
    keys = ("model", "api_key", "openai_base_url", "embedding_dims")
    options = _section(config, "embedder", keys if provider == "openai" else ("model",))
    if provider == "openai":
        if not isinstance(options.get("model"), str):
            raise ValueError("Memory.from_config: embedder 'openai' needs config.model")
        return OpenAIEmbedder(
            options["model"],
            base_url=options.get("openai_base_url"),
            api_key=options.get("api_key"),
            dimensions=options.get("embedding_dims"),
        )
    if provider == "huggingface":
        return SentenceTransformerEmbedder(options.get("model"))
    raise ValueError(
        f"Memory.from_config: embedder provider {provider!r} is not available; use "
        "'huggingface' (a local sentence-transformers model) or 'openai' (any OpenAI-compatible "
        "embeddings endpoint), or leave embedder out for the bundled all-MiniLM-L6-v2"
    )


def _config_options(config: Any) -> dict[str, Any]:
    """`Memory(...)` keyword arguments for a `from_config` dict."""
    if not isinstance(config, Mapping):
        raise ValueError(f"Memory.from_config takes a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(_OWN_KEYS) - set(_MEM0_KEYS))
    if unknown:
        hint = ""
        if "history_db_path" in unknown:
            hint = " (history is kept in the store file itself)"
        raise ValueError(
            f"Memory.from_config: keys {unknown} are not understood{hint}; use "
            f"{', '.join(_OWN_KEYS + _MEM0_KEYS)}"
        )
    options = {key: config[key] for key in _OWN_KEYS if key in config}
    if "vector_store" in config:
        provider = (
            config["vector_store"].get("provider")
            if isinstance(config["vector_store"], Mapping)
            else None
        )
        if provider not in _STORE_PROVIDERS:
            raise ValueError(
                f"Memory.from_config: vector_store provider {provider!r} is not available; "
                "agemem keeps entries in one SQLite file: use provider 'sqlite' with config.path"
            )
        path = _section(config, "vector_store", ("path",)).get("path")
        if path is not None:
            if "path" in options and options["path"] != path:
                raise ValueError("Memory.from_config: path and vector_store.config.path differ")
            options["path"] = path
    if "embedder" in config:
        options["embedder"] = _embedder_from(config)
    if "llm" in config:
        options["llm"] = config["llm"]  # checked by Memory(llm=...)
    return options


# ---- AsyncMemory --------------------------------------------------------------------------------


def _in_thread(name: str) -> Callable[..., Any]:
    """An `AsyncMemory` coroutine that runs `Memory.<name>` in a worker thread."""
    sync: Callable[..., Any] = getattr(Memory, name)

    @functools.wraps(sync)
    async def method(self: AsyncMemory, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.sync, name), *args, **kwargs)

    method.__doc__ = f"`Memory.{name}` as a coroutine (run in a worker thread); same arguments."
    return method


class AsyncMemory:
    """`Memory` for asyncio code: the same constructor, `from_config` and calls, each a
    coroutine that runs the `Memory` call in a worker thread (the store is thread-safe).
    `tools()` returns the same `MemoryTools` (its `aexecute` is the coroutine form).

    >>> import asyncio, tempfile, os
    >>> async def main(path):
    ...     async with AsyncMemory(path) as memory:
    ...         await memory.add("Maya lives in Lisbon.", user_id="alice")
    ...         hits = await memory.search("Where does Maya live?", user_id="alice")
    ...         return hits["results"][0]["memory"]
    >>> asyncio.run(main(os.path.join(tempfile.mkdtemp(), "m.db")))
    'Maya lives in Lisbon.'
    """

    def __init__(self, path: str | Path | None = None, **options: Any) -> None:
        self.sync = Memory(path, **options)

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, embedder: Embedder | None = None
    ) -> AsyncMemory:
        """See `Memory.from_config`."""
        async_memory = cls.__new__(cls)
        async_memory.sync = Memory.from_config(config, embedder=embedder)
        return async_memory

    @property
    def store(self) -> SQLiteStore:
        return self.sync.store

    add = _in_thread("add")
    search = _in_thread("search")
    get = _in_thread("get")
    get_all = _in_thread("get_all")
    update = _in_thread("update")
    delete = _in_thread("delete")
    delete_all = _in_thread("delete_all")
    history = _in_thread("history")
    reset = _in_thread("reset")
    close = _in_thread("close")

    def tools(self, **scope: Any) -> MemoryTools:
        """See `Memory.tools`."""
        return self.sync.tools(**scope)

    async def __aenter__(self) -> AsyncMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
