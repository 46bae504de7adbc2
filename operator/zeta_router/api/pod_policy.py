"""What a ZetaRouter may put into pods: the installer's policy, and its check (pure).

Creating a ZetaRouter makes the operator create pods, with the operator's rights, from what the
ZetaRouter says: a user allowed to create ZetaRouters but not pods must gain nothing beyond what
the installer allows. Whoever installs the operator sets a :class:`PodPolicy` (operator flags,
chart values ``podPolicy``); the controller checks every ZetaRouter against it before it renders
anything (``zeta_router.controller.desired.compute``), and a ZetaRouter that breaks a rule gets
``SpecValid=False`` and a Warning Event naming the rule, with its children left as they were.
``zeta-router render`` runs the same check.

Each rule has an id (named in the condition and the Event) and a knob (:data:`RULES`; the table
in docs/security.md is checked against it):

- ``model-cache-volume``: ``spec.tiers[].modelCache`` only of the allowed volume types (default
  ``persistentVolumeClaim``, ``emptyDir``, ``ephemeral``: never ``hostPath`` or anything else
  that reaches the node or other tenants' storage).
- ``run-as-root``: ``spec.tiers[].runAsUser: 0`` only when the installer allows root.
- ``model-image`` / ``router-image``: images only under the allowed prefixes (when any are set;
  a tier's default image counts too).
- ``secret-ref``: an env ``valueFrom.secretKeyRef`` (and an external tier's
  ``apiKeySecretRef``) only to a Secret whose annotation ``zeta.ai/usable-by`` lists the
  ZetaRouter (or ``*``); an external tier's key, besides, only to a ``baseUrl`` its Secret's
  annotation ``zeta.ai/external-urls`` lists (whoever may edit the ZetaRouter could otherwise
  send the key anywhere). The operator reads the Secret's metadata, never its data.
- ``pod-security``: a guard on the rendered pods themselves: no privileged container, no added
  capability, privilege escalation off, no host namespaces, no hostPath volume. The renderer
  never produces these from any spec; the guard keeps it so whatever field is added later.

The check is a function of the parsed spec, the rendered children and the annotations of the
Secrets the spec names (read by the caller): :func:`enforce` raises :class:`PolicyError`, a
:class:`~zeta_router.api.models.SpecError` whose message names each violation by its field path
and rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from zeta_router.api.models import SpecError, ZetaRouterSpec
from zeta_router.api.routing import base_url

USABLE_BY_ANNOTATION: Final = "zeta.ai/usable-by"
"""Annotation of a Secret that ZetaRouters may reference from env ``secretKeyRef``: a
comma-separated list of ZetaRouter names of the Secret's namespace, or ``*`` for any."""
EXTERNAL_URLS_ANNOTATION: Final = "zeta.ai/external-urls"
"""Annotation of a Secret holding an external provider's API key: the base URLs the key may be
sent to (comma-separated; ``https://api.example.com`` and ``https://api.example.com/v1/`` are
the same base URL). The mark ``zeta.ai/usable-by`` says which ZetaRouters may use the key, this
one where it may go: a ZetaRouter's author chooses its ``baseUrl``, the Secret's owner must
agree."""

DEFAULT_CACHE_VOLUME_TYPES: Final = ("persistentVolumeClaim", "emptyDir", "ephemeral")

SecretRefs = Literal["marked", "any", "none"]
SECRET_REFS_MODES: Final[tuple[SecretRefs, ...]] = ("marked", "any", "none")

RULE_CACHE_VOLUME: Final = "model-cache-volume"
RULE_RUN_AS_ROOT: Final = "run-as-root"
RULE_MODEL_IMAGE: Final = "model-image"
RULE_ROUTER_IMAGE: Final = "router-image"
RULE_SECRET_REF: Final = "secret-ref"
RULE_POD_SECURITY: Final = "pod-security"


@dataclass(frozen=True)
class Rule:
    """A rule of the policy: its id, the operator flag and chart value that set it, its
    default, and what it keeps a ZetaRouter's author from doing."""

    id: str
    flag: str
    value: str
    default: str
    summary: str


