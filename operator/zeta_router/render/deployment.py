"""A tier's Deployment ``<router>-<tier>``: the model server plus the router sidecar (pure).

:func:`build_deployment` is the entry point; :func:`model_server_args` and
:func:`router_container` are exposed for tests and tooling.

What the pod template holds depends only on the spec's structure (tiers, images, ports,
resources, router settings): thresholds, weights and generations live in the routing ConfigMap,
which routers hot-reload, so changing them never rolls the Deployment. There is deliberately no
config-hash annotation on the pod template.

Pod security: the router always runs as non-root (65532) with a read-only root filesystem; the
model server runs as ``spec.tiers[].runAsUser`` (1000 by default, so non-root, with HOME and the
model cache on the writable ``/cache`` volume; 0 for images that need root). Every container
has privilege escalation off and all capabilities dropped, the pod uses the RuntimeDefault
seccomp profile, and no service-account token is mounted.

Stopping: see ``zeta_router.api.lifecycle`` (preStop hooks of both containers, the router's
``--drain-delay``/``--drain-quiet``/``--drain-timeout``/``--drain-seconds`` and the grace period
that covers them).

Rollouts: ``spec.tiers[].rolloutStrategy`` (surge first by default). The Deployment carries the
digest of the template it was rendered with (``zeta.ai/template-hash``, and per part in
``zeta.ai/template-parts``) so the controller can roll one tier at a time
(``zeta_router.controller.rollout``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from zeta_router.api import defaults
from zeta_router.api.lifecycle import (
    MODEL_IDLE_HOOK_PATH,
    ROUTER_DRAIN_HOOK_PATH,
    termination_grace_seconds,
)
from zeta_router.api.models import ResourceRequirements, TierSpec, ZetaRouterSpec
from zeta_router.api.routing import CONFIGMAP_KEY
from zeta_router.render import names

MODEL_CONTAINER: Final = "model"
ROUTER_CONTAINER: Final = "router"
MODEL_PORT_NAME: Final = "model"
ROUTER_PORT_NAME: Final = "router"
ROUTER_ADMIN_PORT_NAME: Final = "admin"
CACHE_DIR: Final = "/cache"
ROUTER_UID: Final = 65532

ROUTER_RESOURCES: Final = ResourceRequirements(
    requests={"cpu": "100m", "memory": "128Mi"}, limits={"memory": "512Mi"}
)

# Long enough for a large model's first download and load; the startup probe holds off the
# liveness probe until then.
STARTUP_FAILURES: Final = 180
STARTUP_PERIOD: Final = 10


def _resources(res: ResourceRequirements) -> dict[str, Any]:
    # Quantities as strings: server-side apply on Kubernetes 1.20 refuses a number there.
    return {
        part: {name: str(value) for name, value in amounts.items()}
        for part, amounts in res.to_dict().items()
    }


def _http_probe(path: str, port: str, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _llamacpp_model_flag(model: str) -> list[str]:
    # A file in the container is loaded as is; anything else is a Hugging Face repo
    # ("user/repo" or "user/repo:quant") that llama-server downloads into its cache.
    if model.endswith(".gguf") or model.startswith("/"):
        return ["--model", model]
    return ["--hf-repo", model]


def model_server_args(tier: TierSpec) -> list[str]:
    """Command-line arguments of the tier's model server (the image's entrypoint is the server).

    vLLM gets ``--tensor-parallel-size`` from the GPUs of a replica unless ``args`` set it
    (the API checks that the parallel sizes given use exactly the GPUs requested)."""
    if tier.engine == "vllm":
        base = [
            "--model",
            tier.server_model,
            "--served-model-name",
            tier.served_name,
            "--port",
            str(tier.port),
        ]
        tp = tier.tensor_parallel_size
        if tp is not None and "tp" not in tier.parallelism():
            base += ["--tensor-parallel-size", str(tp)]
    else:
        base = [
            *_llamacpp_model_flag(tier.server_model),
            "--alias",
            tier.served_name,
            "--host",
            "0.0.0.0",
            "--port",
            str(tier.port),
            "--metrics",
        ]
    return base + list(tier.args)


def _model_env(tier: TierSpec) -> list[dict[str, Any]]:
    env: dict[str, dict[str, Any]] = {"HOME": {"name": "HOME", "value": CACHE_DIR}}
    if tier.engine == "vllm":
        env["HF_HOME"] = {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"}
        # vLLM reports usage statistics to its authors unless told not to.
        env["VLLM_NO_USAGE_STATS"] = {"name": "VLLM_NO_USAGE_STATS", "value": "1"}
        env["DO_NOT_TRACK"] = {"name": "DO_NOT_TRACK", "value": "1"}
    else:
        env["LLAMA_CACHE"] = {"name": "LLAMA_CACHE", "value": f"{CACHE_DIR}/llama.cpp"}
    for var in tier.env:
        env.pop(var.name, None)  # the user's value replaces ours, and keeps the user's order
    return list(env.values()) + [v.to_dict() for v in tier.env]


def _container_security(uid: int, read_only_root: bool = False) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    if read_only_root:
        ctx["readOnlyRootFilesystem"] = True
    ctx["runAsUser"] = uid
    ctx["runAsGroup"] = uid
    ctx["runAsNonRoot"] = uid != 0
    return ctx


def model_container(spec: ZetaRouterSpec, tier: TierSpec) -> dict[str, Any]:
    mounts = [{"name": "cache", "mountPath": CACHE_DIR}]
    if tier.engine == "vllm":
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    readiness = (
        dict(tier.readiness_probe)
        if tier.readiness_probe
        else _http_probe("/health", MODEL_PORT_NAME, period=10, timeout=5, failures=3)
    )
    return {
        "name": MODEL_CONTAINER,
        "image": tier.effective_image,
        "args": model_server_args(tier),
        "env": _model_env(tier),
        "ports": [{"name": MODEL_PORT_NAME, "containerPort": tier.port, "protocol": "TCP"}],
        "resources": _resources(tier.effective_resources),
        "startupProbe": _http_probe(
            "/health", MODEL_PORT_NAME, STARTUP_PERIOD, timeout=5, failures=STARTUP_FAILURES
        ),
        "readinessProbe": readiness,
        "livenessProbe": _http_probe("/health", MODEL_PORT_NAME, period=20, timeout=10, failures=3),
        # Not stopped while it holds requests: the kubelet asks the router in the same pod, on
        # its admin port (a number: a hook resolves port names in its own container only).
        "lifecycle": {
            "preStop": {"httpGet": {"path": MODEL_IDLE_HOOK_PATH, "port": spec.router.admin_port}}
        },
        "volumeMounts": mounts,
        "securityContext": _container_security(tier.run_as_user),
    }


def router_container(spec: ZetaRouterSpec, tier: TierSpec, image: str) -> dict[str, Any]:
    """The router sidecar of a tier's pods: ``zeta-router router --config
    /etc/zeta-router/routing.yaml --local-tier <tier> --port <router port> --admin-port <admin
    port> --request-key-file <the router key>``; the probes use the admin port."""
    r = spec.router
    return {
        "name": ROUTER_CONTAINER,
        "image": r.image or image,
        "command": ["zeta-router"],
        "args": [
            "router",
            "--config",
            f"{names.CONFIG_DIR}/{CONFIGMAP_KEY}",
            "--local-tier",
            tier.name,
            "--port",
            str(r.port),
            "--drain-delay",
            _seconds(r.drain_delay_seconds),
            "--drain-quiet",
            _seconds(r.drain_quiet_seconds),
            "--drain-timeout",
            _seconds(r.drain_timeout_seconds),
            "--drain-seconds",
            _seconds(r.timeouts.total_seconds),
            "--admin-port",
            str(r.admin_port),
            "--request-key-file",
            f"{names.ROUTER_KEY_DIR}/{names.ROUTER_KEY_FIELD}",
            "--ngram-key-file",
            f"{names.ROUTER_KEY_DIR}/{names.NGRAM_KEY_FIELD}",
            *r.args,
        ],
        "ports": [
            {"name": ROUTER_PORT_NAME, "containerPort": r.port, "protocol": "TCP"},
            # Health and metrics: probes and monitors only, never behind the entry Service.
            {"name": ROUTER_ADMIN_PORT_NAME, "containerPort": r.admin_port, "protocol": "TCP"},
        ],
        "resources": _resources(r.resources or ROUTER_RESOURCES),
        "readinessProbe": _http_probe(
            "/readyz", ROUTER_ADMIN_PORT_NAME, period=5, timeout=3, failures=2
        ),
        "livenessProbe": _http_probe(
            "/healthz", ROUTER_ADMIN_PORT_NAME, period=10, timeout=3, failures=3
        ),
        # Stop being ready, and keep serving until traffic has stopped arriving (see
        # api.lifecycle); the hooks are served on the admin port, which outlives the client
        # port's drain. The hook waits as long as the longest drain.
        "lifecycle": {
            "preStop": {"httpGet": {"path": ROUTER_DRAIN_HOOK_PATH, "port": r.admin_port}}
        },
        "volumeMounts": [
            {"name": "routing", "mountPath": names.CONFIG_DIR, "readOnly": True},
            {"name": "router-key", "mountPath": names.ROUTER_KEY_DIR, "readOnly": True},
            {"name": "router-tmp", "mountPath": "/tmp"},
            *(mount for _, mount in _external_keys(spec)),
        ],
        "securityContext": _container_security(ROUTER_UID, read_only_root=True),
    }


def _external_keys(spec: ZetaRouterSpec) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each external tier's API key Secret: its pod volume (the one data key, as the file the
    routing file names) and its mount in the router container. Only the router containers
    mount it: never the model server, a ConfigMap or an annotation. A volume, not an
    environment variable: the kubelet updates a mounted Secret in place, and the routers
    re-read the file, so a key rotated in its Secret is used without restarting the pods."""
    out = []
    for t in spec.tiers:
        if t.external is None:
            continue
        ref = t.external.api_key_secret_ref
        volume = names.external_key_volume(t.name)
        out.append(
            (
                {
                    "name": volume,
                    "secret": {
                        "secretName": ref.name,
                        "items": [{"key": ref.key, "path": names.EXTERNAL_KEY_FILE}],
                    },
                },
                {"name": volume, "mountPath": names.external_key_dir(t.name), "readOnly": True},
            )
        )
    return out


