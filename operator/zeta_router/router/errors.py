"""OpenAI-style error bodies: ``{"error": {"message", "type", "param", "code"}}``.

Every error the router answers goes through :class:`ApiError` so that clients written against
the OpenAI API see the shape they already handle, with the right HTTP status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

JSON_TYPE = "application/json"

_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(Exception):
    """An error to answer to the client as OpenAI-style JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def type(self) -> str:
        return _TYPE_BY_STATUS.get(self.status, "server_error" if self.status >= 500 else "error")

    def body(self) -> bytes:
        return error_body(self.message, type_=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type_: str, code: str, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    ).encode()


def error_response(err: ApiError) -> web.Response:
    resp = web.Response(status=err.status, body=err.body(), content_type=JSON_TYPE)
    resp.headers.update(err.headers)
    if err.headers.get("Connection") == "close":
        resp.force_close()
    return resp
