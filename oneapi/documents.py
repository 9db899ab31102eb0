"""YAML documents that remember where each value came from.

Config and provider files are read the same way: parsed with line numbers kept
per path, `${...}` interpolated from the environment, then checked against a
JSON Schema so that every problem can be reported as `FILE:LINE: message`.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import fastjsonschema
import jsonschema
import yaml

# installed: oneapi/schemas/ inside the package; in a checkout: schemas/ beside the package
_HERE = Path(__file__).resolve().parent
SCHEMA_DIR = _HERE / "schemas" if (_HERE / "schemas").is_dir() else _HERE.parent / "schemas"
# the vendors that ship with the package, found the same way: oneapi/providers_d/ or providers.d/
SHIPPED_PROVIDERS = _HERE / "providers_d" if (_HERE / "providers_d").is_dir() else _HERE.parent / "providers.d"
# and the client dialects: oneapi/dialects_d/ or dialects.d/
SHIPPED_DIALECTS = _HERE / "dialects_d" if (_HERE / "dialects_d").is_dir() else _HERE.parent / "dialects.d"

Path_ = tuple[Any, ...]
Environ = Mapping[str, str]
# what a document's `${...}` read, so that a cached result is reused only while it still holds:
# ("env", NAME) -> the variable's value, ("file", PATH) -> the file's text; None when unset or unreadable
Reads = dict[tuple[str, str], "str | None"]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ConfigError(Exception):
    """One or more problems that make a file unusable; the old snapshot keeps serving."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class Document:
    """A parsed YAML file: its data plus the line of every mapping key and value."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    referenced_files: set[str] = field(default_factory=set)
    reads: Reads = field(default_factory=dict)

    def line(self, path: Iterable[Any]) -> int:
        """The line of the deepest known node on `path` (1-based)."""
        path = tuple(path)
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)

    def problem(self, path: Iterable[Any], message: str) -> Problem:
        return Problem(self.file, self.line(path), message)


# libyaml's parser when present: ~10x faster, and reload time is mostly parsing provider files
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """SafeLoader without the timestamp resolver: dates stay strings so the schema sees what was written."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}")


class Sources:
    """The environment and the secret files as one load sees them: each variable and each file read once."""

    def __init__(self, environ: Environ | None = None, checked_against: dict[str, str] | None = None):
        self.environ = dict(os.environ if environ is None else environ)
        self._files: dict[str, str | OSError] = {}
        # reads last checked against an environment equal to this one hold for every variable: skip those
        self.environ_changed = self.environ != checked_against

    def file(self, target: str) -> str:
        """The text of a `${file:...}`, its trailing newline cut; raises OSError."""
        found = self._files.get(target)
        if found is None:
            try:
                found = Path(target).read_text().rstrip("\r\n")
            except OSError as exc:
                found = exc
            self._files[target] = found
        if isinstance(found, OSError):
            raise found
        return found

    def hold(self, reads: Reads) -> bool:
        """Whether every variable and file that a document read still has the value it had then."""
        for (kind, name), value in reads.items():
            if kind == "env":
                if not self.environ_changed:
                    continue
                current = self.environ.get(name)
            else:
                try:
                    current = self.file(name)
                except OSError:
                    current = None
            if current != value:
                return False
        return True


class Interpolator:
    """`${VAR}`, `${VAR:-default}` and `${file:/path}`, remembering what was read and what went wrong (by path)."""

    def __init__(self, sources: Sources):
        self.sources = sources
        self.problems: list[tuple[Path_, str]] = []
        self.reads: Reads = {}

    def __call__(self, text: str, path: Path_) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            expr = match.group(1).strip()
            if expr.startswith("file:"):
                target = expr[5:].strip()
                try:
                    content = self.reads[("file", target)] = self.sources.file(target)
                except OSError as exc:
                    self.reads[("file", target)] = None
                    self.problems.append((path, f"cannot read ${{file:{target}}}: {exc.strerror}"))
                    return ""
                return content
            name, sep, default = expr.partition(":-")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self.problems.append((path, f"bad interpolation ${{{expr}}}"))
                return ""
            value = self.reads[("env", name)] = self.sources.environ.get(name)
            if value is not None and (value or not sep):
                return value
            if sep:
                return default
            self.problems.append((path, f"environment variable {name} is not set (and ${{{name}}} has no :-default)"))
            return ""

        return _VAR.sub(replace, text)

    def plain(self, raw: str, value: str, path: Path_) -> Any:
        """A plain `${PORT:-3000}` means the number, as if it had been written inline."""
        if _VAR.fullmatch(raw):
            tag = plain_tag(value)
            if tag in _NUMERIC_TAGS:
                number = construct_plain(tag, value)
                if not is_finite(number):
                    self.problems.append((path, not_finite(path, f"{raw} (= {value})")))
                return number
        return value


