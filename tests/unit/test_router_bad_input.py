"""Every bad request gets OpenAI-style error JSON with the right status, and the router keeps
serving afterwards."""

import asyncio
import hashlib
import json
from typing import Any

import pytest

from support.inprocess import fake_server, router_client, server_url
from support.routing_files import FLAT_SCORER, routing_config

CHAT = "/v1/chat/completions"
COMPL = "/v1/completions"
JSON = {"Content-Type": "application/json"}


def _ok_chat(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hello"}], **extra}


CASES: list[tuple[str, str, bytes | str, dict[str, str], int, str, str | None]] = [
    # (id, path, body, headers, status, code, param)
    ("invalid-json", CHAT, b"{not json", JSON, 400, "invalid_json", None),
    ("empty-body", CHAT, b"", JSON, 400, "invalid_json", None),
    ("not-utf8", CHAT, b"\xff\xfe{}", JSON, 400, "invalid_json", None),
    ("array-body", CHAT, b"[1, 2]", JSON, 400, "invalid_type", None),
    # Input that cannot be sent on: a lone surrogate escape cannot be encoded as UTF-8, deep
    # nesting exhausts a parser's stack, NaN and Infinity are not JSON.
    (
        "lone-surrogate",
        CHAT,
        b'{"messages": [{"role": "user", "content": "a \\ud800 b"}]}',
        JSON,
        400,
        "invalid_json",
        None,
    ),
    (
        "lone-surrogate-in-a-key",
        COMPL,
        b'{"prompt": "x", "logit_bias": {"\\udfff": 1}}',
        JSON,
        400,
        "invalid_json",
        None,
    ),
    (
        "deep-nesting",
        CHAT,
        b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        JSON,
        400,
        "invalid_json",
        None,
    ),
    (
        "nesting-past-the-limit",
        CHAT,
        b'{"messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 120 + b"]" * 120 + b"}",
        JSON,
        400,
        "invalid_json",
        None,
    ),
    (
        "nan",
        CHAT,
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        JSON,
        400,
        "invalid_json",
        None,
    ),
    ("infinity", COMPL, b'{"prompt": "x", "top_p": Infinity}', JSON, 400, "invalid_json", None),
    ("string-body", CHAT, b'"hi"', JSON, 400, "invalid_type", None),
    ("missing-messages", CHAT, b"{}", JSON, 400, "missing_required", "messages"),
    ("messages-not-list", CHAT, b'{"messages": "hi"}', JSON, 400, "invalid_type", "messages"),
    ("messages-empty", CHAT, b'{"messages": []}', JSON, 400, "invalid_value", "messages"),
    ("message-not-object", CHAT, b'{"messages": ["hi"]}', JSON, 400, "invalid_type", "messages[0]"),
    (
        "message-without-role",
        CHAT,
        b'{"messages": [{"content": "hi"}]}',
        JSON,
        400,
        "invalid_value",
        "messages[0].role",
    ),
    (
        "message-bad-role",
        CHAT,
        b'{"messages": [{"role": "wizard", "content": "hi"}]}',
        JSON,
        400,
        "invalid_value",
        "messages[0].role",
    ),
    (
        "content-wrong-type",
        CHAT,
        b'{"messages": [{"role": "user", "content": 42}]}',
        JSON,
        400,
        "invalid_type",
        "messages[0].content",
    ),
    (
        "user-content-missing",
        CHAT,
        b'{"messages": [{"role": "user"}]}',
        JSON,
        400,
        "missing_required",
        "messages[0].content",
    ),
    (
        "content-part-without-type",
        CHAT,
        b'{"messages": [{"role": "user", "content": [{"text": "hi"}]}]}',
        JSON,
        400,
        "invalid_type",
        "messages[0].content[0]",
    ),
    ("model-not-string", CHAT, json.dumps(_ok_chat(model=3)), JSON, 400, "invalid_type", "model"),
    (
        "stream-not-bool",
        CHAT,
        json.dumps(_ok_chat(stream="yes")),
        JSON,
        400,
        "invalid_type",
        "stream",
    ),
    (
        "max-tokens-string",
        CHAT,
        json.dumps(_ok_chat(max_tokens="10")),
        JSON,
        400,
        "invalid_type",
        "max_tokens",
    ),
    (
        "max-tokens-zero",
        CHAT,
        json.dumps(_ok_chat(max_tokens=0)),
        JSON,
        400,
        "invalid_value",
        "max_tokens",
    ),
    (
        "max-tokens-bool",
        CHAT,
        json.dumps(_ok_chat(max_tokens=True)),
        JSON,
        400,
        "invalid_type",
        "max_tokens",
    ),
    (
        "temperature-string",
        CHAT,
        json.dumps(_ok_chat(temperature="hot")),
        JSON,
        400,
        "invalid_type",
        "temperature",
    ),
    ("user-not-string", CHAT, json.dumps(_ok_chat(user=5)), JSON, 400, "invalid_type", "user"),
    ("missing-prompt", COMPL, b'{"max_tokens": 3}', JSON, 400, "missing_required", "prompt"),
    ("prompt-number", COMPL, b'{"prompt": 3}', JSON, 400, "invalid_type", "prompt"),
    ("prompt-mixed-list", COMPL, b'{"prompt": ["a", 1]}', JSON, 400, "invalid_type", "prompt"),
    ("prompt-empty-list", COMPL, b'{"prompt": []}', JSON, 400, "invalid_type", "prompt"),
    (
        "text-plain",
        CHAT,
        json.dumps(_ok_chat()),
        {"Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
        None,
    ),
    (
        "form-encoded",
        CHAT,
        b"a=b",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
        None,
    ),
    (
        "unknown-context-header",
        CHAT,
        json.dumps(_ok_chat()),
        {**JSON, "X-Zeta-Context": "Nope"},
        400,
        "unknown_context",
        "X-Zeta-Context",
    ),
    (
        "unknown-context-model",
        CHAT,
        json.dumps(_ok_chat(model="assistant/Nope")),
        JSON,
        400,
        "unknown_context",
        "model",
    ),
    (
        "unknown-forced-tier",
        CHAT,
        json.dumps(_ok_chat()),
        {**JSON, "X-Zeta-Tier": "huge"},
        400,
        "unknown_tier",
        "X-Zeta-Tier",
    ),
]


def _check_error(
    status: int, body: dict[str, Any], want_status: int, code: str, param: str | None
) -> None:
    assert status == want_status
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code
    assert err["param"] == param
    assert isinstance(err["message"], str)
    assert err["message"]
    assert "Traceback" not in err["message"]


async def _run_cases(cases: list[Any]) -> None:
    async with fake_server() as up:
        cfg = routing_config(
            {"small": server_url(up), "large": server_url(up)},
            {"default": [0.5], "ZetaHRM": [0.3]},
            scorer=FLAT_SCORER,
            allowForceTier=True,
        )
        async with router_client(cfg) as (client, router):
            for _id, path, body, headers, status, code, param in cases:
                resp = await client.post(path, data=body, headers=headers)
                _check_error(resp.status, await resp.json(), status, code, param)
            # Unknown context error lists the valid ones.
            resp = await client.post(CHAT, json=_ok_chat(), headers={"X-Zeta-Context": "Nope"})
            msg = (await resp.json())["error"]["message"]
            assert "default" in msg
            assert "ZetaHRM" in msg
            # None of it reached a model server, and the router still serves.
            stats = await (await client.session.get(server_url(up) + "/_stats")).json()
            assert stats["requests"] == 0
            resp = await client.post(CHAT, json=_ok_chat())
            assert resp.status == 200
            assert (await resp.json())["choices"][0]["message"]["content"] == "echo: hello"
            text = router.metrics.render().decode()
            for _id, _path, _body, _headers, status, _code, _param in cases:
                assert f'code="{status}",' in text
                assert 'tier="none"' in text


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request(case: Any) -> None:
    asyncio.run(_run_cases([case]))


def test_oversized_bodies_get_413() -> None:
    async def main() -> None:
        cfg = routing_config(
            {"small": "http://127.0.0.1:9", "large": "http://127.0.0.1:9"},
            scorer=FLAT_SCORER,
            maxBodyBytes=1000,
        )
        async with router_client(cfg) as (client, _):
            big = json.dumps(_ok_chat(padding="x" * 2000)).encode()
            resp = await client.post(CHAT, data=big, headers=JSON)
            _check_error(resp.status, await resp.json(), 413, "request_too_large", None)

            async def chunks():  # type: ignore[no-untyped-def]
                for _ in range(20):
                    yield b" " * 100  # no Content-Length: counted while reading

            resp = await client.post(CHAT, data=chunks(), headers=JSON)
            _check_error(resp.status, await resp.json(), 413, "request_too_large", None)

    asyncio.run(main())


def test_unknown_path_and_method() -> None:
    async def main() -> None:
        cfg = routing_config(
            {"small": "http://127.0.0.1:9", "large": "http://127.0.0.1:9"}, scorer=FLAT_SCORER
        )
        async with router_client(cfg) as (client, _):
            resp = await client.get("/v1/nope")
            _check_error(resp.status, await resp.json(), 404, "not_found", None)
            resp = await client.get(CHAT)
            _check_error(resp.status, await resp.json(), 405, "method_not_allowed", None)
            assert "POST" in resp.headers["Allow"]
            resp = await client.delete("/v1/models")
            _check_error(resp.status, await resp.json(), 405, "method_not_allowed", None)

    asyncio.run(main())


def test_forcing_a_tier_is_off_by_default_and_can_need_a_token() -> None:
    token = "let-me-pin"
    digest = hashlib.sha256(token.encode()).hexdigest()

    async def main() -> None:
        async with fake_server() as up:
            url = server_url(up)
            off = routing_config({"small": url, "large": url}, scorer=FLAT_SCORER)
            async with router_client(off) as (client, _):
                resp = await client.post(CHAT, json=_ok_chat(), headers={"X-Zeta-Tier": "large"})
                _check_error(
                    resp.status, await resp.json(), 403, "force_tier_disabled", "X-Zeta-Tier"
                )
            with_token = routing_config(
                {"small": url, "large": url},
                scorer=FLAT_SCORER,
                allowForceTier=True,
                forceTierTokenSha256=[digest],
            )
            async with router_client(with_token) as (client, _):
                for headers in ({}, {"X-Zeta-Tier-Token": "guess"}):
                    resp = await client.post(
                        CHAT, json=_ok_chat(), headers={"X-Zeta-Tier": "large", **headers}
                    )
                    _check_error(
                        resp.status,
                        await resp.json(),
                        403,
                        "force_tier_forbidden",
                        "X-Zeta-Tier-Token",
                    )
                resp = await client.post(
                    CHAT,
                    json=_ok_chat(),
                    headers={"X-Zeta-Tier": "large", "X-Zeta-Tier-Token": token},
                )
                assert resp.status == 200
                assert resp.headers["x-zeta-tier"] == "large"
                # The token stays at the router.
                stats = await (await client.session.get(url + "/_stats")).json()
                assert stats["requests"] == 1
                assert "Content-Type" in stats["headers_seen"]  # (headers are recorded)
                assert "X-Zeta-Tier-Token" not in stats["headers_seen"]

    asyncio.run(main())


FEEDBACK_CASES = [
    (b"{bad", 400, "invalid_json", None),
    (b"[]", 400, "invalid_type", None),
    (b'{"score": 0.5}', 400, "invalid_value", "request_id"),
    (b'{"request_id": "x", "score": 1.5}', 400, "invalid_value", "score"),
    (b'{"request_id": "x", "score": true}', 400, "invalid_value", "score"),
    (b'{"request_id": "x", "score": "high"}', 400, "invalid_value", "score"),
    (b'{"request_id": "x", "score": 0.5, "label": 3}', 400, "invalid_type", "label"),
    (b'{"request_id": "x", "score": 0.5, "extra": 1}', 400, "unknown_field", "extra"),
    (b'{"request_id": "never-seen", "score": 0.5}', 400, "invalid_request_id", "request_id"),
]


def test_feedback_bad_input() -> None:
    async def main() -> None:
        cfg = routing_config(
            {"small": "http://127.0.0.1:9", "large": "http://127.0.0.1:9"}, scorer=FLAT_SCORER
        )
        async with router_client(cfg) as (client, _):
            for body, status, code, param in FEEDBACK_CASES:
                resp = await client.post("/v1/feedback", data=body, headers=JSON)
                _check_error(resp.status, await resp.json(), status, code, param)

    asyncio.run(main())


def test_surrogate_pairs_and_reasonable_nesting_are_forwarded() -> None:
    async def main() -> None:
        async with fake_server() as up:
            cfg = routing_config(
                {"small": server_url(up), "large": server_url(up)}, scorer=FLAT_SCORER
            )
            async with router_client(cfg) as (client, _):
                body = (
                    b'{"messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}], '
                    b'"tools": ' + b"[" * 60 + b"]" * 60 + b"}"
                )
                resp = await client.post(CHAT, data=body, headers=JSON)
                assert resp.status == 200
                content = (await resp.json())["choices"][0]["message"]["content"]
                assert content == "echo: smile \U0001f600"

    asyncio.run(main())
