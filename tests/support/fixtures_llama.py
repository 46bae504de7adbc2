"""Real llama.cpp servers (xllamacpp + SmolLM2-135M) as the tiers "small" and "large".

Started once per test session (both serve the same tiny GGUF, one CPU thread each). Tests that
stop a server use ``llama_tiers``, which restarts any stopped server on its old port afterwards,
so later tests find both up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from zeta_router_dev.local.llama import LlamaServer, start_llama_server


@pytest.fixture(scope="session")
def llama_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LlamaServer]]:
    log_dir: Path = tmp_path_factory.mktemp("llama")
    servers: dict[str, LlamaServer] = {}
    try:
        for name in ("small", "large"):
            servers[name] = start_llama_server(name, log_dir=log_dir)
        yield servers
    finally:
        for s in servers.values():
            s.stop()


@pytest.fixture
def llama_tiers(llama_servers: dict[str, LlamaServer]) -> Iterator[dict[str, LlamaServer]]:
    yield llama_servers
    for s in llama_servers.values():
        if not s.alive():
            s.restart()
