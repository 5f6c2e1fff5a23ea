"""Tools from one source of truth, and validated dispatch.

A `Tool` is a name, a description, a strict pydantic arguments model and a typed handler. From it
come the OpenAI function schema the model sees, a one-line signature for text prompts, and
validation. `ToolSet.dispatch` turns every bad call into a `ToolResult` with ``ok=False`` whose text
names the problem and the fix, so the model can read it and try again:
unreadable call (malformed JSON) -> unknown tool -> invalid arguments -> the handler's own checks
(`ToolError`) -> any other handler exception.

Handler contract: check everything first, then make one mutation (one store write, which the store
runs as a transaction, or one `Context` call, which leaves the context unchanged when it raises),
then update bookkeeping that cannot fail. So a refused or failed call changes nothing.

Dispatch policy (our choice; AgeMem's call array has no stated transaction semantics): the calls of
one step are validated and run independently, in order. A bad call does not stop the calls after it
(each gets its own observation) and does not undo the calls before it; later calls see the effects
of earlier ones.

Bounds: every observation is safe to encode as UTF-8 (unpaired surrogates become U+FFFD) and is
cut to `MAX_OBSERVATION_CHARS` characters, saying how much was cut; a call list longer than
`MAX_CALLS_PER_STEP` runs nothing (each call is answered with the limit); arguments that are not
bounded JSON (`json_value_problem`) are refused before validation.
"""

from __future__ import annotations

import json
import logging
import reprlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from agemem.policy.base import Message, ToolSpec
from agemem.tools.parse import (
    MAX_CALLS_PER_STEP,
    ParsedTurn,
    ToolCall,
    json_value_problem,
    safe_text,
)

logger = logging.getLogger(__name__)

# One observation's length: 20 retrieved entries of a few hundred characters fit; a 10 MB entry
# or a runaway handler message does not flood the context.
MAX_OBSERVATION_CHARS = 8_000

ErrorKind = Literal["format", "parse", "unknown_tool", "arguments", "rejected", "internal"]


class ToolArgs(BaseModel):
    """Base of every tool's arguments: JSON types only, no coercion ("3" is not 3), no extras."""

    model_config = ConfigDict(strict=True, extra="forbid")


NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class ToolError(Exception):
    """A handler refuses the call; the message names the problem and the fix. Raise before any
    mutation."""


@dataclass(frozen=True)
class ToolResult:
    """One observation. ``error`` says which check refused the call (None when it ran)."""

    name: str
    call_id: str
    content: str
    error: ErrorKind | None = None

    def __post_init__(self) -> None:
        content = safe_text(str(self.content))
        if len(content) > MAX_OBSERVATION_CHARS:
            cut = len(content) - MAX_OBSERVATION_CHARS
            content = f"{content[:MAX_OBSERVATION_CHARS]}... [{cut} more characters cut]"
        object.__setattr__(self, "content", content)
        object.__setattr__(self, "name", safe_text(str(self.name)))
        object.__setattr__(self, "call_id", safe_text(str(self.call_id)))

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_message(self) -> Message:
        """The OpenAI ``tool`` message that answers the call."""
        return {
            "role": "tool",
            "tool_call_id": self.call_id,
            "name": self.name,
            "content": self.content,
        }


@dataclass
class ToolStats:
    """What the reward and the logs count: calls that ran, per tool; refusals, per error kind."""

    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)

    def record(self, result: ToolResult) -> None:
        if result.error is None:
            self.ok[result.name] += 1
        else:
            self.failed[result.error] += 1


class HasStats(Protocol):
    stats: ToolStats


S = TypeVar("S", bound=HasStats)
A = TypeVar("A", bound=ToolArgs)


