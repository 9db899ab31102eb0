"""JMESPath syntax trees compiled into plain Python closures, once, with the interpreter's exact semantics.

jmespath's TreeInterpreter walks the tree on every search: a dict lookup and a method call per node,
a new interpreter per search. A stream runs a handful of expressions per vendor event, so the walk
is most of what translating costs. Here every node becomes a closure built once; evaluating is
calling it. Each closure mirrors the `visit_*` method of jmespath.visitor.TreeInterpreter it stands
for (null propagation, projections skipping nulls, JMESPath truthiness, the comparators' type
rules); functions are called through the same Functions object, so their arity and type checks
raise the same errors. A node kind not known here is handed to the interpreter.
"""

from __future__ import annotations

import operator
from numbers import Number
from typing import Any, Callable

from jmespath import functions
from jmespath.visitor import (
    Options,
    TreeInterpreter,
    _equals,
    _Expression,
    _is_comparable,
)

Evaluate = Callable[[Any], Any]

_ORDERING = {"lt": operator.lt, "gt": operator.gt, "lte": operator.le, "gte": operator.ge}


def is_false(value: Any) -> bool:
    """JMESPath's falsy values: null, false, '', [] and {} (0 is true)."""
    kind = type(value)
    if kind is str or kind is list or kind is dict:
        return not value
    return value is None or value is False or value == "" or value == [] or value == {}


def compile_tree(tree: dict[str, Any], options: Options) -> Evaluate:
    """The closure that evaluates `tree` (jmespath.compile(text).parsed) the way `search` with `options` would."""
    return _Builder(options).build(tree)


def compile_output_tree(tree: dict[str, Any], options: Options) -> Evaluate:
    """The closure for drop_nulls(search(tree)): what a mapping or an emitted chunk produces. The multi-selects
    the result is made of leave their null keys out as they are built, instead of a second walk over the
    result; whatever else lands in it (a value taken from the document, a function's result) is cleaned as
    before. Expressions inside functions, filters or projections see the usual, null-keeping values."""
    return _Builder(options).output(tree)


class _Bound:
    """Stands in for the interpreter inside an expression reference (`&key`): functions such as
    sort_by call `ref.visit(ref.expression, item)`, which runs the compiled closure."""

    def __init__(self, evaluate: Evaluate):
        self._evaluate = evaluate

    def visit(self, node: Any, value: Any) -> Any:
        return self._evaluate(value)


