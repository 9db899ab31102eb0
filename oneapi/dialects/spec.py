"""Dialect files (dialects.d/*.yaml): client formats described as data, compiled once per snapshot.

A dialect names its routes, where the client key and the model are, how the gateway's refusals look in it, and
the mappings between it and the canonical form (OpenAI chat): request in, answer and stream out (docs/dialects.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

from ..documents import ConfigError, Document, Problem, parse_document, read_text, validate
from ..mapping import Compiler, Expression, MappingError
from ..streams import StreamSpec, compile_stream

_HOLE = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    """One HTTP route of a dialect: method and path (with {name} holes, read as `_path.name`) to an operation."""

    method: str
    path: str
    operation: str  # chat | count_tokens | models | stored
    pattern: re.Pattern[str] | None  # None: the path is literal

    def match(self, path: str) -> dict[str, str] | None:
        if self.pattern is None:
            return {} if path == self.path else None
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found else None


@dataclass(frozen=True)
class KeySource:
    """Where a client may put its key: a header (optionally after a scheme such as Bearer), or a query parameter."""

    header: str | None = None
    scheme: str | None = None  # lower-case, e.g. "bearer"
    query: str | None = None


@dataclass(frozen=True)
class Check:
    """A request the dialect refuses with a 400: always, or only where it would be translated."""

    when: Expression
    message: Expression
    translated_only: bool = False


@dataclass(frozen=True)
class Dialect:
    name: str
    file: str
    routes: tuple[Route, ...]
    keys: tuple[KeySource, ...]
    model: Expression  # the model name, from the body (and `_path`, `_query`)
    stream: Expression | None  # whether the answer streams (`stream.when`); None: never
    checks: tuple[Check, ...]
    request: Expression  # dialect body -> canonical chat body
    extensions: Expression | None  # dialect body -> gateway extension fields (read by provider mappings, never sent as they are)
    response: Expression  # canonical chat body (+ _options) -> dialect body
    stream_spec: StreamSpec | None  # canonical stream events -> dialect events
    stream_sequence: str | None  # a data field numbered in stream order (`stream.sequence`), or None
    error_body: Expression  # {status, type, message, code} -> the dialect's error body
    error_types: Mapping[str, str]  # HTTP status (or 4xx / 5xx) -> the dialect's error type
    usage_body: Expression | None  # a native answer body -> its usage object
    usage_events: tuple[tuple[str, Expression], ...]  # (event name, usage object in it) for native streams, merged in order
    count: Expression | None  # {input_tokens} estimate (+ _request) -> the count_tokens answer
    affinity_request: Expression | None = None  # the body -> the name of the stored answer it continues (`affinity.request`)
    affinity_answer: Expression | None = None  # a native answer body -> its name
    affinity_events: tuple[tuple[str, Expression], ...] = ()  # (event name, its name in it) for a native stream's first event
    affinity_ttl: float = 0.0
    json_array: Expression | None = None  # the stream is one JSON array of the events' data rather than SSE (`stream.json_array_when`)
    models: Expression | None = None  # the token's model list (OpenAI's shape) -> the answer of a `models` route
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tests: tuple[Any, ...] = ()
    document: Document | None = None

    def error_type(self, status: int) -> str:
        table = self.error_types
        return table.get(str(status)) or table.get(f"{status // 100}xx") or table.get("*") or "error"

    def client_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The first key found, in the order the file lists the places."""
        for source in self.keys:
            if source.query is not None:
                value = query.get(source.query)
            else:
                value = headers.get(source.header or "")
                if value is not None and source.scheme is not None:
                    scheme, _, rest = value.partition(" ")
                    value = rest.strip() if scheme.lower() == source.scheme else None
            if value:
                return value.strip()
        return None


def load_dialects(*directories: Path) -> tuple[dict[str, Dialect], list[Document]]:
    """Every dialect file in `directories` (a missing one has none; a later one's file replaces an earlier one's of
    the same name, as providers_dir does the shipped vendors), validated and compiled; raise on any problem."""
    files = {path.stem: path for directory in dict.fromkeys(directories) if directory.is_dir()
             for path in sorted(directory.glob("*.yaml"))}
    problems: list[Problem] = []
    dialects: dict[str, Dialect] = {}
    docs: list[Document] = []
    for path in files.values():
        try:
            doc = parse_document(str(path), read_text(str(path)))
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if doc.data is None:
            doc.data = {}
        found = validate(doc, "dialect.schema.json")
        if not found and doc.data.get("name", path.stem) != path.stem:
            found.append(doc.problem(("name",), f"name {doc.data['name']!r} differs from the file name {path.stem!r}"))
        problems.extend(found)
        docs.append(doc)
        if not found:
            try:
                dialects[path.stem] = _compile(path.stem, doc)
            except ConfigError as exc:
                problems.extend(exc.problems)
    routes: dict[tuple[str, str], str] = {}
    for dialect in dialects.values():
        for route in dialect.routes:
            other = routes.setdefault((route.method, route.path), dialect.name)
            if other != dialect.name:
                problems.append(Problem(dialect.file, 1, f"route {route.method} {route.path} is also declared by dialect {other!r}"))
    if problems:
        raise ConfigError(problems)
    return dialects, docs


