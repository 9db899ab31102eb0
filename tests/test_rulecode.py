"""Generated stream rules (rulecode.py) against the plain reading of a stream spec: for each event, every rule
the event name reaches, in file order, its `when` evaluated in full, `set`, `emit`, `error` — over every
provider's stream spec, its own recorded test streams and generated events."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oneapi.closures import is_false
from oneapi.framing import Event, parse_all
from oneapi.mapping import Compiler, MappingError
from oneapi.providers import load_providers
from oneapi.streams import END_EVENT, StreamSpec, StreamTranslator, compile_stream

ROOT = Path(__file__).resolve().parent.parent


class ReferenceTranslator(StreamTranslator):
    """The rules read one by one, the way docs/providers.md describes them; and the chunk finishing as first written."""

    def feed(self, event: Event) -> list[dict[str, Any]]:
        if self.failed:
            return []
        data = event.data
        doc = data if type(data) is dict else {"_data": data}
        doc.update({"_request": self.request, "_options": self.options, "_event": event.name, "_state": self.state})
        name = event.name
        if self.spec.event is not None and name != END_EVENT:
            computed = self.spec.event.search(doc)
            name = doc["_event"] = computed if isinstance(computed, str) else name
        out: list[dict[str, Any]] = []
        for rule in self.spec.by_event.get(name, self.spec.other_events):
            if rule.when is not None and is_false(rule.when.search(doc)):
                continue
            if rule.set:
                updates = {key: expression.search(doc) for key, expression in rule.set}
                self.state = doc["_state"] = {**self.state, **updates}
            for expression in rule.emit:
                produced = expression.search(doc)
                for chunk in produced if isinstance(produced, list) else [produced]:
                    finished = self._chunk(chunk)
                    if finished is not None:
                        out.append(finished)
            if rule.error is not None:
                error = rule.error.search(doc)
                if error is not None:
                    self.failed = True
                    if not isinstance(error, dict):
                        error = {"message": str(error)}
                    out.append({"error": {"message": str(error.get("message") or "Upstream stream failed."),
                                          "type": error.get("type") or "upstream_error", "code": error.get("code"),
                                          "param": error.get("param")}})
                    return out
        return out

    def _chunk(self, produced: Any) -> dict[str, Any] | None:
        if not isinstance(produced, dict):
            return None
        body = produced
        if not self.include_usage:
            body.pop("usage", None)
        choices = body.get("choices") or []
        if not body.get("usage"):
            for choice in choices:
                if choice.get("delta") or choice.get("finish_reason"):
                    break
            else:
                return None
        for choice in choices:
            if "index" not in choice:
                choice["index"] = 0
            if "delta" not in choice:
                choice["delta"] = {}
        state = self.state
        chunk = {"id": state.get("id") or self.fallback_id, "object": "chat.completion.chunk", "created": self.created,
                 "model": state.get("model") or self.request.get("model"), **body}
        if not body.get("choices"):
            chunk["choices"] = choices
        return chunk


def stream_specs() -> Iterator[tuple[str, StreamSpec, list[bytes]]]:
    """(provider/operation, its stream spec, the raw streams of its self-test cases)."""
    providers, _ = load_providers(ROOT / "providers.d")
    for name, provider in sorted(providers.items()):
        for op_name, operation in sorted(provider.operations.items()):
            if operation.stream is None:
                continue
            raws = [base64.b64decode(case["stream_base64"]) if "stream_base64" in case else case["stream"].encode()
                    for case in provider.tests if case.get("operation") == op_name and ("stream" in case or "stream_base64" in case)]
            yield f"{name}/{op_name}", operation.stream, raws


SPECS = list(stream_specs())


def run(translator: StreamTranslator, events: list[Event]) -> list[Any]:
    """Every chunk, and the error a feed raised (as its message), with the state after each event."""
    seen: list[Any] = []
    for event in [*events, Event(END_EVENT, {})]:
        try:
            seen.append(translator.feed(Event(event.name, _copy(event.data), dict(event.meta))))
        except MappingError as exc:
            seen.append(f"MappingError: {exc}")
        seen.append(dict(translator.state))
    return seen


def twins(spec: StreamSpec, include_usage: bool) -> tuple[StreamTranslator, StreamTranslator]:
    request = {"model": "m", "stream": True, "stream_options": {"include_usage": include_usage}}
    generated, reference = StreamTranslator(spec, request, {"o": 1}), ReferenceTranslator(spec, request, {"o": 1})
    reference.created = generated.created
    reference._fallback_id = generated._fallback_id = "chatcmpl-" + uuid.uuid4().hex
    return generated, reference


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def test_every_provider_stream_spec_is_covered() -> None:
    assert len(SPECS) >= 8 and sum(len(raws) for _, _, raws in SPECS) >= 10


@pytest.mark.parametrize("name, spec, raws", SPECS, ids=[name for name, _, _ in SPECS])
@pytest.mark.parametrize("include_usage", [True, False])
def test_recorded_streams_translate_as_the_rules_read(name: str, spec: StreamSpec, raws: list[bytes], include_usage: bool) -> None:
    for raw in raws:
        events = parse_all(spec.framing, raw)
        generated, reference = twins(spec, include_usage)
        assert run(generated, events) == run(reference, events)


def _vocabulary(spec: StreamSpec) -> tuple[list[str], list[Any]]:
    """The field names and constants a spec's expressions use: what generated events are made of."""
    names: set[str] = set()
    constants: list[Any] = []

    def walk(node: dict[str, Any]) -> None:
        if node["type"] == "field":
            names.add(node["value"])
        elif node["type"] == "literal" and not isinstance(node["value"], (dict, list)):
            constants.append(node["value"])
        for child in node.get("children", ()):
            if isinstance(child, dict):
                walk(child)

    for rule in spec.rules:
        expressions = [e for e in (rule.when, rule.error) if e is not None] + [e for _, e in rule.set] + list(rule.emit)
        for expression in expressions:
            walk(Compiler.parse(expression.source))
    return sorted(names - {"_state", "_request", "_options", "_event"}), constants


