"""Model output -> actions: one `ParsedTurn` per model step, whatever format the model speaks.

Formats:
- ``agemem``: AgeMem's protocol, ``<think>...</think>`` then exactly one of
  ``<tool_call>[{"name": ..., "arguments": {...}}, ...]</tool_call>`` (a JSON array) or
  ``<answer>...</answer>``; nothing outside the tags.
- ``hermes``: Hermes / Qwen tool calling,
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` with one object per tag and
  possibly several tags; plain text without calls is the answer.
- ``openai``: an assistant message dict with ``tool_calls`` (``arguments`` a JSON string).
- ``atommem``: AtomMem's action tags (see `ATOMMEM_TAGS`), several per step.

Tolerance policy: what small models do and what is unambiguous is accepted: whitespace and tag-name
case silently; a single object where an array is expected, several ``<tool_call>`` blocks, stray
closing tags and text outside the tags as soft issues. Nothing is repaired by guessing: malformed
JSON (trailing commas included) becomes a `ToolCall` with ``error`` set, which dispatch turns into
an observation for the model. Fatal issues (empty output, unclosed tags, no action, an answer
together with tool calls) make the whole turn unrunnable: the caller runs neither the calls nor the
answer (`ParsedTurn.ok` is False).

Limits (a model's output is untrusted input; each limit is an error the model reads, never an
exception): a step of more than `MAX_OUTPUT_CHARS` characters or with more than
`MAX_CALLS_PER_STEP` calls is a fatal issue (nothing runs). A call is refused (``error`` set) when
its JSON nests deeper than `MAX_JSON_DEPTH`, holds a number literal longer than
`MAX_NUMBER_CHARS` characters, a NaN or Infinity, a string with an unpaired surrogate, or (given
as a Python object, e.g. OpenAI ``arguments``) a value JSON cannot hold. Text the parser returns
(``think``, ``answer``) and every issue message are safe to encode as UTF-8 (`safe_text`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from agemem.policy.base import Turn

Format = Literal["agemem", "hermes", "openai", "atommem"]
IssueCode = Literal[
    "empty",
    "unclosed_tag",
    "no_action",
    "answer_and_tool_call",
    "multiple_answers",
    "text_outside_tags",
    "stray_closing_tag",
    "missing_think",
    "single_object",
    "array_in_hermes",
    "multiple_tool_call_blocks",
    "too_long",
    "too_many_calls",
]

# AtomMem tag -> the operation (tool) name it maps to; names follow the AtomMem paper's atomic
# operations. `final_answer` is the answer tag. Source: RUCBM/AtomMem's `parse_action`.
ATOMMEM_TAGS: dict[str, str] = {
    "add_memory": "create",
    "update_query": "read",
    "modify_memory": "update",
    "delete_memory": "delete",
    "update_memory": "scratchpad",
}
ATOMMEM_ANSWER_TAG = "final_answer"
_CALL_KEYS = {"name", "arguments"}

# Bounds on one model step (see the module docstring). A step of AgeMem's protocol is a few
# hundred tokens and its calls carry short facts, so these only stop hostile or degenerate input:
# 100,000 characters is ~25,000 tokens; 16 calls per step is more than any trajectory we recorded
# (the SFT data's maximum is 6) and keeps one step's store work under a second.
MAX_OUTPUT_CHARS = 100_000
MAX_CALLS_PER_STEP = 16
MAX_JSON_DEPTH = 16  # arrays/objects inside one call; a call with metadata needs 3-4
MAX_NUMBER_CHARS = 64  # a number literal; Python refuses ints over 4,300 digits with ValueError


@dataclass(frozen=True)
class ToolCall:
    """One requested call; ``error`` is set (``arguments`` None) when it could not be read."""

    name: str
    arguments: dict[str, Any] | None
    id: str = ""
    raw: str = ""
    error: str | None = None


@dataclass(frozen=True)
class FormatIssue:
    code: IssueCode
    message: str  # names the problem and the fix, written for the model
    fatal: bool


@dataclass
class ParsedTurn:
    fmt: Format
    think: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    answer: str | None = None
    issues: list[FormatIssue] = field(default_factory=list)

    @property
    def errors(self) -> list[FormatIssue]:
        return [i for i in self.issues if i.fatal]

    @property
    def ok(self) -> bool:
        """False when the turn must not be run at all (neither its calls nor its answer)."""
        return not self.errors

    def error_text(self) -> str:
        """The fatal issues as one observation for the model ('' when the turn is ok)."""
        return safe_text(" ".join(f"Format error: {i.message}" for i in self.errors))


def safe_text(text: str) -> str:
    """`text` with every unpaired surrogate replaced by U+FFFD, so it encodes as UTF-8 (a
    well-formed surrogate pair becomes the character it encodes).

    >>> safe_text("ok \\ud800 end"), safe_text("\\ud83d\\ude00")
    ('ok \ufffd end', '😀')
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class _Unreadable(ValueError):
    """A JSON text or value outside the parser's limits; the message is for the model."""