def _compile(name: str, doc: Document) -> Dialect:
    data = doc.data
    compiler = Compiler(data.get("tables") or {})
    problems: list[Problem] = []

    def expr(path: tuple[Any, ...], source: str | None, output: bool = False) -> Expression | None:
        if source is None:
            return None
        try:
            return compiler.compile_output(source) if output else compiler.compile(source)
        except MappingError as exc:
            problems.append(doc.problem(path, f"{'.'.join(map(str, path))}: {exc}"))
            return None

    routes = []
    for i, raw in enumerate(data["routes"]):
        holes = _HOLE.findall(raw["path"])
        pattern = None
        if holes:
            regex = "".join(f"(?P<{part[1:-1]}>[^/]+?)" if _HOLE.fullmatch(part) else re.escape(part)
                            for part in re.split(r"(\{[a-z_]+\})", raw["path"]) if part)
            pattern = re.compile(regex)
        routes.append(Route(raw.get("method", "POST"), raw["path"], raw["operation"], pattern))
    keys = tuple(KeySource(header=k.get("header", "").lower() or None, scheme=(k.get("scheme") or "").lower() or None, query=k.get("query"))
                 for k in data["keys"])
    checks = []
    for i, raw in enumerate(data.get("checks") or ()):
        when = expr(("checks", i, "when"), raw["when"])
        message = expr(("checks", i, "message"), raw["message"])
        if when is not None and message is not None:
            checks.append(Check(when, message, raw.get("only") == "translated"))
    errors = data["errors"]
    stream_spec = None
    if data.get("stream") is not None:
        try:
            stream_spec = compile_stream(data["stream"], compiler, lambda i: doc.line(("stream", "rules", i)))
        except (MappingError, KeyError, ValueError) as exc:
            problems.append(doc.problem(("stream",), f"stream: {exc}"))

    def named_events(section: str) -> tuple[tuple[str, Expression], ...]:
        """A section's `events:` map (event name -> expression on its data), compiled."""
        compiled = ((name, expr((section, "events", name), source)) for name, source in ((data.get(section) or {}).get("events") or {}).items())
        return tuple((name, found) for name, found in compiled if found is not None)

    usage = data.get("usage") or {}
    affinity = data.get("affinity") or {}
    dialect = Dialect(
        name=name,
        file=doc.file,
        routes=tuple(routes),
        keys=keys,
        model=expr(("model",), data["model"]),  # type: ignore[arg-type]
        stream=expr(("stream", "when"), (data.get("stream") or {}).get("when")),
        checks=tuple(checks),
        request=expr(("request",), data["request"], output=True),  # type: ignore[arg-type]
        extensions=expr(("extensions",), data.get("extensions"), output=True),
        response=expr(("response",), data["response"], output=True),  # type: ignore[arg-type]
        stream_spec=stream_spec,
        stream_sequence=(data.get("stream") or {}).get("sequence"),
        error_body=expr(("errors", "body"), errors["body"], output=True),  # type: ignore[arg-type]
        error_types=MappingProxyType({str(k): v for k, v in (errors.get("types") or {}).items()}),
        usage_body=expr(("usage", "body"), usage.get("body")),
        usage_events=named_events("usage"),
        count=expr(("count_tokens",), data.get("count_tokens"), output=True),
        affinity_request=expr(("affinity", "request"), affinity.get("request")),
        affinity_answer=expr(("affinity", "answer"), affinity.get("answer")),
        affinity_events=named_events("affinity"),
        affinity_ttl=float(affinity.get("ttl") or 0),
        json_array=expr(("stream", "json_array_when"), (data.get("stream") or {}).get("json_array_when")),
        models=expr(("models",), data.get("models"), output=True),
        tables=MappingProxyType(dict(data.get("tables") or {})),
        tests=tuple(data.get("tests") or ()),
        document=doc,
    )
    if problems:
        raise ConfigError(problems)
    return dialect


class RouteMatch(NamedTuple):
    """A request's path matched to a dialect route: what the relay needs to read it."""

    dialect: Dialect
    operation: str
    path: Mapping[str, str]  # the route's {holes}
    query: Mapping[str, str]


def match_route(routes: tuple[tuple[Route, Dialect], ...], method: str, path: str, query: Mapping[str, str]) -> RouteMatch | None:
    for route, dialect in routes:
        if route.method == method or route.pattern is None:  # a literal path with another method: refused with 405 later
            found = route.match(path)
            if found is not None:
                return RouteMatch(dialect, route.operation, found, query)
    return None
