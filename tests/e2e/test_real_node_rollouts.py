"""Day-2 operations on a real node lose no request: under steady load through the entry Service
(the official openai client, retries off), a template change of both tiers and an operator
upgrade roll the tiers one at a time with zero failed and zero truncated answers; a scale-down
and pod deletions with streamed answers in flight truncate none. Counts, not timings (the
figures are in benchmarks/rollout_under_load.py).

The stack is the user's: the chart installs the operator as a pod, the CPU sample runs with the
local images. The tests of this module share one install and run in order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from support.cluster import unique_name
from support.fixtures_node import RealNodeHandle
from zeta_router.kube import ApiError, api_path
from zeta_router_dev.cluster.rollouts import Outcome, Stack
from zeta_router_dev.cluster.workloads import debug_dump, helm

pytestmark = [pytest.mark.node, pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(real_node: RealNodeHandle) -> Iterator[Stack]:
    s = Stack(
        real_node.kube,
        real_node.kubeconfig,
        real_node.node.layout.containerd_socket,
        namespace=unique_name("zt-day2"),
        operator_namespace=unique_name("zt-day2-system"),
        release=unique_name("zt-day2"),
    )
    s.up()
    yield s
    helm(s.kubeconfig, "uninstall", s.release, "--namespace", s.operator_namespace)
    s.remove_tags()
    for ns in (s.namespace, s.operator_namespace):
        with contextlib.suppress(ApiError):
            s.kube.delete(api_path("v1", "namespaces", None, ns))


def check(stack: Stack, outcome: Outcome, min_answered: int, tiers: tuple[str, ...] = ()) -> None:
    report = outcome.clients
    context = f"{outcome.summary()}\n{debug_dump(stack.kube, stack.namespace)}"
    assert report.answered >= min_answered, context
    for tier in tiers:  # every tier served while it rolled
        assert report.tiers[tier] > 0, context
    assert report.lost == 0, context
    assert report.sent == report.answered, context


def tiers_in_order(outcome: Outcome) -> list[str]:
    return [m.split(":", 1)[0].removeprefix("tier ") for _, m in outcome.rollouts]


def test_a_template_change_of_every_tier_loses_no_request(stack: Stack) -> None:
    outcome = stack.template_change()
    check(stack, outcome, min_answered=10, tiers=("small", "large"))
    # One tier at a time, smallest first.
    assert tiers_in_order(outcome) == ["small", "large"], outcome.summary()


def test_an_operator_upgrade_loses_no_request(stack: Stack) -> None:
    outcome = stack.operator_upgrade()
    check(stack, outcome, min_answered=10, tiers=("small", "large"))
    assert tiers_in_order(outcome) == ["small", "large"], outcome.summary()
    for tier in ("small", "large"):
        images = {
            c["name"]: c["image"]
            for c in stack.deployment(tier)["spec"]["template"]["spec"]["containers"]
        }
        assert images["router"].endswith("-upgraded"), images


def test_a_scale_down_truncates_no_stream_in_flight(stack: Stack) -> None:
    outcome = stack.scale_down_with_streams(streams=4)
    check(stack, outcome, min_answered=4)


def test_deleted_pods_finish_their_streams(stack: Stack) -> None:
    outcome = stack.delete_pods_with_streams(streams=4)
    check(stack, outcome, min_answered=4)
