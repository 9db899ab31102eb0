"""Provider self-tests: the `tests:` cases inside each provider file, run by `oneapi check` and CI.

A case gives an OpenAI `request` and the exact `upstream` body (and `upstream_path`, and
`upstream_headers`) the vendor must receive; or a vendor `response` (with `status`) and the OpenAI body (`expect`)
or error (`expect_error`) the client must get; or a vendor `stream` and the OpenAI chunks
(`expect_chunks`). Expected objects match as subsets; arrays match item by item and length.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, Iterable, Mapping

from .documents import Problem
from .framing import parse_all
from .mapping import MappingError, map_request, map_response
from .providers import Provider
from .streams import StreamTranslator
from .translate import describe_error, is_error_body, with_envelope

DEFAULT_MODEL = "test-model"


def run_selftests(providers: Iterable[Any], run: Callable[[Any, Mapping[str, Any]], str | None] | None = None) -> tuple[int, list[Problem]]:
    """(number of cases run, problems), each problem at the line of its failing case. `run` runs one case of a
    file of another kind (a dialect file); by default a provider file's."""
    run = run or run_case
    count = 0
    problems: list[Problem] = []
    for provider in providers:
        for i, case in enumerate(provider.tests):
            count += 1
            where = provider.document.line(("tests", i)) if provider.document else 1
            label = case.get("name") or f"tests[{i}]"
            try:
                failure = run(provider, case)
            except (MappingError, ValueError, KeyError, TypeError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
            if failure:
                problems.append(Problem(provider.file, where, f"self-test {label!r} failed: {failure}"))
    return count, problems


def run_case(provider: Provider, case: Mapping[str, Any]) -> str | None:
    """None if the case passes, else what differs."""
    operation = provider.operations.get(case["operation"])
    if operation is None:
        return f"no operation {case['operation']!r}"
    options = {**provider.options, **(case.get("options") or {})}
    request = dict(case.get("request") or {"model": DEFAULT_MODEL, "stream": True, "stream_options": {"include_usage": True}})
    request.setdefault("model", DEFAULT_MODEL)

    if "upstream" in case:
        actual = map_request(operation.mapping, request, options) if operation.mapping else request
        if actual != case["upstream"]:
            return f"upstream request differs:\n  expected {case['upstream']}\n  actual   {actual}"
    if "upstream_path" in case:
        stream = bool(request.get("stream"))
        template = operation.stream_path if stream and operation.stream_path else operation.path
        query = operation.stream_query if stream and operation.stream_query is not None else operation.query
        path = template.render(request["model"], "KEY", options)
        if query:
            path += "?" + "&".join(f"{k}={t.render(request['model'], 'KEY', options, escape=False)}" for k, t in query)
        if path != case["upstream_path"]:
            return f"upstream path differs: expected {case['upstream_path']!r}, actual {path!r}"

    if "upstream_headers" in case:
        headers = {**provider.headers, **operation.headers}
        if request.get("stream"):
            headers.update(operation.stream_headers)
        sent = {name.lower(): value for name, value in headers.items()}
        for name, want in case["upstream_headers"].items():
            got = sent.get(name.lower())
            if got != want:
                return f"upstream header {name!r}: expected {'absent' if want is None else repr(want)}, got {'absent' if got is None else repr(got)}"

    if "response" in case:
        status = int(case.get("status", 200))
        body = case["response"]
        raw = body.encode() if isinstance(body, str) else _json_bytes(body)
        if status >= 400 or is_error_body(provider.errors, body):
            mapped_status, error, retryable = describe_error(provider.errors, None if status < 400 else status, raw)
            if retryable is None:
                retryable = mapped_status in (401, 403, 408, 429) or mapped_status >= 500
            actual_error = {**error, "status": mapped_status, "retryable": retryable}
            if "expect_error" not in case:
                return f"the response is an error ({actual_error}) but the case has no expect_error"
            return _mismatch(case["expect_error"], actual_error, "error")
        if "expect_error" in case:
            return "expected an error, but the response maps as a success"
        actual = map_response(operation.mapping, body, request, options) if operation.mapping else body
        actual = with_envelope(operation.name, actual, request)
        return _mismatch(case.get("expect"), actual, "response")

    if "stream" in case or "stream_base64" in case:
        if operation.stream is None:
            return "the operation has no stream section"
        raw = base64.b64decode(case["stream_base64"]) if "stream_base64" in case else case["stream"].encode()
        translator = StreamTranslator(operation.stream, request, options)
        chunks: list[Any] = []
        for event in parse_all(operation.stream.framing, raw):
            chunks.extend(translator.feed(event))
        chunks.extend(translator.finish())
        expected = case.get("expect_chunks") or []
        if len(expected) != len(chunks):
            return f"expected {len(expected)} chunks, got {len(chunks)}:\n" + "\n".join(f"  {c}" for c in chunks)
        for n, (want, got) in enumerate(zip(expected, chunks)):
            failure = _mismatch(want, got, f"chunk[{n}]")
            if failure:
                return failure
    return None


def _json_bytes(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


def _mismatch(expected: Any, actual: Any, path: str) -> str | None:
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                if value is None:
                    continue
                return f"{path}.{key}: missing (expected {value!r}); got {actual!r}"
            failure = _mismatch(value, actual[key], f"{path}.{key}")
            if failure:
                return failure
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{path}: expected {len(expected)} items {expected!r}, got {actual!r}"
        for n, (want, got) in enumerate(zip(expected, actual)):
            failure = _mismatch(want, got, f"{path}[{n}]")
            if failure:
                return failure
        return None
    if expected != actual or type(expected) is not type(actual) and not (isinstance(expected, (int, float)) and isinstance(actual, (int, float))):
        return f"{path}: expected {expected!r}, got {actual!r}"
    return None