def _json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether arrays/objects in a JSON text nest deeper than `limit` (strings skipped)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _number(parse: type[int] | type[float]) -> Any:
    def read(literal: str) -> int | float:
        if len(literal) > MAX_NUMBER_CHARS:
            raise _Unreadable(
                f"a number in the call has {len(literal)} characters (at most "
                f"{MAX_NUMBER_CHARS}); write it as a string if it is an identifier"
            )
        return parse(literal)

    return read


def _no_constant(name: str) -> Any:
    raise _Unreadable(f"{name} is not JSON; use a number or null")


def _bounded_loads(text: str) -> Any:
    """`json.loads` within the limits; `_Unreadable` (or `JSONDecodeError`) otherwise."""
    if _json_depth_exceeds(text, MAX_JSON_DEPTH):
        raise _Unreadable(
            f"the call nests arrays/objects deeper than {MAX_JSON_DEPTH} levels; flatten it"
        )
    value = json.loads(
        text,
        parse_int=_number(int),
        parse_float=_number(float),
        parse_constant=_no_constant,
    )
    problem = json_value_problem(value)
    if problem is not None:
        raise _Unreadable(problem)
    return value


def json_value_problem(value: Any) -> str | None:
    """Why a decoded value cannot be a tool call's JSON (too deep, a huge or non-finite number,
    a non-JSON type, an unpaired surrogate), or None. Iterative: any depth is safe to check."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth >= MAX_JSON_DEPTH:
                return (
                    f"the call nests arrays/objects deeper than {MAX_JSON_DEPTH} levels; flatten it"
                )
            if isinstance(item, dict):
                for key in item:
                    if not isinstance(key, str):
                        return f"object keys must be strings, got a {type(key).__name__} key"
                    stack.append((key, depth + 1))
                children = item.values()
            else:
                children = item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, str):
            if safe_text(item) != item:
                return (
                    "a string in the call holds an unpaired surrogate (an invalid character "
                    "escape such as \\ud800); write plain text"
                )
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if item.bit_length() > MAX_NUMBER_CHARS * 3:  # ~ MAX_NUMBER_CHARS digits
                return f"a number in the call is longer than {MAX_NUMBER_CHARS} digits"
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                return "NaN and Infinity are not JSON; use a number or null"
        else:
            return f"a {type(item).__name__} is not a JSON value; use strings, numbers, objects"
    return None


def _dumps(value: Any) -> str:
    """`json.dumps` for the ``raw`` field of a call; a value it cannot write shows as its type."""
    try:
        return safe_text(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return f"<{type(value).__name__}>"


# --- scanning tagged text -------------------------------------------------------------------


@dataclass
class _Scan:
    blocks: list[tuple[str, str]]  # (tag, inner text), in order
    outside: str  # text outside every block, stripped
    issues: list[FormatIssue]
    unclosed: bool


def _tag_re(tags: Iterable[str], closing: bool) -> re.Pattern[str]:
    alternatives = "|".join(sorted(tags))
    slash = r"/\s*" if closing else r"(/\s*)?"
    return re.compile(rf"<\s*{slash}({alternatives})\s*>", re.IGNORECASE)


def _scan(text: str, tags: set[str]) -> _Scan:
    """Split text into known-tag blocks (non-nested: a block ends at its own closing tag).

    A leading ``...</think>`` with no opening tag counts as a think block: Qwen3-style chat
    templates put ``<think>`` in the prompt, so the completion starts inside it.
    """
    any_tag = _tag_re(tags, closing=False)
    blocks: list[tuple[str, str]] = []
    outside: list[str] = []
    issues: list[FormatIssue] = []
    pos = 0
    while (m := any_tag.search(text, pos)) is not None:
        tag = m.group(2).lower()
        before = text[pos : m.start()]
        if m.group(1) is None:  # opening tag
            outside.append(before)
            close = _tag_re([tag], closing=True).search(text, m.end())
            if close is None:
                issues.append(
                    FormatIssue(
                        "unclosed_tag", f"<{tag}> is never closed: end it with </{tag}>.", True
                    )
                )
                return _Scan(blocks, _joined(outside), issues, unclosed=True)
            blocks.append((tag, text[m.end() : close.start()]))
            pos = close.end()
        elif tag == "think" and not blocks and not outside:
            blocks.append((tag, before))
            pos = m.end()
        else:
            outside.append(before)
            issues.append(
                FormatIssue(
                    "stray_closing_tag", f"</{tag}> has no opening <{tag}>; it was ignored.", False
                )
            )
            pos = m.end()
    outside.append(text[pos:])
    return _Scan(blocks, _joined(outside), issues, unclosed=False)


def _joined(pieces: list[str]) -> str:
    return " ".join(p.strip() for p in pieces if p.strip())


def _outside_issue(outside: str) -> FormatIssue:
    snippet = outside if len(outside) <= 60 else outside[:57] + "..."
    return FormatIssue(
        "text_outside_tags",
        f"text outside the tags was ignored ({snippet!r}); put reasoning inside <think>.",
        False,
    )


# --- JSON tool calls ------------------------------------------------------------------------


def _json_error(text: str, err: json.JSONDecodeError) -> str:
    prefix = text[: err.pos].rstrip()
    if text[err.pos : err.pos + 1] in ("]", "}") and prefix.endswith(","):
        problem = f"trailing comma before {text[err.pos]!r} at char {err.pos} (JSON forbids it)"
        fix = "remove the comma"
    else:
        problem = f"{err.msg} at line {err.lineno} column {err.colno} (char {err.pos})"
        fix = "write valid JSON: double-quoted keys and strings, no comments"
    return f"the tool call is not valid JSON: {problem}; {fix} and call again."


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    names = {str: "string", bool: "boolean", int: "number", float: "number", list: "array"}
    return "null" if value is None else names.get(type(value), "object")


def _call_from_obj(obj: Any) -> ToolCall:
    raw = _dumps(obj)
    shape = 'write each call as {"name": "<tool>", "arguments": {...}}'
    if not isinstance(obj, dict):
        return ToolCall("", None, raw=raw, error=f"a tool call must be a JSON object; {shape}.")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return ToolCall("", None, raw=raw, error=f'the call has no "name" string; {shape}.')
    extra = sorted(set(obj) - _CALL_KEYS)
    if extra:
        return ToolCall(
            name, None, raw=raw, error=f"unexpected key(s) {extra} in the call; {shape}."
        )
    arguments = obj.get("arguments")
    if not isinstance(arguments, dict):
        got = "nothing" if "arguments" not in obj else f"a JSON {_json_type(arguments)}"
        return ToolCall(
            name, None, raw=raw, error=f'"arguments" must be a JSON object (got {got}); {shape}.'
        )
    return ToolCall(name, arguments, raw=raw)


def _calls_from_block(content: str) -> tuple[list[ToolCall], Literal["array", "object", "bad"]]:
    """Calls in one ``<tool_call>`` block, and the block's JSON shape."""
    text = content.strip()
    try:
        value = _bounded_loads(text)
    except json.JSONDecodeError as err:
        return [ToolCall("", None, raw=safe_text(text), error=_json_error(text, err))], "bad"
    except (_Unreadable, RecursionError) as err:
        error = f"the tool call cannot be read: {err}; nothing was run. Call again."
        return [ToolCall("", None, raw=safe_text(text), error=error)], "bad"
    if isinstance(value, list):
        return [_call_from_obj(v) for v in value], "array"
    return [_call_from_obj(value)], "object" if isinstance(value, dict) else "bad"


