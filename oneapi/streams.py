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
from typing import Any, Callable, Mapping


from .closures import equality_guard
from .framing import Event
from .mapping import Compiler, Expression
from .rulecode import Runner, generate
from .usage import Usage, normalise_usage

END_EVENT = "_end"


@dataclass(frozen=True)
class Rule:
    on: frozenset[str] | None  # event names this rule listens to; None = every event
    when: Expression | None
    set: tuple[tuple[str, Expression], ...]
    emit: tuple[Expression, ...]
    error: Expression | None
    line: int = 0
    # `when` is, or starts with, a path == 'text' test (closures.equality_guard): (path, getter, text, whole)
    guard: tuple[tuple[str, ...], Callable[[Any], Any], str, bool] | None = None


@dataclass(frozen=True)
class StreamSpec:
    framing: str
    event: Expression | None  # computes the event name from the payload when the framing has none
    init: Mapping[str, Any]
    rules: tuple[Rule, ...]
    by_event: Mapping[str | None, tuple[Rule, ...]] = field(default_factory=dict)  # the rules an event name reaches
    other_events: tuple[Rule, ...] = ()  # the rules any other event (not `_end`) reaches
    # the same rules as generated code (rulecode.py): one function per name in by_event, one for any other name
    runners: Mapping[str | None, Runner] = field(default_factory=dict)
    run_other: Runner = lambda doc, translator, out, name: None


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
            guard=equality_guard(compiler.parse(r["when"])) if r.get("when") else None,
            set=tuple((k, compiler.compile(v)) for k, v in (r.get("set") or {}).items()),
            emit=tuple(compiler.compile_output(e) for e in ([r["emit"]] if isinstance(r.get("emit"), str) else r.get("emit") or ())),
            error=compiler.compile(r["error"]) if r.get("error") else None,
            line=line_of(i) if line_of else 0,
        ))
    by_event, other_events = _index_rules(tuple(rules))
    runners, run_other = generate(by_event, other_events, compiler)
    return StreamSpec(
        framing=raw.get("framing", "sse"),
        event=compiler.compile(raw["event_name"]) if raw.get("event_name") else None,
        init=dict(raw.get("init") or {}),
        rules=tuple(rules),
        by_event=by_event,
        other_events=other_events,
        runners=runners,
        run_other=run_other,
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
    _fallback_id: str | None = None
    _envelope_names: tuple[Any, Any] = (False, False)  # the state's (id, model) the envelope was built for
    _envelope: dict[str, Any] = field(default_factory=dict)
    _envelope_state: Any = None  # the state object the envelope was last checked against
    # whether chunks carry usage: None reads the request's stream_options; False when the gateway asked for
    # usage the client did not (the meter still gets it, from `usage`)
    client_usage: bool | None = None
    usage: dict[str, Any] | None = None  # the last usage object the rules emitted, shown to the client or not

    @property
    def fallback_id(self) -> str:
        """The chunks' id when the vendor's events carry none: drawn once, when first needed."""
        if self._fallback_id is None:
            self._fallback_id = "chatcmpl-" + uuid.uuid4().hex
        return self._fallback_id

    def __post_init__(self) -> None:
        self.state = dict(self.spec.init)
        asked = bool((self.request.get("stream_options") or {}).get("include_usage"))
        self.include_usage = asked if self.client_usage is None else self.client_usage

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """The OpenAI chunks for one vendor event; after an error nothing more comes out."""
        if self.failed:
            return []
        data = event.data
        # the event's own object (parsed for this call alone) takes the reserved keys, rather than a copy
        doc = data if type(data) is dict else {"_data": data}
        name = event.name
        spec = self.spec
        if spec.event is not None and name != END_EVENT:
            doc.update(_request=self.request, _options=self.options, _event=name, _state=self.state)
            computed = spec.event.search(doc)
            name = computed if isinstance(computed, str) else name
        out: list[dict[str, Any]] = []
        spec.runners.get(name, spec.run_other)(doc, self, out, name)  # puts the reserved keys its rules read on doc
        return out

    def reported_usage(self) -> Usage | None:
        """What the vendor reported, as the rules put it into chunks (the last one that had usage)."""
        return normalise_usage(self.usage)

    def finish(self) -> list[dict[str, Any]]:
        """The upstream stream ended: run the `_end` rules."""
        return self.feed(Event(END_EVENT, {}))

    def _chunk(self, body: Any) -> dict[str, Any] | None:
        """An emitted object as the chunk a client gets; None when it holds nothing a client could act on.
        Emit expressions are compiled with compile_output: their results come null-free and newly built."""
        if type(body) is not dict and not isinstance(body, dict):
            return None
        if self.include_usage:
            usage = body.get("usage")
            useful = bool(usage)
        else:
            usage = body.pop("usage", None)
            useful = False
        if usage:
            self.usage = usage
        choices = body.get("choices") or []
        for choice in choices:
            if "index" not in choice:
                choice["index"] = 0
            if "delta" in choice:
                delta = choice["delta"]
            else:
                choice["delta"] = delta = {}
            if not useful and (delta or choice.get("finish_reason")):
                useful = True
        if not useful:
            return None
        # {id, object, created, model, **body, "choices": choices}, from an envelope built once per id and model
        state = self.state
        if state is not self._envelope_state:  # a rule's `set` makes a new state object
            self._envelope_state = state
            names = (state.get("id"), state.get("model"))
            if names != self._envelope_names:
                self._envelope_names = names
                self._envelope = {"id": names[0] or self.fallback_id, "object": "chat.completion.chunk", "created": self.created,
                                  "model": names[1] or self.request.get("model")}
        chunk = {**self._envelope, **body}
        if not body.get("choices"):
            chunk["choices"] = choices
        return chunk

