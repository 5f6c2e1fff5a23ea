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
the key. Keys and values always travel as SQL parameters, never as SQL text. The same grammar
compiles to SQLite (`json_extract` over TEXT) and to Postgres (`PostgresDialect`, over JSONB).

>>> compile_filters({"kind": "travel", "year": {"gte": 2023}})[1]
['$."kind"', '$."kind"', 'travel', '$."year"', '$."year"', 2023]
>>> compile_filters({"kind": {"regex": "tr.*"}})
Traceback (most recent call last):
...
ValueError: unknown filter operator 'regex' on 'kind'; use one of eq, ne, in, nin, gt, gte, lt, \
lte, contains, icontains (a leading $ is accepted)
"""

from __future__ import annotations

import json
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
    """Where a filter field lives: a TEXT column, or a metadata key (bound as a parameter)."""

    name: str
    column: str | None

    @classmethod
    def of(cls, key: Any) -> _Field:
        if not isinstance(key, str) or not key or '"' in key:
            raise ValueError(f"filter key {key!r} must be a non-empty string without '\"'")
        return cls(key, COLUMNS.get(key))

    def check_column_value(self, value: Any) -> None:
        if self.column is not None and value is not None and not isinstance(value, str):
            raise ValueError(f"filter on {self.name!r} compares strings, got {value!r}")


class Dialect:
    """The SQL of each leaf test, for SQLite (this class) and Postgres (`PostgresDialect`).

    Every leaf is TRUE or FALSE, never NULL (an absent key is FALSE), so that NOT inverts it.
    The grammar walk, its checks and error messages are shared by both."""

    true, false = "1", "0"

    def kind(self, field: _Field) -> Sql:
        """The value's JSON type name ('text', 'integer', 'real', 'true', 'false', 'null'), or
        NULL when the field is absent."""
        if field.column is not None:
            return f"(CASE WHEN {field.column} IS NULL THEN NULL ELSE 'text' END)", []
        return "json_type(metadata, ?)", [_path(field)]

    def value(self, field: _Field) -> Sql:
        if field.column is not None:
            return field.column, []
        return "json_extract(metadata, ?)", [_path(field)]

    def _test(self, field: _Field, kind_test: str, value_test: str = "", *args: Any) -> Sql:
        """`((<kind> <kind_test> [AND <value_test>]) IS 1)`; `{v}` in `value_test` stands for
        the field's value, `args` are its parameters."""
        kind_sql, params = self.kind(field)
        sql = f"{kind_sql} {kind_test}"
        if value_test:
            value_sql, value_params = self.value(field)
            sql = f"{sql} AND {value_test.format(v=value_sql)}"
            params = [*params, *value_params, *args]
        return f"(({sql}) IS 1)", params

    def equals(self, field: _Field, value: Any) -> Sql:
        """`value` is None, a bool, a number or a string (checked by the caller)."""
        if value is None:
            if field.column is not None:
                return f"({field.column} IS NULL)", []
            return self._test(field, "IS 'null'")
        if isinstance(value, bool):
            kind_sql, params = self.kind(field)
            return f"(({kind_sql} IS ?) IS 1)", [*params, "true" if value else "false"]
        if _is_number(value):
            return self._test(field, "IN ('integer', 'real')", "{v} IS ?", value)
        return self._test(field, "IS 'text'", "{v} IS ?", value)

    def present(self, field: _Field) -> Sql:
        kind_sql, params = self.kind(field)
        return f"((COALESCE({kind_sql}, 'null') != 'null') IS 1)", params

    def compare(self, field: _Field, op: str, value: Any) -> Sql:
        """`op` is one of > >= < <=, `value` a number or a string."""
        kind = "IN ('integer', 'real')" if _is_number(value) else "IS 'text'"
        return self._test(field, kind, f"{{v}} {op} ?", value)

    def contains(self, field: _Field, text: str, fold: bool) -> Sql:
        f = CASEFOLD_SQL if fold else ""
        return self._test(field, "IS 'text'", f"instr({f}({{v}}), {f}(?)) > 0", text)


