"""Provider files (providers.d/*.yaml): vendors described as data, compiled once per snapshot."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import quote, urlsplit

from .documents import ConfigError, Document, Problem, Sources, parse_document, read_text, validate
from .mapping import BodyMapping, Compiler, ErrorSpec, MappingError, compile_errors
from .streams import StreamSpec, compile_stream

OPERATIONS = ("chat", "completions", "embeddings", "images", "audio_speech", "audio_transcriptions", "moderations", "rerank", "models")
# operations whose bodies are not JSON both ways (a multipart upload, an audio answer): relayed as they are only
RELAYED_ONLY = ("audio_speech", "audio_transcriptions")

# a base URL whose path already ends like this is used as given: .../v1, .../api/v1, .../openai/v1, .../api/paas/v4
_VERSION_SEGMENT = re.compile(r"/v\d+(?:[a-z]+\d*)?/?$")


@dataclass(frozen=True)
class Template:
    """A path or query template: literal text with {model}, {key} and {options.NAME} holes."""

    parts: tuple[tuple[str, str | None], ...]  # (literal, field or None)
    source: str

    @classmethod
    def compile(cls, text: str) -> "Template":
        parts = []
        for literal, hole, _spec, _conv in string.Formatter().parse(text):
            if hole is not None and hole not in ("model", "key") and not hole.startswith("options."):
                raise ValueError(f"unknown template hole {{{hole}}} (use {{model}}, {{key}} or {{options.NAME}})")
            parts.append((literal, hole))
        return cls(tuple(parts), text)

    @property
    def is_literal(self) -> bool:
        return all(hole is None for _, hole in self.parts)

    def fields(self) -> set[str]:
        return {hole for _, hole in self.parts if hole}

    def render(self, model: str, key: str, options: Mapping[str, Any], escape: bool = True) -> str:
        out = []
        for literal, hole in self.parts:
            out.append(literal)
            if hole is None:
                continue
            if hole == "model":
                value = model
            elif hole == "key":
                value = key
            else:
                value = str(options.get(hole[8:], ""))
            out.append(quote(value, safe="") if escape else value)
        return "".join(out)


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: Template
    query: tuple[tuple[str, Template], ...]
    format: str  # "openai": the request and response are relayed as they are; "mapped": translated
    headers: Mapping[str, str] = field(default_factory=dict)
    mapping: BodyMapping | None = None
    stream: StreamSpec | None = None  # how a streamed answer is read; None: relayed as it is
    stream_path: Template | None = None  # where a streamed request goes when that differs
    stream_query: tuple[tuple[str, Template], ...] | None = None
    stream_headers: Mapping[str, str] = field(default_factory=dict)
    translated: bool = False  # the relay hands this operation to translate.py (mapped format or a signer)


# auth styles computed per request by oneapi/signers.py rather than once per key
SIGNER_STYLES = ("aws_sigv4", "tc3_hmac_sha256", "jwt_hs256", "oauth_client_credentials", "oauth_jwt_bearer")


@dataclass(frozen=True)
class AuthSpec:
    style: str  # bearer | header | query | none | one of SIGNER_STYLES
    header: str | None = None
    prefix: str = ""
    param: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # a signer's settings (service, token_url, scope, ...)

    @property
    def signer(self) -> bool:
        return self.style in SIGNER_STYLES


@dataclass(frozen=True)
class NativeDialect:
    """A client dialect the vendor speaks itself (`dialects:` in a provider file): where each of its operations
    goes, and which of the client's headers go along. Requests are relayed as sent, answers byte for byte."""

    operations: Mapping[str, Operation]
    forward_headers: tuple[str, ...] = ()  # lower-case names


@dataclass(frozen=True)
class Provider:
    name: str
    file: str
    base_url: str | None
    api_prefix: str
    auth: AuthSpec
    headers: Mapping[str, str]
    options: Mapping[str, Any]
    operations: Mapping[str, Operation]
    errors: ErrorSpec | None = None
    tests: tuple[Any, ...] = ()  # this file's own self-test cases (never inherited)
    document: Document | None = None
    dialects: Mapping[str, NativeDialect] = field(default_factory=dict)  # client dialects relayed natively

    @cached_property
    def required_options(self) -> frozenset[str]:
        """Options that a path or query template reads and this file gives no default for: each channel must set them."""
        templates = [t for op in self.operations.values()
                     for t in (op.path, op.stream_path, *(t for _, t in op.query), *(t for _, t in op.stream_query or ()))
                     if t is not None]
        return frozenset(hole[8:] for t in templates for hole in t.fields() if hole.startswith("options.")) - set(self.options)

    def endpoint(self, base_url: str | None) -> str | None:
        """The URL that operation paths are appended to, One API style: origin plus optional prefix."""
        base = (base_url or self.base_url or "").rstrip("/")
        if not base:
            return None
        path = urlsplit(base).path
        prefix = self.api_prefix.rstrip("/")
        if _VERSION_SEGMENT.search(path) or (prefix and path.endswith(prefix)):  # One API's base URLs often hold the prefix
            return base
        return base + self.api_prefix.rstrip("/")


