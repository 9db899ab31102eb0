"""One request in a client's dialect: read into the canonical form, and every answer to it (a body, a stream,
a refusal) written back in the dialect."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import orjson

from ..asgi import Answer, StreamAnswer
from ..errors import GatewayError, bad_request
from ..failures import Failure
from ..mapping import MappingError
from ..usage import estimate_prompt_tokens
from .events import rewrite_stream
from .spec import Dialect


@dataclass
class DialectRequest:
    """A client request in `dialect`: its own body (relayed as sent where the vendor speaks the dialect) and the
    canonical chat body it stands for everywhere else."""

    dialect: Dialect
    operation: str
    raw: bytes
    body: dict[str, Any]
    model: str
    stream: bool
    headers: Mapping[str, str]  # the client's, lower-case names
    refusal: str | None = None  # why a translated attempt must refuse it (a checks: entry with only: translated)
    path: Mapping[str, str] = field(default_factory=dict)  # the route's {holes}
    query: Mapping[str, str] = field(default_factory=dict)
    json_array: bool = False  # the stream is written as one JSON array (the dialect's stream.json_array_when)
    answer_id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])  # one per request; the dialect file gives it a prefix
    _estimate: int | None = None
    _canonical: tuple[dict[str, Any], dict[str, Any]] | None = None

    @property
    def canonical(self) -> dict[str, Any]:
        """The canonical chat body: read when first needed (a native attempt never needs it); a 400 if it cannot be."""
        return self._read()[0]

    def canonical_within(self, max_output_tokens: int | None) -> dict[str, Any]:
        """The canonical body, its max_tokens lowered to a channel's max_output_tokens (a client sized it for other models)."""
        body = self.canonical
        asked = body.get("max_tokens")
        if max_output_tokens is not None and isinstance(asked, int) and asked > max_output_tokens:
            return {**body, "max_tokens": max_output_tokens}
        return body

    @property
    def extensions(self) -> dict[str, Any]:
        """Fields chat has no name for, handed to provider mappings (docs/dialects.md)."""
        return self._read()[1]

    def _read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self._canonical is None:
            dialect = self.dialect
            doc = {**self.body, "_path": dict(self.path), "_query": dict(self.query), "_operation": self.operation}
            try:
                canonical = dialect.request.search(doc)
                extensions = dialect.extensions.search(doc) if dialect.extensions is not None else {}
            except (MappingError, TypeError, ValueError) as exc:  # JMESPath's ordering of a string and a number raises TypeError
                raise bad_request(f"The request could not be read as {dialect.name}: {exc}") from None
            if not isinstance(canonical, dict):
                raise bad_request(f"The request could not be read as {dialect.name}.")
            canonical["model"] = self.model
            self._canonical = (canonical, extensions or {})
        return self._canonical

    @property
    def prompt_estimate(self) -> int:
        if self._estimate is None:
            self._estimate = estimate_prompt_tokens(self.canonical)
        return self._estimate

    def context(self) -> dict[str, Any]:
        """What the dialect's response and stream rules see as `_options`."""
        return {"model": self.model, "answer_id": self.answer_id, "prompt_estimate": self.prompt_estimate}

    def translated(self, outcome: Answer | StreamAnswer | Failure) -> Answer | StreamAnswer | Failure:
        """A canonical answer (a successful one: failures become the dialect's errors where the request ends) in the dialect."""
        if isinstance(outcome, StreamAnswer):
            spec = self.dialect.stream_spec
            if spec is not None:
                outcome.chunks = rewrite_stream(outcome.chunks, spec, self.body, self.context(), self.json_array, self.dialect.stream_sequence)
                if self.json_array:
                    outcome.media_type = "application/json"
            return outcome
        if isinstance(outcome, Answer) and outcome.status_code < 400:
            try:
                canonical = orjson.loads(outcome.body)
                doc = dict(canonical) if isinstance(canonical, dict) else {"_data": canonical}
                doc["_request"] = self.body
                doc["_options"] = self.context()
                outcome.body = orjson.dumps(self.dialect.response.search(doc))
            except (orjson.JSONDecodeError, MappingError, TypeError, ValueError) as exc:
                return Failure(GatewayError(502, f"The answer could not be written in the client's format: {exc}", type="upstream_error",
                                            code="dialect_mapping_failed"))
        return outcome


def read_request(dialect: Dialect, operation: str, raw: bytes, body: dict[str, Any], path: Mapping[str, str], query: Mapping[str, str],
                 headers: Mapping[str, str]) -> DialectRequest:
    """The request's model, stream flag and canonical form; a 400 in the dialect's words when it cannot be read."""
    doc = {**body, "_path": dict(path), "_query": dict(query), "_operation": operation}
    try:
        model = dialect.model.search(doc)
        if not isinstance(model, str) or not model:
            raise bad_request("model: a model name is required.", param="model")
        refusal = None
        for check in dialect.checks:
            if _truthy(check.when.search(doc)):
                message = str(check.message.search(doc))
                if not check.translated_only:
                    raise bad_request(message)
                refusal = refusal or message
        stream = bool(dialect.stream.search(doc)) if dialect.stream is not None and operation == "chat" else False
        json_array = stream and dialect.json_array is not None and _truthy(dialect.json_array.search(doc))
    except (MappingError, TypeError, ValueError) as exc:
        raise bad_request(f"The request could not be read as {dialect.name}: {exc}") from None
    return DialectRequest(dialect, operation, raw, body, model, stream, headers, refusal, path, query, json_array)


class CanonicalBody(Mapping[str, Any]):
    """A dialect request's canonical body for the meter, read only if the meter looks (an estimate, limits)."""

    def __init__(self, request: DialectRequest):
        self.request = request

    def __getitem__(self, key: str) -> Any:
        return self.request.canonical[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.request.canonical)

    def __len__(self) -> int:
        return len(self.request.canonical)


def error_answer(dialect: Dialect, error: GatewayError | Answer) -> Answer:
    """A refusal (raised, or an OpenAI-shaped error answer) in the dialect's error shape; status and headers kept."""
    if isinstance(error, GatewayError):
        status, message, kind, code, headers = error.status, error.message, error.type, error.code, error.headers
    else:
        status, headers = error.status_code, error.headers
        message, kind, code = _openai_error(error.body, status)
    doc = {"status": status, "type": dialect.error_type(status), "message": message, "code": code, "openai_type": kind}
    try:
        body = dialect.error_body.search(doc)
    except MappingError:
        body = {"error": {"message": message, "type": doc["type"]}}
    return Answer(orjson.dumps(body), status, headers=headers)


def _openai_error(content: bytes, status: int) -> tuple[str, str | None, str | None]:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace")[:2000] or f"HTTP {status}", None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or f"HTTP {status}"), error.get("type"), error.get("code")
    if isinstance(error, str):
        return error, None, None
    return f"HTTP {status}", None, None


def _truthy(value: Any) -> bool:
    return not (value is None or value is False or value == "" or value == [] or value == {})