RULES: Final[tuple[Rule, ...]] = (
    Rule(
        RULE_CACHE_VOLUME,
        "--allowed-cache-volume",
        "podPolicy.modelCacheVolumeTypes",
        ", ".join(DEFAULT_CACHE_VOLUME_TYPES),
        "spec.tiers[].modelCache only of these volume types (no hostPath: the node's files)",
    ),
    Rule(
        RULE_RUN_AS_ROOT,
        "--allow-root",
        "podPolicy.allowRoot",
        "false",
        "spec.tiers[].runAsUser: 0 (a model server running as root) only when allowed",
    ),
    Rule(
        RULE_MODEL_IMAGE,
        "--allowed-model-image-prefix",
        "podPolicy.modelImagePrefixes",
        "any image",
        "model-server images (spec.tiers[].image, and the engines' defaults) only under "
        "these prefixes",
    ),
    Rule(
        RULE_ROUTER_IMAGE,
        "--allowed-router-image-prefix",
        "podPolicy.routerImagePrefixes",
        "any image",
        "spec.router.image only under these prefixes (unset: the operator's own image)",
    ),
    Rule(
        RULE_SECRET_REF,
        "--secret-refs",
        "podPolicy.secretRefs",
        "marked",
        f"env valueFrom.secretKeyRef and external tiers' apiKeySecretRef only to Secrets "
        f"annotated {USABLE_BY_ANNOTATION} with the ZetaRouter's name or *, an external key "
        f"only to a baseUrl its Secret's {EXTERNAL_URLS_ANNOTATION} lists (marked), to any "
        "Secret of the namespace and anywhere (any), or none",
    ),
    Rule(
        RULE_POD_SECURITY,
        "(none: always on)",
        "(none)",
        "on",
        "no privileged container, added capability, privilege escalation, host namespace or "
        "hostPath volume in the rendered pods",
    ),
)
_RULES_BY_ID: Final = {r.id: r for r in RULES}


@dataclass(frozen=True)
class PodPolicy:
    """The installer's policy. The defaults are what an install without settings enforces."""

    cache_volume_types: tuple[str, ...] = DEFAULT_CACHE_VOLUME_TYPES
    allow_root: bool = False
    model_image_prefixes: tuple[str, ...] = ()
    """Empty: any image."""
    router_image_prefixes: tuple[str, ...] = ()
    """Empty: any image."""
    secret_refs: SecretRefs = "marked"

    @property
    def reads_secrets(self) -> bool:
        """Whether the check needs the annotations of the Secrets a spec names."""
        return self.secret_refs == "marked"


@dataclass(frozen=True)
class Violation:
    rule: str
    path: str
    message: str

    def problem(self) -> tuple[str, str]:
        """``(path, message)`` as a :class:`SpecError` problem, naming the rule and its knob."""
        rule = _RULES_BY_ID[self.rule]
        knob = "" if rule.flag.startswith("(") else f", set by {rule.flag} / {rule.value}"
        return self.path, f"{self.message} (policy rule {rule.id}{knob})"


class PolicyError(SpecError):
    """A ZetaRouter that breaks the installer's policy; ``rules``: the ids broken, in order."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        self.violations = list(violations)
        self.rules = list(dict.fromkeys(v.rule for v in violations))
        super().__init__([v.problem() for v in violations])


# ---- inputs the caller reads --------------------------------------------------------------------


def _secret_refs(env: Iterable[Any]) -> Iterable[tuple[int, str]]:
    for j, var in enumerate(env):
        value_from = var.get("valueFrom") if isinstance(var, Mapping) else None
        ref = value_from.get("secretKeyRef") if isinstance(value_from, Mapping) else None
        if isinstance(ref, Mapping):
            yield j, str(ref.get("name") or "")


def _external_key_secret(tier: Any) -> str:
    """The Secret an external tier's API key comes from ('' for none)."""
    external = tier.get("external") if isinstance(tier, Mapping) else None
    ref = external.get("apiKeySecretRef") if isinstance(external, Mapping) else None
    return str(ref.get("name") or "") if isinstance(ref, Mapping) else ""