@dataclass
class ProviderCache:
    """The last compiled provider files: reused while every file's text, and what its `${...}` read, is the same."""

    texts: dict[Path, str | ConfigError] = field(default_factory=dict)
    loaded: tuple[dict[str, Provider], list[Document]] | None = None


def provider_files(*directories: Path) -> dict[str, Path]:
    """Each provider's file by name: a later folder's file replaces an earlier folder's file of the same name."""
    files: dict[str, Path] = {}
    seen: set[Path] = set()
    for directory in directories:
        if directory.resolve() in seen:  # providers_dir naming the shipped folder itself
            continue
        seen.add(directory.resolve())
        if not directory.is_dir():
            raise ConfigError([Problem(str(directory), 1, "providers_dir is not a folder")])
        files.update((path.stem, path) for path in directory.glob("*.yaml"))
    return dict(sorted(files.items()))


def load_providers(*directories: Path, cache: ProviderCache | None = None) -> tuple[dict[str, Provider], list[Document]]:
    """Read every provider file in `directories` (later ones override earlier ones by name), resolve `extends`,
    validate and compile; raise on any problem."""
    texts: dict[Path, str | ConfigError] = {}
    for path in provider_files(*directories).values():
        try:
            texts[path] = read_text(str(path))
        except ConfigError as exc:
            texts[path] = exc  # never equal to another: a file that cannot be read is never taken from the cache
    if cache is not None and cache.loaded is not None and cache.texts == texts:
        sources = Sources()
        if all(sources.hold(doc.reads) for doc in cache.loaded[1]):
            return cache.loaded
    loaded = _load_providers(texts)
    if cache is not None:
        cache.texts, cache.loaded = texts, loaded
    return loaded


def _load_providers(texts: dict[Path, str | ConfigError]) -> tuple[dict[str, Provider], list[Document]]:
    docs: dict[str, Document] = {}
    problems: list[Problem] = []
    for path, text in texts.items():
        try:
            if isinstance(text, ConfigError):
                raise text
            doc = parse_document(str(path), text)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if doc.data is None:
            doc.data = {}
        found = validate(doc, "provider.schema.json")
        problems.extend(found)
        name = path.stem
        if not found and doc.data.get("name", name) != name:
            problems.append(doc.problem(("name",), f"name {doc.data['name']!r} differs from the file name {name!r}"))
        docs[name] = doc
    if problems:
        raise ConfigError(problems)

    providers: dict[str, Provider] = {}
    for name, doc in docs.items():
        try:
            merged = _resolve(name, docs, ())
            providers[name] = _compile(name, doc, merged)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return providers, list(docs.values())