def _numbered(calls: list[ToolCall]) -> list[ToolCall]:
    """Give calls without an id a position-based one (``call_<i>``), deterministic for replay."""
    return [c if c.id else replace(c, id=f"call_{i}") for i, c in enumerate(calls)]


def _think(blocks: list[tuple[str, str]]) -> str | None:
    parts = [safe_text(content.strip()) for tag, content in blocks if tag == "think"]
    return "\n".join(parts) if parts else None


def _answers(blocks: list[tuple[str, str]], tag: str, issues: list[FormatIssue]) -> str | None:
    answers = [safe_text(content.strip()) for t, content in blocks if t == tag]
    if len(answers) > 1:
        issues.append(
            FormatIssue("multiple_answers", f"give exactly one <{tag}> per step.", fatal=True)
        )
    return answers[0] if answers else None


def _conflict(answer_tag: str) -> FormatIssue:
    return FormatIssue(
        "answer_and_tool_call",
        f"a step may contain tool calls or <{answer_tag}>, never both; nothing was run. "
        "Make the calls now and answer in a later step.",
        fatal=True,
    )


def _empty(fmt: Format) -> ParsedTurn:
    msg = "the response is empty; make a tool call or give an answer."
    return ParsedTurn(fmt, issues=[FormatIssue("empty", msg, True)])


