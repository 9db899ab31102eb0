"""The mapping functions: each one as the provider docs show it."""

from __future__ import annotations

import base64
import struct

import pytest

from oneapi.mapping import Compiler, MappingError, drop_nulls

TABLES = {"finish_reason": {"end_turn": "stop", "tool_use": "tool_calls", "*": "stop"}}


def search(expression: str, data: object = None) -> object:
    return Compiler(TABLES).compile(expression).search(data if data is not None else {})


def test_json_parse_and_dump() -> None:
    assert search("json_parse(arguments)", {"arguments": '{"city": "Paris"}'}) == {"city": "Paris"}
    assert search("json_parse(arguments)", {"arguments": "not json"}) is None
    assert search("json_dump(input)", {"input": {"a": [1, 2]}}) == '{"a":[1,2]}'
    assert search("json_dump(s)", {"s": "already text"}) == "already text"


def test_data_url() -> None:
    assert search("data_url(u)", {"u": "data:image/png;base64,iVBORw0KGgo="}) == {"media_type": "image/png", "data": "iVBORw0KGgo=", "base64": True}
    assert search("data_url(u)", {"u": "data:text/plain,hi%21"})["data"] == base64.b64encode(b"hi!").decode()
    assert search("data_url(u)", {"u": "https://example.com/cat.png"}) is None


def test_enum_tables_with_fallback() -> None:
    assert search("enum('finish_reason', r)", {"r": "tool_use"}) == "tool_calls"
    assert search("enum('finish_reason', r)", {"r": "something_new"}) == "stop"
    assert search("enum('finish_reason', r)", {}) is None
    with pytest.raises(MappingError, match="no table"):
        search("enum('missing', r)", {"r": "x"})


def test_group_runs_merges_consecutive_turns() -> None:
    turns = [{"role": "user", "c": [1]}, {"role": "user", "c": [2]}, {"role": "assistant", "c": [3]}, {"role": "user", "c": [4]}]
    merged = search("group_runs(@, &role)[*].{role: [0].role, c: [*].c[]}", turns)
    assert merged == [{"role": "user", "c": [1, 2]}, {"role": "assistant", "c": [3]}, {"role": "user", "c": [4]}]


def test_default_keeps_falsy_values_that_or_would_lose() -> None:
    assert search("default(t, `1`)", {"t": 0}) == 0
    assert search("t || 'x'", {"t": ""}) == "x"  # the trap default() avoids
    assert search("default(t, 'x')", {"t": ""}) == ""
    assert search("default(t, `true`)", {"t": False}) is False
    assert search("default(t, `1`)", {}) == 1


def test_if_get_add_concat_enumerate_entries() -> None:
    assert search("if(x, 'a', 'b')", {"x": []}) == "b"
    assert search("get(names, id)", {"names": {"c1": "f"}, "id": "c1"}) == "f"
    assert search("get(docs, i)", {"docs": ["a", "b"], "i": 1}) == "b"
    assert search("get(docs, i)", {"docs": ["a", "b"], "i": 2}) is None
    assert search("get(docs, i)", {"docs": ["a", "b"], "i": "1"}) is None
    assert search("add(a, b, c)", {"a": 1, "b": None, "c": 2}) == 3
    assert search("concat(a, b, c)", {"a": [1], "b": None, "c": 2}) == [1, 2]
    assert search("enumerate(xs, `5`)", {"xs": ["a"]}) == [{"index": 5, "item": "a"}]
    assert search("from_entries(xs[].[id, name])", {"xs": [{"id": "c1", "name": "f"}]}) == {"c1": "f"}
    assert search("entries(o)", {"o": {"a": 1}}) == [{"key": "a", "value": 1}]
    assert search("annotate(xs, 'root', r)", {"xs": [{"a": 1}], "r": 7}) == [{"a": 1, "root": 7}]
    assert search("split(m, '/')[1]", {"m": "image/png"}) == "png"
    assert search("[lower(a), upper(a)]", {"a": "Ab"}) == ["ab", "AB"]


def test_content_helpers() -> None:
    assert search("as_parts(c)", {"c": "hi"}) == [{"type": "text", "text": "hi"}]
    assert search("as_parts(c)", {"c": None}) == []
    assert search("as_text(c)", {"c": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]}) == "ab"


def test_uuid_now_and_float32_base64() -> None:
    assert len(search("uuid()")) == 36
    assert search("now()") > 1_700_000_000
    encoded = search("float32_base64(v)", {"v": [0.25, -0.5]})
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (0.25, -0.5)


def test_bad_expressions_fail_at_load() -> None:
    with pytest.raises(MappingError, match="bad JMESPath"):
        Compiler().compile("{a: ")


def test_drop_nulls_is_deep() -> None:
    assert drop_nulls({"a": None, "b": {"c": None, "d": [{"e": None, "f": 1}]}}) == {"b": {"d": [{"f": 1}]}}


def test_add_refuses_a_vendor_number_sent_as_text() -> None:
    """jmespath type-checks only the first variadic argument; a later string must still be a MappingError, not a crash."""
    assert search("add(a, b, c)", {"a": 1, "c": 2.5}) == 3.5
    for bad in ("12", True, [1], {"n": 1}):
        with pytest.raises(MappingError, match="add"):
            search("add(a, b)", {"a": None, "b": bad})
