"""The parts of the operator's registration that need no apiserver: when each object's drift
check falls, which ZetaRouters get the control loop's and the learner's daemons, and how status
refreshes are coalesced, what the router key's periodic recheck asks, and the essence kopf
compares ZetaRouters by."""

from __future__ import annotations

import copy
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

import kopf
import yaml

from zeta_router.autoscale.loop import uses_control_loop
from zeta_router.controller.handlers import SpecDiffBaseStorage, drift_phase
from zeta_router.controller.reconcile import Coalescer, Reconciler
from zeta_router.kube import ApiError
from zeta_router.learning.loop import learns


def test_drift_checks_of_a_fleet_are_spread_over_the_interval() -> None:
    interval = 30.0
    phases = [drift_phase(str(uuid.UUID(int=i * 7919)), interval) for i in range(1000)]
    assert all(0 <= p < interval for p in phases)
    # Spread: every tenth of the interval gets a share of the fleet (none all at once).
    buckets = [0] * 10
    for p in phases:
        buckets[int(p / interval * 10)] += 1
    assert min(buckets) > 50
    assert max(buckets) < 150
    # Stable for one object (across restarts of the operator).
    assert drift_phase("u-1", interval) == drift_phase("u-1", interval)


def test_daemons_run_only_for_routers_that_use_them() -> None:
    off = {"autoscaling": {"enabled": False}, "feedback": {"enabled": False}}
    assert not uses_control_loop(off)
    assert not uses_control_loop({})
    assert uses_control_loop({**off, "autoscaling": {"enabled": True}})
    assert uses_control_loop({**off, "feedback": {"enabled": True}})
    assert not learns({})
    assert not learns({"learning": {"enabled": False}})
    assert learns({"learning": {"enabled": True}})


def test_pokes_for_one_key_are_coalesced_into_one_run() -> None:
    runs: list[tuple[str, str]] = []
    done = threading.Event()

    def fn(key: tuple[str, str]) -> None:
        runs.append(key)
        if len(runs) == 2:
            done.set()

    later = Coalescer(0.2, fn)
    for _ in range(50):
        later.poke(("ns", "a"))
        later.poke(("ns", "b"))
    assert done.wait(30)  # a deadline for a loaded machine, not a timing
    assert sorted(runs) == [("ns", "a"), ("ns", "b")]
    later.poke(("ns", "a"))  # after the run: a new one
    deadline = time.monotonic() + 30
    while len(runs) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(runs) == [("ns", "a"), ("ns", "a"), ("ns", "b")]


def test_a_burst_of_keys_runs_once_each_in_the_order_first_poked() -> None:
    runs: list[tuple[str, str]] = []
    done = threading.Event()
    keys = [("ns", f"r{i}") for i in range(1000)]

    def fn(key: tuple[str, str]) -> None:
        runs.append(key)
        if len(runs) == len(keys):
            done.set()

    later = Coalescer(0.2, fn, threads=1)
    for key in keys:
        later.poke(key)
    for key in reversed(keys):
        later.poke(key)  # covered by the run already due
    assert done.wait(30)  # a deadline for a loaded machine, not a timing
    time.sleep(0.5)  # nothing more comes (a second run would be a bug)
    assert runs == keys


class _SecretReads:
    """Answers the router key's metadata read with ``status`` (None: the Secret is there)."""

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.paths: list[str] = []

    def get_metadata(self, path: str) -> dict[str, Any]:
        self.paths.append(path)
        if self.status is not None:
            raise ApiError(self.status, "Status", "refused")
        return {"metadata": {"name": path.rsplit("/", 1)[-1]}}


def _recheck(kube: _SecretReads) -> tuple[Reconciler, bool]:
    reconciler = Reconciler(kube, None)  # type: ignore[arg-type]
    body = {"metadata": {"namespace": "ns", "name": "r", "uid": "u-1"}, "spec": {}}
    return reconciler, reconciler._router_key_still_there(body, ("ns", "r"), "u-1")


def test_the_router_key_recheck_is_one_metadata_read_when_the_key_is_there() -> None:
    kube = _SecretReads(None)
    reconciler, there = _recheck(kube)
    assert there
    assert kube.paths == ["/api/v1/namespaces/ns/secrets/r-router-key"]
    assert reconciler._key_seen[("ns", "r")][0] == "u-1"  # not due again for a while