def _unbounded(fmt: Format, text: str) -> ParsedTurn | None:
    """A fatal turn for an empty or over-long step, else None (the step is parsed)."""
    if len(text) > MAX_OUTPUT_CHARS:
        msg = (
            f"the response has {len(text)} characters, more than {MAX_OUTPUT_CHARS}; nothing "
            "was run. Write a short step."
        )
        return ParsedTurn(fmt, issues=[FormatIssue("too_long", msg, True)])
    return _empty(fmt) if not text.strip() else None


def _counted(turn: ParsedTurn) -> ParsedTurn:
    """Numbered calls; more than `MAX_CALLS_PER_STEP` of them is a fatal issue."""
    turn.tool_calls = _numbered(turn.tool_calls)
    if len(turn.tool_calls) > MAX_CALLS_PER_STEP:
        msg = (
            f"the step makes {len(turn.tool_calls)} tool calls, more than "
            f"{MAX_CALLS_PER_STEP}; nothing was run. Make at most {MAX_CALLS_PER_STEP} per step."
        )
        turn.issues.append(FormatIssue("too_many_calls", msg, True))
    return turn


# --- the parsers ----------------------------------------------------------------------------


def parse_agemem(text: str) -> ParsedTurn:
    """AgeMem's protocol: ``<think>`` then one ``<tool_call>[...]</tool_call>`` or ``<answer>``.

    >>> t = parse_agemem('<think>save it</think><tool_call>[{"name": "Add_memory", '
    ...                  '"arguments": {"content": "Ann likes tea"}}]</tool_call>')
    >>> t.ok, t.tool_calls[0].name, t.tool_calls[0].arguments
    (True, 'Add_memory', {'content': 'Ann likes tea'})
    """
    if (refused := _unbounded("agemem", text)) is not None:
        return refused
    scan = _scan(text, {"think", "tool_call", "answer"})
    issues = scan.issues
    calls: list[ToolCall] = []
    call_blocks = [content for tag, content in scan.blocks if tag == "tool_call"]
    for content in call_blocks:
        block_calls, shape = _calls_from_block(content)
        calls.extend(block_calls)
        if shape == "object":
            msg = "<tool_call> holds a JSON array of calls; a single object was accepted."
            issues.append(FormatIssue("single_object", msg, False))
    if len(call_blocks) > 1:
        msg = "put all calls in one <tool_call> JSON array; several blocks were accepted."
        issues.append(FormatIssue("multiple_tool_call_blocks", msg, False))
    answer = _answers(scan.blocks, "answer", issues)
    _common_checks(scan, issues, bool(call_blocks), answer, "answer")
    if not any(tag == "think" for tag, _ in scan.blocks):
        issues.append(
            FormatIssue("missing_think", "start each step with <think>...</think>.", False)
        )
    return _counted(ParsedTurn("agemem", _think(scan.blocks), calls, answer, issues))


