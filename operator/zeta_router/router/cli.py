"""``zeta-router router``: the routing sidecar, or a standalone router in front of servers you
already run."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
from pathlib import Path

import prometheus_client
import yaml

from zeta_router.api.defaults import BUILTIN_DEFAULT_CONTEXT, DRAIN_TIMEOUT
from zeta_router.api.fields import duration_seconds
from zeta_router.api.lifecycle import DrainTiming
from zeta_router.api.routing import ScorerWeights
from zeta_router.router import logs
from zeta_router.router.app import Options, Router
from zeta_router.router.config import (
    BUILTIN_THRESHOLDS,
    ConfigError,
    RuntimeConfig,
    compile_config,
    load_config,
    parse_pairs,
    standalone_config,
)
from zeta_router.router.connections import Limits, fd_budget
from zeta_router.router.ids import KeyFileError, Signer, read_keys
from zeta_router.router.picker import STRATEGIES
from zeta_router.router.reload import ConfigWatcher, KeyWatcher
from zeta_router.router.server import Address, new_event_loop, serve
from zeta_router.scoring.ngrams import derive_key

log = logging.getLogger("zeta_router.router.cli")

_DESCRIPTION = """\
Route OpenAI-compatible requests between a ladder of model tiers (smallest first).

Each request of /v1/chat/completions or /v1/completions is scored in [0, 1] for how demanding
it is, within its context (header X-Zeta-Context, or model "<router>/<context>", else the
default context), and sent to the tier whose cut points bracket the score. If the tier is
down the request fails over to the next larger tier, then to smaller ones.

Two ways to run it:

  in a ZetaRouter pod (the operator writes the file and mounts it; it is hot-reloaded):
    zeta-router router --config /etc/zeta-router/routing.yaml --local-tier small --port 8080

  standalone, in front of servers you already run (no file, no cluster):
    zeta-router router --tier small=http://127.0.0.1:8001 --tier large=http://127.0.0.1:8002 \\
        --threshold default=0.5 --port 8080
"""

_EPILOG = f"""\
built-in contexts (standalone mode), with the cut point between two tiers:
  {", ".join(f"{k}={v}" for k, v in BUILTIN_THRESHOLDS.items())}
  (default context: {BUILTIN_DEFAULT_CONTEXT}). With more tiers the cut points are spread
  around these values; --threshold sets them exactly (one per tier boundary, increasing).

endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models,
  POST /v1/feedback on --port; GET /healthz, GET /readyz, GET /metrics on --admin-port

request headers: X-Zeta-Context, X-Zeta-Tier (force a tier, when allowed; with
  X-Zeta-Tier-Token when tokens are set), X-Zeta-Session (stickiness:
  send back the x-zeta-session token of the previous answer), X-Client-Request-Id.
  Response headers: x-zeta-tier, x-zeta-score, x-zeta-context, x-request-id (signed; the id to
  post to /v1/feedback), x-zeta-session, x-client-request-id.

signals: SIGTERM/SIGINT drain and exit (stop accepting clients, let requests in flight
  finish for --drain-seconds, /readyz answering 503 meanwhile); SIGHUP re-reads --config.
  In a pod the preStop hook (GET /drain/router) comes first: the router keeps serving, not
  ready, until traffic has stopped (--drain-delay, --drain-quiet, --drain-timeout).