def _cache_source(tier: TierSpec) -> dict[str, Any]:
    if not tier.model_cache:
        return {"emptyDir": {}}
    return {k: v for k, v in tier.model_cache.items() if k != "name"}


def _seconds(value: float) -> str:
    return f"{value:g}"


def _strategy(tier: TierSpec) -> dict[str, Any]:
    if tier.rollout_strategy == "Replace":
        # No spare GPU: an old pod goes first (the tier runs one replica short meanwhile).
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    # Capacity first: a new pod must be ready before an old one stops.
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def _spread(name: str, tier: TierSpec) -> list[dict[str, Any]]:
    if tier.topology_spread_constraints is not None:
        return [dict(c) for c in tier.topology_spread_constraints]
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": names.tier_selector(name, tier.name)},
        }
    ]


def digest(value: Any) -> str:
    """A short, stable digest of a JSON-like value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def template_annotations(template: dict[str, Any]) -> dict[str, str]:
    """The Deployment annotations describing its pod template (``zeta.ai/template-hash`` and
    ``zeta.ai/template-parts``: model, router, pod)."""
    containers = {c["name"]: c for c in template["spec"]["containers"]}
    pod = {**template, "spec": {k: v for k, v in template["spec"].items() if k != "containers"}}
    parts = {
        "model": digest(containers.get(MODEL_CONTAINER)),
        "router": digest(containers.get(ROUTER_CONTAINER)),
        "pod": digest(pod),
    }
    return {
        names.TEMPLATE_HASH: digest(template),
        names.TEMPLATE_PARTS: ",".join(f"{k}={v}" for k, v in parts.items()),
    }


def build_deployment(
    name: str,
    spec: ZetaRouterSpec,
    tier: TierSpec,
    replicas: int,
    router_image: str = defaults.ROUTER_IMAGE,
) -> dict[str, Any]:
    """The Deployment ``<name>-<tier>`` of one tier, with ``replicas`` replicas.

    ``router_image`` is used when ``spec.router.image`` is not set (the operator passes its own
    release image). Namespace and owner reference are added by the controller.
    """
    pod_labels = names.labels(name, "model-server", tier.name)
    volumes: list[dict[str, Any]] = [
        {"name": "routing", "configMap": {"name": names.routing_configmap_name(name)}},
        # Created by the operator before the Deployment (never rendered: the key is random).
        {"name": "router-key", "secret": {"secretName": names.router_key_secret_name(name)}},
        {"name": "cache", **_cache_source(tier)},
        {"name": "router-tmp", "emptyDir": {}},
        *(volume for volume, _ in _external_keys(spec)),
    ]
    if tier.engine == "vllm":
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory"}})
    pod_security: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if tier.run_as_user != 0:
        pod_security["fsGroup"] = tier.run_as_user  # a mounted cache volume must be writable
    r = spec.router
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": termination_grace_seconds(
            r.drain_timeout_seconds, r.timeouts.total_seconds
        ),
        "securityContext": pod_security,
        "containers": [model_container(spec, tier), router_container(spec, tier, router_image)],
        "volumes": volumes,
    }
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [s.to_dict() for s in spec.image_pull_secrets]
    if tier.priority_class_name:
        pod_spec["priorityClassName"] = tier.priority_class_name
    if tier.node_selector:
        pod_spec["nodeSelector"] = dict(tier.node_selector)
    if tier.affinity:
        pod_spec["affinity"] = dict(tier.affinity)
    if tier.tolerations:
        pod_spec["tolerations"] = [t.to_dict() for t in tier.tolerations]
    spread = _spread(name, tier)
    if spread:
        pod_spec["topologySpreadConstraints"] = spread
    template = {"metadata": {"labels": dict(pod_labels)}, "spec": pod_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": names.tier_object_name(name, tier.name),
            "labels": pod_labels,
            "annotations": template_annotations(template),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": names.tier_selector(name, tier.name)},
            "strategy": _strategy(tier),
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 1800 if tier.engine == "vllm" else 600,
            "template": template,
        },
    }
