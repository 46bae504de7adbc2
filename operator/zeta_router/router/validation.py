"""Request body checks: what a bad request gets instead of reaching a model server.

Only what the router itself relies on, or what would certainly fail upstream, is checked; other
fields pass through untouched for the model server to judge.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from zeta_router.router.errors import ApiError

Kind = Literal["chat", "completions"]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _bad(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_body(raw: bytes, kind: Kind) -> dict[str, Any]:
    """Decode and check a chat or completion request body, or raise :class:`ApiError` (400)."""
    if not raw.strip():
        raise _bad("the request body is empty; send a JSON object", None, "invalid_json")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"the request body is not valid JSON: {exc}", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise _bad(
            f"the request body must be a JSON object, not {type(body).__name__}",
            None,
            "invalid_type",
        )
    if kind == "chat":
        _check_messages(body)
    else:
        _check_prompt(body)
    _check_common(body)
    return body


def _check_messages(body: dict[str, Any]) -> None:
    if "messages" not in body:
        raise _bad("'messages' is required for chat completions", "messages", "missing_required")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _bad("'messages' must be an array of message objects", "messages", "invalid_type")
    if not messages:
        raise _bad("'messages' must contain at least one message", "messages")
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(f"'{where}' must be an object", where, "invalid_type")
        role = m.get("role")
        if not isinstance(role, str):
            raise _bad(f"'{where}.role' is required and must be a string", f"{where}.role")
        if role not in _ROLES:
            raise _bad(
                f"'{where}.role' is {role!r}; expected one of {', '.join(sorted(_ROLES))}",
                f"{where}.role",
            )
        content = m.get("content")
        if content is None:
            if role not in ("assistant", "function"):
                raise _bad(
                    f"'{where}.content' is required for role {role!r}",
                    f"{where}.content",
                    "missing_required",
                )
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise _bad(
                        f"'{where}.content[{j}]' must be an object with a 'type'",
                        f"{where}.content[{j}]",
                        "invalid_type",
                    )
        elif not isinstance(content, str):
            raise _bad(
                f"'{where}.content' must be a string or an array of content parts",
                f"{where}.content",
                "invalid_type",
            )


def _check_prompt(body: dict[str, Any]) -> None:
    if "prompt" not in body:
        raise _bad("'prompt' is required for completions", "prompt", "missing_required")
    prompt = body["prompt"]
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt) or all(_is_int(p) for p in prompt):
            return
        if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt):
            return
    raise _bad(
        "'prompt' must be a string, an array of strings, or an array of token ids",
        "prompt",
        "invalid_type",
    )


def _check_common(body: dict[str, Any]) -> None:
    for name in ("model", "user"):
        if name in body and not isinstance(body[name], str):
            raise _bad(f"'{name}' must be a string", name, "invalid_type")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise _bad("'stream' must be a boolean", "stream", "invalid_type")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        v = body.get(name)
        if v is None:
            continue
        if not _is_int(v):
            raise _bad(f"'{name}' must be an integer", name, "invalid_type")
        if v < 1:
            raise _bad(f"'{name}' must be at least 1, got {v}", name)
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        v = body.get(name)
        if v is not None and not _is_number(v):
            raise _bad(f"'{name}' must be a number", name, "invalid_type")