def _common_checks(
    scan: _Scan, issues: list[FormatIssue], has_calls: bool, answer: str | None, answer_tag: str
) -> None:
    """Issues every tagged format shares: conflict, no action, stray text."""
    if has_calls and answer is not None:
        issues.append(_conflict(answer_tag))
    if not has_calls and answer is None and not scan.unclosed:
        issues.append(
            FormatIssue(
                "no_action",
                f"the step has no tool call and no <{answer_tag}>; give exactly one of them.",
                fatal=True,
            )
        )
    if scan.outside:
        issues.append(_outside_issue(scan.outside))


def parse_hermes(text: str) -> ParsedTurn:
    """Hermes / Qwen: one call object per ``<tool_call>`` tag; text alone is the answer.

    An explicit ``<answer>`` tag wins over plain text; text next to calls is a soft issue.

    >>> t = parse_hermes('<tool_call>{"name": "a", "arguments": {}}</tool_call>\\n'
    ...                  '<tool_call>{"name": "b", "arguments": {"x": 1}}</tool_call>')
    >>> [(c.id, c.name) for c in t.tool_calls], t.ok
    ([('call_0', 'a'), ('call_1', 'b')], True)
    """
    return _hermes(text, "hermes", [])


def _hermes(text: str, fmt: Format, given_calls: list[ToolCall]) -> ParsedTurn:
    """Hermes rules over ``text``; ``given_calls`` come from outside it (OpenAI ``tool_calls``)."""
    if given_calls and not text.strip():
        text = ""
    elif (refused := _unbounded(fmt, text)) is not None:
        return refused
    scan = _scan(text, {"think", "tool_call", "answer"})
    issues = scan.issues
    calls = list(given_calls)
    call_blocks = [content for tag, content in scan.blocks if tag == "tool_call"]
    for content in call_blocks:
        block_calls, shape = _calls_from_block(content)
        calls.extend(block_calls)
        if shape == "array":
            msg = "write one call object per <tool_call> tag; an array was accepted."
            issues.append(FormatIssue("array_in_hermes", msg, False))
    has_calls = bool(call_blocks or given_calls)
    answer = _answers(scan.blocks, "answer", issues)
    if answer is None and not has_calls and not scan.unclosed and scan.outside:
        answer, scan.outside = safe_text(scan.outside), ""
    _common_checks(scan, issues, has_calls, answer, "answer")
    return _counted(ParsedTurn(fmt, _think(scan.blocks), calls, answer, issues))