class _Builder:
    def __init__(self, options: Options):
        self.functions = options.custom_functions if options.custom_functions is not None else functions.Functions()
        self.interpreter = TreeInterpreter(options)
        self.dict_cls = options.dict_cls or dict

    def build(self, node: dict[str, Any]) -> Evaluate:
        method = getattr(self, "_compile_" + node["type"], None)
        if method is None:
            return self._interpreted(node)
        return method(node)

    def output(self, node: dict[str, Any]) -> Evaluate:
        kind = node["type"]
        keys = [child["value"] for child in node["children"]] if kind == "multi_select_dict" else []
        # a repeated key ({a: x, b: y, a: z}) keeps its first place and its last value: left to the general case
        if kind == "multi_select_dict" and self.dict_cls is dict and len(set(keys)) == len(keys):
            pairs = tuple((child["value"], self.output(child["children"][0])) for child in node["children"])

            def select_dict(value: Any) -> Any:
                if value is None:
                    return None
                built = {}
                for key, evaluate in pairs:
                    item = evaluate(value)
                    if item is not None:
                        built[key] = item
                return built
            return select_dict
        if kind == "multi_select_list":
            items = tuple(self.output(child) for child in node["children"])

            def select_list(value: Any) -> Any:
                if value is None:
                    return None
                return [evaluate(value) for evaluate in items]
            return select_list
        if kind == "literal" and not isinstance(node["value"], (dict, list)):
            return self.build(node)
        inner = self.build(node)

        def cleaned(value: Any) -> Any:
            result = inner(value)
            return drop_nulls(result) if isinstance(result, (dict, list)) else result
        return cleaned

    def _interpreted(self, node: dict[str, Any]) -> Evaluate:
        visit = self.interpreter.visit
        return lambda value: visit(node, value)

    # --- leaves ------------------------------------------------------------

    def _compile_field(self, node: dict[str, Any]) -> Evaluate:
        return _field_chain((node["value"],))

    def _compile_current(self, node: dict[str, Any]) -> Evaluate:
        return _same

    _compile_identity = _compile_current

    def _compile_literal(self, node: dict[str, Any]) -> Evaluate:
        constant = node["value"]  # the same object every time, as the interpreter returns it
        return lambda value: constant

    def _compile_index(self, node: dict[str, Any]) -> Evaluate:
        position = node["value"]

        def index(value: Any) -> Any:
            if not isinstance(value, list):
                return None
            try:
                return value[position]
            except IndexError:
                return None
        return index

    def _compile_slice(self, node: dict[str, Any]) -> Evaluate:
        bounds = slice(*node["children"])

        def sliced(value: Any) -> Any:
            if not isinstance(value, list):
                return None
            return value[bounds]
        return sliced

    def _compile_expref(self, node: dict[str, Any]) -> Evaluate:
        expression = node["children"][0]
        bound = _Bound(self.build(expression))
        return lambda value: _Expression(expression, bound)

    # --- chains --------------------------------------------------------------

    def _compile_subexpression(self, node: dict[str, Any]) -> Evaluate:
        children = node["children"]
        if all(child["type"] == "field" for child in children):
            return _field_chain(tuple(child["value"] for child in children))
        return self._sequence(children)

    def _compile_index_expression(self, node: dict[str, Any]) -> Evaluate:
        return self._sequence(node["children"])

    def _compile_pipe(self, node: dict[str, Any]) -> Evaluate:
        return self._sequence(node["children"])

    def _sequence(self, children: list[dict[str, Any]]) -> Evaluate:
        steps = tuple(self.build(child) for child in children)
        if len(steps) == 2:
            first, second = steps
            return lambda value: second(first(value))

        def sequence(value: Any) -> Any:
            for step in steps:
                value = step(value)
            return value
        return sequence

    # --- projections -----------------------------------------------------------

    def _compile_projection(self, node: dict[str, Any]) -> Evaluate:
        left, right = (self.build(child) for child in node["children"])
        identity = node["children"][1]["type"] in ("identity", "current")

        def projection(value: Any) -> Any:
            base = left(value)
            if not isinstance(base, list):
                return None
            if identity:
                return [element for element in base if element is not None]
            return _kept(right, base)
        return projection

    def _compile_value_projection(self, node: dict[str, Any]) -> Evaluate:
        left, right = (self.build(child) for child in node["children"])

        def value_projection(value: Any) -> Any:
            base = left(value)
            try:
                base = base.values()
            except AttributeError:
                return None
            return _kept(right, base)
        return value_projection

    def _compile_filter_projection(self, node: dict[str, Any]) -> Evaluate:
        left, right, condition = (self.build(child) for child in node["children"])

        def filter_projection(value: Any) -> Any:
            base = left(value)
            if not isinstance(base, list):
                return None
            collected = []
            for element in base:
                if not is_false(condition(element)):
                    current = right(element)
                    if current is not None:
                        collected.append(current)
            return collected
        return filter_projection

    def _compile_flatten(self, node: dict[str, Any]) -> Evaluate:
        inner = self.build(node["children"][0])

        def flatten(value: Any) -> Any:
            base = inner(value)
            if not isinstance(base, list):
                return None
            merged: list[Any] = []
            for element in base:
                if isinstance(element, list):
                    merged.extend(element)
                else:
                    merged.append(element)
            return merged
        return flatten

    # --- multi-selects ------------------------------------------------------------

    def _compile_multi_select_dict(self, node: dict[str, Any]) -> Evaluate:
        pairs = tuple((child["value"], self.build(child["children"][0])) for child in node["children"])
        make = self.dict_cls

        if make is dict:
            def select_dict(value: Any) -> Any:
                if value is None:
                    return None
                return {key: evaluate(value) for key, evaluate in pairs}
            return select_dict

        def select_mapping(value: Any) -> Any:
            if value is None:
                return None
            collected = make()
            for key, evaluate in pairs:
                collected[key] = evaluate(value)
            return collected
        return select_mapping

    def _compile_key_val_pair(self, node: dict[str, Any]) -> Evaluate:
        return self.build(node["children"][0])

    def _compile_multi_select_list(self, node: dict[str, Any]) -> Evaluate:
        items = tuple(self.build(child) for child in node["children"])

        def select_list(value: Any) -> Any:
            if value is None:
                return None
            return [evaluate(value) for evaluate in items]
        return select_list

    # --- logic and comparisons ----------------------------------------------------

    def _compile_or_expression(self, node: dict[str, Any]) -> Evaluate:
        left, right = (self.build(child) for child in node["children"])

        def either(value: Any) -> Any:
            matched = left(value)
            return right(value) if is_false(matched) else matched
        return either

    def _compile_and_expression(self, node: dict[str, Any]) -> Evaluate:
        left, right = (self.build(child) for child in node["children"])

        def both(value: Any) -> Any:
            matched = left(value)
            return matched if is_false(matched) else right(value)
        return both

    def _compile_not_expression(self, node: dict[str, Any]) -> Evaluate:
        inner = self.build(node["children"][0])

        def negation(value: Any) -> Any:
            result = inner(value)
            if _is_number(result) and result == 0:
                return False  # !0 is false: 0 is not falsy in JMESPath
            return not result  # Python truthiness, as the interpreter has it
        return negation

    def _compile_comparator(self, node: dict[str, Any]) -> Evaluate:
        name = node["value"]
        left_node, right_node = node["children"]
        left, right = self.build(left_node), self.build(right_node)
        if name in ("eq", "ne"):
            equal = name == "eq"
            text, side = _string_literal(left_node), right
            if text is None:
                text, side = _string_literal(right_node), left
            if text is not None:
                # one side is a string constant: no number/boolean special case can apply
                return (lambda value: side(value) == text) if equal else (lambda value: side(value) != text)
            if equal:
                return lambda value: _equal(left(value), right(value))
            return lambda value: not _equal(left(value), right(value))
        ordering = _ORDERING[name]

        def compare(value: Any) -> Any:
            a, b = left(value), right(value)
            if not (_is_comparable(a) and _is_comparable(b)):
                return None  # ordering is only defined for numbers and strings
            return ordering(a, b)
        return compare

    # --- functions -----------------------------------------------------------------

    def _compile_function_expression(self, node: dict[str, Any]) -> Evaluate:
        name = node["value"]
        arguments = tuple(self.build(child) for child in node["children"])
        table = self.functions
        entry = table.FUNCTION_TABLE.get(name)
        if entry is None or not _arity_fits(entry["signature"], len(arguments)):
            # unknown or miscalled: the interpreter's own call raises the error, when (and only when) it is reached
            return lambda value: table.call_function(name, [evaluate(value) for evaluate in arguments])
        function, signature = entry["function"], entry["signature"]
        checked = any(spec["types"] for spec in signature)
        type_check = table._type_check

        if not arguments:
            return lambda value: function(table)
        if len(arguments) == 1 and not checked:
            (only,) = arguments
            return lambda value: function(table, only(value))

        def call(value: Any) -> Any:
            resolved = [evaluate(value) for evaluate in arguments]
            if checked:
                type_check(resolved, signature, name)
            return function(table, *resolved)
        return call


