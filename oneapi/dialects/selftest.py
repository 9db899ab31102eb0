"""Dialect self-tests: the `tests:` cases inside each dialect file, run by `oneapi check` and CI.

A case gives a dialect `request` and the `canonical` chat body (and `extensions`) it reads as, or the `refusal`
it gets; or a canonical `response` and the dialect body it is written as (`expect`); or a canonical `stream`
(OpenAI SSE text) and the dialect's events (`expect_events`, [name, data] pairs); or an `error` {status, message}
and the dialect's error body (`expect`). Expected objects match as subsets, as in provider self-tests.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import orjson

from ..documents import Problem
from ..errors import GatewayError
from ..framing import parse_all
from ..selftest import _mismatch, run_selftests
from ..streams import END_EVENT
from .answers import error_answer, read_request
from .events import EventWriter, canonical_events
from .spec import Dialect

# what the response and stream rules see as _options in a self-test
CONTEXT = {"model": "client-model", "answer_id": "test", "prompt_estimate": 10}


def run_dialect_selftests(dialects: Iterable[Dialect]) -> tuple[int, list[Problem]]:
    """(number of cases run, problems), each problem at the line of its failing case."""
    return run_selftests(dialects, run_case)


def run_case(dialect: Dialect, case: Mapping[str, Any]) -> str | None:
    """None if the case passes, else what differs."""
    if "request" in case:
        body = dict(case["request"])
        try:
            read = read_request(dialect, case.get("operation", "chat"), orjson.dumps(body), body, case.get("path") or {}, case.get("query") or {}, {})
        except GatewayError as exc:
            if "refusal" in case and case["refusal"] in exc.message:
                return None
            return f"refused: {exc.message}"
        if "refusal" in case:
            if read.refusal is not None and case["refusal"] in read.refusal:
                return None
            return f"expected a refusal containing {case['refusal']!r}, got {read.refusal!r}"
        if "canonical" in case:
            if read.canonical != case["canonical"]:
                return f"canonical request differs:\n  expected {case['canonical']}\n  actual   {read.canonical}"
        if "extensions" in case:
            return _mismatch(case["extensions"], read.extensions, "extensions")
        return None
    if "response" in case:
        doc = {**case["response"], "_request": {}, "_options": CONTEXT}
        return _mismatch(case.get("expect"), dialect.response.search(doc), "response")
    if "stream" in case:
        if dialect.stream_spec is None:
            return "the dialect has no stream section"
        writer = EventWriter(dialect.stream_spec, {}, CONTEXT, sequence=dialect.stream_sequence)
        events: list[dict[str, Any]] = []
        for event in parse_all("sse", case["stream"].encode()):
            for name, fields in canonical_events(event.data):
                writer.write(name, fields, events)
        writer.write(END_EVENT, {}, events)
        actual = [[e.get("event"), e.get("data")] for e in events]
        return _mismatch(case.get("expect_events"), actual, "events")
    if "error" in case:
        answer = error_answer(dialect, GatewayError(int(case["error"]["status"]), case["error"]["message"]))
        return _mismatch(case.get("expect"), orjson.loads(answer.body), "error")
    return "a case needs request, response, stream or error"
