"""A stream spec's rules as generated Python: one function per event name, written once when the provider loads.

The stream state machine (streams.py) runs, for each vendor event, the rules its name reaches in file order. Doing
that rule by rule — a loop, a closure call per JMESPath node, a dict built by a closure per multi-select — was
most of what translating a stream cost. Here the rules an event name reaches become one Python function:

- a field path (`delta.text`, `_state.block`) is read inline, with the closure's exact rule (`.get` on a dict,
  null on anything else);
- a condition is a Python boolean expression: `&&`, `||` and `path == 'text'` inline (short-circuit as the
  closures have it), anything else through its closure and JMESPath truthiness;
- a path compared with text by an equality guard (closures.equality_guard) is read once per event;
- an emitted chunk's multi-selects are dict and list displays, null keys left out as compile_output_tree does;
- every other node (functions, filters, projections, not, ordering comparisons) calls its closure (closures.py).

Generated code only ever embeds `repr` of strings from the provider file (keys, path names, text constants) and
names of its own; values live in the function's namespace. A JMESPath error raised inside is reported against the
rule expression it belongs to, as the rule-by-rule engine did.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING, Any, Callable, Mapping

from jmespath.exceptions import JMESPathError

from .closures import compile_output_tree, compile_tree, drop_nulls, field_path, is_false

if TYPE_CHECKING:
    from .mapping import Compiler, Expression
    from .streams import Rule, StreamTranslator

# (the event's document, the translator, the chunks so far, the event's name): adds the event's chunks
Runner = Callable[[dict[str, Any], "StreamTranslator", list[dict[str, Any]], Any], None]


def _get(value: Any, name: str) -> Any:
    """One step of a field path on something that is not a dict: `.get` where it has one, else null."""
    try:
        return value.get(name)
    except AttributeError:
        return None


def _emit_any(translator: StreamTranslator, out: list[dict[str, Any]], produced: Any) -> None:
    """An emit whose shape is not known when generating: a list is several chunks, anything else one."""
    for item in produced if isinstance(produced, list) else (produced,):
        finished = translator._chunk(item)
        if finished is not None:
            out.append(finished)


def _failed(error: Any) -> dict[str, Any]:
    """The error chunk that ends a stream, from what a rule's `error` expression produced."""
    if not isinstance(error, dict):
        error = {"message": str(error)}
    return {"error": {
        "message": str(error.get("message") or "Upstream stream failed."),
        "type": error.get("type") or "upstream_error",
        "code": error.get("code"),
        "param": error.get("param"),
    }}


_BASE_NAMESPACE: dict[str, Any] = {
    "_get": _get, "_is_false": is_false, "_drop_nulls": drop_nulls, "_containers": (dict, list), "_emit_any": _emit_any,
    "_failed": _failed, "JMESPathError": JMESPathError,
}


def generate(by_event: Mapping[str | None, tuple[Rule, ...]], other_events: tuple[Rule, ...],
             compiler: Compiler) -> tuple[dict[str | None, Runner], Runner]:
    """The runner for each event name in `by_event`, and the one for every other name."""
    writer = _Writer(compiler)
    names = {name: writer.function(rules) for name, rules in by_event.items()}
    other = writer.function(other_events)
    namespace = writer.namespace()
    exec(compile("\n".join(writer.lines), "<stream rules>", "exec"), namespace)  # noqa: S102 - our own generated source
    return {name: namespace[function] for name, function in names.items()}, namespace[other]