See docs/router.md for the config file reference and metrics.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = _DESCRIPTION
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    src = parser.add_argument_group("where the routing comes from (one of)")
    src.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="routing file (RoutingConfig YAML, as in the <name>-routing ConfigMap); "
        "re-read when it changes",
    )
    src.add_argument(
        "--tier",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="standalone mode: a tier and its OpenAI-compatible base URL (http://host:port or "
        "http://host:port/v1); repeat, smallest tier first",
    )
    pod = parser.add_argument_group("with --config")
    pod.add_argument(
        "--local-tier",
        metavar="NAME",
        help="the tier served by this pod: its localUrl from the file is used instead of url",
    )
    pod.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often the file, and the API key files of its external tiers, are checked "
        "for changes (default: %(default)s)",
    )
    alone = parser.add_argument_group("standalone mode (with --tier)")
    alone.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="CONTEXT=T[,T...]",
        help="cut points of a context (one per tier boundary, increasing, in [0,1]); a context "
        "that is not built in is added",
    )
    alone.add_argument(
        "--tier-model",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="model name to send to a tier (e.g. vLLM's --served-model-name); without it the "
        "client's model field is removed before forwarding",
    )
    alone.add_argument(
        "--name", default="zeta", help="logical model name clients use (default: %(default)s)"
    )
    alone.add_argument(
        "--default-context",
        default=BUILTIN_DEFAULT_CONTEXT,
        metavar="NAME",
        help="context of requests that name none (default: %(default)s)",
    )
    alone.add_argument(
        "--weights",
        type=Path,
        metavar="JSON",
        help="scorer weights file ({bias, weights: {feature: w}}) instead of the packaged ones",
    )
    alone.add_argument(
        "--shadow-sample-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of requests answered by a smaller tier that are also sent to the next larger "
        "one, to measure agreement (default: 0, off)",
    )
    alone.add_argument(
        "--no-failover", action="store_true", help="never move a request to another tier"
    )
    alone.add_argument(
        "--allow-force-tier",
        action="store_true",
        help="honour the X-Zeta-Tier header (pins a tier, bypassing routing); off by default",
    )
    alone.add_argument(
        "--force-tier-token-sha256",
        action="append",
        default=[],
        metavar="HEX",
        help="with --allow-force-tier, only callers whose X-Zeta-Tier-Token hashes (SHA-256, "
        "hex) to one of these may pin a tier; repeat for several tokens",
    )
    alone.add_argument(
        "--connect-timeout",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds to open a connection to a tier (default: %(default)s)",
    )
    alone.add_argument(
        "--first-byte-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds until a tier's response headers; past it the request fails over "
        "(default: %(default)s)",
    )
    alone.add_argument(
        "--total-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds for a whole answer, streams included (default: %(default)s)",
    )
    alone.add_argument(
        "--breaker-failures",
        type=int,
        default=3,
        metavar="N",
        help="consecutive failures after which a tier is skipped for a while "
        "(default: %(default)s)",
    )
    alone.add_argument(
        "--breaker-open-seconds",
        type=float,
        default=5.0,
        metavar="S",
        help="how long a failing tier is skipped before one probe request (default: %(default)s)",
    )
    alone.add_argument(
        "--balancing",
        choices=list(STRATEGIES),
        default="prefix",
        help="how a tier's replica is picked per request (default: %(default)s; see "
        "docs/router.md)",
    )
    alone.add_argument(
        "--balancing-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another balancing setting of the config file (e.g. loadFactor=1.5, "
        "ejectionSeconds=10, replicaTries=2, resolveSeconds=1, metricsSeconds=1, "
        "prefixChars=512); repeat",
    )
    net = parser.add_argument_group("serving")
    net.add_argument(
        "--host", default="0.0.0.0", help="address to listen on (default: %(default)s)"
    )
    net.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port of the client API (/v1/...); 0 picks a free one (default: %(default)s)",
    )
    net.add_argument(
        "--admin-host",
        metavar="HOST",
        help="address of the admin port (default: --host)",
    )
    net.add_argument(
        "--admin-port",
        type=int,
        default=8081,
        help="port of /healthz, /readyz and /metrics, kept apart from the client API; 0 picks "
        "a free one (default: %(default)s)",
    )
    net.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a client has to send a request's headers once it starts (else 408 and "
        "the connection is closed) (default: %(default)s)",
    )
    net.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a client has to send a request's body (else 408) (default: %(default)s)",
    )
    net.add_argument(
        "--idle-timeout",
        type=float,
        default=75.0,
        metavar="S",
        help="seconds a connection may stay open without a request (new or kept alive) "
        "(default: %(default)s)",
    )
    net.add_argument(
        "--max-connections",
        type=int,
        default=4096,
        metavar="N",
        help="client connections open at once; beyond, a new one gets a 503 and is closed. "
        "Lowered to what the descriptor limit allows (default: %(default)s)",
    )
    net.add_argument(
        "--tier-connections",
        type=int,
        default=1024,
        metavar="N",
        help="connections to each tier at once; more requests wait for one (default: %(default)s)",
    )
    net.add_argument(
        "--drain-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, how long requests in flight may take to finish (default: %(default)s)",
    )
    net.add_argument(
        "--drain-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="in a pod: after the preStop hook (GET /drain/router) asks to drain, keep "
        "serving, not ready, at least this long while Services stop sending requests "
        "(default: %(default)s)",
    )
    net.add_argument(
        "--drain-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="in a pod: ... and until no new connection or request has arrived for this long "
        "(default: %(default)s)",
    )
    net.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        metavar="S",
        help=f"in a pod: ... but at most this long (default: {DEFAULT_DRAIN_TIMEOUT:g}, or the "
        "drain delay or quiet period when longer)",
    )
    net.add_argument(
        "--event-loop",
        default="uvloop",
        choices=["uvloop", "asyncio"],
        help="event loop implementation (default: %(default)s; asyncio is for comparison)",
    )
    net.add_argument(
        "--request-key-file",
        type=Path,
        metavar="PATH",
        help="key that signs request ids and session tokens, one per line (the first signs, "
        "all verify); every replica of a ZetaRouter must share it so that feedback and "
        "sessions work across them. Re-read every --reload-interval (and on SIGHUP), so keys "
        "rotate without a restart. Without it a random key is made, valid in this process only",
    )
    pod.add_argument(
        "--ngram-key-file",
        type=Path,
        metavar="PATH",
        help="secret of the hashed word n-grams of learning samples and learned corrections "
        "(first line; read once at start). Where the file does not exist, the n-gram key is "
        "made of the first --request-key-file key. Every router of a ZetaRouter and its "
        "operator must use the same",
    )
    obs = parser.add_argument_group("logs")
    obs.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    obs.add_argument("--log-format", default="json", choices=["json", "text"])
    obs.add_argument(
        "--access-log", action="store_true", help="log one line per request (no prompt)"
    )
    obs.add_argument(
        "--log-prompts",
        action="store_true",
        help="include prompts (and shadow answers) in logs; off by default, prompts may be private",
    )
    obs.add_argument(
        "--shadow-log",
        type=Path,
        metavar="PATH",
        help="JSONL file of shadow comparisons (bounded, rotated to PATH.1)",
    )
    obs.add_argument(
        "--shadow-log-max-bytes",
        type=int,
        default=10 * 1024 * 1024,
        metavar="N",
        help="default: %(default)s",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective routing configuration as YAML and exit",
    )


