"""Hot reload of the routing file, as mounted from a ConfigMap (symlink swap) and as a plain
file, in front of real llama.cpp servers."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import openai
import pytest

from support.deadlines import CONDITION
from support.routing_files import ConfigMapDir, routing_config, write_plain
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.router_proc import RouterProcess, start_router

pytestmark = pytest.mark.llama


def _cfg(servers: dict[str, LlamaServer], cut: float, generation: int) -> dict[str, object]:
    cfg = routing_config(
        {n: s.url for n, s in servers.items()}, {"default": [cut]}, generation=generation
    )
    cfg["tiers"][0]["localUrl"] = servers["small"].url  # type: ignore[index]
    return cfg


def _tier(r: RouterProcess) -> str:
    client = openai.OpenAI(base_url=r.base_url, api_key="unused", max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "Hi there"}], max_tokens=2
    )
    return raw.headers["x-zeta-tier"]


def _wait_for(r: RouterProcess, name: str, value: float, timeout: float = CONDITION) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if r.metric(name) == value:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} never reached {value} (now {r.metric(name)})")


def test_configmap_symlink_swap_and_garbage(
    llama_servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    cm = ConfigMapDir(tmp_path / "cm")
    cm.write(_cfg(llama_servers, 1.0, generation=1))  # every score below 1.0 -> small
    r = start_router(
        ["--config", str(cm.path), "--local-tier", "small", "--reload-interval", "0.2"], tmp_path
    )
    try:
        assert r.metric("zeta_router_config_generation") == 1
        assert _tier(r) == "small"

        cm.write(_cfg(llama_servers, 0.0, generation=2))  # every score -> large
        _wait_for(r, "zeta_router_config_generation", 2)
        assert _tier(r) == "large"

        cm.write("tiers: [this is not: valid")
        _wait_for(r, "zeta_router_config_errors_total", 1)
        assert r.metric("zeta_router_config_generation") == 2
        assert _tier(r) == "large"  # the last good config is still in use
        assert r.process.poll() is None
        rejected = [e for e in r.log_events() if e.get("event") == "config_rejected"]
        assert len(rejected) == 1
        assert "not valid YAML" in str(rejected[0]["reason"])
    finally:
        assert r.stop() == 0


def test_plain_rewrite_and_sighup(llama_servers: dict[str, LlamaServer], tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    write_plain(path, _cfg(llama_servers, 0.0, generation=1))
    # A long poll interval: the SIGHUP makes the router look at once.
    r = start_router(["--config", str(path), "--reload-interval", "3600"], tmp_path)
    try:
        assert _tier(r) == "large"
        write_plain(path, _cfg(llama_servers, 1.0, generation=2))
        r.process.send_signal(signal.SIGHUP)
        _wait_for(r, "zeta_router_config_generation", 2)
        assert _tier(r) == "small"
        write_plain(path, _cfg(llama_servers, 1.0, generation=3) | {"defaultContext": "nope"})
        r.process.send_signal(signal.SIGHUP)
        _wait_for(r, "zeta_router_config_errors_total", 1)
        assert r.metric("zeta_router_config_generation") == 2
        assert _tier(r) == "small"
    finally:
        assert r.stop() == 0
