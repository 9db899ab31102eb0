"""The stream state machine: state across events, emit templates, the _end event, in-band errors."""

from __future__ import annotations

from oneapi.framing import Event
from oneapi.mapping import Compiler
from oneapi.streams import StreamTranslator, compile_stream
from oneapi.usage import Usage
from test_rulecode import ReferenceTranslator

SPEC = compile_stream({
    "framing": "sse",
    "init": {"tool_index": -1, "seen": 0},
    "rules": [
        {"event": "start", "set": {"id": "id", "input": "usage.input"}, "emit": "{choices: [{delta: {role: 'assistant'}}]}"},
        {"event": "tool", "set": {"tool_index": "add(_state.tool_index, `1`)"},
         "emit": "{choices: [{delta: {tool_calls: [{index: _state.tool_index, function: {name: name}}]}}]}"},
        {"event": "text", "when": "text != ''", "emit": "{choices: [{delta: {content: text}}]}"},
        {"set": {"seen": "add(_state.seen, `1`)"}},
        {"event": "stop", "emit": ["{choices: [{finish_reason: 'stop'}]}",
                                   "{usage: {prompt_tokens: _state.input, completion_tokens: usage.output}}"]},
        {"event": "_end", "emit": "{choices: [{delta: {content: join('', ['events: ', to_string(_state.seen)])}}]}"},
        {"event": "error", "error": "{message: message, type: 'overloaded'}"},
    ],
}, Compiler())


def run(events: list[Event], include_usage: bool = True) -> list[dict]:
    translator = StreamTranslator(SPEC, {"model": "m", "stream_options": {"include_usage": include_usage}}, {})
    out = []
    for event in events:
        out.extend(translator.feed(event))
    return out + translator.finish()


def test_state_joins_values_from_different_events() -> None:
    chunks = run([Event("start", {"id": "msg_1", "usage": {"input": 7}}), Event("stop", {"usage": {"output": 3}})])
    assert chunks[0]["id"] == "msg_1" and chunks[0]["object"] == "chat.completion.chunk" and chunks[0]["model"] == "m"
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant"}}]
    assert chunks[2]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3} and chunks[2]["choices"] == []
    assert all(c["id"] == "msg_1" for c in chunks)


def test_counter_across_events_and_skipped_events() -> None:
    chunks = run([Event("tool", {"name": "a"}), Event("ping", {}), Event("text", {"text": ""}), Event("tool", {"name": "b"})])
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert [(c["index"], c["function"]["name"]) for c in calls] == [(0, "a"), (1, "b")]
    assert chunks[-1]["choices"][0]["delta"]["content"] == "events: 4"  # every event counted, the _end rule saw it


def test_usage_only_when_the_client_asked() -> None:
    chunks = run([Event("stop", {"usage": {"output": 3}})], include_usage=False)
    assert all("usage" not in c for c in chunks)
    assert [c["choices"][0].get("finish_reason") for c in chunks] == ["stop", None]


def test_usage_the_client_did_not_ask_for_is_withheld_but_reported() -> None:
    """Asked for usage on a client's behalf, a vendor may report it on a content chunk (as Gemini does on every
    one): the client that did not ask gets the chunk without the field, and the meter still gets the last usage."""
    spec = compile_stream({"rules": [
        {"emit": "{choices: [{delta: {content: text}}], usage: {prompt_tokens: n, completion_tokens: m, total_tokens: add(n, m)}}"},
    ]}, Compiler())
    events = [Event("d", {"text": "a", "n": 3, "m": 1}), Event("d", {"text": "b", "n": 3, "m": 2}), Event("d", {"n": 3, "m": 2})]
    # the last event only has usage: a chunk for the client that asked, nothing for the one that did not
    for client_usage, expected in ((False, [None, None]), (None, [4, 5, 5])):
        translator = StreamTranslator(spec, {"model": "m", "stream_options": {"include_usage": True}}, {}, client_usage=client_usage)
        chunks = [c for e in events for c in translator.feed(e)]
        assert [(c.get("usage") or {}).get("total_tokens") for c in chunks] == expected
        assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["a", "b", None][:len(expected)]
        assert translator.reported_usage() == Usage(3, 2)


