"""Drift detection compares only the fields the operator owns."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from zeta_router.controller.ownership import (
    drifted_paths,
    matches,
    needs_patch,
    owned_fields,
    parse_quantity,
)


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "zr-small",
            "labels": {"app.kubernetes.io/name": "zeta-router", "zeta.ai/tier": "small"},
            "ownerReferences": [{"kind": "ZetaRouter", "name": "zr", "uid": "u1"}],
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"zeta.ai/tier": "small"}},
            "template": {
                "metadata": {"labels": {"zeta.ai/tier": "small"}},
                "spec": {
                    "containers": [
                        {
                            "name": "model",
                            "image": "vllm/vllm-openai:v0.6.0",
                            "args": [],
                            "resources": {"limits": {"nvidia.com/gpu": 1, "cpu": "0.5"}},
                        }
                    ]
                },
            },
        },
    }


def as_served(obj: dict[str, Any]) -> dict[str, Any]:
    """What the apiserver hands back: defaults filled in, quantities canonical, empties gone."""
    live = copy.deepcopy(obj)
    live["metadata"].update(uid="x", resourceVersion="7", generation=1)
    live["metadata"]["labels"]["added-by-someone"] = "yes"
    live["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "1"}
    spec = live["spec"]
    spec.update(progressDeadlineSeconds=600, revisionHistoryLimit=10)
    c = spec["template"]["spec"]["containers"][0]
    del c["args"]
    c.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
    c["resources"]["limits"] = {"nvidia.com/gpu": "1", "cpu": "500m"}
    spec["template"]["spec"]["restartPolicy"] = "Always"
    live["status"] = {"replicas": 2}
    return live


def test_served_object_matches_what_was_rendered() -> None:
    want = deployment()
    assert not needs_patch(want, as_served(want))
    assert drifted_paths(want, as_served(want)) == []


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda o: o["spec"].update(replicas=9), "spec.replicas"),
        (
            lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="evil:1"),
            "spec.template.spec.containers",
        ),
        (
            lambda o: o["spec"]["template"]["spec"]["containers"].append({"name": "x"}),
            "spec.template.spec.containers",
        ),
        (lambda o: o["metadata"]["labels"].pop("zeta.ai/tier"), "metadata.labels.zeta.ai/tier"),
        (lambda o: o["metadata"].pop("ownerReferences"), "metadata.ownerReferences"),
    ],
)
def test_edited_owned_field_is_drift(edit: Any, path: str) -> None:
    want = deployment()
    live = as_served(want)
    edit(live)
    assert needs_patch(want, live)
    assert path in drifted_paths(want, live)


def test_fields_we_do_not_set_are_not_ours() -> None:
    want = deployment()
    live = as_served(want)
    live["spec"]["template"]["spec"]["priorityClassName"] = "high"
    live["metadata"]["annotations"]["team"] = "a"
    assert not needs_patch(want, live)


def test_owned_fields_carry_labels_owners_and_spec_only() -> None:
    owned = owned_fields(deployment())
    assert set(owned) == {"metadata", "spec"}
    assert set(owned["metadata"]) == {"labels", "ownerReferences"}


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Decimal("0.5")), ("1Gi", Decimal(2**30)), ("2", Decimal(2)), (3, Decimal(3))],
)
def test_quantities(text: object, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_scalars_compare_strictly_unless_quantities() -> None:
    assert matches({"a": "0.5"}, {"a": "500m"})
    assert not matches({"a": "x"}, {"a": "y"})
    assert not matches({"a": True}, {"a": 1})
    assert matches({"a": []}, {})
    assert not matches({"a": [1]}, {})
