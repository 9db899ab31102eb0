"""Stream translation: a small declarative state machine from vendor events to OpenAI chunks.

A provider's `stream:` section names a framing (framing.py) and a list of rules. For each
event, every rule whose `event` (event names) and `when` (a JMESPath condition) match runs in
order: `set` updates named state, then `emit` produces zero or more chunks from templates,
and `error` ends the stream with an OpenAI error object. A pseudo-event `_end` runs when the
upstream stream ends. The engine fills each chunk's id, object, created and model.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from .closures import is_false
from .framing import Event
from .mapping import Compiler, Expression, drop_nulls

END_EVENT = "_end"


@dataclass(frozen=True)
class Rule:
    on: frozenset[str] | None  # event names this rule listens to; None = every event
    when: Expression | None
    set: tuple[tuple[str, Expression], ...]
    emit: tuple[Expression, ...]
    error: Expression | None
    line: int = 0


@dataclass(frozen=True)
class StreamSpec:
    framing: str
    event: Expression | None  # computes the event name from the payload when the framing has none
    init: Mapping[str, Any]
    rules: tuple[Rule, ...]
    by_event: Mapping[str | None, tuple[Rule, ...]] = field(default_factory=dict)  # the rules an event name reaches
    other_events: tuple[Rule, ...] = ()  # the rules any other event (not `_end`) reaches

    def rules_for(self, name: str | None) -> tuple[Rule, ...]:
        return self.by_event.get(name, self.other_events)


def _index_rules(rules: tuple[Rule, ...]) -> tuple[dict[str | None, tuple[Rule, ...]], tuple[Rule, ...]]:
    """Each named event's rules, in file order, once: `_end` reaches only the rules that name it."""
    names = {name for rule in rules if rule.on is not None for name in rule.on} | {END_EVENT}
    by_event = {name: tuple(r for r in rules if (r.on is None and name != END_EVENT) or (r.on is not None and name in r.on))
                for name in names}
    return by_event, tuple(r for r in rules if r.on is None)


def compile_stream(raw: Mapping[str, Any], compiler: Compiler, line_of: Any = None) -> StreamSpec:
    """The `stream:` section of an operation; `line_of(index)` gives a rule's line for messages."""
    rules = []
    for i, r in enumerate(raw.get("rules") or ()):
        on = r.get("event")
        names = None if on is None else frozenset([on] if isinstance(on, str) else on)
        rules.append(Rule(
            on=names,
            when=compiler.compile(r["when"]) if r.get("when") else None,
            set=tuple((k, compiler.compile(v)) for k, v in (r.get("set") or {}).items()),
            emit=tuple(compiler.compile(e) for e in ([r["emit"]] if isinstance(r.get("emit"), str) else r.get("emit") or ())),
            error=compiler.compile(r["error"]) if r.get("error") else None,
            line=line_of(i) if line_of else 0,
        ))
    by_event, other_events = _index_rules(tuple(rules))
    return StreamSpec(
        framing=raw.get("framing", "sse"),
        event=compiler.compile(raw["event_name"]) if raw.get("event_name") else None,
        init=dict(raw.get("init") or {}),
        rules=tuple(rules),
        by_event=by_event,
        other_events=other_events,
    )


@dataclass
class StreamTranslator:
    """One stream's state: feed vendor events, get OpenAI chunk objects (or one error object) back."""

    spec: StreamSpec
    request: Mapping[str, Any]
    options: Mapping[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    failed: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    fallback_id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.state = dict(self.spec.init)
        self.include_usage = bool((self.request.get("stream_options") or {}).get("include_usage"))

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """The OpenAI chunks for one vendor event; after an error nothing more comes out."""
        if self.failed:
            return []
        data = event.data
        doc = dict(data) if isinstance(data, dict) else {"_data": data}
        doc["_request"] = self.request
        doc["_options"] = self.options
        name = event.name
        if self.spec.event is not None and name != END_EVENT:
            doc["_event"] = name
            doc["_state"] = self.state
            computed = self.spec.event.search(doc)
            name = computed if isinstance(computed, str) else name
        doc["_event"] = name
        doc["_state"] = self.state
        out: list[dict[str, Any]] = []
        for rule in self.spec.rules_for(name):
            if rule.when is not None and is_false(rule.when.search(doc)):
                continue
            if rule.set:
                updates = {key: expr.search(doc) for key, expr in rule.set}
                self.state = {**self.state, **updates}
                doc["_state"] = self.state
            for template in rule.emit:
                produced = template.search(doc)
                for chunk in produced if isinstance(produced, list) else [produced]:
                    finished = self._chunk(chunk)
                    if finished is not None:
                        out.append(finished)
            if rule.error is not None:
                error = rule.error.search(doc)
                if error is not None:
                    self.failed = True
                    out.append({"error": _error_object(error)})
                    return out
        return out

    def finish(self) -> list[dict[str, Any]]:
        """The upstream stream ended: run the `_end` rules."""
        return self.feed(Event(END_EVENT, {}))

    def _chunk(self, produced: Any) -> dict[str, Any] | None:
        if not isinstance(produced, dict):
            return None
        body = drop_nulls(produced)
        if not self.include_usage:
            body.pop("usage", None)
        choices = body.get("choices") or []
        if not body.get("usage") and all(not c.get("delta") and not c.get("finish_reason") for c in choices):
            return None  # nothing a client could act on
        for choice in choices:
            choice.setdefault("index", 0)
            choice.setdefault("delta", {})
        return {
            "id": self.state.get("id") or self.fallback_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.state.get("model") or self.request.get("model"),
            **body,
            "choices": choices,
        }


def _error_object(error: Any) -> dict[str, Any]:
    if not isinstance(error, dict):
        error = {"message": str(error)}
    return {
        "message": str(error.get("message") or "Upstream stream failed."),
        "type": error.get("type") or "upstream_error",
        "code": error.get("code"),
        "param": error.get("param"),
    }