def is_finite(value: Any) -> bool:
    """False for .nan, .inf, -.inf and floats written too large (1.0e+400): no price, limit or timeout means those."""
    return type(value) is not float or math.isfinite(value)


def not_finite(path: Path_, written: str) -> str:
    where = ".".join(str(p) for p in path) or "(top level)"
    return f"{where}: {written} is not a finite number (leave the key out where no limit is meant)"


def load_document(path: str | Path, environ: Environ | None = None) -> Document:
    """Parse a YAML file, keep the line of every node and interpolate `${VAR}`, `${VAR:-default}`, `${file:/path}`."""
    file = str(path)
    return parse_document(file, read_text(file), environ)


def read_text(file: str) -> str:
    try:
        return Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(file, 1, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(file, 1, "not UTF-8 text")]) from None


def parse_document(file: str, text: str, environ: Environ | None = None) -> Document:
    """The whole text at once, every node's line kept: the path for any YAML (anchors, tags, merge keys)."""
    doc = Document(file, None)
    loader = YamlLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_problem(file, exc)]) from None
    finally:
        loader.dispose()
    interpolate = Interpolator(Sources(environ))
    doc.lines = node_lines(root, loader)
    doc.data = _build(root, (), doc, loader, interpolate) if root is not None else None
    doc.reads = interpolate.reads
    doc.referenced_files = {name for kind, name in interpolate.reads if kind == "file"}
    if interpolate.problems:
        raise ConfigError([doc.problem(path, message) for path, message in interpolate.problems])
    return doc


def yaml_problem(file: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark else 1
    reason = getattr(exc, "problem", None) or str(exc)
    return Problem(file, line, f"invalid YAML: {reason}")


def node_lines(root: yaml.Node | None, loader: YamlLoader) -> dict[Path_, int]:
    """The line (1-based) of every node and of every mapping key, by path."""
    lines: dict[Path_, int] = {}
    if root is not None:
        _record_lines(root, (), lines, loader)
    return lines


def _record_lines(node: yaml.Node, path: Path_, lines: dict[Path_, int], loader: YamlLoader) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, (str, int, float, bool)):
                return  # _build reports it
            key = str(key) if not isinstance(key, str) else key
            lines[path + (key,)] = key_node.start_mark.line + 1
            _record_lines(value_node, path + (key,), lines, loader)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, path + (i,), lines, loader)


def _build(node: yaml.Node, path: Path_, doc: Document, loader: YamlLoader, interpolate: Interpolator) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise ConfigError([doc.problem(path, "mapping keys must be plain scalars")])
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                raise ConfigError([Problem(doc.file, key_node.start_mark.line + 1, f"duplicate key {key!r}")])
            out[key] = _build(value_node, path + (key,), doc, loader, interpolate)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), doc, loader, interpolate) for i, item in enumerate(node.value)]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str) and "$" in value:
        value = interpolate(value, path)
        if not node.style and node.tag == STR_TAG:  # libyaml marks a plain scalar with "", PyYAML with None
            value = interpolate.plain(node.value, value, path)
    elif not is_finite(value):
        interpolate.problems.append((path, not_finite(path, node.value)))  # reported with the `${...}` problems, by line
    return value


STR_TAG = "tag:yaml.org,2002:str"
_NUMERIC_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")
# the loader's implicit resolvers by first character, wildcard ones appended, as Resolver.resolve reads them
_RESOLVERS = {first: tuple(resolvers) + tuple(YamlLoader.yaml_implicit_resolvers.get(None, ()))
              for first, resolvers in YamlLoader.yaml_implicit_resolvers.items() if first is not None}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def plain_tag(value: str) -> str:
    """The tag the loader gives a plain (unquoted, untagged) scalar: what Resolver.resolve does, minus its overhead."""
    for tag, regexp in _RESOLVERS.get(value[:1], ()):
        if regexp.match(value):
            return tag
    return STR_TAG


def construct_plain(tag: str, value: str) -> Any:
    return value if tag == STR_TAG else YamlLoader.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, value))


@lru_cache(maxsize=None)
def schema_validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


