"""YAML documents that remember where each value came from.

Config and provider files are read the same way: parsed with line numbers kept
per path, `${...}` interpolated from the environment, then checked against a
JSON Schema so that every problem can be reported as `FILE:LINE: message`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

# installed: oneapi/schemas/ inside the package; in a checkout: schemas/ beside the package
_HERE = Path(__file__).resolve().parent
SCHEMA_DIR = _HERE / "schemas" if (_HERE / "schemas").is_dir() else _HERE.parent / "schemas"

Path_ = tuple[Any, ...]


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


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """SafeLoader without the timestamp resolver: dates stay strings so the schema sees what was written."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}")


class _Interpolator:
    def __init__(self, doc: Document, environ: dict[str, str] | os._Environ[str]):
        self.doc = doc
        self.environ = environ
        self.problems: list[Problem] = []

    def __call__(self, text: str, path: Path_) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            expr = match.group(1).strip()
            if expr.startswith("file:"):
                target = expr[5:].strip()
                self.doc.referenced_files.add(target)
                try:
                    return Path(target).read_text().rstrip("\r\n")
                except OSError as exc:
                    self.problems.append(self.doc.problem(path, f"cannot read ${{file:{target}}}: {exc.strerror}"))
                    return ""
            name, sep, default = expr.partition(":-")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self.problems.append(self.doc.problem(path, f"bad interpolation ${{{expr}}}"))
                return ""
            value = self.environ.get(name)
            if value is not None and (value or not sep):
                return value
            if sep:
                return default
            self.problems.append(self.doc.problem(path, f"environment variable {name} is not set (and ${{{name}}} has no :-default)"))
            return ""

        return _VAR.sub(replace, text)


def load_document(path: str | Path, environ: dict[str, str] | os._Environ[str] | None = None) -> Document:
    """Parse a YAML file, keep the line of every node and interpolate `${VAR}`, `${VAR:-default}`, `${file:/path}`."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(file, 1, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(file, 1, "not UTF-8 text")]) from None
    doc = Document(file, None)
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(file, line, f"invalid YAML: {reason}")]) from None
    finally:
        loader.dispose()
    interpolate = _Interpolator(doc, os.environ if environ is None else environ)
    doc.data = _build(root, (), doc, loader, interpolate) if root is not None else None
    if interpolate.problems:
        raise ConfigError(interpolate.problems)
    return doc


def _build(node: yaml.Node, path: Path_, doc: Document, loader: _Loader, interpolate: _Interpolator) -> Any:
    doc.lines.setdefault(path, node.start_mark.line + 1)
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
            doc.lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _build(value_node, path + (key,), doc, loader, interpolate)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), doc, loader, interpolate) for i, item in enumerate(node.value)]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str) and "$" in value:
        value = interpolate(value, path)
        if node.style is None and node.tag == "tag:yaml.org,2002:str" and _VAR.fullmatch(node.value):
            # a plain `${PORT:-3000}` means the number, as if it had been written inline
            tag = loader.resolve(yaml.ScalarNode, value, (True, False))
            if tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"):
                value = loader.construct_object(yaml.ScalarNode(tag, value), deep=True)
    return value


@lru_cache(maxsize=None)
def schema_validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate(doc: Document, schema_name: str) -> list[Problem]:
    """Schema problems of a document, each at the line of the offending key."""
    problems: list[Problem] = []
    for error in schema_validator(schema_name).iter_errors(doc.data):
        path = tuple(error.absolute_path)
        problems.extend(_explain(doc, path, error))
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
