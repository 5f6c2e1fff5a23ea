"""Entry filters in Mem0's grammar, compiled to one SQL condition over the `memories` table.

A filter is a dict. Each key is a field and each value a condition; several keys must all hold:

- a plain value: equality (`{"kind": "travel"}`, `{"year": 2024}`, `{"done": True}`; None
  matches a JSON null). A list is not a value: use `{"in": [...]}`.
- `"*"`: the field is present and not null.
- a dict of operators, all of which must hold: `eq`, `ne`, `in`, `nin`, `gt`, `gte`, `lt`, `lte`
  (numbers with numbers, strings with strings), `contains` / `icontains` (substring of a string,
  case-sensitive / case-insensitive). A leading `$` is accepted (`$in`), as in earlier agemem.
- `AND` / `OR` / `NOT`: a list of filters that must all hold / at least one holds / none holds.

Fields: `user_id`, `agent_id`, `run_id` (alias `session_id`), `memory_type`, `created_at` and
`updated_at` (ISO-8601 UTC strings) are the entry's own columns; every other key is a top-level
metadata key. JSON types count: 2024 and "2024" differ, and `ne` / `nin` match entries that lack
the key. Keys and values always travel as SQL parameters, never as SQL text.

>>> compile_filters({"kind": "travel", "year": {"gte": 2023}})[1]
['$."kind"', '$."kind"', 'travel', '$."year"', '$."year"', 2023]
>>> compile_filters({"kind": {"regex": "tr.*"}})
Traceback (most recent call last):
...
ValueError: unknown filter operator 'regex' on 'kind'; use one of eq, ne, in, nin, gt, gte, lt, \
lte, contains, icontains (a leading $ is accepted)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPERATORS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "contains", "icontains")
LOGICAL = ("AND", "OR", "NOT")
WILDCARD = "*"
# filter field -> column of `memories`; any other field is a metadata key
COLUMNS = {
    "user_id": "user_id",
    "agent_id": "agent_id",
    "run_id": "session_id",
    "session_id": "session_id",
    "memory_type": "memory_type",
    "created_at": "created_at",
    "updated_at": "updated_at",
}
MAX_DEPTH = 16  # nested AND / OR / NOT
MAX_VALUES = 1000  # values in one `in` / `nin` list (each is a few SQL parameters)
CASEFOLD_SQL = "agemem_casefold"  # SQL function the store registers: str.casefold

_COMPARE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_LOGICAL = {"AND": "AND", "OR": "OR", "NOT": "NOT", "$and": "AND", "$or": "OR", "$not": "NOT"}
_OPERATOR_LIST = f"{', '.join(OPERATORS)} (a leading $ is accepted)"

Sql = tuple[str, list[Any]]


def casefold(value: Any) -> Any:
    """The SQL function behind `icontains` (Unicode-aware, unlike SQLite's `lower`)."""
    return value.casefold() if isinstance(value, str) else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Field:
    """Where a filter field lives: a TEXT column, or a metadata key (as a bound JSON path)."""

    name: str
    column: str | None

    @classmethod
    def of(cls, key: Any) -> _Field:
        if not isinstance(key, str) or not key or '"' in key:
            raise ValueError(f"filter key {key!r} must be a non-empty string without '\"'")
        return cls(key, COLUMNS.get(key))

    def kind(self) -> Sql:
        """The value's JSON type name ('text', 'integer', 'real', 'true', 'false', 'null'), or
        NULL when the field is absent."""
        if self.column is not None:
            return f"(CASE WHEN {self.column} IS NULL THEN NULL ELSE 'text' END)", []
        return "json_type(metadata, ?)", [self._path]

    def value(self) -> Sql:
        if self.column is not None:
            return self.column, []
        return "json_extract(metadata, ?)", [self._path]

    @property
    def _path(self) -> str:
        return f'$."{self.name}"'

    def check_column_value(self, value: Any) -> None:
        if self.column is not None and value is not None and not isinstance(value, str):
            raise ValueError(f"filter on {self.name!r} compares strings, got {value!r}")


def _test(field: _Field, kind_test: str, value_test: str = "", *args: Any) -> Sql:
    """`((<kind> <kind_test> [AND <value_test>]) IS 1)`, never NULL (so NOT works); `{v}` in
    `value_test` stands for the field's value, `args` are its parameters."""
    kind_sql, params = field.kind()
    sql = f"{kind_sql} {kind_test}"
    if value_test:
        value_sql, value_params = field.value()
        sql = f"{sql} AND {value_test.format(v=value_sql)}"
        params = [*params, *value_params, *args]
    return f"(({sql}) IS 1)", params


def _equals(field: _Field, value: Any) -> Sql:
    field.check_column_value(value)
    if value is None:
        if field.column is not None:
            return f"({field.column} IS NULL)", []
        return _test(field, "IS 'null'")
    if isinstance(value, bool):
        kind_sql, params = field.kind()
        return f"(({kind_sql} IS ?) IS 1)", [*params, "true" if value else "false"]
    if _is_number(value):
        return _test(field, "IN ('integer', 'real')", "{v} IS ?", value)
    if isinstance(value, str):
        return _test(field, "IS 'text'", "{v} IS ?", value)
    raise ValueError(
        f"filter value {value!r} on {field.name!r} is a {type(value).__name__}; compare with a "
        "string, number, bool or None (use {'in': [...]} to match any of several values)"
    )


def _any_of(field: _Field, op: str, values: Any) -> Sql:
    if not isinstance(values, list | tuple):
        raise ValueError(f"'{op}' on {field.name!r} takes a list of values, got {values!r}")
    if len(values) > MAX_VALUES:
        raise ValueError(
            f"'{op}' on {field.name!r} has {len(values)} values; give at most {MAX_VALUES}"
        )
    if not values:
        return "0", []
    parts = [_equals(field, v) for v in values]
    return "(" + " OR ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]


def _operator(field: _Field, op: str, arg: Any) -> Sql:
    name = op[1:] if op.startswith("$") else op
    if name == "eq":
        return _equals(field, arg)
    if name in ("ne", "nin"):
        sql, params = _equals(field, arg) if name == "ne" else _any_of(field, op, arg)
        return f"(NOT {sql})", params
    if name == "in":
        return _any_of(field, op, arg)
    if name in _COMPARE:
        field.check_column_value(arg)
        if _is_number(arg):
            kind = "IN ('integer', 'real')"
        elif isinstance(arg, str):
            kind = "IS 'text'"
        else:
            raise ValueError(f"'{op}' on {field.name!r} compares numbers or strings, got {arg!r}")
        return _test(field, kind, f"{{v}} {_COMPARE[name]} ?", arg)
    if name in ("contains", "icontains"):
        if not isinstance(arg, str):
            raise ValueError(f"'{op}' on {field.name!r} takes a string, got {arg!r}")
        fold = CASEFOLD_SQL if name == "icontains" else ""
        return _test(field, "IS 'text'", f"instr({fold}({{v}}), {fold}(?)) > 0", arg)
    raise ValueError(
        f"unknown filter operator {op!r} on {field.name!r}; use one of {_OPERATOR_LIST}"
    )


def _condition(key: Any, condition: Any) -> Sql:
    field = _Field.of(key)
    if isinstance(condition, str) and condition == WILDCARD:
        kind_sql, params = field.kind()
        return f"((COALESCE({kind_sql}, 'null') != 'null') IS 1)", params
    if not isinstance(condition, Mapping):
        return _equals(field, condition)
    if not condition:
        raise ValueError(f"filter on {key!r} is an empty dict; give an operator, e.g. {{'eq': 1}}")
    parts = []
    for op, arg in condition.items():
        if not isinstance(op, str):
            raise ValueError(f"filter operator {op!r} on {key!r} must be one of {_OPERATOR_LIST}")
        parts.append(_operator(field, op, arg))
    return _joined(parts, "AND")


def _joined(parts: list[Sql], glue: str) -> Sql:
    if not parts:
        return ("1" if glue == "AND" else "0"), []
    return "(" + f" {glue} ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]


def _logical(key: str, operands: Any, depth: int) -> Sql:
    glue = _LOGICAL[key]
    if isinstance(operands, Mapping):
        operands = [operands]
    if not isinstance(operands, list | tuple):
        raise ValueError(f"{key!r} takes a list of filters, e.g. {{{key!r}: [{{'kind': 'a'}}]}}")
    parts = [_filter(operand, depth + 1) for operand in operands]
    if glue == "NOT":
        sql, params = _joined(parts, "OR")
        return f"(NOT {sql})", params
    return _joined(parts, glue)


def _filter(filters: Any, depth: int) -> Sql:
    if not isinstance(filters, Mapping):
        raise ValueError(
            f"a filter is a dict of field -> condition (or AND / OR / NOT -> list of filters), "
            f"got {filters!r}"
        )
    if depth > MAX_DEPTH:
        raise ValueError(f"filters nest AND / OR / NOT deeper than {MAX_DEPTH} levels; flatten")
    parts = [
        _logical(key, condition, depth) if key in _LOGICAL else _condition(key, condition)
        for key, condition in filters.items()
    ]
    return _joined(parts, "AND")


def compile_filters(filters: Mapping[str, Any] | None) -> Sql:
    """SQL condition and parameters for `filters` ("1" for none); ValueError names a bad part."""
    if filters is None:
        return "1", []
    return _filter(filters, 0)
