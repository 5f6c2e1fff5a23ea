"""Assistant messages of the major chat SDKs read as one `ParsedTurn`, and replies in their shape.

Shapes `read_message` accepts (a dict, or an SDK object with `model_dump`):
- ``openai``: ``{"role": "assistant", "content": ..., "tool_calls": [{"id": ..., "function":
  {"name": ..., "arguments": "<JSON>"}}]}`` (arguments a JSON string or an object), e.g. the
  OpenAI SDK's ``ChatCompletionMessage``; a ``<tool_call>`` in the text content counts too.
- ``langchain``: a LangChain ``AIMessage`` (``type == "ai"``), calls in ``tool_calls``
  (``{"name", "args", "id"}``); ``invalid_tool_calls`` (arguments that were not JSON) get an error.
- ``anthropic``: a message whose ``content`` holds ``tool_use`` blocks (``{"id", "name",
  "input"}``), e.g. the Anthropic SDK's ``Message``.

`replies` shapes the observations for the same SDK: OpenAI ``tool`` messages; LangChain
``ToolMessage`` objects (dicts in the same layout when langchain-core is not installed); for
Anthropic one ``user`` message with a ``tool_result`` block per call. In every shape they are the
messages to append after the assistant message.

A message that cannot be read at all (None, a string, integer content, a call whose arguments
are bytes...) raises `UnreadableMessage` with one line naming the problem and the fix; callers
turn it into an observation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from agemem.tools.parse import ParsedTurn, ToolCall, parse_openai
from agemem.tools.registry import ToolResult

Shape = Literal["openai", "langchain", "anthropic"]
SHAPES: tuple[Shape, ...] = ("openai", "langchain", "anthropic")
_TEXT_PARTS = ("text", "input_text", "output_text")
_EXPECTED = (
    "an assistant message: an OpenAI message (dict or SDK object), a LangChain AIMessage or an "
    "Anthropic message"
)


class UnreadableMessage(ValueError):
    """The message is not one of the shapes `read_message` reads; the text names the fix."""


def _as_dict(message: Any) -> Mapping[str, Any]:
    if hasattr(message, "model_dump") and not isinstance(message, type):
        try:
            message = message.model_dump(exclude_none=True)
        except Exception as err:
            raise UnreadableMessage(
                f"the message object could not be read ({type(err).__name__}); pass {_EXPECTED}"
            ) from None
    if isinstance(message, Mapping):
        return message
    hint = "; for a model's text output use execute_text(text)" if isinstance(message, str) else ""
    raise UnreadableMessage(f"expected {_EXPECTED}, got {type(message).__name__}{hint}")


def shape_of(data: Mapping[str, Any]) -> Shape:
    """Which SDK a message dict comes from (OpenAI unless it says otherwise)."""
    if data.get("type") == "ai" or "invalid_tool_calls" in data:
        return "langchain"
    content = data.get("content")
    blocks = content if isinstance(content, list) else []
    if data.get("type") == "message" or any(
        isinstance(b, Mapping) and b.get("type") == "tool_use" for b in blocks
    ):
        return "anthropic"
    return "openai"


def _text(content: Any) -> str:
    """A content field as text: a string, null, or a list of parts whose text parts count
    (other parts, tool_use blocks included, are not text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise UnreadableMessage(
            f"the message content must be a string, a list of parts or null, got "
            f"{type(content).__name__}"
        )
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping) and part.get("type") in _TEXT_PARTS:
            if not isinstance(part.get("text"), str):
                raise UnreadableMessage("a text part of the content has no 'text' string")
            texts.append(part["text"])
    return "".join(texts)