def referenced_secrets(body_or_spec: Mapping[str, Any]) -> list[str]:
    """Names of the Secrets a ZetaRouter's env ``secretKeyRef`` and external tiers'
    ``apiKeySecretRef`` name (from the raw object, so that the caller can read their
    annotations before the spec is parsed)."""
    spec = body_or_spec.get("spec", body_or_spec)
    tiers = spec.get("tiers") if isinstance(spec, Mapping) else None
    found: list[str] = []
    for tier in tiers if isinstance(tiers, list) else []:
        env = tier.get("env") if isinstance(tier, Mapping) else None
        names = [n for _, n in _secret_refs(env if isinstance(env, list) else [])]
        for name in [*names, _external_key_secret(tier)]:
            if name and name not in found:
                found.append(name)
    return found


def usable_by(annotations: Mapping[str, str] | None) -> list[str]:
    """The ZetaRouter names (or ``*``) a Secret's ``zeta.ai/usable-by`` annotation lists."""
    raw = (annotations or {}).get(USABLE_BY_ANNOTATION) or ""
    return [part.strip() for part in raw.split(",") if part.strip()]


def external_urls(annotations: Mapping[str, str] | None) -> list[str]:
    """The base URLs a Secret's ``zeta.ai/external-urls`` annotation lists, normalised as tier
    URLs are (entries that are no base URL are left out: they can match nothing)."""
    raw = (annotations or {}).get(EXTERNAL_URLS_ANNOTATION) or ""
    out = []
    for part in raw.split(","):
        try:
            url = base_url(part)
        except ValueError:
            continue
        if url not in out:
            out.append(url)
    return out


# ---- the check ----------------------------------------------------------------------------------


def _prefixed(image: str, prefixes: Sequence[str]) -> bool:
    return not prefixes or any(image.startswith(p) for p in prefixes)


def check_spec(
    name: str,
    spec: ZetaRouterSpec,
    policy: PodPolicy,
    secret_annotations: Mapping[str, Mapping[str, str] | None],
) -> list[Violation]:
    """The violations of ZetaRouter ``name``'s spec. ``secret_annotations``: the annotations of
    each Secret the spec names (None: it does not exist, or its metadata cannot be read)."""
    out: list[Violation] = []
    allowed_volumes = ", ".join(policy.cache_volume_types) or "none"
    for i, tier in enumerate(spec.tiers):
        at = f"spec.tiers[{i}]"
        if tier.external is not None:  # no pod of its own: only the key's Secret to check
            secret = tier.external.api_key_secret_ref.name
            why = _secret_refusal(name, secret, policy, secret_annotations)
            if why:
                out.append(Violation(RULE_SECRET_REF, f"{at}.external.apiKeySecretRef", why))
            elif policy.secret_refs == "marked":
                why = _destination_refusal(
                    secret, tier.external.base_url, secret_annotations.get(secret)
                )
                if why:
                    out.append(Violation(RULE_SECRET_REF, f"{at}.external.baseUrl", why))
            continue
        if tier.model_cache:
            kinds = [k for k in tier.model_cache if k != "name"]
            bad = [k for k in kinds if k not in policy.cache_volume_types]
            if bad or len(kinds) != 1:
                what = ", ".join(bad) if bad else f"{len(kinds)} volume sources"
                out.append(
                    Violation(
                        RULE_CACHE_VOLUME,
                        f"{at}.modelCache",
                        f"volume type {what} is not allowed for the model cache "
                        f"(allowed: {allowed_volumes})",
                    )
                )
        if tier.run_as_user == 0 and not policy.allow_root:
            out.append(
                Violation(
                    RULE_RUN_AS_ROOT,
                    f"{at}.runAsUser",
                    "0 (root) is not allowed; use an image that runs as another user",
                )
            )
        image = tier.effective_image
        if not _prefixed(image, policy.model_image_prefixes):
            out.append(
                Violation(
                    RULE_MODEL_IMAGE,
                    f"{at}.image",
                    f"image {image!r} is not under an allowed prefix "
                    f"({', '.join(policy.model_image_prefixes)})",
                )
            )
        for j, secret in _secret_refs(v.to_dict() for v in tier.env):
            why = _secret_refusal(name, secret, policy, secret_annotations)
            if why:
                out.append(Violation(RULE_SECRET_REF, f"{at}.env[{j}].valueFrom.secretKeyRef", why))
    router_image = spec.router.image
    if router_image and not _prefixed(router_image, policy.router_image_prefixes):
        out.append(
            Violation(
                RULE_ROUTER_IMAGE,
                "spec.router.image",
                f"image {router_image!r} is not under an allowed prefix "
                f"({', '.join(policy.router_image_prefixes)})",
            )
        )
    return out


