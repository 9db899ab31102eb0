"""Mappings: JMESPath expressions compiled once, plus the few functions JMESPath lacks.

A provider file maps bodies with JMESPath. The language has no JSON parse/dump, no
conditionals, no arithmetic and no way to group consecutive items, so the engine adds a
small documented set of functions (docs/providers.md, "Mapping functions"). Enum tables
come from the provider file itself, which is why a function set is built per provider.
"""

from __future__ import annotations

import base64
import re
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

import jmespath
import orjson
from jmespath import exceptions as jmes_errors
from jmespath import functions

from .closures import Evaluate, compile_output_tree, compile_tree, drop_nulls, is_false

_DATA_URL = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)$", re.S)


class MappingError(ValueError):
    """An expression that does not compile, or fails on a document."""


class _Functions(functions.Functions):
    """The extra functions; `tables` are the provider file's enum tables."""

    def __init__(self, tables: Mapping[str, Mapping[str, Any]]):
        super().__init__()
        self.tables = tables

    # --- JSON --------------------------------------------------------------

    @functions.signature({"types": []})
    def _func_json_parse(self, value: Any) -> Any:
        """A JSON text to its value; null for null or text that is not JSON; non-strings pass through."""
        if not isinstance(value, str):
            return value
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None

    @functions.signature({"types": []})
    def _func_json_dump(self, value: Any) -> str:
        """Any value as compact JSON text; a string is returned as it is (it is already text)."""
        if isinstance(value, str):
            return value
        return orjson.dumps(value).decode()

    # --- content -----------------------------------------------------------

    @functions.signature({"types": []})
    def _func_data_url(self, value: Any) -> Any:
        """'data:image/png;base64,AAAA' -> {media_type, data, base64}; null for anything else."""
        if not isinstance(value, str):
            return None
        match = _DATA_URL.match(value)
        if match is None:
            return None
        is_base64 = ";base64" in match.group("params")
        data = match.group("data")
        if not is_base64:
            from urllib.parse import unquote_to_bytes

            data = base64.b64encode(unquote_to_bytes(data)).decode()
        return {"media_type": match.group("type") or "text/plain", "data": data, "base64": True}

    @functions.signature({"types": []})
    def _func_as_parts(self, value: Any) -> list[Any]:
        """OpenAI message content (string, parts array or null) as a parts array."""
        if value is None:
            return []
        if isinstance(value, str):
            return [{"type": "text", "text": value}] if value else []
        if isinstance(value, list):
            return value
        return [value]

    @functions.signature({"types": []})
    def _func_as_text(self, value: Any) -> Any:
        """OpenAI message content as one string: text parts joined; null stays null."""
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list):
            return "".join(p.get("text", "") for p in value if isinstance(p, dict) and p.get("type", "text") == "text")
        return str(value)

    @functions.signature({"types": ["array", "null"]})
    def _func_float32_base64(self, numbers: Any) -> Any:
        """An array of numbers as base64 of little-endian float32 (OpenAI's encoding_format=base64)."""
        if numbers is None:
            return None
        return base64.b64encode(struct.pack(f"<{len(numbers)}f", *numbers)).decode()

    # --- tables and defaults ----------------------------------------------

    @functions.signature({"types": ["string"]}, {"types": []})
    def _func_enum(self, table: str, value: Any) -> Any:
        """Look `value` up in the provider's `tables.<table>`; '*' is the fallback entry; null if absent."""
        entries = self.tables.get(table)
        if entries is None:
            raise jmes_errors.JMESPathError(f"enum(): no table {table!r} in this provider file")
        if value is None:
            return None
        key = value if isinstance(value, str) else orjson.dumps(value).decode()
        if key in entries:
            return entries[key]
        return entries.get("*")

    @functions.signature({"types": []}, {"types": []})
    def _func_default(self, value: Any, fallback: Any) -> Any:
        """`value` unless it is null (unlike `||`, keeps 0, false and '')."""
        return fallback if value is None else value

    @functions.signature({"types": []}, {"types": []}, {"types": []})
    def _func_if(self, condition: Any, then: Any, otherwise: Any) -> Any:
        """`then` if `condition` is truthy in JMESPath's sense, else `otherwise` (both are evaluated)."""
        return otherwise if is_false(condition) else then

    @functions.signature({"types": ["object", "array", "null"]}, {"types": []})
    def _func_get(self, obj: Any, key: Any) -> Any:
        """obj[key] with a computed key, or array[index] with a computed index; null when absent."""
        if obj is None or key is None:
            return None
        if isinstance(obj, list):
            if not isinstance(key, (int, float)) or isinstance(key, bool) or key != int(key) or not -len(obj) <= key < len(obj):
                return None
            return obj[int(key)]
        return obj.get(key if isinstance(key, str) else str(key))

    # --- arrays and objects ------------------------------------------------

    @functions.signature({"types": ["array", "null"]}, {"types": ["expref"]})
    def _func_group_runs(self, array: Any, expref: Any) -> list[list[Any]]:
        """Consecutive items with equal key(item) grouped into arrays: [a, a, b, a] -> [[a, a], [b], [a]]."""
        groups: list[list[Any]] = []
        last: Any = object()
        for item in array or ():
            key = expref.visit(expref.expression, item)
            if groups and key == last:
                groups[-1].append(item)
            else:
                groups.append([item])
                last = key
        return groups

    @functions.signature({"types": ["array", "null"]}, {"types": ["number"]})
    def _func_enumerate(self, array: Any, start: Any) -> list[dict[str, Any]]:
        """[x, y] -> [{index: start, item: x}, {index: start+1, item: y}]."""
        return [{"index": int(start) + i, "item": item} for i, item in enumerate(array or ())]

    @functions.signature({"types": ["array", "null"]})
    def _func_from_entries(self, pairs: Any) -> dict[str, Any]:
        """[[key, value], ...] or [{key, value}, ...] -> object; null keys are skipped."""
        out: dict[str, Any] = {}
        for pair in pairs or ():
            if isinstance(pair, dict):
                key, value = pair.get("key"), pair.get("value")
            elif isinstance(pair, list) and len(pair) == 2:
                key, value = pair
            else:
                continue
            if key is not None:
                out[str(key)] = value
        return out

    @functions.signature({"types": ["object", "null"]})
    def _func_entries(self, obj: Any) -> list[dict[str, Any]]:
        """{a: 1} -> [{key: 'a', value: 1}]."""
        return [{"key": k, "value": v} for k, v in (obj or {}).items()]

    @functions.signature({"types": ["array", "null"]}, {"types": ["string"]}, {"types": []})
    def _func_annotate(self, array: Any, key: str, value: Any) -> list[Any]:
        """Each object in `array` with `key` set to `value`: brings outer data into a projection."""
        return [{**item, key: value} if isinstance(item, dict) else item for item in array or ()]

    @functions.signature({"types": []}, {"types": [], "variadic": True})
    def _func_concat(self, *arrays: Any) -> list[Any]:
        """Arrays joined end to end; null arguments are skipped, a non-array is one item."""
        out: list[Any] = []
        for value in arrays:
            if value is None:
                continue
            out.extend(value if isinstance(value, list) else [value])
        return out

    @functions.signature({"types": ["number", "null"], "variadic": True})
    def _func_add(self, *numbers: Any) -> Any:
        """Sum of the arguments, null ones counting as 0."""
        for n in numbers:  # jmespath checks a variadic signature's first argument only
            if n is not None and (type(n) is bool or not isinstance(n, (int, float))):
                raise jmes_errors.JMESPathTypeError("add", n, type(n).__name__, ["number", "null"])
        return sum(n for n in numbers if n is not None)

    @functions.signature({"types": ["object", "null"]}, {"types": ["string"], "variadic": True})
    def _func_omit(self, obj: Any, *keys: str) -> Any:
        """The object without the named keys: omit(input_schema, '$schema') -> the schema some vendors refuse, cleaned."""
        if obj is None:
            return None
        return {k: v for k, v in obj.items() if k not in keys}

    @functions.signature({"types": ["number", "null"]}, {"types": ["number", "null"]})
    def _func_sub(self, minuend: Any, subtrahend: Any) -> Any:
        """`minuend` less `subtrahend`, null counting as 0: sub(`10`, `3`) -> 7."""
        return (minuend or 0) - (subtrahend or 0)

    @functions.signature({"types": ["string", "null"]})
    def _func_lower(self, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else None

    @functions.signature({"types": ["string", "null"]})
    def _func_upper(self, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else None

    @functions.signature({"types": []})
    def _func_json_schema(self, value: Any) -> Any:
        """A tool schema in JSON Schema's spelling: OpenAPI's upper-case type names (OBJECT, STRING) lower-cased at every depth."""
        if isinstance(value, dict):
            return {k: (v.lower() if k == "type" and isinstance(v, str) else
                        [t.lower() if isinstance(t, str) else t for t in v] if k == "type" and isinstance(v, list) else
                        self._func_json_schema(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._func_json_schema(v) for v in value]
        return value

    @functions.signature({"types": ["string", "null"]}, {"types": ["string"]})
    def _func_split(self, value: Any, sep: str) -> Any:
        return value.split(sep) if isinstance(value, str) else None

    # --- generated values --------------------------------------------------

    @functions.signature()
    def _func_uuid(self) -> str:
        """A random UUID4 as text (hex with dashes)."""
        return str(uuid.uuid4())

    @functions.signature()
    def _func_now(self) -> int:
        """Unix time in whole seconds."""
        return int(time.time())


@dataclass(frozen=True)
class Expression:
    """One JMESPath expression, compiled to a closure bound to its provider's functions (closures.py)."""

    source: str
    evaluate: Evaluate  # the bare closure: raises jmespath's own errors (a hot loop may call it and convert them once)
    drops_nulls: bool = False  # compiled with Compiler.compile_output: results come with null keys left out

    def search(self, data: Any) -> Any:
        try:
            return self.evaluate(data)
        except jmes_errors.JMESPathError as exc:
            raise self.failed(exc) from None

    def failed(self, exc: Exception) -> MappingError:
        """The MappingError for `exc`, raised while evaluating this expression."""
        return MappingError(f"{exc} (in expression {self.source.strip()[:120]!r})")


class Compiler:
    """Compiles the expressions of one provider file against its enum tables."""

    def __init__(self, tables: Mapping[str, Mapping[str, Any]] | None = None):
        self.options = jmespath.Options(custom_functions=_Functions(dict(tables or {})))

    def compile(self, source: str) -> Expression:
        return Expression(source, compile_tree(self.parse(source), self.options))

    def compile_output(self, source: str) -> Expression:
        """For an expression whose result is a mapped body or an emitted chunk: searching it gives what
        drop_nulls(search) would, in one pass (closures.compile_output_tree)."""
        return Expression(source, compile_output_tree(self.parse(source), self.options), drops_nulls=True)

    @staticmethod
    def parse(source: str) -> dict[str, Any]:
        """The expression's syntax tree; MappingError when it is not JMESPath."""
        try:
            return jmespath.compile(source).parsed
        except jmes_errors.JMESPathError as exc:
            raise MappingError(f"bad JMESPath: {exc}".replace("\n", " ")) from None

    def compile_object(self, spec: Mapping[str, str]) -> dict[str, Expression]:
        """{name: expression text} -> {name: Expression}."""
        return {name: self.compile(text) for name, text in spec.items()}


FUNCTION_NAMES = tuple(sorted(name[6:] for name in dir(_Functions) if name.startswith("_func_") and name not in {f"_func_{n}" for n in
                              [m[6:] for m in dir(functions.Functions) if m.startswith("_func_")]}))


@dataclass(frozen=True)
class BodyMapping:
    """How an operation's bodies are translated: OpenAI request -> vendor request, vendor response -> OpenAI."""

    request: Expression | None  # None: the OpenAI body is sent as it is
    request_set: tuple[tuple[str, Expression], ...]  # top-level keys set (or removed, when null) after `request`
    response: Expression | None  # None: the vendor body is already OpenAI-shaped


@dataclass(frozen=True)
class ErrorSpec:
    """How a vendor's error bodies become OpenAI's error shape, and whether to try the next channel."""

    when: Expression | None  # on a 2xx body: it is an error all the same
    message: Expression | None
    type: Expression | None
    code: Expression | None
    status: Expression | None  # the HTTP status an in-200 error stands for
    retryable: Expression | None  # overrides the status rule (429, 5xx, 401/403 -> next channel)


def compile_errors(raw: Mapping[str, Any] | None, compiler: Compiler) -> ErrorSpec | None:
    if not raw:
        return None

    def expr(name: str) -> Expression | None:
        return compiler.compile(raw[name]) if raw.get(name) else None

    return ErrorSpec(expr("when"), expr("message"), expr("type"), expr("code"), expr("status"), expr("retryable"))


def map_request(mapping: BodyMapping, body: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
    """The vendor request body for an OpenAI request body (reserved key `_options` = channel options)."""
    if mapping.request is None and not mapping.request_set:
        return dict(body)
    doc = {**body, "_options": options}
    out = _cleaned(mapping.request, doc) if mapping.request is not None else dict(body)
    if mapping.request_set and isinstance(out, dict):
        for key, expression in mapping.request_set:
            value = expression.search(doc)
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value if expression.drops_nulls else drop_nulls(value)
    return out


def map_response(mapping: BodyMapping, vendor: Any, request: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
    """The OpenAI response body for a vendor response (reserved keys `_request`, `_options`)."""
    if mapping.response is None:
        return vendor
    doc = dict(vendor) if isinstance(vendor, dict) else {"_data": vendor}
    doc["_request"] = request
    doc["_options"] = options
    return _cleaned(mapping.response, doc)


def _cleaned(expression: Expression, doc: Any) -> Any:
    """The expression's result with null keys left out at every depth."""
    result = expression.search(doc)
    return result if expression.drops_nulls else drop_nulls(result)