def _arguments(arguments: Any) -> tuple[Any, str | None]:
    """Arguments as `parse_openai` reads them (a JSON string, an object, or null), or an error."""
    if isinstance(arguments, bytes | bytearray):
        return None, "the arguments are bytes; send a JSON object (or a JSON string of one)."
    if arguments is None or isinstance(arguments, str):
        return arguments, None
    try:
        json.dumps(arguments, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as err:
        return None, f"the arguments are not JSON ({type(err).__name__}); send a JSON object."
    return arguments, None


def _call_id(value: Any) -> str:
    return value if isinstance(value, str) else str(value) if isinstance(value, int) else ""


def _raw_calls(data: Mapping[str, Any], shape: Shape) -> list[tuple[str, Any, Any, str | None]]:
    """(id, name, arguments, error) of each call, in order, whatever the shape."""
    if shape == "anthropic":
        content = data.get("content")
        return [
            (_call_id(block.get("id")), block.get("name"), block.get("input"), None)
            for block in (content if isinstance(content, list) else [])
            if isinstance(block, Mapping) and block.get("type") == "tool_use"
        ]
    listed = data.get("tool_calls")
    if listed is None:
        listed = []
    if not isinstance(listed, list | tuple):
        raise UnreadableMessage(f"tool_calls must be a list, got {type(listed).__name__}")
    calls: list[tuple[str, Any, Any, str | None]] = []
    for call in listed:
        if not isinstance(call, Mapping):
            calls.append(("", None, None, "a tool call must be an object; nothing was run."))
        elif shape == "langchain":
            calls.append((_call_id(call.get("id")), call.get("name"), call.get("args"), None))
        else:
            fn = call.get("function")
            if not isinstance(fn, Mapping):
                error = "a tool call needs a 'function' object with 'name' and 'arguments'."
                calls.append((_call_id(call.get("id")), None, None, error))
            else:
                calls.append((_call_id(call.get("id")), fn.get("name"), fn.get("arguments"), None))
    if shape == "langchain":
        for bad in data.get("invalid_tool_calls") or []:
            if isinstance(bad, Mapping):
                error = f"the call's arguments could not be read ({bad.get('error') or 'bad JSON'})"
                calls.append((_call_id(bad.get("id")), bad.get("name"), None, error + "."))
    return calls


def read_message(message: Any) -> tuple[ParsedTurn, Shape]:
    """The turn an assistant message asks for, and its shape; `UnreadableMessage` if none.

    >>> turn, shape = read_message({"role": "assistant", "content": [{"type": "tool_use",
    ...     "id": "toolu_1", "name": "Retrieve_memory", "input": {"query": "tea"}}]})
    >>> shape, turn.tool_calls[0].id, turn.tool_calls[0].arguments
    ('anthropic', 'toolu_1', {'query': 'tea'})
    """
    data = _as_dict(message)
    role = data.get("role")
    if role is not None and role != "assistant":
        raise UnreadableMessage(f"execute() runs an assistant message's calls; got role {role!r}")
    shape = shape_of(data)
    text = _text(data.get("content"))
    reasoning = data.get("reasoning_content") or data.get("reasoning")
    if shape == "anthropic":
        blocks = [b for b in data.get("content") or [] if isinstance(b, Mapping)]
        reasoning = "".join(
            str(b.get("thinking", "")) for b in blocks if b.get("type") == "thinking"
        )
    calls, errors = [], {}
    for index, (call_id, name, arguments, error) in enumerate(_raw_calls(data, shape)):
        arguments, problem = _arguments(arguments) if error is None else (None, error)
        if problem is None and not (isinstance(name, str) and name):
            problem = "the tool call has no function name; give the tool's name."
        if problem is not None:
            errors[index] = ToolCall(
                name if isinstance(name, str) else "", None, call_id, "", problem
            )
            name, arguments = "_", {}
        calls.append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        )
    openai_message = {"role": "assistant", "content": text, "tool_calls": calls}
    if isinstance(reasoning, str) and reasoning:
        openai_message["reasoning_content"] = reasoning
    try:
        turn = parse_openai(openai_message)
    except Exception as err:  # the parser's own limits (e.g. deep nesting); nothing ran
        raise UnreadableMessage(f"the message could not be parsed ({type(err).__name__})") from None
    for index, bad in errors.items():  # the message's calls come first in the turn, in order
        turn.tool_calls[index] = ToolCall(
            bad.name, None, bad.id or turn.tool_calls[index].id, "", bad.error
        )
    return turn, shape


def unreadable_result(error: UnreadableMessage) -> ToolResult:
    """The observation for a message that could not be read: nothing ran."""
    return ToolResult("", "", f"Format error: {error}. Nothing was run.", "format")


def replies(results: list[ToolResult], shape: Shape) -> list[Any]:
    """The messages that answer `results`, to append after the assistant message."""
    if shape == "anthropic":
        if not results:
            return []
        blocks = [
            {"type": "tool_result", "tool_use_id": r.call_id, "content": r.content}
            | ({} if r.ok else {"is_error": True})
            for r in results
        ]
        return [{"role": "user", "content": blocks}]
    if shape == "langchain":
        try:
            from langchain_core.messages import ToolMessage
        except ImportError:
            return [r.to_message() for r in results]
        return [
            ToolMessage(
                r.content,
                tool_call_id=r.call_id,
                name=r.name,
                status="success" if r.ok else "error",
            )
            for r in results
        ]
    return [r.to_message() for r in results]