def _path(field: _Field) -> str:
    return f'$."{field.name}"'


class PostgresDialect(Dialect):
    """Postgres: `metadata` is JSONB; a value compares as its JSON type (`jsonb` equality and
    order for numbers, so 2024 = 2024.0 as in SQLite), strings in code-point order (COLLATE
    "C", SQLite's BINARY), `icontains` through `lower()` (the database's locale, where SQLite
    uses Python's `str.casefold`). Parameters are `%s` (psycopg)."""

    true, false = "TRUE", "FALSE"

    def _typed(self, field: _Field, json_type: str, test: str, *args: Any) -> Sql:
        """`test` on a metadata value of `json_type`; `{v}` is the value as JSONB, `{t}` as text."""
        test = test.format(v="(metadata -> %s)", t="(metadata ->> %s)")
        sql = f"((jsonb_typeof(metadata -> %s) = '{json_type}' AND {test}) IS TRUE)"
        return sql, [field.name, field.name, *args]

    def equals(self, field: _Field, value: Any) -> Sql:
        if field.column is not None:
            if value is None:
                return f"({field.column} IS NULL)", []
            return f"(({field.column} = %s) IS TRUE)", [value]
        return "(((metadata -> %s) = %s::jsonb) IS TRUE)", [field.name, json.dumps(value)]

    def present(self, field: _Field) -> Sql:
        if field.column is not None:
            return f"({field.column} IS NOT NULL)", []
        return "((jsonb_typeof(metadata -> %s) <> 'null') IS TRUE)", [field.name]

    def compare(self, field: _Field, op: str, value: Any) -> Sql:
        if field.column is not None:
            return f'(({field.column} COLLATE "C" {op} %s) IS TRUE)', [value]
        if _is_number(value):
            return self._typed(field, "number", f"{{v}} {op} %s::jsonb", json.dumps(value))
        return self._typed(field, "string", f'{{t}} COLLATE "C" {op} %s', value)

    def contains(self, field: _Field, text: str, fold: bool) -> Sql:
        f = "lower" if fold else ""
        if field.column is not None:
            return f"((strpos({f}({field.column}), {f}(%s)) > 0) IS TRUE)", [text]
        return self._typed(field, "string", f"strpos({f}({{t}}), {f}(%s)) > 0", text)


SQLITE = Dialect()
POSTGRES = PostgresDialect()


def _equals(d: Dialect, field: _Field, value: Any) -> Sql:
    field.check_column_value(value)
    if value is None or isinstance(value, bool | str) or _is_number(value):
        return d.equals(field, value)
    raise ValueError(
        f"filter value {value!r} on {field.name!r} is a {type(value).__name__}; compare with a "
        "string, number, bool or None (use {'in': [...]} to match any of several values)"
    )


def _any_of(d: Dialect, field: _Field, op: str, values: Any) -> Sql:
    if not isinstance(values, list | tuple):
        raise ValueError(f"'{op}' on {field.name!r} takes a list of values, got {values!r}")
    if len(values) > MAX_VALUES:
        raise ValueError(
            f"'{op}' on {field.name!r} has {len(values)} values; give at most {MAX_VALUES}"
        )
    if not values:
        return d.false, []
    parts = [_equals(d, field, v) for v in values]
    return "(" + " OR ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]


