"""`zeta-router render`: a ZetaRouter's children as the operator would apply them, or the
message the operator would put in its SpecValid condition (what a GitOps pipeline runs before
merging).

It runs the controller's own code path (``controller.desired.compute``: parse, the pod policy,
render, rollout) with the settings of the operator flags it shares (``controller.render_args``),
then owns each child as the operator does (namespace; owner reference when the input has the
live object's ``metadata.uid``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from zeta_router.controller import render_args
from zeta_router.controller.desired import RenderSettings

DESCRIPTION = """\
Print, as YAML, the children the operator would apply for each ZetaRouter of the input files:
the same code path as the operator's (validation, the pod policy, rendering), with the settings
of the same flags. A ZetaRouter the operator would refuse is printed to standard error as
"<namespace>/<name>: <message>", where the message is the one the operator puts in its
SpecValid condition, and the exit status is 1.

What the operator reads from the cluster is taken from the input instead:
  - Secrets named by env valueFrom.secretKeyRef or an external tier's apiKeySecretRef
    (--secret-refs marked): the Secrets in the input files, by name and namespace (their
    annotations zeta.ai/usable-by and zeta.ai/external-urls); a Secret not given counts as
    missing, as it would for the operator without it.
  - Replicas and routing thresholds: those of a new ZetaRouter (spec.tiers[].replicas.initial),
    or those recorded in the input's status (`kubectl get zr NAME -o yaml | zeta-router render
    -f -`). The input's metadata.uid, when present, gives the owner reference.
Not printed: the Secret <name>-router-key (the routers' signing key, created once with a random
key, never applied).

exit status: 0 all rendered; 1 a ZetaRouter the operator would refuse; 2 unusable input."""

EPILOG = """\
examples:
  zeta-router render -f zetarouter.yaml
  zeta-router render -f zetarouter.yaml -f secrets.yaml \\
      --allowed-model-image-prefix registry.example.com/
  kubectl get zr chat -n team-a -o yaml | zeta-router render -f -
  zeta-router render -f zetarouter.yaml | kubectl apply --dry-run=server -f -
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="YAML file(s) holding ZetaRouters (and Secrets they name); '-' reads standard "
        "input (repeatable)",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default="default",
        metavar="NS",
        help="namespace of a ZetaRouter whose metadata has none (default %(default)s)",
    )
    render_args.add_arguments(parser)


def _load(files: Iterable[str]) -> list[dict[str, Any]]:
    import yaml

    docs: list[dict[str, Any]] = []
    for name in files:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ValueError(f"{name}: a YAML document is not an object")
            if doc.get("kind") == "List":
                docs += [d for d in doc.get("items") or [] if isinstance(d, dict)]
            else:
                docs.append(doc)
    return docs


def secret_annotations(
    docs: Iterable[Mapping[str, Any]], namespace: str, names: Iterable[str]
) -> dict[str, dict[str, str] | None]:
    """The annotations of the Secrets ``names`` of ``namespace`` found in ``docs`` (None: not
    given), as the operator would read them."""
    found: dict[str, dict[str, str]] = {}
    for doc in docs:
        meta = doc.get("metadata") or {}
        if doc.get("kind") == "Secret" and (meta.get("namespace") or namespace) == namespace:
            found[str(meta.get("name"))] = dict(meta.get("annotations") or {})
    return {name: found.get(name) for name in names}


def render_one(
    body: Mapping[str, Any],
    settings: RenderSettings,
    secrets: Mapping[str, Mapping[str, str] | None],
) -> list[dict[str, Any]]:
    """The children of ``body`` as the operator applies them (``SpecError`` as it refuses)."""
    from zeta_router.controller.apply import adopted, owner_view
    from zeta_router.controller.desired import compute

    want = compute(body, {}, {}, settings, secret_annotations=secrets)
    meta = body["metadata"]
    if meta.get("uid"):
        owner = owner_view(body)
        return [adopted(child, owner) for child in want.children]
    out = []
    for child in want.children:
        obj = dict(child)
        obj["metadata"] = {**child["metadata"], "namespace": meta["namespace"]}
        out.append(obj)
    return out


def run(args: argparse.Namespace) -> int:
    import yaml

    from zeta_router.api.models import KIND, SpecError
    from zeta_router.api.pod_policy import referenced_secrets

    settings = render_args.render_settings(args)
    try:
        docs = _load(args.filename)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    routers = [d for d in docs if d.get("kind") == KIND]
    if not routers:
        print(f"error: no {KIND} in {', '.join(args.filename)}", file=sys.stderr)
        return 2
    status = 0
    rendered: list[dict[str, Any]] = []
    for doc in routers:
        meta = dict(doc.get("metadata") or {})
        meta["namespace"] = meta.get("namespace") or args.namespace
        body = {**doc, "metadata": meta}
        ref = f"{meta['namespace']}/{meta.get('name')}"
        secrets = (
            secret_annotations(docs, meta["namespace"], referenced_secrets(body))
            if settings.pod_policy.reads_secrets
            else {}
        )
        try:
            rendered += render_one(body, settings, secrets)
        except SpecError as e:
            print(f"{ref}: {e}", file=sys.stderr)
            status = 1
    if status == 0:
        sys.stdout.write(to_yaml(rendered))
    return status


def to_yaml(objs: list[dict[str, Any]]) -> str:
    """YAML documents, multi-line strings (the routing file) as readable blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all(objs, Dumper=Dumper, sort_keys=False)
