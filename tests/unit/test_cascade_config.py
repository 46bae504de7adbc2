"""A context's routing mode: ``cascade`` is opt-in per context, carried from the ZetaRouter spec
into the routing file and the router's runtime config; contexts that do not cascade keep their
routing file as it was."""

from __future__ import annotations

import pytest
import yaml

from zeta_router.api.models import ProblemsError, ZetaRouterSpec, parse_zetarouter
from zeta_router.api.routing import routing_yaml
from zeta_router.render.configmap import build_routing_config
from zeta_router.router.config import compile_config


def spec(*contexts: dict[str, object]) -> ZetaRouterSpec:
    return parse_zetarouter(
        {
            "tiers": [
                {"name": "small", "model": "Qwen/Qwen2.5-7B-Instruct"},
                {"name": "large", "model": "Qwen/Qwen2.5-14B-Instruct"},
            ],
            "router": {"contexts": list(contexts)},
        }
    )


def test_cascade_reaches_the_routing_file_and_the_router() -> None:
    s = spec(
        {"name": "math", "mode": "cascade", "escalateAbove": 0.3},
        {"name": "chat", "mode": "cascade"},
        {"name": "default"},
    )
    cfg = build_routing_config("zr", "ns", s)
    doc = yaml.safe_load(routing_yaml(cfg))
    by_name = {c["name"]: c for c in doc["contexts"]}
    assert by_name["math"]["mode"] == "cascade"
    assert by_name["math"]["escalateAbove"] == 0.3
    assert by_name["chat"]["escalateAbove"] == 0.5
    # A routing context writes neither field: its routing file is what it was.
    assert "mode" not in by_name["default"]
    assert "escalateAbove" not in by_name["default"]
    runtime = compile_config(cfg)
    assert runtime.contexts["math"].cascade
    assert runtime.contexts["math"].escalate_above == 0.3
    assert not runtime.contexts["default"].cascade


@pytest.mark.parametrize(
    "context",
    [
        {"name": "math", "mode": "sometimes"},
        {"name": "math", "mode": "cascade", "escalateAbove": 1.5},
    ],
)
def test_a_bad_mode_or_bound_is_refused(context: dict[str, object]) -> None:
    with pytest.raises((ProblemsError, ValueError)):
        spec(context)