def test_a_missing_or_unreadable_router_key_takes_the_full_path() -> None:
    assert not _recheck(_SecretReads(404))[1]
    kube = _SecretReads(403)
    reconciler, there = _recheck(kube)
    assert not there
    body = {"metadata": {"namespace": "ns", "name": "r", "uid": "u-1"}, "spec": {}}
    assert not reconciler._router_key_still_there(body, ("ns", "r"), "u-1")
    assert len(kube.paths) == 1  # not allowed to read Secrets: not asked again


class _NamedReads:
    """Answers reads by name from ``objects`` (path -> object); a list would be a failure."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects
        self.paths: list[str] = []

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        self.paths.append(path)
        return self.objects.get(path)

    def list(self, path: str, selector: str | None = None) -> dict[str, Any]:
        raise AssertionError(f"a status refresh listed {path}")


def _owned(name: str, uid: str) -> dict[str, Any]:
    ref = {"kind": "ZetaRouter", "name": "r", "uid": uid, "controller": True}
    return {"metadata": {"name": name, "ownerReferences": [ref]}}


def test_a_status_refresh_reads_each_tier_child_by_name_not_the_namespace() -> None:
    deployments = "/apis/apps/v1/namespaces/ns/deployments"
    kube = _NamedReads(
        {
            f"{deployments}/r-small": _owned("r-small", "u-1"),
            f"{deployments}/r-old": _owned("r-old", "u-1"),  # a tier still in the status
            f"{deployments}/r-large": _owned("r-large", "u-other"),  # not this ZetaRouter's
            "/api/v1/namespaces/ns/configmaps/r-routing": _owned("r-routing", "u-1"),
        }
    )
    body = {
        "metadata": {"namespace": "ns", "name": "r", "uid": "u-1"},
        "spec": {
            "tiers": [
                {"name": "small"},
                {"name": "large"},
                {"name": "x", "external": {"baseUrl": "https://p"}},
            ]
        },
        "status": {"tiers": [{"name": "small"}, {"name": "old"}]},
    }
    live = Reconciler(kube, None)._get_tier_children(body, "u-1")  # type: ignore[arg-type]
    assert sorted(live["Deployment"]) == ["r-old", "r-small"]
    assert list(live["ConfigMap"]) == ["r-routing"]
    # One read per tier the ZetaRouter has or had (none for the external one), and its ConfigMap.
    assert kube.paths == [
        f"{deployments}/r-large",
        f"{deployments}/r-old",
        f"{deployments}/r-small",
        "/api/v1/namespaces/ns/configmaps/r-routing",
    ]


def test_only_deployment_events_that_change_what_a_refresh_reads_call_for_one() -> None:
    reconciler = Reconciler(None, None)  # type: ignore[arg-type]
    created: dict[str, Any] = {
        "metadata": {
            "namespace": "ns",
            "name": "r-small",
            "uid": "d-1",
            "generation": 1,
            "annotations": {"zeta.ai/template-hash": "h1"},
        },
        "spec": {"replicas": 1},
    }

    def then(**changes: Any) -> dict[str, Any]:
        obj = {**created, **changes}
        obj["metadata"] = {**created["metadata"], **changes.get("metadata", {})}
        return obj

    progressing = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
    starting = {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "conditions": [{**progressing, "lastUpdateTime": "2026-12-07T10:00:00Z"}],
    }
    moved = reconciler.deployment_moved
    # Its creation: the reconciliation that applied it writes the status; the view is kept.
    assert not moved("ADDED", created)
    assert not moved("MODIFIED", created)  # the same again
    # The Deployment controller's revision annotation: not read by a refresh.
    revised = {**created["metadata"]["annotations"], "deployment.kubernetes.io/revision": "1"}
    assert not moved("MODIFIED", then(metadata={"annotations": revised}))
    assert moved("MODIFIED", then(status=starting))  # seen, one replica made
    # Only a condition's time and message moved: the same status would be written.
    later = {**progressing, "lastUpdateTime": "2026-12-07T10:00:05Z", "message": "progressing"}
    assert not moved("MODIFIED", then(status={**starting, "conditions": [later]}))
    ready = {**starting, "readyReplicas": 1, "availableReplicas": 1}
    assert moved("MODIFIED", then(status=ready))  # ready: the status says so
    assert moved("MODIFIED", then(status=ready, spec={"replicas": 2}))  # scaled
    # A new template of ours (its generation and annotations move).
    assert moved(
        "MODIFIED",
        then(
            status=ready,
            spec={"replicas": 2},
            metadata={"generation": 2, "annotations": {"zeta.ai/template-hash": "h2"}},
        ),
    )
    assert not moved("DELETED", created)
    # Forgotten with its deletion: its successor's first status write is news.
    assert not moved("ADDED", created)
    assert moved("MODIFIED", then(status=ready))
    assert not moved("MODIFIED", then(status=ready))
    # Seen first by a later event (its creation came before this operator watched): news.
    reconciler.deployment_moved("DELETED", created)
    assert moved("MODIFIED", created)


class _NoRequests:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a request ({name}) where none was due")


def test_a_drift_check_waits_until_the_zetarouters_own_handler_has_run() -> None:
    # Being deleted: a reconciliation of it returns at once, so no request is due either way.
    body = {
        "metadata": {
            "namespace": "ns",
            "name": "r",
            "uid": "u-9",
            "generation": 1,
            "deletionTimestamp": "2026-12-07T10:00:00Z",
        },
        "spec": {},
    }
    reconciler = Reconciler(_NoRequests(), None)  # type: ignore[arg-type]
    assert reconciler.check_drift(body) is None  # its create handler has not run: not ours yet
    assert reconciler.reconcile(body, "drift") is not None  # other triggers do not count
    assert reconciler.check_drift(body) is None
    reconciler.reconcile(body, "create")
    assert reconciler.check_drift(body) is not None  # now the full path (nothing settled)
    reconciler.forget("ns", "r", "u-9")
    assert reconciler.check_drift(body) is None


SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def _watched_zetarouter(doc: dict[str, Any]) -> dict[str, Any]:
    """A sample as a watch delivers it after the operator handled it: system metadata,
    managedFields of three managers, kopf's own annotations, a status."""
    body = copy.deepcopy(doc)
    meta = body.setdefault("metadata", {})
    meta.update(
        namespace="team-a",
        uid="4b0d6a1e-0000-4000-8000-000000000001",
        resourceVersion="1234",
        generation=3,
        creationTimestamp="2026-12-07T10:00:00Z",
        finalizers=["zeta.ai/finalizer"],
        labels={"team": "a"},
        annotations={
            "note": "kept",
            "zeta.ai/kopf-managed": "yes",
            "zeta.ai/last-handled-configuration": '{"spec":{}}\n',
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
        managedFields=[
            {"manager": m, "operation": "Update", "fieldsV1": {"f:spec": {"f:tiers": {}}}}
            for m in ("kubectl", "zeta-router", "kopf")
        ],
    )
    body["status"] = {
        "observedGeneration": 3,
        "tiers": [{"name": "small", "readyReplicas": 1}],
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    return body


def test_the_spec_essence_is_kopfs_own_without_copying_the_whole_object() -> None:
    samples = sorted(SAMPLES.glob("*.yaml"))
    assert samples
    ours = SpecDiffBaseStorage(prefix="zeta.ai", key="last-handled-configuration")
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="zeta.ai", key="last-handled-configuration")
    compared = 0
    for path in samples:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "ZetaRouter":
                continue
            raw = _watched_zetarouter(doc)
            body = kopf.Body(cast(kopf.RawBody, raw))
            essence = ours.build(body=body)
            assert essence == kopfs.build(body=body), path.name
            # The spec and the user's metadata are in it; status, system fields and kopf's
            # own annotation are not.
            assert essence["spec"] == doc["spec"]
            assert essence["metadata"] == {"labels": {"team": "a"}, "annotations": {"note": "kept"}}
            # A copy: changing the essence leaves the object as it was.
            essence["spec"]["tiers"].clear()
            assert raw["spec"] == doc["spec"]
            # Handlers on fields outside the spec get kopf's own build.
            extra = ours.build(body=body, extra_fields=["status.observedGeneration"])
            assert extra == kopfs.build(body=body, extra_fields=["status.observedGeneration"])
            assert extra["status"] == {"observedGeneration": 3}
            compared += 1
    assert compared >= 2
