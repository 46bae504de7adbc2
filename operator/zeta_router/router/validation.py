"""Request body checks: what a bad request gets instead of reaching a model server.

Only what the router itself relies on, or what would certainly fail upstream, is checked; other
fields pass through untouched for the model server to judge.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Literal

from zeta_router.router.errors import ApiError

Kind = Literal["chat", "completions"]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

#: Deepest nesting of arrays and objects accepted (OpenAI requests, tool schemas included, stay
#: far below; much deeper input only exists to exhaust a parser's stack).
MAX_DEPTH = 100
#: A \uD800-\uDFFF escape: half of a surrogate pair, fine in a pair, not valid Unicode alone.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _bad(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def load_json(raw: bytes) -> Any:
    """Strict JSON from a request body, or :class:`ApiError` (400): UTF-8 only, no ``NaN`` or
    ``Infinity``, no lone surrogate escapes (they cannot be sent on as UTF-8), and at most
    :data:`MAX_DEPTH` levels of nesting (deeper input would exhaust the stack)."""
    try:
        value = _DECODER.decode(raw.decode("utf-8"))
    except RecursionError:
        raise _too_deep() from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"the request body is not valid JSON: {exc}", None, "invalid_json") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise _too_deep()
    if _SURROGATE_ESCAPE.search(raw) is not None:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = exc.object[exc.start : exc.end].encode("utf-16", "surrogatepass")[2:]
            raise _bad(
                f"the request body holds a lone surrogate escape "
                f"(\\u{int.from_bytes(bad[:2], 'little'):04x}), which is not valid Unicode",
                None,
                "invalid_json",
            ) from None
    return value


def _too_deep() -> ApiError:
    return _bad(
        f"the request body is nested more than {MAX_DEPTH} levels deep", None, "invalid_json"
    )


def _depth(value: Any) -> int:
    """How deep arrays and objects nest (iterative: never recurses itself)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        children: Iterable[Any]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if level > deepest:
            deepest = level
            if deepest > MAX_DEPTH:
                return deepest
        stack.extend((c, level + 1) for c in children if isinstance(c, dict | list))
    return deepest


def parse_body(raw: bytes, kind: Kind) -> dict[str, Any]:
    """Decode and check a chat or completion request body, or raise :class:`ApiError` (400)."""
    if not raw.strip():
        raise _bad("the request body is empty; send a JSON object", None, "invalid_json")
    body = load_json(raw)
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