def equality_guard(tree: dict[str, Any]) -> tuple[tuple[str, ...], Evaluate, str, bool] | None:
    """For a condition that is, or starts with (`X == 'text' && ...`), a field path compared with a string
    constant: (path, its getter, the constant, whether the comparison is the whole condition). Rules that test
    the same path (one per kind of delta, say) can read it once per event, and skip the rest of a condition
    that cannot hold. None for any other condition, and for paths under `_state` (a rule's `set` changes it)."""
    node = tree
    while node["type"] == "and_expression":
        node = node["children"][0]
    if node["type"] != "comparator" or node["value"] != "eq":
        return None
    for side, constant in (node["children"], node["children"][::-1]):
        path = field_path(side)
        text = _string_literal(constant)
        if path and text is not None and path[0] != "_state":
            return path, _shared_getter(path), text, node is tree
    return None


_GETTERS: dict[tuple[str, ...], Evaluate] = {}


def _shared_getter(path: tuple[str, ...]) -> Evaluate:
    """One getter per path, so rules testing the same path share it (and a cache of reads can key on it)."""
    getter = _GETTERS.get(path)
    if getter is None:
        getter = _GETTERS[path] = _field_chain(path)
    return getter


def field_path(node: dict[str, Any]) -> tuple[str, ...] | None:
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] == "subexpression" and all(child["type"] == "field" for child in node["children"]):
        return tuple(child["value"] for child in node["children"])
    return None


def _kept(evaluate: Evaluate, elements: Any) -> list[Any]:
    """`evaluate` of each element, nulls left out: what a projection collects."""
    collected = []
    for element in elements:
        current = evaluate(element)
        if current is not None:
            collected.append(current)
    return collected


def _same(value: Any) -> Any:
    return value


def _field_chain(names: tuple[str, ...]) -> Evaluate:
    """a.b.c: each step a `.get` on an object, null on anything else (and null stays null)."""
    if len(names) == 1:
        (name,) = names

        def field(value: Any) -> Any:
            if type(value) is dict:
                return value.get(name)
            try:
                return value.get(name)
            except AttributeError:
                return None
        return field

    def fields(value: Any) -> Any:
        for name in names:
            if type(value) is not dict:
                if value is None:
                    return None
                try:
                    value = value.get(name)
                except AttributeError:
                    value = None
                continue
            value = value.get(name)
        return value
    return fields


def drop_nulls(value: Any) -> Any:
    """Remove object keys whose value is null, at every depth: mappings produce optional fields this way."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) if isinstance(v, (dict, list)) else v for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


def _is_number(value: Any) -> bool:
    kind = type(value)
    if kind is int or kind is float:
        return True
    if kind is bool or kind is str:
        return False
    return isinstance(value, Number) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    if type(a) is str or type(b) is str:
        return a == b  # the 0/1-against-boolean rule needs a number and a boolean
    return _equals(a, b)


def _string_literal(node: dict[str, Any]) -> str | None:
    if node["type"] == "literal" and type(node["value"]) is str:
        return node["value"]
    return None


def _arity_fits(signature: Any, count: int) -> bool:
    if signature and signature[-1].get("variadic"):
        return count >= len(signature)
    return count == len(signature)