def _operator(d: Dialect, field: _Field, op: str, arg: Any) -> Sql:
    name = op[1:] if op.startswith("$") else op
    if name == "eq":
        return _equals(d, field, arg)
    if name in ("ne", "nin"):
        sql, params = _equals(d, field, arg) if name == "ne" else _any_of(d, field, op, arg)
        return f"(NOT {sql})", params
    if name == "in":
        return _any_of(d, field, op, arg)
    if name in _COMPARE:
        field.check_column_value(arg)
        if not (_is_number(arg) or isinstance(arg, str)):
            raise ValueError(f"'{op}' on {field.name!r} compares numbers or strings, got {arg!r}")
        return d.compare(field, _COMPARE[name], arg)
    if name in ("contains", "icontains"):
        if not isinstance(arg, str):
            raise ValueError(f"'{op}' on {field.name!r} takes a string, got {arg!r}")
        return d.contains(field, arg, fold=name == "icontains")
    raise ValueError(
        f"unknown filter operator {op!r} on {field.name!r}; use one of {_OPERATOR_LIST}"
    )


def _condition(d: Dialect, key: Any, condition: Any) -> Sql:
    field = _Field.of(key)
    if isinstance(condition, str) and condition == WILDCARD:
        return d.present(field)
    if not isinstance(condition, Mapping):
        return _equals(d, field, condition)
    if not condition:
        raise ValueError(f"filter on {key!r} is an empty dict; give an operator, e.g. {{'eq': 1}}")
    parts = []
    for op, arg in condition.items():
        if not isinstance(op, str):
            raise ValueError(f"filter operator {op!r} on {key!r} must be one of {_OPERATOR_LIST}")
        parts.append(_operator(d, field, op, arg))
    return _joined(d, parts, "AND")


def _joined(d: Dialect, parts: list[Sql], glue: str) -> Sql:
    if not parts:
        return (d.true if glue == "AND" else d.false), []
    return "(" + f" {glue} ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]


def _logical(d: Dialect, key: str, operands: Any, depth: int) -> Sql:
    glue = _LOGICAL[key]
    if isinstance(operands, Mapping):
        operands = [operands]
    if not isinstance(operands, list | tuple):
        raise ValueError(f"{key!r} takes a list of filters, e.g. {{{key!r}: [{{'kind': 'a'}}]}}")
    parts = [_filter(d, operand, depth + 1) for operand in operands]
    if glue == "NOT":
        sql, params = _joined(d, parts, "OR")
        return f"(NOT {sql})", params
    return _joined(d, parts, glue)


def _filter(d: Dialect, filters: Any, depth: int) -> Sql:
    if not isinstance(filters, Mapping):
        raise ValueError(
            f"a filter is a dict of field -> condition (or AND / OR / NOT -> list of filters), "
            f"got {filters!r}"
        )
    if depth > MAX_DEPTH:
        raise ValueError(f"filters nest AND / OR / NOT deeper than {MAX_DEPTH} levels; flatten")
    parts = [
        _logical(d, key, condition, depth) if key in _LOGICAL else _condition(d, key, condition)
        for key, condition in filters.items()
    ]
    return _joined(d, parts, "AND")


def compile_filters(filters: Mapping[str, Any] | None, dialect: Dialect = SQLITE) -> Sql:
    """SQL condition and parameters for `filters` (`dialect.true` for none); ValueError names a
    bad part."""
    if filters is None:
        return dialect.true, []
    return _filter(dialect, filters, 0)


SCOPE_COLUMNS = ("user_id", "agent_id", "session_id")


def scope_where(
    scope: Any,
    filters: Mapping[str, Any] | None = None,
    *,
    exact_scope: bool = False,
    dialect: Dialect = SQLITE,
) -> Sql:
    """WHERE clause + parameters for a `Scope` (a None field matches anything unless
    `exact_scope`) and `filters`."""
    mark = "%s" if isinstance(dialect, PostgresDialect) else "?"
    clauses: list[str] = []
    params: list[Any] = []
    for column in SCOPE_COLUMNS:
        value = getattr(scope, column)
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
        elif exact_scope:
            clauses.append(f"{column} IS NULL")
    if filters is not None:
        sql, extra = compile_filters(filters, dialect)
        clauses.append(sql)
        params.extend(extra)
    return " AND ".join(clauses) or dialect.true, params
