"""The router and the fake upstream in this process (aiohttp test servers): fast tests of the
request path without starting processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from support import fake_upstream
from zeta_router.api.routing import RoutingConfig
from zeta_router.router.app import Options, Router
from zeta_router.router.config import compile_config
from zeta_router.router.ids import Signer
from zeta_router.router.routes import build_admin_app, build_app


@asynccontextmanager
async def fake_server() -> AsyncIterator[TestServer]:
    server = TestServer(fake_upstream.build_app(), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def router_client(
    cfg: dict[str, Any], options: Options | None = None, signer: Signer | None = None
) -> AsyncIterator[tuple[TestClient[Any, Any], Router]]:
    router = Router(compile_config(RoutingConfig.model_validate(cfg)), options, signer=signer)
    server = TestServer(build_app(router), host="127.0.0.1", port=0)
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    try:
        yield client, router
    finally:
        await client.close()


@asynccontextmanager
async def admin_client(router: Router) -> AsyncIterator[TestClient[Any, Any]]:
    """The router's admin port (health, metrics) as a test client."""
    client: TestClient[Any, Any] = TestClient(
        TestServer(build_admin_app(router), host="127.0.0.1", port=0)
    )
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def server_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")
