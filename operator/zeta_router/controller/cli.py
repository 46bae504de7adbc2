"""`zeta-router operator`: the ZetaRouter operator (kopf, embedded)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from typing import TYPE_CHECKING

from zeta_router.controller import render_args
from zeta_router.controller.config import DEFAULT_PEERING, OperatorConfig

if TYPE_CHECKING:
    from zeta_router.kube import Kube

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the ZetaRouter operator: reconciles every ZetaRouter into its tiers' Deployments "
        "and Services and its routing ConfigMap, repairs drift, and reports status conditions "
        "(SpecValid, Ready, Progressing, Degraded) and Events."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  zeta-router operator --all-namespaces\n"
        "  zeta-router operator -n team-a -n team-b --drift-interval 10 --log-format text\n"
        "  zeta-router operator -A --liveness http://0.0.0.0:8080/healthz "
        "--metrics-address 0.0.0.0:9090   # in a pod\n"
        "  zeta-router operator -A --network-policy "
        '--metrics-from \'[{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]\'\n'
        "  zeta-router operator -n team-a --prometheus-secrets allow-list "
        "--prometheus-secret team-a/prom-token=http://prometheus.monitoring:9090\n"
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="serve this namespace (repeatable; kopf glob patterns such as 'team-*' work)",
    )
    scope.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="serve the whole cluster (the default when no --namespace is given)",
    )
    parser.add_argument(
        "--drift-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often each ZetaRouter's children are checked and repaired (default 30)",
    )
    parser.add_argument(
        "--liveness",
        default="http://127.0.0.1:8080/healthz",
        metavar="URL",
        help="liveness endpoint to serve, e.g. http://0.0.0.0:8080/healthz; '' to disable "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--metrics-address",
        default="127.0.0.1:9090",
        metavar="HOST:PORT",
        help="Prometheus metrics endpoint (/metrics); '' to disable (default %(default)s)",
    )
    parser.add_argument(
        "--peering",
        default=DEFAULT_PEERING,
        metavar="NAME",
        help="kopf peering object shared by the replicas of this operator (default %(default)s)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; the replica with the highest one works, the others wait "
        "(default: random, so several replicas run active/standby)",
    )
    parser.add_argument(
        "--standalone", action="store_true", help="no peering (a single replica, or development)"
    )
    parser.add_argument(
        "--log-format",
        choices=("json", "text"),
        default="json",
        help="json: one JSON object per line (default); text: for humans",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    parser.add_argument(
        "--workers",
        type=int,
        default=OperatorConfig.workers,
        help="threads reconciling in parallel (default %(default)s)",
    )
    render_args.add_arguments(parser)
    parser.add_argument(
        "--prometheus-secrets",
        choices=("annotated", "allow-list", "none"),
        default="annotated",
        help="which Secrets a ZetaRouter may name for its Prometheus token: annotated (default: "
        "only Secrets whose annotation zeta.ai/prometheus-urls lists the ZetaRouter's "
        "Prometheus URL), allow-list (only those given with --prometheus-secret), none",
    )
    parser.add_argument(
        "--prometheus-secret",
        action="append",
        default=[],
        metavar="NAMESPACE/NAME=URL",
        help="with --prometheus-secrets allow-list: a Secret whose token may be sent to the "
        "Prometheus at URL (repeatable)",
    )
    parser.add_argument(
        "--prometheus-endpoint",
        action="append",
        default=[],
        metavar="HOST|CIDR",
        help="a host name, address or network (CIDR) a ZetaRouter's spec.autoscaling.prometheus."
        "url may point at (repeatable or comma-separated); with none given, any",
    )
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster "
        "service account)",
    )
    parser.add_argument(
        "--context",
        default=None,
        help="kubeconfig context to use (default: the kubeconfig's current-context)",
    )


def _host_port(value: str) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise SystemExit(f"error: --metrics-address {value!r}: expected HOST:PORT")
    return host or "127.0.0.1", int(port)


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    from zeta_router.autoscale.credentials import SecretPolicy
    from zeta_router.autoscale.loop import (
        ENDPOINTS_SETTING,
        SECRETS_ALLOWED_SETTING,
        SECRETS_POLICY_SETTING,
    )
    from zeta_router.bounded_http import EndpointAllowList

    if args.drift_interval <= 0:
        raise SystemExit("error: --drift-interval must be positive")
    if args.workers < 1:
        raise SystemExit("error: --workers must be at least 1")
    try:
        SecretPolicy.parse(args.prometheus_secrets, args.prometheus_secret)
    except ValueError as e:
        raise SystemExit(f"error: --prometheus-secret: {e}") from None
    try:
        EndpointAllowList.parse(args.prometheus_endpoint)
    except ValueError as e:
        raise SystemExit(f"error: --prometheus-endpoint: {e}") from None
    metrics = _host_port(args.metrics_address)
    settings = render_args.render_settings(args)
    return OperatorConfig(
        namespaces=tuple(args.namespace),
        all_namespaces=bool(args.all_namespaces),
        drift_interval=float(args.drift_interval),
        liveness=args.liveness or None,
        metrics_host=metrics[0] if metrics else "127.0.0.1",
        metrics_port=metrics[1] if metrics else None,
        peering_name=args.peering,
        priority=args.priority,
        standalone=bool(args.standalone),
        log_format=args.log_format,
        verbose=bool(args.verbose),
        workers=int(args.workers),
        kubeconfig=args.kubeconfig,
        context=args.context,
        router_image=settings.router_image,
        network_policy=settings.network_policy,
        metrics_from=tuple(dict(p) for p in settings.scrapers),
        operator_from=tuple(dict(p) for p in settings.operators),
        pod_policy=settings.pod_policy,
        extra={
            SECRETS_POLICY_SETTING: args.prometheus_secrets,
            SECRETS_ALLOWED_SETTING: "\n".join(args.prometheus_secret),
            ENDPOINTS_SETTING: ",".join(args.prometheus_endpoint),
        },
    )


def pdb_api_version(kube: Kube) -> str:
    """``policy/v1`` where the cluster serves PodDisruptionBudgets there (Kubernetes 1.21 and
    later), else ``policy/v1beta1`` (1.20 and older; 1.25 removed it): asked of discovery once,
    at start (an upgraded control plane restarts nothing of ours, but a new operator pod asks
    again)."""
    from zeta_router.kube import ApiError
    from zeta_router.render import names

    try:
        resources = kube.get(f"/apis/{names.PDB.api_version}").get("resources") or []
    except ApiError as e:
        if not e.not_found:
            raise
        return names.PDB_V1BETA1.api_version
    served = any(r.get("name") == names.PDB.plural for r in resources)
    return names.PDB.api_version if served else names.PDB_V1BETA1.api_version


def _quiet_routine_successes(record: logging.LogRecord) -> bool:
    # Every drift check and child event would otherwise log a success line per object; what
    # the reconciliation changed is logged by the controller itself.
    msg = record.getMessage()
    return not (
        msg.endswith("succeeded.")
        and (msg.startswith("Daemon 'drift'") or msg.startswith("Handler 'child-"))
    )


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)

    import kopf
    from prometheus_client import start_http_server

    from zeta_router.controller.desired import RenderSettings
    from zeta_router.controller.events import EventRecorder
    from zeta_router.controller.handlers import OperatorContext, build_registry
    from zeta_router.controller.reconcile import Reconciler
    from zeta_router.kube import CredentialsError, Kube

    kopf.configure(
        verbose=cfg.verbose,
        log_format=kopf.LogFormat.JSON if cfg.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object" if cfg.log_format == "json" else None,
    )
    if not cfg.verbose:
        logging.getLogger("kopf.objects").addFilter(_quiet_routine_successes)
    try:
        kube = Kube.from_kubeconfig(cfg.kubeconfig, cfg.context)
    except CredentialsError as e:
        print(f"error: no Kubernetes credentials: {e}", file=sys.stderr)
        return 1
    events = EventRecorder(kube, instance=socket.gethostname())
    render_settings = RenderSettings(
        router_image=cfg.router_image,
        network_policy=cfg.network_policy,
        scrapers=cfg.metrics_from,
        operators=cfg.operator_from,
        pdb_api_version=pdb_api_version(kube),
        pod_policy=cfg.pod_policy,
    )
    ctx = OperatorContext(cfg, kube, events, Reconciler(kube, events, render_settings))
    registry = build_registry(ctx)
    if cfg.metrics_port is not None:
        start_http_server(cfg.metrics_port, cfg.metrics_host)
        log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, cfg.metrics_port)
    log.info(
        "serving %s; drift check every %ss",
        "all namespaces" if cfg.clusterwide else ", ".join(cfg.namespaces),
        cfg.drift_interval,
    )
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=cfg.clusterwide,
            namespaces=list(cfg.namespaces),
            liveness_endpoint=cfg.liveness,
            standalone=cfg.standalone or None,
        )
    )
    return 0
