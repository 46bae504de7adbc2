"""Which Secret the control loop may read for a Prometheus bearer token, and where it may send it.

A ZetaRouter names both the Prometheus URL and the Secret holding the token
(``spec.autoscaling.prometheus.authSecretRef``). Without a rule, anyone allowed to create a
ZetaRouter could make the operator read any Secret of that namespace and send it to a URL of
their choosing (a confused deputy). So a Secret's token goes only where the Secret's owner
allowed, under one of the operator's policies (``--prometheus-secrets``, the chart's
``prometheusAuth.policy``):

- ``annotated`` (default): the Secret itself names the Prometheus URLs its token may be sent
  to, in the annotation ``zeta.ai/prometheus-urls`` (comma-separated). The operator first reads
  the Secret's metadata only; its data is read only when the annotation allows the URL.
- ``allow-list``: only the Secrets the operator was given (``--prometheus-secret
  NAMESPACE/NAME=URL``, the chart's ``prometheusAuth.allowedSecrets``), each for its URL; the
  chart's RBAC then grants ``get`` on those Secret names only.
- ``none``: the operator reads no Secret at all.

The Secret is always in the ZetaRouter's own namespace (the reference has no namespace), which
is a namespace the operator serves. Anything else is refused before any request is made: the
control loop reports ``MetricsAvailable=False`` (reason ``CredentialsRefused``) naming the
rule, posts a Warning Event, and does not contact that Prometheus at all.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from zeta_router.kube import ApiError, Kube, api_path

URLS_ANNOTATION = "zeta.ai/prometheus-urls"
"""Secret annotation: the Prometheus URLs its token may be sent to (comma-separated)."""

Policy = Literal["annotated", "allow-list", "none"]
POLICIES: tuple[Policy, ...] = ("annotated", "allow-list", "none")


class CredentialsRefusedError(Exception):
    """The rule that keeps the Secret from being used; ``str()`` names the rule."""


@dataclass(frozen=True)
class SecretPolicy:
    mode: Policy = "annotated"
    allowed: frozenset[tuple[str, str, str]] = frozenset()
    """``(namespace, name, url)`` of the Secrets allowed under ``allow-list``."""

    @classmethod
    def parse(cls, mode: str, allowed: Sequence[str] = ()) -> SecretPolicy:
        """From the command line: ``allowed`` entries are ``NAMESPACE/NAME=URL``."""
        if mode not in POLICIES:  # from the command line, or a chart value
            raise ValueError(f"unknown policy {mode!r} (one of {', '.join(POLICIES)})")
        entries = set()
        for item in allowed:
            ref, sep, url = item.partition("=")
            namespace, slash, name = ref.partition("/")
            if not (
                sep and slash and namespace and name and url.startswith(("http://", "https://"))
            ):
                raise ValueError(f"{item!r} must look like NAMESPACE/NAME=http(s)://PROMETHEUS")
            entries.add((namespace, name, normalise_url(url)))
        if entries and mode != "allow-list":
            raise ValueError("allowed Secrets are given but the policy is not allow-list")
        return cls(POLICIES[POLICIES.index(mode)], frozenset(entries))


def normalise_url(url: str) -> str:
    """URLs compared as the user writes them, minus a trailing slash."""
    return url.strip().rstrip("/")


def allowed_urls(annotations: Mapping[str, str] | None) -> list[str]:
    raw = (annotations or {}).get(URLS_ANNOTATION) or ""
    return [normalise_url(u) for u in raw.split(",") if u.strip()]


def refusal(
    policy: SecretPolicy,
    namespace: str,
    secret: str,
    url: str,
    annotations: Mapping[str, str] | None = None,
) -> str | None:
    """Why the token of Secret ``namespace/secret`` may not be sent to ``url`` (None: it may).
    ``annotations``: the Secret's (read as metadata only), needed by the ``annotated`` policy."""
    target = normalise_url(url)
    if policy.mode == "none":
        return (
            f"the operator reads no Secrets (policy 'none'), so Secret {secret} cannot be used "
            "for Prometheus credentials"
        )
    if policy.mode == "allow-list":
        if (namespace, secret, target) in policy.allowed:
            return None
        listed = sorted(u for ns, n, u in policy.allowed if (ns, n) == (namespace, secret))
        if listed:
            return (
                f"Secret {namespace}/{secret} is allowed only for {', '.join(listed)}, not "
                f"{target} (rule: the operator's allow-list, prometheusAuth.allowedSecrets)"
            )
        return (
            f"Secret {namespace}/{secret} is not in the operator's allow-list of Prometheus "
            "credentials (rule: prometheusAuth.allowedSecrets lists NAMESPACE/NAME=URL)"
        )
    urls = allowed_urls(annotations)
    if not urls:
        return (
            f"Secret {secret} is not marked for Prometheus credentials (rule: its annotation "
            f"{URLS_ANNOTATION} must list the Prometheus URLs its token may be sent to)"
        )
    if target not in urls:
        return (
            f"Secret {secret} allows its token to be sent only to {', '.join(urls)}, not "
            f"{target} (rule: annotation {URLS_ANNOTATION})"
        )
    return None


def read_token(
    kube: Kube, policy: SecretPolicy, namespace: str, secret: str, key: str, url: str
) -> str:
    """The bearer token for ``url`` from Secret ``namespace/secret``, if the policy allows.
    Raises :class:`CredentialsRefusedError`, :class:`ApiError` (e.g. the Secret does not exist) or
    :class:`ValueError` (no such key)."""
    path = api_path("v1", "secrets", namespace, secret)
    annotations: Mapping[str, str] | None = None
    if policy.mode == "annotated":
        try:
            meta = kube.get_metadata(path).get("metadata") or {}
        except ApiError as e:
            if e.not_found:
                raise ValueError(f"Secret {secret} not found") from None
            raise
        annotations = meta.get("annotations") or {}
    why = refusal(policy, namespace, secret, url, annotations)
    if why is not None:
        raise CredentialsRefusedError(why)
    try:
        data = kube.get(path).get("data") or {}
    except ApiError as e:
        if e.not_found:
            raise ValueError(f"Secret {secret} not found") from None
        raise
    if key not in data:
        raise ValueError(f"Secret {secret} has no key {key!r}")
    return base64.b64decode(data[key]).decode().strip()
