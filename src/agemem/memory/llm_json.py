"""Lenient reading of the JSON objects agemem asks a model for: `Memory.add(infer=True)`'s fact
extraction and decisions, and the LLM-pipeline baselines (mem0-style, a-mem-style).

Small models wrap JSON in prose, drop closing brackets, leave trailing commas or quote with single
quotes. `read_object` repairs what `json_repair` can repair unambiguously and otherwise raises
`JsonReadError` naming what was expected, so the caller records a failed call and falls back.
The field readers accept the near-misses small models produce (a bare string where a list was
asked, numbers where strings were asked) and drop what cannot be meant (nested objects in a list
of strings, empty strings).

>>> read_object('Sure! {"facts": ["ana lives in rome",]} Hope this helps.')
{'facts': ['ana lives in rome']}
>>> string_list({"tags": "travel"}, "tags")
['travel']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import json_repair

from agemem.summarize import strip_think


class JsonReadError(ValueError):
    """The model's output holds no JSON object; the message says what it held instead."""


def read_object(text: str, keys: Sequence[str] = ()) -> dict[str, Any]:
    """The first JSON object in `text` (after `<think>` blocks), repaired if need be; with
    `keys`, it must hold at least one of them (an object of another shape was not an answer).

    >>> read_object('{"name": "ADD"}', keys=["facts"])
    Traceback (most recent call last):
    ...
    agemem.memory.llm_json.JsonReadError: expected a JSON object with "facts", got ...
    """
    body = strip_think(text)
    if not body:
        raise JsonReadError("empty output; expected one JSON object")
    value = json_repair.loads(body)
    if isinstance(value, list):  # several values, or an array: take the first object in it
        value = next((v for v in value if isinstance(v, dict)), value)
    if not isinstance(value, dict):
        raise JsonReadError(f"expected one JSON object, got {_describe(value)}: {body[:80]!r}")
    if keys and not any(key in value for key in keys):
        expected, got = _quoted(keys, " or "), _quoted(list(value), ", ") or "no keys"
        raise JsonReadError(f"expected a JSON object with {expected}, got one with {got}")
    return value


def _quoted(keys: Sequence[str], sep: str) -> str:
    return sep.join(f'"{key}"' for key in keys)


def _describe(value: Any) -> str:
    if value == "":
        return "no JSON"
    return f"a JSON {type(value).__name__}"


def string_list(obj: dict[str, Any], key: str) -> list[str]:
    """`obj[key]` as a list of non-empty strings; a bare string counts as a one-item list."""
    value = obj.get(key)
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        return []
    items = (str(v).strip() for v in value if isinstance(v, str | int | float))
    return [item for item in items if item]


def text_field(obj: dict[str, Any], *keys: str) -> str | None:
    """The first of `keys` holding a non-empty string (numbers are written as text)."""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value).strip()
            if text:
                return text
    return None


def index_field(value: Any, n: int) -> int | None:
    """An index into a list of `n` shown items, from `3`, `"3"` or `"[3]"`; None when it is not
    one of them.

    >>> index_field("[1]", 2), index_field(2, 2), index_field("mem_1", 2)
    (1, None, None)
    """
    if isinstance(value, bool):
        return None
    text = str(value).strip().strip("[]").strip() if isinstance(value, str | int) else ""
    if not text.isdigit():
        return None
    index = int(text)
    return index if index < n else None