def _secret_refusal(
    router: str,
    secret: str,
    policy: PodPolicy,
    secret_annotations: Mapping[str, Mapping[str, str] | None],
) -> str | None:
    if policy.secret_refs == "any":
        return None
    if policy.secret_refs == "none":
        return f"Secret {secret}: no ZetaRouter may read Secrets into its pods' environment"
    if secret not in secret_annotations or secret_annotations[secret] is None:
        return f"Secret {secret} does not exist or its metadata cannot be read"
    marks = usable_by(secret_annotations[secret])
    if router in marks or "*" in marks:
        return None
    return (
        f"Secret {secret} is not marked for this ZetaRouter (its annotation "
        f"{USABLE_BY_ANNOTATION} must list {router!r} or '*')"
    )


def _destination_refusal(
    secret: str, url: str, annotations: Mapping[str, str] | None
) -> str | None:
    """Why an external tier's key in ``secret`` may not be sent to ``url`` (a base URL as the
    spec holds it, normalised; None: it may)."""
    allowed = external_urls(annotations)
    if url in allowed:
        return None
    if not allowed:
        return (
            f"Secret {secret} does not say where its key may be sent (its annotation "
            f"{EXTERNAL_URLS_ANNOTATION} must list {url})"
        )
    return (
        f"Secret {secret} allows its key to be sent only to {', '.join(allowed)}, not {url} "
        f"(its annotation {EXTERNAL_URLS_ANNOTATION})"
    )


def _containers(pod: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key) or []


def check_pods(
    children: Iterable[Mapping[str, Any]], policy: PodPolicy | None = None
) -> list[Violation]:
    """The ``pod-security`` guard over the rendered children's pod templates (hostPath volumes
    pass only where the installer allows hostPath model caches)."""
    host_path_ok = "hostPath" in (policy or PodPolicy()).cache_volume_types
    out: list[Violation] = []
    for child in children:
        pod = (((child.get("spec") or {}).get("template") or {}).get("spec")) or None
        if not isinstance(pod, Mapping):
            continue
        where = f"{child.get('kind')} {(child.get('metadata') or {}).get('name')}"
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(key):
                out.append(Violation(RULE_POD_SECURITY, where, f"{key} is not allowed"))
        for volume in pod.get("volumes") or []:
            if "hostPath" in volume and not host_path_ok:
                out.append(
                    Violation(
                        RULE_POD_SECURITY,
                        where,
                        f"volume {volume.get('name')}: hostPath is not allowed",
                    )
                )
        for c in _containers(pod):
            ctx = c.get("securityContext") or {}
            at = f"{where}: container {c.get('name')}"
            if ctx.get("privileged"):
                out.append(Violation(RULE_POD_SECURITY, at, "privileged is not allowed"))
            if (ctx.get("capabilities") or {}).get("add"):
                out.append(Violation(RULE_POD_SECURITY, at, "added capabilities are not allowed"))
            if ctx.get("allowPrivilegeEscalation") is not False:
                out.append(
                    Violation(RULE_POD_SECURITY, at, "allowPrivilegeEscalation must be false")
                )
    return out


def enforce(
    name: str,
    spec: ZetaRouterSpec,
    children: Iterable[Mapping[str, Any]],
    policy: PodPolicy,
    secret_annotations: Mapping[str, Mapping[str, str] | None],
) -> None:
    """Raise :class:`PolicyError` if ZetaRouter ``name`` breaks ``policy``. The spec's rules
    first (they name the field to fix); the rendered pods' guard only when those pass."""
    violations = check_spec(name, spec, policy, secret_annotations) or check_pods(children, policy)
    if violations:
        raise PolicyError(violations)