DEFAULT_DRAIN_TIMEOUT = duration_seconds(DRAIN_TIMEOUT)


def drain_timing(delay: float, quiet: float, timeout: float | None) -> DrainTiming:
    """The drain's bounds from the command line (``--drain-*``); SystemExit when one is
    negative. An explicit ``--drain-timeout`` wins over the others (the grace period the
    operator gives a pod is sized from it)."""
    if min(delay, quiet) < 0 or (timeout is not None and timeout < 0):
        raise SystemExit("zeta-router router: --drain-* values must not be negative")
    if timeout is None:
        timeout = max(DEFAULT_DRAIN_TIMEOUT, delay, quiet)
    return DrainTiming(delay=delay, quiet=quiet, timeout=timeout)


def _thresholds(values: list[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for name, value in parse_pairs(values, "--threshold"):
        try:
            out[name] = [float(v) for v in value.split(",")]
        except ValueError:
            raise ConfigError(f"--threshold {name}={value}: cut points must be numbers") from None
    return out


def ngram_key(args: argparse.Namespace) -> bytes | None:
    """The n-gram key: made of ``--ngram-key-file`` where that file exists, else of the first
    request key (a Secret made before the n-gram key had its own field), else none (a router
    on its own, whose samples nobody joins). Raises :class:`KeyFileError`."""
    path = args.ngram_key_file
    if path is not None and path.exists():
        return derive_key(read_keys(path)[0])
    if args.request_key_file is not None:
        return derive_key(read_keys(args.request_key_file)[0])
    return None


def build_config(args: argparse.Namespace) -> tuple[RuntimeConfig, bytes | None]:
    """The configuration to start with, and the file content it came from (config mode)."""
    if args.config is not None and args.tier:
        raise ConfigError("use either --config or --tier, not both")
    if args.config is not None:
        if (
            args.threshold
            or args.tier_model
            or args.weights
            or args.allow_force_tier
            or args.force_tier_token_sha256
            or args.balancing_option
            or args.balancing != "prefix"
        ):
            raise ConfigError(
                "--threshold, --tier-model, --weights, --allow-force-tier, "
                "--force-tier-token-sha256 and --balancing* are for standalone mode (set them "
                "in the file)"
            )
        content = args.config.read_bytes() if args.config.is_file() else None
        return load_config(args.config, args.local_tier, ngram_key(args)), content
    if not args.tier:
        raise ConfigError("give --config PATH, or at least one --tier NAME=URL")
    if args.local_tier:
        raise ConfigError("--local-tier is for --config mode")
    weights = None
    if args.weights is not None:
        try:
            weights = ScorerWeights.model_validate(json.loads(args.weights.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--weights {args.weights}: {exc}") from None
    cfg = standalone_config(
        parse_pairs(args.tier, "--tier"),
        thresholds=_thresholds(args.threshold),
        models=dict(parse_pairs(args.tier_model, "--tier-model")),
        router=args.name,
        default_context=args.default_context,
        weights=weights,
        failover=not args.no_failover,
        allow_force_tier=args.allow_force_tier,
        force_tier_token_sha256=[h.strip().lower() for h in args.force_tier_token_sha256],
        shadow_sample_rate=args.shadow_sample_rate,
        circuit_breaker={
            "failureThreshold": args.breaker_failures,
            "openSeconds": args.breaker_open_seconds,
        },
        timeouts={
            "connectSeconds": args.connect_timeout,
            "firstByteSeconds": args.first_byte_timeout,
            "totalSeconds": args.total_timeout,
        },
        balancing={"strategy": args.balancing, **_balancing_options(args.balancing_option)},
    )
    return compile_config(cfg, ngram_key=ngram_key(args)), None


def _balancing_options(values: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in parse_pairs(values, "--balancing-option"):
        try:
            out[name] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--balancing-option {name}={value}: not a value") from None
    return out


def run(args: argparse.Namespace) -> int:
    logs.setup(args.log_level, args.log_format)
    # The *_created series double every counter's output and nothing here reads them.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        config, content = build_config(args)
    except (ConfigError, KeyFileError) as exc:
        print(f"zeta-router router: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        data = config.source.model_dump(mode="json", by_alias=True, exclude_none=True)
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
        return 0
    if args.request_key_file is not None:
        try:
            signer = Signer.from_file(args.request_key_file)
        except KeyFileError as exc:
            print(f"zeta-router router: --request-key-file: {exc}", file=sys.stderr)
            return 2
    else:
        signer = Signer.random()
        log.warning(
            "no --request-key-file: request ids and session tokens are signed with a random "
            "key of this process; other replicas, and this one after a restart, reject them",
            extra={"event": "request_key_ephemeral"},
        )
    problems = [
        f"{flag} must be > 0"
        for flag, value in (
            ("--header-timeout", args.header_timeout),
            ("--body-timeout", args.body_timeout),
            ("--idle-timeout", args.idle_timeout),
            ("--max-connections", args.max_connections),
            ("--tier-connections", args.tier_connections),
        )
        if value <= 0
    ]
    if args.admin_port != 0 and args.admin_port == args.port:
        problems.append("--admin-port must differ from --port")
    if problems:
        print(f"zeta-router router: {'; '.join(problems)}", file=sys.stderr)
        return 2
    max_connections = fd_budget(args.max_connections, len(config.tiers), args.tier_connections)
    if max_connections < args.max_connections:
        log.warning(
            "the descriptor limit lowers --max-connections",
            extra={
                "event": "max_connections_lowered",
                "requested": args.max_connections,
                "effective": max_connections,
                "descriptor_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            },
        )
    limits = Limits(
        header_seconds=args.header_timeout,
        body_seconds=args.body_timeout,
        idle_seconds=args.idle_timeout,
        max_connections=max_connections,
    )
    options = Options(
        log_prompts=args.log_prompts,
        access_log=args.access_log,
        shadow_log=args.shadow_log,
        shadow_log_max_bytes=args.shadow_log_max_bytes,
        body_timeout=args.body_timeout,
        tier_connections=args.tier_connections,
    )
    router = Router(config, options, signer=signer)
    watcher = None
    if args.config is not None:
        watcher = ConfigWatcher(
            args.config,
            local_tier=args.local_tier,
            on_config=router.set_config,
            on_error=router.config_error,
            interval=args.reload_interval,
            ngram_key=config.ngram_key,
        )
        if content is not None:
            watcher.prime(content, config)
    key_watcher = None
    if args.request_key_file is not None:
        # Rotation without a rollout: the mounted Secret's new keys are taken while running.
        key_watcher = KeyWatcher(
            args.request_key_file,
            signer,
            on_keys=lambda s: router.metrics.set_request_keys(s.key_ids),
            interval=args.reload_interval,
        )
        key_watcher.poll()  # primes it with the file the router started with
    loop = new_event_loop(args.event_loop)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(
            serve(
                router,
                client=Address(args.host, args.port),
                admin=Address(args.admin_host or args.host, args.admin_port),
                limits=limits,
                watcher=watcher,
                key_watcher=key_watcher,
                drain_seconds=args.drain_seconds,
                drain=drain_timing(args.drain_delay, args.drain_quiet, args.drain_timeout),
                local_tier=args.local_tier,
            )
        )
    finally:
        loop.close()
    return 0