class SchemaCheck:
    """A JSON Schema, or the item schema of one of its array properties: a compiled validator says yes in
    microseconds; only a no pays for jsonschema, which explains every problem and has the last word."""

    def __init__(self, name: str, items_of: str | None = None):
        explainer = schema_validator(name)
        root = explainer.schema
        schema = root if items_of is None else root["properties"][items_of]["items"]
        self.explainer = explainer if items_of is None else explainer.evolve(schema=schema)
        self.accepts = _compile({**schema, "$defs": root.get("$defs", {})}, type(explainer).FORMAT_CHECKER)

    def problems(self, doc: Document, instance: Any, at: Path_ = ()) -> list[Problem]:
        """Problems of `instance`, found at `at` in `doc`, unsorted."""
        if self.accepts is not None:
            try:
                self.accepts(instance)
                return []
            except fastjsonschema.JsonSchemaException:
                pass
        problems: list[Problem] = []
        for error in self.explainer.iter_errors(instance):
            problems.extend(_explain(doc, at + tuple(error.absolute_path), error))
        return problems


@lru_cache(maxsize=None)
def schema_check(name: str, items_of: str | None = None) -> SchemaCheck:
    return SchemaCheck(name, items_of)


# keywords that draft 7 (fastjsonschema) lacks or reads differently from 2020-12 (jsonschema)
_NOT_DRAFT7 = frozenset({"prefixItems", "unevaluatedProperties", "unevaluatedItems", "dependentRequired", "dependentSchemas",
                         "$dynamicRef", "$dynamicAnchor", "$anchor", "minContains", "maxContains", "$recursiveRef"})


def _compile(schema: dict[str, Any], format_checker: jsonschema.FormatChecker) -> Callable[[Any], Any] | None:
    """fastjsonschema's validator for `schema`, or None where it might accept what jsonschema would not."""
    if not _reads_the_same_in_draft7(schema):
        return None
    schema = json.loads(json.dumps(schema))  # fastjsonschema rewrites $refs in place
    # jsonschema's own format checks, so that neither is the more lenient one
    formats = {f: partial(format_checker.conforms, format=f) for f in _formats(schema)}
    return fastjsonschema.compile(schema, formats=formats, use_default=False, handlers={"http": _no_fetch, "https": _no_fetch})


def _no_fetch(uri: str) -> Any:
    raise ValueError(f"schemas are local: will not fetch {uri}")


def _reads_the_same_in_draft7(schema: Any) -> bool:
    if isinstance(schema, list):
        return all(_reads_the_same_in_draft7(v) for v in schema)
    if not isinstance(schema, dict):
        return True
    if _NOT_DRAFT7 & schema.keys() or isinstance(schema.get("items"), list):
        return False
    if "$ref" in schema and schema.keys() - {"$ref", "$defs", "description", "title", "$comment"}:
        return False  # draft 7 ignores the keywords beside a $ref
    return all(_reads_the_same_in_draft7(v) for k, v in schema.items() if k not in ("enum", "const"))


def _formats(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        found = {schema["format"]} if isinstance(schema.get("format"), str) else set()
        return found.union(*(_formats(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_formats(v) for v in schema))
    return set()


def validate(doc: Document, schema_name: str) -> list[Problem]:
    """Schema problems of a document, each at the line of the offending key."""
    problems = schema_check(schema_name).problems(doc, doc.data)
    problems.sort(key=lambda p: p.line)
    return problems


def _explain(doc: Document, path: Path_, error: jsonschema.ValidationError) -> list[Problem]:
    where = ".".join(str(p) for p in path) or "(top level)"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in known]
        return [doc.problem(path + (k,), f"unknown key {k!r} in {where}" + _suggest(k, known)) for k in extra]
    if error.validator == "oneOf" and all(set(alt) == {"required"} for alt in error.validator_value):
        names = ", ".join("+".join(alt["required"]) for alt in error.validator_value)
        return [doc.problem(path, f"{where}: give exactly one of {names}")]
    return [doc.problem(path, f"{where}: {_describe(error)}")]


def _describe(error: jsonschema.ValidationError) -> str:
    """What is wrong, without echoing the value: a misplaced secret must not reach /health or a log."""
    rule = error.validator_value
    if error.validator == "type":
        kinds = rule if isinstance(rule, list) else [rule]
        return "should be " + " or ".join("an " + k if k[0] in "aeiou" else "a " + k for k in kinds)
    if error.validator == "enum":
        return "should be one of " + ", ".join(repr(v) for v in rule)
    if error.validator == "const":
        return f"should be {rule!r}"
    if error.validator == "pattern":
        return f"does not match the pattern {rule}"
    if error.validator == "format":
        return f"should be a {rule}"
    if error.validator in ("required", "dependentRequired"):
        return error.message
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems"):
        return f"fails {error.validator} {rule}"
    if error.validator == "uniqueItems":
        return "has duplicate items"
    return f"fails the {error.validator} rule"


def _suggest(word: str, known: set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