class _Writer:
    def __init__(self, compiler: Compiler):
        self.compiler = compiler
        self.options = compiler.options
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self.expressions: list[Expression] = []
        self.starts: list[int] = []  # the generated line where each expression's code starts, by expression
        self.functions = 0
        self.temps = 0
        self.guards: dict[tuple[str, ...], str] = {}  # paths read once in the current function, by variable

    def namespace(self) -> dict[str, Any]:
        expressions, starts = tuple(self.expressions), tuple(self.starts)

        def failed(exc: JMESPathError) -> Exception:
            """The MappingError naming the rule expression whose code raised `exc` (by the line it was raised on:
            nothing to keep up to date while the rules run)."""
            line = exc.__traceback__.tb_lineno if exc.__traceback__ is not None else 0
            return expressions[max(bisect_right(starts, line) - 1, 0)].failed(exc)
        return {**_BASE_NAMESPACE, **self.constants, "_failed_at": failed}

    # --- functions and rules ------------------------------------------------------------

    def function(self, rules: tuple[Rule, ...]) -> str:
        name = f"_rules_{self.functions}"
        self.functions += 1
        self.guards = {}
        self.lines += [f"def {name}(doc, tr, out, name):", "    chunk = tr._chunk"]
        # the reserved keys these rules can see, put on the event's document (the rest would be work for nothing)
        trees = [self.compiler.parse(e.source) for rule in rules for e in _expressions(rule)]
        self.lines += [f"    doc[{key!r}] = {source}" for key, source in RESERVED.items() if key in reserved_reads(trees)]
        self.lines.append("    try:")
        start = len(self.lines)
        for rule in rules:
            self.rule(rule, "        ")
        if len(self.lines) == start:
            self.lines.append("        pass")
        self.lines += ["    except JMESPathError as exc:", "        raise _failed_at(exc) from None", ""]
        return name

    def rule(self, rule: Rule, indent: str) -> None:
        self.lines.append(f"{indent}# rule at line {rule.line}" if rule.line else f"{indent}# rule")
        if rule.guard is not None:
            # read once per event, with the objects on the way: a path outside _state does not change while
            # the event's rules run
            path = rule.guard[0]
            for cut in range(1, len(path) + 1):
                if path[:cut] not in self.guards:
                    code = self.path(path[:cut])
                    variable = self.guards[path[:cut]] = self.temp("g")
                    self.lines.append(f"{indent}{variable} = {code}")
        if rule.when is not None:
            self.at(rule.when, indent)
            self.lines.append(f"{indent}if {self.condition(self.compiler.parse(rule.when.source))}:")
            indent += "    "
        body = len(self.lines)
        if rule.set:
            values = []
            for key, expression in rule.set:
                self.at(expression, indent)
                variable = self.temp("s")
                self.lines.append(f"{indent}{variable} = {self.value(self.compiler.parse(expression.source))}")
                values.append(f"{self.constant(key)}: {variable}")
            self.lines.append(f"{indent}tr.state = doc['_state'] = {{**tr.state, {', '.join(values)}}}")
        for expression in rule.emit:
            self.at(expression, indent)
            self.emit(self.compiler.parse(expression.source), indent)
        if rule.error is not None:
            self.at(rule.error, indent)
            variable = self.temp("e")
            self.lines += [f"{indent}{variable} = {self.value(self.compiler.parse(rule.error.source))}",
                           f"{indent}if {variable} is not None:",
                           f"{indent}    tr.failed = True",
                           f"{indent}    out.append(_failed({variable}))",
                           f"{indent}    return"]
        if len(self.lines) == body:
            self.lines.append(f"{indent}pass")

    def at(self, expression: Expression, indent: str) -> None:
        """Name the rule expression whose code follows, for the error a closure in it might raise."""
        self.starts.append(len(self.lines) + 1)  # compiled line numbers count from 1
        self.expressions.append(expression)

    def emit(self, tree: dict[str, Any], indent: str) -> None:
        built = self.output(tree, indent)
        if tree["type"] == "multi_select_dict" and self.is_plain_dict(tree):
            variable = self.temp("c")
            self.lines += [f"{indent}{variable} = chunk({built})", f"{indent}if {variable} is not None:",
                           f"{indent}    out.append({variable})"]
        else:
            self.lines.append(f"{indent}_emit_any(tr, out, {built})")

    # --- expressions ---------------------------------------------------------------------

    def condition(self, node: dict[str, Any]) -> str:
        """A Python expression true exactly when the JMESPath result is truthy, evaluated as the closures would."""
        kind = node["type"]
        if kind == "and_expression":
            left, right = node["children"]
            return f"({self.condition(left)} and {self.condition(right)})"
        if kind == "or_expression":
            left, right = node["children"]
            return f"({self.condition(left)} or {self.condition(right)})"
        return f"not _is_false({self.value(node)})" if kind != "comparator" or self.text_test(node) is None else self.value(node)

    def value(self, node: dict[str, Any]) -> str:
        """A Python expression with the value of `node` on the event document, as its closure computes it."""
        kind = node["type"]
        path = field_path(node)
        if path is not None:
            return self.path(path)
        if kind == "literal":
            return self.constant(node["value"])  # the same object every time, as the interpreter returns it
        if kind in ("current", "identity"):
            return "doc"
        test = self.text_test(node) if kind == "comparator" else None
        if test is not None:
            side, operator, text = test
            return f"({self.value(side)} {operator} {self.constant(text)})"
        return f"{self.constant(compile_tree(node, self.options), 'f')}(doc)"

    def output(self, node: dict[str, Any], indent: str) -> str:
        """`node` in an emitted chunk: what compile_output_tree computes, as an expression free of side effects
        (what must run first, in order, is written as statements before it)."""
        kind = node["type"]
        if kind == "multi_select_dict" and self.is_plain_dict(node):
            entries = [(self.constant(child["value"]), self.settled(self.output(child["children"][0], indent), indent),
                        self.never_null(child["children"][0])) for child in node["children"]]
            if all(never_null for _, _, never_null in entries):
                return "{" + ", ".join(f"{key}: {built}" for key, built, _ in entries) + "}"
            if len(entries) == 1:
                ((key, built, _),) = entries
                return f"({{{key}: {built}}} if {built} is not None else {{}})"
            variable = self.temp("d")
            self.lines.append(f"{indent}{variable} = {{}}")
            for key, built, never_null in entries:
                if not never_null:
                    self.lines.append(f"{indent}if {built} is not None:")
                self.lines.append(f"{indent}{'' if never_null else '    '}{variable}[{key}] = {built}")
            return variable
        if kind == "multi_select_list":
            items = [self.settled(self.output(child, indent), indent) for child in node["children"]]
            return "[" + ", ".join(items) + "]"
        if kind == "literal" and not isinstance(node["value"], (dict, list)):
            return self.constant(node["value"])
        if kind == "literal" and not node["value"]:
            return "{}" if isinstance(node["value"], dict) else "[]"  # drop_nulls of an empty constant: a new one
        path = field_path(node)
        if path is not None:
            read = self.temp("v")
            return f"(_drop_nulls({read}) if isinstance({read} := {self.path(path)}, _containers) else {read})"
        return f"{self.constant(compile_output_tree(node, self.options), 'o')}(doc)"

    def settled(self, built: str, indent: str) -> str:
        """`built` as a name or constant, its evaluation written out as a statement here (so the entries of a
        multi-select are computed in their order, and each once)."""
        if built.isidentifier() or built in ("{}", "[]") or built[0] in "'\"" or built.lstrip("-").isdigit():
            return built
        variable = self.temp("t")
        self.lines.append(f"{indent}{variable} = {built}")
        return variable

    def never_null(self, node: dict[str, Any]) -> bool:
        kind = node["type"]
        if kind == "multi_select_dict" and self.is_plain_dict(node) or kind == "multi_select_list":
            return True  # built from the document, which is never null
        return kind == "literal" and node["value"] is not None

    def is_plain_dict(self, node: dict[str, Any]) -> bool:
        # a repeated key ({a: x, a: y}) keeps its first place and last value: left to compile_output_tree
        keys = [child["value"] for child in node["children"]]
        return self.options.dict_cls in (None, dict) and len(set(keys)) == len(keys)

    def text_test(self, node: dict[str, Any]) -> tuple[dict[str, Any], str, str] | None:
        """(the other side, '==' or '!=', the text) for a comparison with a string constant: no number or
        boolean rule can apply to it, so Python's comparison is JMESPath's."""
        if node["value"] not in ("eq", "ne"):
            return None
        left, right = node["children"]
        operator = "==" if node["value"] == "eq" else "!="
        for side, constant in ((left, right), (right, left)):
            if constant["type"] == "literal" and type(constant["value"]) is str:
                return side, operator, constant["value"]
        return None

    def path(self, names: tuple[str, ...]) -> str:
        """Reading a.b.c from the document: `.get` while the value is a dict, _get (null or a mapping's get) otherwise;
        from the longest part of it this event has read already."""
        cut = next((cut for cut in range(len(names), 0, -1) if names[:cut] in self.guards), 0)
        if cut == len(names):
            return self.guards[names]
        code = self.guards[names[:cut]] if cut else "doc"
        if code == "doc":
            code, cut = f"doc.get({names[0]!r})", 1
        for name in names[cut:]:
            step = self.temp("p")
            code = f"({step}.get({name!r}) if type({step} := {code}) is dict else _get({step}, {name!r}))"
        return code

    def constant(self, value: Any, prefix: str = "k") -> str:
        if isinstance(value, str) and len(value) < 200:
            return repr(value)
        if value is None or type(value) is bool or type(value) is int:
            return repr(value)
        name = f"_{prefix}{len(self.constants)}"
        self.constants[name] = value
        return name

    def temp(self, prefix: str) -> str:
        self.temps += 1
        return f"{prefix}{self.temps}"


# what the engine puts on each event's document besides the vendor's payload (see streams.py), by where it comes from
RESERVED = {"_request": "tr.request", "_options": "tr.options", "_event": "name", "_state": "tr.state"}


def reserved_reads(trees: list[dict[str, Any]]) -> set[str]:
    """The reserved keys expressions can see: those they name; all of them if one looks at the document itself
    (`@`, `*` over an object), which shows every key."""
    seen: set[str] = set()
    pending = list(trees)
    while pending:
        node = pending.pop()
        kind = node["type"]
        if kind in ("current", "identity", "value_projection"):
            return set(RESERVED)
        if kind == "field" and node["value"] in RESERVED:
            seen.add(node["value"])
        pending.extend(child for child in node.get("children", ()) if isinstance(child, dict))
    return seen


def _expressions(rule: Rule) -> list[Expression]:
    return [e for e in (rule.when, rule.error) if e is not None] + [e for _, e in rule.set] + list(rule.emit)