def _resolve(name: str, docs: dict[str, Document], chain: tuple[str, ...]) -> dict[str, Any]:
    doc = docs[name]
    parent_name = doc.data.get("extends")
    if parent_name is None:
        return doc.data
    if parent_name not in docs:
        raise ConfigError([doc.problem(("extends",), f"extends {parent_name!r}, but there is no {parent_name}.yaml")])
    if parent_name in chain or parent_name == name:
        raise ConfigError([doc.problem(("extends",), f"extends forms a cycle: {' -> '.join((*chain, name, parent_name))}")])
    parent = dict(_resolve(parent_name, docs, chain + (name,)))
    parent.pop("dialects", None)  # a file's native dialects are its own: a compatible vendor does not speak its parent's other APIs
    return _merge(parent, doc.data)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if key in ("extends", "name"):
            continue
        if key == "tests":
            continue  # a file's self-tests test that file; a child brings its own
        if key == "auth":
            out[key] = value  # an auth style is replaced whole, never blended with the parent's
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _compile(name: str, doc: Document, data: dict[str, Any]) -> Provider:
    problems: list[Problem] = []
    auth_raw = data.get("auth") or {"style": "bearer"}
    auth = AuthSpec(
        style=auth_raw["style"], header=auth_raw.get("header"), prefix=auth_raw.get("prefix", ""), param=auth_raw.get("param"),
        params=MappingProxyType({k: v for k, v in auth_raw.items() if k not in ("style", "header", "prefix", "param")}),
    )
    compiler = Compiler(data.get("tables") or {})
    operations: dict[str, Operation] = {}
    for op_name, raw in (data.get("operations") or {}).items():
        if raw is None:  # `embeddings: null` removes an operation inherited through extends
            continue
        try:
            operations[op_name] = _compile_operation(op_name, raw, compiler, auth, doc)
        except (ValueError, KeyError) as exc:
            problems.append(doc.problem(("operations", op_name), f"operation {op_name}: {exc}"))
    dialects: dict[str, NativeDialect] = {}
    for dialect_name, raw in (data.get("dialects") or {}).items():
        if raw is None:  # `anthropic-messages: null`: declared, and not spoken
            continue
        native_ops: dict[str, Operation] = {}
        for op_name, op_raw in (raw.get("operations") or {}).items():
            if op_raw is None:
                continue
            try:
                native_ops[op_name] = _compile_operation(op_name, {**op_raw, "format": "openai"}, compiler, auth, doc)
            except (ValueError, KeyError) as exc:
                problems.append(doc.problem(("dialects", dialect_name, "operations", op_name), f"dialect {dialect_name} {op_name}: {exc}"))
        dialects[dialect_name] = NativeDialect(MappingProxyType(native_ops), tuple(h.lower() for h in raw.get("forward_headers") or ()))
    errors = None
    try:
        errors = compile_errors(data.get("errors"), compiler)
    except MappingError as exc:
        problems.append(doc.problem(("errors",), f"errors: {exc}"))
    if problems:
        raise ConfigError(problems)
    return Provider(
        name=name,
        file=doc.file,
        base_url=data.get("base_url"),
        api_prefix=data.get("api_prefix", ""),
        auth=auth,
        headers=MappingProxyType(_headers(data.get("headers"))),
        options=MappingProxyType(dict(data.get("options") or {})),
        operations=MappingProxyType(operations),
        errors=errors,
        tests=tuple((doc.data or {}).get("tests") or ()),
        document=doc,
        dialects=MappingProxyType(dialects),
    )


def _headers(raw: Mapping[str, str | None] | None) -> dict[str, str]:
    """Headers after `extends` merged them: a null value removes the header (any spelling of its name)
    that a parent file set, e.g. `headers: {x-api-version: null}`."""
    out: dict[str, str] = {}
    for name, value in (raw or {}).items():
        if value is None:
            for existing in [k for k in out if k.lower() == name.lower()]:
                del out[existing]
        else:
            out[name] = value
    return out


def _compile_operation(op_name: str, raw: dict[str, Any], compiler: Compiler, auth: AuthSpec, doc: Document) -> Operation:
    fmt = raw.get("format", "openai")
    mapping = None
    if fmt != "openai" or raw.get("request_set"):
        mapping = BodyMapping(
            request=compiler.compile_output(raw["request"]) if raw.get("request") else None,
            request_set=tuple((k, compiler.compile_output(v)) for k, v in (raw.get("request_set") or {}).items()),
            response=compiler.compile_output(raw["response"]) if raw.get("response") else None,
        )
    translated = fmt != "openai" or auth.signer or mapping is not None
    if translated and op_name in RELAYED_ONLY:
        # an upload is streamed and an audio answer is bytes: neither passes through a JSON mapping or a body signature
        raise ValueError(f"is relayed as it is: it cannot be mapped (format: mapped, request_set) or use a signer auth style "
                         f"(if the vendor has no such API, remove the inherited one with `{op_name}: null`)")
    stream_raw = raw.get("stream") or {}
    stream = None
    if stream_raw.get("rules") is not None:
        stream = compile_stream(stream_raw, compiler, lambda i: doc.line(("operations", op_name, "stream", "rules", i)))
    return Operation(
        name=op_name,
        method=raw.get("method", "GET" if op_name == "models" else "POST"),
        path=Template.compile(raw["path"]),
        query=tuple((k, Template.compile(v)) for k, v in (raw.get("query") or {}).items()),
        format=fmt,
        headers=MappingProxyType(_headers(raw.get("headers"))),
        mapping=mapping,
        stream=stream,
        stream_path=Template.compile(stream_raw["path"]) if stream_raw.get("path") else None,
        stream_query=tuple((k, Template.compile(v)) for k, v in stream_raw["query"].items()) if stream_raw.get("query") is not None else None,
        stream_headers=MappingProxyType(_headers(stream_raw.get("headers"))),
        translated=translated,
    )
