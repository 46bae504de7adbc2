"""Routing configuration at run time: load and check the YAML file, compile it into the
structures the request path uses, and build the standalone configuration from command-line
tiers.

:class:`RuntimeConfig` is immutable; a reload builds a new one and swaps a single reference, so a
request always sees one consistent configuration from start to end.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from zeta_router.api.defaults import (
    BUILTIN_CONTEXTS,
    BUILTIN_DEFAULT_CONTEXT,
    spread_thresholds,
)
from zeta_router.api.defaults import WAKE_WAIT_SECONDS as DEFAULT_WAKE_WAIT
from zeta_router.api.routing import (
    DEFAULT_ESCALATE_ABOVE,
    RoutingConfig,
    RoutingExternal,
    ScorerWeights,
    base_url,
)
from zeta_router.scoring.learned import LearnedScorer, scorer_for
from zeta_router.scoring.scorer import Scorer, default_weights
from zeta_router.scoring.selector import Selector

#: Built-in contexts of the standalone mode and their reference threshold for two tiers: the
#: API's (one table, so a ZetaRouter without contexts routes like the standalone router).
BUILTIN_THRESHOLDS = BUILTIN_CONTEXTS


class ConfigError(Exception):
    """A configuration that cannot be used; the message says why, for the operator's log."""


@dataclass(frozen=True, slots=True)
class Tier:
    index: int
    name: str
    url: str  # base URL without a trailing "/v1": the one replica when ``replicas`` gives none
    model: str | None  # model name to send upstream; None removes the client's
    #: Where the replicas are (base URLs; names are resolved to all their addresses).
    replicas: tuple[str, ...] = ()
    engine: str = "vllm"  # which gauges say how loaded a replica is
    #: An external provider: its limits, overflow rule and prices (None: a tier we run).
    external: RoutingExternal | None = None
    #: The provider's API key, from the file (or variable) the routing file names; never
    #: printed (repr) or logged.
    api_key: str | None = field(default=None, repr=False)
    asleep: bool = False  # at zero replicas (or waking): no request goes there

    @property
    def paused(self) -> bool:
        """An external tier paused for its spend cap: no request goes there."""
        return self.external is not None and bool(self.external.paused)


@dataclass(frozen=True, slots=True)
class Context:
    name: str
    scorer: Scorer | LearnedScorer  # the prior, plus the learned correction when there is one
    selector: Selector
    cascade: bool = False  # small tier first, the largest when the judge doubts its answer
    escalate_above: float = DEFAULT_ESCALATE_ABOVE
    wait_seconds: float | None = None  # hold requests for a sleeping tier (None: fall back)


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    source: RoutingConfig
    tiers: tuple[Tier, ...]
    tier_by_name: Mapping[str, Tier]
    contexts: Mapping[str, Context]
    default_context: str
    ngram_key: bytes | None = None
    """Key of the hashed n-grams (samples and learned corrections); None: unkeyed (offline)."""
    overflow: frozenset[int] = frozenset()
    """Indices of the overflow-only tiers: never a request's first choice."""

    @property
    def generation(self) -> int:
        return self.source.generation

    @property
    def router_name(self) -> str:
        return self.source.router


def validation_message(exc: ValidationError) -> str:
    """One line naming each problem by its field path, e.g. ``tiers.0.url: Field required``."""
    parts = []
    for e in exc.errors():
        msg = str(e["msg"]).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def normalise_url(url: str) -> str:
    """Base URL of an OpenAI-compatible server; ``http://h:8000/v1/`` and ``http://h:8000`` are
    the same server."""
    try:
        return base_url(url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def tier_urls(value: str) -> list[str]:
    """The replicas of a ``--tier NAME=URL[,URL...]`` flag, each checked."""
    urls = [normalise_url(u) for u in value.split(",") if u.strip()]
    if not urls:
        raise ConfigError(f"--tier value {value!r} names no URL")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"--tier value {value!r} names a replica twice")
    return urls


def compile_config(
    cfg: RoutingConfig,
    local_tier: str | None = None,
    ngram_key: bytes | None = None,
    environ: Mapping[str, str] | None = None,
) -> RuntimeConfig:
    names = [t.name for t in cfg.tiers]
    if local_tier is not None and local_tier not in names:
        raise ConfigError(f"--local-tier {local_tier!r} is not one of the tiers {names}")
    tiers = []
    for i, t in enumerate(cfg.tiers):
        url = t.local_url if (t.name == local_tier and t.local_url) else t.url
        key = external_key(t.name, t.external, environ)
        tiers.append(
            Tier(
                i,
                t.name,
                normalise_url(url),
                t.served_model_name,
                tuple(t.replicas),
                t.engine,
                t.external,
                key,
                asleep=bool(t.asleep),
            )
        )
    shared = cfg.scorer or default_weights()
    contexts: dict[str, Context] = {}
    for c in cfg.contexts:
        try:
            scorer = scorer_for(Scorer(c.scorer or shared), c.learned, ngram_key)
            selector = Selector(c.thresholds)
        except ValueError as exc:
            raise ConfigError(f"context {c.name!r}: {exc}") from None
        escalate = DEFAULT_ESCALATE_ABOVE if c.escalate_above is None else c.escalate_above
        wait = (c.wait_seconds or DEFAULT_WAKE_WAIT) if c.when_asleep == "wait" else None
        contexts[c.name] = Context(c.name, scorer, selector, c.mode == "cascade", escalate, wait)
    return RuntimeConfig(
        source=cfg,
        tiers=tuple(tiers),
        tier_by_name={t.name: t for t in tiers},
        contexts=contexts,
        default_context=cfg.default_context,
        ngram_key=ngram_key,
        overflow=frozenset(
            t.index for t in tiers if t.external is not None and t.external.overflow_only
        ),
    )


