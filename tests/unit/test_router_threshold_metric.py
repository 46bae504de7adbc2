"""The router exports the cut points it runs (``zeta_router_threshold``), and follows reloads."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from support.routing_files import routing_config
from zeta_router.api.routing import RoutingConfig
from zeta_router.router.app import Router
from zeta_router.router.config import compile_config

URL = "http://127.0.0.1:9"


def thresholds(router: Router) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(router.metrics.render().decode()):
        for s in fam.samples:
            if s.name == "zeta_router_threshold":
                out[(s.labels["context"], s.labels["tier"])] = s.value
    return out


def test_thresholds_are_exported_per_context_and_upper_tier() -> None:
    cfg = routing_config(
        {"s": URL, "m": URL, "l": URL}, {"default": [0.3, 0.7], "ZetaHRM": [0.2, 0.5]}
    )
    router = Router(compile_config(RoutingConfig.model_validate(cfg)))
    assert thresholds(router) == {
        ("default", "m"): 0.3,
        ("default", "l"): 0.7,
        ("ZetaHRM", "m"): 0.2,
        ("ZetaHRM", "l"): 0.5,
    }


def test_a_reload_replaces_the_series() -> None:
    three = routing_config({"s": URL, "m": URL, "l": URL}, {"default": [0.3, 0.7]})
    router = Router(compile_config(RoutingConfig.model_validate(three)))
    two = routing_config({"s": URL, "l": URL}, {"other": [0.45]}, generation=2)
    router.set_config(compile_config(RoutingConfig.model_validate(two)))
    # Series of the old contexts and tiers are gone, not left at their last value.
    assert thresholds(router) == {("other", "l"): 0.45}