def documents(spec: StreamSpec) -> st.SearchStrategy[dict[str, Any]]:
    names, constants = _vocabulary(spec)
    scalars = st.one_of(st.sampled_from(constants or [0]), st.none(), st.booleans(), st.integers(-2, 3), st.text(max_size=3),
                        st.sampled_from(["", "text_delta", "tool_use", "stop", "{\"a\": 1}"]))
    keys = st.sampled_from(names or ["x"])
    values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)),
                          max_leaves=12)
    return st.dictionaries(keys, values, max_size=6)


@pytest.mark.parametrize("name, spec", [(name, spec) for name, spec, _ in SPECS], ids=[name for name, _, _ in SPECS])
def test_generated_events_translate_as_the_rules_read(name: str, spec: StreamSpec) -> None:
    event_names = sorted({n for n in spec.by_event if n is not None and n != END_EVENT}) + ["other"]

    @settings(max_examples=60, deadline=None)
    @given(events=st.lists(st.tuples(st.sampled_from(event_names) | st.none(), documents(spec) | st.text(max_size=4)), max_size=8),
           include_usage=st.booleans())
    def check(events: list[tuple[str | None, Any]], include_usage: bool) -> None:
        feed = [Event(event_name, data) for event_name, data in events]
        generated, reference = twins(spec, include_usage)
        assert run(generated, feed) == run(reference, feed)

    check()


TRICKY = compile_stream({
    "init": {"n": 0, "mode": "a"},
    "rules": [
        {"event": "d", "when": "kind == 'x'", "set": {"mode": "'b'", "n": "add(_state.n, `1`)"},
         "emit": "{choices: [{delta: {content: text, role: `null`}, finish_reason: `null`}], usage: {total_tokens: _state.n}}"},
        {"event": "d", "when": "kind == 'x' && _state.mode == 'b' || `false`", "emit": ["{choices: [{delta: {content: 'second'}}]}",
                                                                                         "{choices: `[]`, usage: u}"]},
        {"event": "d", "when": "kind != 'x' && !flag", "emit": "{choices: [{delta: {content: to_string(length(text))}, index: `1`}]}"},
        {"event": "d", "when": "kind == 'list'", "emit": "[{choices: [{delta: {content: 'a'}}]}, {choices: [{delta: {content: 'b'}}]}]"},
        {"event": "d", "when": "kind == 'path'", "emit": "whole"},
        {"event": "d", "emit": "{choices: [{delta: {content: text}, a: x, a: y}]}"},
        {"event": ["d", "e"], "when": "kind == 'bad'", "error": "{message: message, code: `7`}"},
        {"when": "kind == 'str'", "error": "message"},
        {"event": "s", "emit": "{choices: [{delta: {content: text}}]}"},  # a lone optional key
        # names the generated code must quote, not run
        {"event": "s", "when": "\"it's \\\"odd\\\"\".c == 'y'", "emit": "{choices: [{delta: {\"it's \\\"odd\\\"\": \"it's \\\"odd\\\"\".c}}]}"},
    ],
}, Compiler())


@pytest.mark.parametrize("events", [
    [Event("d", {"kind": "x", "text": "1"}), Event("d", {"kind": "x", "text": None, "u": {"a": None, "b": 1}})],
    [Event("d", {"kind": "y", "text": "abc", "flag": 0}), Event("d", {"kind": "y", "text": [1, 2], "flag": False})],
    [Event("d", {"kind": "y", "text": 3})],  # length(3): a JMESPath type error, reported against its rule
    [Event("d", {"kind": "list"}), Event("d", {"kind": "path", "whole": {"choices": [{"delta": {"content": "w", "n": None}}]}})],
    [Event("d", {"kind": "z", "x": 1, "y": None, "text": "t"}), Event("e", {"kind": "bad", "message": "boom"}), Event("d", {})],
    [Event("q", {"kind": "str", "message": "plain"}), Event("q", {"kind": "str"})],
    [Event("d", "not json"), Event(None, {"kind": ["x"]}), Event("d", {"kind": {"kind": "x"}})],
    [Event("s", {}), Event("s", {"text": None}), Event("s", {"text": "x"}), Event("s", {"it's \"odd\"": {"c": "y"}})],
])
@pytest.mark.parametrize("include_usage", [True, False])
def test_tricky_rules_translate_as_the_rules_read(events: list[Event], include_usage: bool) -> None:
    generated, reference = twins(TRICKY, include_usage)
    expected = run(reference, events)
    assert run(generated, events) == expected
    assert any(isinstance(item, list) and item for item in expected) or any(isinstance(item, str) for item in expected)


def test_a_type_error_names_the_rule_expression() -> None:
    generated, _ = twins(TRICKY, True)
    with pytest.raises(MappingError, match=r"length.*to_string\(length\(text\)\)"):
        generated.feed(Event("d", {"kind": "y", "text": 3}))