def _openai_call(raw_call: Any) -> ToolCall:
    """One entry of an OpenAI ``tool_calls`` list; ``arguments`` may be a JSON string or a dict."""
    if not isinstance(raw_call, Mapping) or not isinstance(raw_call.get("function"), Mapping):
        return ToolCall(
            "", None, raw=repr(raw_call), error="a tool call needs a 'function' object."
        )
    fn = raw_call["function"]
    name, call_id = str(fn.get("name") or ""), str(raw_call.get("id") or "")
    args = fn.get("arguments")
    raw = safe_text(args) if isinstance(args, str) else _dumps(args)
    if args is None or (isinstance(args, str) and not args.strip()):
        args = {}  # servers send "" or null for a call without arguments
    elif isinstance(args, str):
        try:
            args = _bounded_loads(args)
        except json.JSONDecodeError as err:
            return ToolCall(name, None, call_id, raw, _json_error(args, err))
        except (_Unreadable, RecursionError) as err:
            error = f"the arguments cannot be read: {err}; nothing was run."
            return ToolCall(name, None, call_id, raw, error)
    elif (problem := json_value_problem(args)) is not None:
        return ToolCall(name, None, call_id, raw, f"the arguments cannot be read: {problem}.")
    if not isinstance(args, dict):
        error = f"arguments must be a JSON object (got a JSON {_json_type(args)})."
        return ToolCall(name, None, call_id, raw, error)
    if not name:
        return ToolCall("", None, call_id, raw, "the tool call has no function name.")
    return ToolCall(name, args, call_id, raw)


def _message_text(content: Any) -> str:
    """OpenAI content: a string, None, or a list of parts (only text parts carry text)."""
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return content if isinstance(content, str) else ""


def parse_openai(message: Mapping[str, Any]) -> ParsedTurn:
    """An OpenAI assistant message: ``tool_calls`` plus content read with the Hermes rules.

    Reasoning comes from ``reasoning_content`` / ``reasoning`` (vLLM, SGLang) or ``<think>``.

    >>> t = parse_openai({"role": "assistant", "content": None, "tool_calls": [{"id": "c1",
    ...     "type": "function", "function": {"name": "Retrieve_memory",
    ...     "arguments": '{"query": "tea"}'}}]})
    >>> t.ok, t.tool_calls[0].id, t.tool_calls[0].arguments
    (True, 'c1', {'query': 'tea'})
    """
    listed = message.get("tool_calls") or []
    if not isinstance(listed, list | tuple):
        listed = [listed]  # read as one call, which `_openai_call` refuses with the reason
    field_calls = [_openai_call(c) for c in listed]
    turn = _hermes(_message_text(message.get("content")), "openai", field_calls)
    turn.think = message.get("reasoning_content") or message.get("reasoning") or turn.think
    return turn


def _atommem_index_op(name: str, content: str, with_text: bool) -> ToolCall:
    """``Memory i: text`` (modify) or ``Memory i`` (delete), as in AtomMem's prompt."""
    pattern = r"Memory\s+(\d+)\s*:\s*(.*)" if with_text else r"Memory\s+(\d+)\s*"
    m = re.fullmatch(pattern, content.strip(), flags=re.DOTALL | re.IGNORECASE)
    if m is None:
        shape = "Memory i: new text" if with_text else "Memory i"
        error = f"expected '{shape}' with i the number shown in the memory list; got {content!r}."
        return ToolCall(name, None, raw=content, error=error)
    args: dict[str, Any] = {"index": int(m.group(1))}
    if with_text:
        args["content"] = m.group(2).strip()
    return ToolCall(name, args, raw=content)


def _atommem_call(tag: str, content: str) -> ToolCall:
    name = ATOMMEM_TAGS[tag]
    if (problem := json_value_problem(content)) is not None:
        return ToolCall(name, None, raw=safe_text(content), error=f"<{tag}>: {problem}.")
    if tag == "modify_memory":
        return _atommem_index_op(name, content, with_text=True)
    if tag == "delete_memory":
        return _atommem_index_op(name, content, with_text=False)
    key = "query" if tag == "update_query" else "content"
    return ToolCall(name, {key: content.strip()}, raw=content)