class _ModelFacingSchema(GenerateJsonSchema):
    """Plain JSON schema for models: no titles; an optional ``X | None`` shows as ``X``, not
    required, without a ``null`` default (absent and null mean the same to the handlers)."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        if out.get("default", ...) is None:
            del out["default"]
        return out


@dataclass(frozen=True)
class Tool(Generic[S, A]):
    """A tool: its handler gets the state and validated arguments and returns the observation."""

    name: str
    description: str
    args: type[A]
    handler: Callable[[S, A], str]

    def parameters(self) -> dict[str, Any]:
        schema = self.args.model_json_schema(schema_generator=_ModelFacingSchema)
        schema.pop("title", None)
        return schema

    def openai_schema(self) -> ToolSpec:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters(),
            },
        }

    def signature(self) -> str:
        """E.g. ``Retrieve_memory(query: string, top_k?: integer = 3)``; ``?`` marks optional."""
        params = self.parameters()
        required = set(params.get("required", []))
        parts = []
        for name, prop in params["properties"].items():
            part = f"{name}{'' if name in required else '?'}: {_type_name(prop)}"
            if "default" in prop:
                part += f" = {json.dumps(prop['default'])}"
            parts.append(part)
        return f"{self.name}({', '.join(parts)})"


def _type_name(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    return str(prop.get("type", "any"))


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (ValueError, RecursionError):  # a huge int, a cycle, deep nesting
        text = reprlib.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(error: Any, props: dict[str, Any]) -> str:
    """One pydantic error as a sentence naming the argument and the expected type."""
    loc = error["loc"]
    path = ".".join(str(p) for p in loc)
    prop = props.get(str(loc[0]), {}) if loc else {}
    expected = _type_name(prop) + (f" ({prop['description']})" if "description" in prop else "")
    if error["type"] == "missing":
        return f"missing required argument '{path}': {expected}"
    if error["type"] == "extra_forbidden":
        return f"unexpected argument '{path}' (valid arguments: {', '.join(props)})"
    return f"argument '{path}' expects {expected}: {error['msg']}; got {_shown(error['input'])}"


def arguments_error(tool: Tool[Any, Any], err: ValidationError) -> str:
    """The observation for invalid arguments: every problem, then the correct signature."""
    props = tool.parameters()["properties"]
    problems = "; ".join(_problem(e, props) for e in err.errors())
    return f"{tool.name}: {problems}. Nothing was done; call it as {tool.signature()}."


class ToolSet(Generic[S]):
    """The tools a model may call, their schemas, and validated dispatch against a state."""

    def __init__(self, tools: Iterable[Tool[S, Any]]) -> None:
        self._tools: dict[str, Tool[S, Any]] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"duplicate tool name {tool.name!r}")
            self._tools[tool.name] = tool

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def __iter__(self) -> Iterator[Tool[S, Any]]:
        return iter(self._tools.values())

    def __getitem__(self, name: str) -> Tool[S, Any]:
        return self._tools[name]

    def select(self, *names: str) -> ToolSet[S]:
        """The subset a stage allows (e.g. AgeMem's stage 1 offers only the LTM tools)."""
        unknown = [n for n in names if n not in self._tools]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; valid tools: {', '.join(self._tools)}")
        return ToolSet(self._tools[n] for n in names)

    def openai_tools(self) -> list[ToolSpec]:
        return [tool.openai_schema() for tool in self]

    def dispatch(self, calls: Iterable[ToolCall], state: S) -> list[ToolResult]:
        """Validate and run each call independently, in order; record each outcome in stats.
        More than `MAX_CALLS_PER_STEP` calls run none of them."""
        calls = list(calls)
        if len(calls) > MAX_CALLS_PER_STEP:
            limit = (
                f"Format error: {len(calls)} tool calls in one step, more than "
                f"{MAX_CALLS_PER_STEP}; nothing was run. Make at most {MAX_CALLS_PER_STEP}."
            )
            results = [_answer(call, limit, "format") for call in calls]
        else:
            results = [self._run(call, state) for call in calls]
        for result in results:
            state.stats.record(result)
        return results

    def run(self, turn: ParsedTurn, state: S) -> list[ToolResult]:
        """Observations for one parsed step; an answer gets none.

        A turn with a fatal format issue runs nothing: each of its calls (or, without calls, the
        turn itself) gets the format error, so every OpenAI tool_call_id still gets its reply.
        """
        if turn.ok:
            return self.dispatch(turn.tool_calls, state)
        results = [
            _answer(call, turn.error_text(), "format")
            for call in turn.tool_calls or [ToolCall("", None)]
        ]
        for result in results:
            state.stats.record(result)
        return results

    def _run(self, call: ToolCall, state: S) -> ToolResult:
        def refused(content: str, kind: ErrorKind) -> ToolResult:
            return _answer(call, content, kind)

        if call.error is not None or call.arguments is None:
            return refused(str(call.error or "the call could not be read."), "parse")
        if not isinstance(call.name, str):
            return refused("the tool call has no name string; give the tool's name.", "parse")
        problem = json_value_problem(call.arguments)
        if problem is not None:
            return refused(f"the arguments cannot be read: {problem}; nothing was run.", "parse")
        tool = self._tools.get(call.name)
        if tool is None:
            return refused(self._unknown_tool(call.name), "unknown_tool")
        try:
            args = tool.args.model_validate(call.arguments)
        except ValidationError as err:
            return refused(arguments_error(tool, err), "arguments")
        try:
            return ToolResult(tool.name, call.id, tool.handler(state, args))
        except ToolError as err:
            return refused(f"{tool.name}: {err}", "rejected")
        except Exception as err:  # a handler bug must not end the episode; the model sees it
            logger.exception("tool %s failed", tool.name)
            return refused(
                f"{tool.name} failed ({type(err).__name__}: {err}); nothing was changed.",
                "internal",
            )

    def _unknown_tool(self, name: str) -> str:
        name = name[:100]
        lowered = {n.lower(): n for n in self._tools}
        close = get_close_matches(name.lower(), list(lowered), n=1)
        hint = f" Did you mean {lowered[close[0]]!r}?" if close else ""
        return f"unknown tool {name!r}; valid tools: {', '.join(self._tools)}.{hint}"


def _answer(call: ToolCall, content: str, kind: ErrorKind | None) -> ToolResult:
    """The observation answering `call` (its name and id, whatever their types)."""
    name = call.name if isinstance(call.name, str) else ""
    call_id = call.id if isinstance(call.id, str) else str(call.id)
    return ToolResult(name, call_id, content, kind)
