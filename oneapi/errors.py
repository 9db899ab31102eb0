"""OpenAI-shaped errors: the only error body a client ever sees."""

from __future__ import annotations

from typing import Mapping

import orjson
from .asgi import Answer


class GatewayError(Exception):
    """An answer to the client that is not a success: status plus OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.logged = False  # already in the request log (by the meter of an admitted request)
        self.model = ""  # the model the refused request asked for, when it was read

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def response(self) -> Answer:
        return Answer(orjson.dumps(self.body()), self.status, headers=self.headers)


def bad_request(message: str, *, code: str = "invalid_request", param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code=code, param=param)