#: The most of a key file the router reads: an API key is some dozens of bytes, and a file
#: mounted by mistake (a certificate bundle, a log) must not be read whole.
MAX_KEY_FILE_BYTES = 16 * 1024
#: What an API key may hold: visible ASCII, nothing that could end or split the
#: ``Authorization`` header it is sent in.
_KEY_CHARS = re.compile(r"[\x21-\x7e]+")


def external_key(
    tier: str, external: RoutingExternal | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """An external tier's API key, read from the file its entry names (a mounted Secret the
    operator sets up) or the environment variable. None for a tier we run. Errors name the
    file or variable, never what it holds."""
    if external is None:
        return None
    if external.api_key_file is not None:
        return read_key_file(tier, external.api_key_file)
    name = external.api_key_env or ""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    if not value:
        raise ConfigError(
            f"tier {tier!r}: the environment variable {name} that should hold its API key is "
            "not set"
        )
    return _checked_key(tier, value, f"the environment variable {name}")


def read_key_file(tier: str, path: str) -> str:
    """The API key in ``path`` (surrounding white space removed; at most one line)."""
    try:
        # Non-blocking, and a regular file only: a FIFO or a device named by mistake must not
        # hold up the event loop that reads it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"tier {tier!r}: its API key file {path} is not a regular file")
            content = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"tier {tier!r}: cannot read its API key file {path}: {exc.strerror or exc}"
        ) from None
    if len(content) > MAX_KEY_FILE_BYTES:
        raise ConfigError(
            f"tier {tier!r}: its API key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes"
        )
    # Bytes outside ASCII become U+FFFD, which the check below refuses.
    value = content.decode("ascii", errors="replace").strip()
    if not value:
        raise ConfigError(f"tier {tier!r}: its API key file {path} is empty")
    return _checked_key(tier, value, f"its API key file {path}")


def _checked_key(tier: str, value: str, where: str) -> str:
    if not _KEY_CHARS.fullmatch(value):
        raise ConfigError(
            f"tier {tier!r}: {where} does not hold one API key (visible ASCII characters, no "
            "space or line break)"
        )
    return value


def parse_config(text: str) -> RoutingConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, not {type(data).__name__}")
    try:
        return RoutingConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc)) from None


def load_config(
    path: Path, local_tier: str | None = None, ngram_key: bytes | None = None
) -> RuntimeConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return compile_config(parse_config(text), local_tier, ngram_key)


def parse_pairs(values: Sequence[str], what: str) -> list[tuple[str, str]]:
    """``NAME=VALUE`` command-line pairs, in order."""
    out = []
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(f"{what} {v!r} must look like NAME=VALUE")
        out.append((name.strip(), value.strip()))
    return out


def standalone_config(
    tiers: Sequence[tuple[str, str]],
    *,
    thresholds: Mapping[str, Sequence[float]] | None = None,
    models: Mapping[str, str] | None = None,
    router: str = "zeta",
    default_context: str = BUILTIN_DEFAULT_CONTEXT,
    weights: ScorerWeights | None = None,
    **settings: object,
) -> RoutingConfig:
    """The configuration of ``zeta-router router --tier NAME=URL[,URL...] ...``: the tiers in
    the order given (smallest first), each with its replicas (the URLs listed, names resolved),
    the built-in contexts with their default thresholds unless overridden, and any other
    :class:`RoutingConfig` field from ``settings``."""
    if not tiers:
        raise ConfigError("at least one --tier NAME=URL is needed")
    thresholds = dict(thresholds or {})
    models = dict(models or {})
    names = [n for n, _ in tiers]
    unknown_models = sorted(set(models) - set(names))
    if unknown_models:
        raise ConfigError(f"--tier-model names unknown tiers {unknown_models}; tiers: {names}")
    contexts = []
    for name, ref in BUILTIN_THRESHOLDS.items():
        cuts = thresholds.pop(name, None)
        if cuts is None:
            cuts = spread_thresholds(ref, len(tiers))
        contexts.append({"name": name, "thresholds": list(cuts)})
    # Contexts named only on the command line are added, so --threshold can define new ones.
    contexts.extend({"name": n, "thresholds": list(c)} for n, c in thresholds.items())
    try:
        return RoutingConfig.model_validate(
            {
                "router": router,
                "tiers": [
                    {
                        "name": n,
                        "url": tier_urls(u)[0],
                        "replicas": tier_urls(u),
                        "servedModelName": models.get(n),
                    }
                    for n, u in tiers
                ],
                "contexts": contexts,
                "defaultContext": default_context,
                "scorer": weights,
                **settings,
            }
        )
    except ValidationError as exc:
        raise ConfigError(validation_message(exc)) from None
