"""Compiled JMESPath: every answer, and every error, the same as jmespath's own interpreter gives."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Iterator

import jmespath
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jmespath.visitor import Options, TreeInterpreter

import oneapi.mapping
from oneapi.closures import compile_output_tree, compile_tree, drop_nulls, is_false
from oneapi.mapping import _Functions
from oneapi.providers import load_providers

PROVIDERS = Path(__file__).resolve().parent.parent / "providers.d"
TABLES = {"finish_reason": {"end_turn": "stop", "tool_use": "tool_calls", "*": "stop"}}
NONDETERMINISTIC = {"uuid", "now"}


def outcome(evaluate: Callable[[Any], Any], doc: Any) -> tuple[str, str]:
    """What an evaluation came to, told apart strictly: repr keeps 1 from true and 1.0, and key order."""
    try:
        return "value", repr(evaluate(doc))
    # whatever the interpreter raises (TypeError included), the closure must raise too
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__, str(exc)


def same_as_interpreter(tree: dict[str, Any], options: Options, doc: Any, evaluate: Callable[[Any], Any] | None = None,
                        output: bool = False) -> None:
    """The closure's outcome is the interpreter's; for an output closure (compile_output_tree), the interpreter's
    result with its null keys dropped."""
    compiled = evaluate or (compile_output_tree if output else compile_tree)(tree, options)
    if output:
        expected = outcome(lambda d: drop_nulls(TreeInterpreter(options).visit(tree, d)), doc)
    else:
        expected = outcome(lambda d: TreeInterpreter(options).visit(tree, d), doc)
    assert outcome(compiled, doc) == expected


def nodes(tree: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield tree
    for child in tree.get("children", ()):
        if isinstance(child, dict):
            yield from nodes(child)


def vocabulary(tree: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """The keys an expression reads and the constants it compares with: documents built from them reach its branches."""
    keys = sorted({n["value"] for n in nodes(tree) if n["type"] in ("field", "key_val_pair")} | {"_data"})
    constants = [n["value"] for n in nodes(tree) if n["type"] == "literal" and not isinstance(n["value"], (dict, list))]
    return keys, constants


SCALARS = [None, True, False, 0, 1, 0.0, 1.0, -1, 2, 2.5, "", "x", "text", "tool_use", "0"]


def random_document(keys: list[str], constants: list[Any], rnd: random.Random, depth: int = 0) -> Any:
    """A JSON value whose objects use only `keys`: paths the expression reads exist often enough to matter."""
    roll = rnd.random()
    if depth > 3 or roll < 0.35:
        return rnd.choice(SCALARS + constants)
    if roll < 0.6:
        return [random_document(keys, constants, rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    return {rnd.choice(keys): random_document(keys, constants, rnd, depth + 1) for _ in range(rnd.randint(0, 5))}


def random_documents(tree: dict[str, Any], count: int, seed: str) -> list[Any]:
    keys, constants = vocabulary(tree)
    rnd = random.Random(seed)
    return [random_document(keys, constants, rnd) for _ in range(count)]


def provider_expressions() -> list[tuple[str, dict[str, Any], Options, Callable[[Any], Any], bool]]:
    """(source, tree, options, the closure the engine runs, whether it is an output closure) for every expression
    providers.d compiles."""
    seen: list[tuple[dict[str, Any], Options, Callable[[Any], Any], bool]] = []
    real, real_output = oneapi.mapping.compile_tree, oneapi.mapping.compile_output_tree

    def recording(tree: dict[str, Any], options: Options) -> Callable[[Any], Any]:
        evaluate = real(tree, options)
        seen.append((tree, options, evaluate, False))
        return evaluate

    def recording_output(tree: dict[str, Any], options: Options) -> Callable[[Any], Any]:
        evaluate = real_output(tree, options)
        seen.append((tree, options, evaluate, True))
        return evaluate

    oneapi.mapping.compile_tree, oneapi.mapping.compile_output_tree = recording, recording_output
    try:
        load_providers(PROVIDERS)
    finally:
        oneapi.mapping.compile_tree, oneapi.mapping.compile_output_tree = real, real_output
    unique: dict[str, tuple[str, dict[str, Any], Options, Callable[[Any], Any], bool]] = {}
    for tree, options, evaluate, output in seen:
        if not any(n["type"] == "function_expression" and n["value"] in NONDETERMINISTIC for n in nodes(tree)):
            unique.setdefault(repr(tree) + str(id(options.custom_functions.tables)) + str(output),
                              (("output " if output else "") + repr(tree)[:60], tree, options, evaluate, output))
    return list(unique.values())


PROVIDER_EXPRESSIONS = provider_expressions()


def test_every_provider_expression_is_checked() -> None:
    assert len(PROVIDER_EXPRESSIONS) > 100
    assert sum(1 for case in PROVIDER_EXPRESSIONS if case[4]) > 30  # mapped bodies and emitted chunks


@pytest.mark.parametrize("tree, options, evaluate, output", [case[1:] for case in PROVIDER_EXPRESSIONS],
                         ids=[case[0] for case in PROVIDER_EXPRESSIONS])
def test_provider_expressions_match_the_interpreter(tree: dict[str, Any], options: Options, evaluate: Callable[[Any], Any],
                                                    output: bool) -> None:
    for doc in random_documents(tree, 300, repr(tree)):
        same_as_interpreter(tree, options, doc, evaluate, output)


TRICKY = [
    # null propagation and fields on non-objects
    "a.b.c", "a.b", "a[0].b", "a[-1]", "a[5]", "[0]", "a.length(@)", "@", "a | b", "a | [0] | b",
    # projections skip nulls, and stop at a non-list
    "a[*].b", "a[*]", "a[*].b[*].c", "a[].b", "a[][]", "*.b", "a.*", "a.* | [0]", "a[*].[b, c]", "a[*].{x: b}",
    "a[?b]", "a[?b == `1`].c", "a[?b != 'x']", "a[?!b]", "a[?b > `0`]", "a[?b < c]", "a[?b >= 'a'] | length(@)",
    # slices
    "a[1:]", "a[::-1]", "a[:2].b", "a[::2]",
    # comparators and JMESPath's type rules (0 and 1 are not false and true)
    "a == `1`", "a == `true`", "a == `0`", "a == `false`", "a != `1`", "a == b", "a != b", "a == 'x'", "'x' == a",
    "'x' == 'y'", "'x' != 'x'", "a == `null`", "a == `[]`", "a == `{}`", "a < b", "a <= `1`", "a > 'b'", "a >= `1.5`",
    # truthiness in && || !
    "a && b", "a || b", "a && b || c", "!a", "!(a && b)", "a || `null`", "a && {x: a}",
    # multiselects on null and on values
    "{x: a, y: b}", "[a, b]", "a.{x: b}", "a.[b, c]", "{a: a, a: b}",
    # literals, raw strings, functions with type checks
    "`{\"k\": [1, 2]}`", "'raw'", "length(a)", "join(', ', a)", "keys(a)", "to_string(a)", "not_null(a, b, 'z')",
    "max_by(a, &b)", "sort_by(a, &b)", "map(&b, a)", "contains(a, 'x')", "type(a)", "starts_with(a, 'x')", "abs(a)",
    "merge(a, b)", "to_array(a)", "sum(a)", "reverse(a)", "length(a, b)", "nope(a)",
    # the engine's own functions
    "enum('finish_reason', a)", "default(a, `0`)", "if(a, 'y', 'n')", "get(a, b)", "group_runs(a, &b)", "add(a, b)",
    "concat(a, b)", "annotate(a, 'k', b)", "entries(a)", "from_entries(a)", "json_dump(a)", "lower(a)", "enumerate(a, `1`)",
]


OUTPUT_TRICKY = [
    # null keys dropped where the result is built, and inside values taken whole from the document
    "{x: a, y: b, z: {w: c, v: `null`}}", "[a, {x: b}]", "{choices: [{delta: {content: a.b}}], usage: c}",
    "{x: a, l: `[1, null, {\"k\": null}]`}", "a[*].{x: b, y: c}", "a || {x: b}", "{x: a} | {y: x}",
    # inside a function or a filter, a multi-select keeps its nulls: only the result is cleaned
    "{a: a, b: b, a: c}", "{x: {a: a, b: b, a: c}}",
    "{x: json_dump({a: a, b: b})}", "{x: length({a: a, b: b})}", "a[?{k: b}.k == `null`].c", "{x: not_null(a, b)}",
]


@pytest.mark.parametrize("source", TRICKY)
@pytest.mark.parametrize("output", [False, True], ids=["search", "output"])
def test_tricky_expressions_match_the_interpreter(source: str, output: bool) -> None:
    tree = jmespath.compile(source).parsed
    options = Options(custom_functions=_Functions(TABLES))
    for doc in random_documents(tree, 300, source):
        same_as_interpreter(tree, options, doc, output=output)


@pytest.mark.parametrize("source", OUTPUT_TRICKY)
def test_output_expressions_drop_nulls_exactly_where_the_result_is_built(source: str) -> None:
    tree = jmespath.compile(source).parsed
    options = Options(custom_functions=_Functions(TABLES))
    for doc in random_documents(tree, 300, source):
        same_as_interpreter(tree, options, doc, output=True)


def test_output_results_are_new_objects() -> None:
    """Emitted chunks are changed afterwards (index and delta defaults): never a literal's or the document's own object."""
    doc = {"a": {"k": 1}}
    for source in ("a", "`{\"k\": 1}`", "{x: a}.x", "[a][0]"):
        evaluate = compile_output_tree(jmespath.compile(source).parsed, Options())
        assert evaluate(doc) == {"k": 1} and evaluate(doc) is not doc["a"] and evaluate(doc) is not evaluate(doc)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2, 2) | st.floats(-2, 2, allow_nan=False) | st.sampled_from(["", "x", "y"]),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abck"), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(source=st.sampled_from(TRICKY), doc=st.dictionaries(st.sampled_from("abck"), JSON, max_size=4) | JSON)
def test_any_tricky_expression_on_any_document(source: str, doc: Any) -> None:
    same_as_interpreter(jmespath.compile(source).parsed, Options(custom_functions=_Functions(TABLES)), doc)


@pytest.mark.parametrize("doc", [
    {"a": 1}, {"a": True}, {"a": 0}, {"a": False}, {"a": 1.0}, {"a": 0.0}, {"a": [True, 1]}, {"a": "1"}, {"a": None}, {},
])
def test_zero_and_one_against_booleans(doc: dict[str, Any]) -> None:
    for source in ("a == `1`", "a == `true`", "a == `0`", "a == `false`", "a != `1`", "a != `false`", "`1` == a", "!a",
                   "a[?@ == `1`]", "a[?@ == `true`]"):
        same_as_interpreter(jmespath.compile(source).parsed, Options(), doc)


def test_literals_are_the_interpreters_objects() -> None:
    evaluate = compile_tree(jmespath.compile("`{\"k\": 1}`").parsed, Options())
    assert evaluate(None) is evaluate({})


def test_ordering_mixed_strings_and_numbers_fails_the_same_way() -> None:
    same_as_interpreter(jmespath.compile("a < b").parsed, Options(), {"a": "x", "b": 1})


def test_unknown_node_kinds_go_to_the_interpreter() -> None:
    tree = {"type": "something_new", "children": []}
    with pytest.raises(NotImplementedError, match="something_new"):
        compile_tree(tree, Options())(None)


@pytest.mark.parametrize("value, falsy", [
    (None, True), (False, True), ("", True), ([], True), ({}, True),
    (0, False), (0.0, False), (True, False), ("0", False), ([None], False), ({"a": None}, False),
])
def test_is_false(value: Any, falsy: bool) -> None:
    assert is_false(value) is falsy