def parse_atommem(text: str) -> ParsedTurn:
    """AtomMem's tags, run in order; ``answer`` is the raw ``<final_answer>`` text.

    Unlike the public AtomMem loop, an answer next to memory operations is a fatal issue here, the
    same rule as AgeMem's (one meaning per step); text outside tags is a soft issue.

    >>> t = parse_atommem("<add_memory>Ann likes tea</add_memory><delete_memory>Memory 2"
    ...                   "</delete_memory>")
    >>> [(c.name, c.arguments) for c in t.tool_calls]
    [('create', {'content': 'Ann likes tea'}), ('delete', {'index': 2})]
    """
    if (refused := _unbounded("atommem", text)) is not None:
        return refused
    scan = _scan(text, {"think", ATOMMEM_ANSWER_TAG, *ATOMMEM_TAGS})
    issues = scan.issues
    calls = [_atommem_call(tag, content) for tag, content in scan.blocks if tag in ATOMMEM_TAGS]
    answer = _answers(scan.blocks, ATOMMEM_ANSWER_TAG, issues)
    _common_checks(scan, issues, bool(calls), answer, ATOMMEM_ANSWER_TAG)
    return _counted(ParsedTurn("atommem", _think(scan.blocks), calls, answer, issues))


def extract_boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` (braces may nest), AtomMem's answer format.

    >>> extract_boxed(r"<final_answer>\boxed{Paris {France}}</final_answer>")
    'Paris {France}'
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i].strip()
            depth -= 1
    return None


_ATOMMEM_HINT = re.compile(
    r"<\s*(" + "|".join([*ATOMMEM_TAGS, ATOMMEM_ANSWER_TAG]) + r")\s*>", re.IGNORECASE
)
_ANSWER_HINT = re.compile(r"<\s*answer\s*>|<\s*tool_call\s*>\s*\[", re.IGNORECASE)
_HERMES_HINT = re.compile(r"<\s*tool_call\s*>", re.IGNORECASE)
_PARSERS = {"agemem": parse_agemem, "hermes": parse_hermes, "atommem": parse_atommem}


def detect_format(text: str) -> Format:
    """AtomMem tags -> atommem; an ``<answer>`` or a call array -> agemem; other ``<tool_call>``
    -> hermes; anything else is read as AgeMem, the project's protocol (plain text is no action).
    """
    if _ATOMMEM_HINT.search(text):
        return "atommem"
    if _ANSWER_HINT.search(text):
        return "agemem"
    return "hermes" if _HERMES_HINT.search(text) else "agemem"


def parse_turn(
    output: str | Mapping[str, Any] | Turn, fmt: Format | Literal["auto"] = "auto"
) -> ParsedTurn:
    """Parse one model step: text, an OpenAI assistant message, or a policy `Turn`.

    A `Turn` whose backend parsed ``tool_calls`` is read as an OpenAI message.

    >>> parse_turn("<think>done</think><answer>Paris</answer>").answer
    'Paris'
    """
    if isinstance(output, Turn):
        if output.tool_calls is not None:
            output = {"role": "assistant", "content": output.text, "tool_calls": output.tool_calls}
        else:
            output = output.text
    if isinstance(output, Mapping):
        if fmt not in ("auto", "openai"):
            raise ValueError(f"a message dict is OpenAI format; got fmt={fmt!r}")
        return parse_openai(output)
    if fmt == "openai":
        return parse_openai({"role": "assistant", "content": output})
    if fmt == "auto":
        fmt = detect_format(output)
    if fmt not in _PARSERS:
        raise ValueError(f"unknown format {fmt!r}; use one of auto, {', '.join(_PARSERS)}, openai")
    return _PARSERS[fmt](output)