def test_error_ends_the_stream() -> None:
    chunks = run([Event("text", {"text": "a"}), Event("error", {"message": "Overloaded"}), Event("text", {"text": "b"})])
    assert chunks[-1] == {"error": {"message": "Overloaded", "type": "overloaded", "code": None, "param": None}}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[:-1]] == ["a"]


def test_event_name_from_payload() -> None:
    spec = compile_stream({"event_name": "type", "rules": [{"event": "delta", "emit": "{choices: [{delta: {content: t}}]}"}]}, Compiler())
    translator = StreamTranslator(spec, {"model": "m"}, {})
    assert translator.feed(Event(None, {"type": "delta", "t": "x"}))[0]["choices"][0]["delta"] == {"content": "x"}
    assert translator.feed(Event(None, {"type": "other", "t": "x"})) == []


def test_rules_run_in_file_order_whether_they_name_the_event_or_not() -> None:
    spec = compile_stream({"init": {"log": ""}, "rules": [
        {"event": ["a", "b"], "set": {"log": "join('', [_state.log, '1'])"}},
        {"set": {"log": "join('', [_state.log, '2'])"}},
        {"event": "a", "set": {"log": "join('', [_state.log, '3'])"}},
        {"event": "_end", "emit": "{choices: [{delta: {content: _state.log}}]}"},
    ]}, Compiler())
    translator = StreamTranslator(spec, {"model": "m"}, {})
    for name in ("a", "b", None, "z"):
        translator.feed(Event(name, {}))
    assert translator.finish()[0]["choices"][0]["delta"]["content"] == "123" "12" "2" "2"


GUARDED = compile_stream({
    "framing": "sse",
    "init": {"mode": "a"},
    "rules": [
        {"event": "d", "when": "kind == 'x'", "emit": "{choices: [{delta: {content: join('', ['x:', text])}}]}"},
        {"event": "d", "when": "'y' == kind && text != ''", "emit": "{choices: [{delta: {content: join('', ['y:', text])}}]}"},
        # a condition on state is never read ahead: the rule before it changes the state
        {"event": "d", "when": "kind == 'z'", "set": {"mode": "'b'"}},
        {"event": "d", "when": "_state.mode == 'b' && kind == 'z'", "emit": "{choices: [{delta: {content: 'mode b'}}]}"},
        {"event": "d", "when": "meta.kind == `1`", "emit": "{choices: [{delta: {content: 'number, not text'}}]}"},
    ],
}, Compiler())


def test_rules_reading_one_path_see_it_once_and_keep_their_meaning() -> None:
    """Rules that test the same field against text constants read it once per event (an equality guard); the
    result is what evaluating every condition gives, including a condition's remainder and state set before it."""
    events = [Event("d", {"kind": "x", "text": "1"}), Event("d", {"kind": "y", "text": ""}), Event("d", {"kind": "y", "text": "2"}),
              Event("d", {"kind": "z"}), Event("d", {"kind": None}), Event("d", {"meta": {"kind": 1}})]
    assert [r.guard is not None for r in GUARDED.rules] == [True, True, True, False, False]
    translator = StreamTranslator(GUARDED, {"model": "m"}, {})
    contents = [c["choices"][0]["delta"]["content"] for e in events for c in translator.feed(e)]
    assert contents == ["x:1", "y:2", "mode b", "number, not text"]

    # the same rules with every condition evaluated in full
    plain = ReferenceTranslator(GUARDED, {"model": "m"}, {})
    assert [c["choices"][0]["delta"]["content"] for e in events for c in plain.feed(e)] == contents
