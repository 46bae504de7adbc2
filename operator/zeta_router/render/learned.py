"""The learned corrections of a ZetaRouter: their store, and which reach the routers (pure).

The operator's learner (``zeta_router.learning``) keeps each context's adopted correction in the
ConfigMap ``<router>-learned`` (key ``models.yaml``: context name -> correction). The learner
writes it, under a field manager and a ``managed-by`` label of its own, so the controller never
lists, applies or prunes it; it is owned by the ZetaRouter, so it goes when the ZetaRouter
goes. The controller reads it at each reconciliation and :func:`effective_corrections` decides
which corrections go into the routing configuration, where routers hot-reload them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import yaml
from pydantic import ValidationError

from zeta_router.api.models import ZetaRouterSpec
from zeta_router.render import names
from zeta_router.scoring.learned import (
    TOTAL_BYTES,
    CompiledCorrection,
    LearnedCorrection,
    serialised_size,
)

log = logging.getLogger(__name__)

MODEL_STORE_KEY: Final = "models.yaml"
LEARNING_MANAGER: Final = "zeta-router-learning"
"""The learner's field manager and ``managed-by`` label value."""


def model_store_name(router: str) -> str:
    return f"{router}-learned"


def model_store_labels(router: str) -> dict[str, str]:
    return {
        names.NAME: names.APP,
        names.INSTANCE: router,
        names.COMPONENT: "learning",
        names.MANAGED_BY: LEARNING_MANAGER,
    }


def build_model_store(router: str, models: Mapping[str, LearnedCorrection]) -> dict[str, Any]:
    """The ConfigMap holding ``models`` (the caller adds the owner reference)."""
    data = {
        ctx: m.model_dump(by_alias=True, exclude_none=True, mode="json")
        for ctx, m in sorted(models.items())
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": model_store_name(router), "labels": model_store_labels(router)},
        "data": {MODEL_STORE_KEY: yaml.safe_dump(data, sort_keys=True, width=1 << 20)},
    }


def parse_model_store(configmap: Mapping[str, Any] | None) -> dict[str, LearnedCorrection]:
    """The corrections held by a live store (``{}``: none). An entry that is not a valid
    correction is left out and logged: one broken entry never takes the others down."""
    if configmap is None:
        return {}
    text = (configmap.get("data") or {}).get(MODEL_STORE_KEY)
    if not isinstance(text, str):
        return {}
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        log.warning("learned model store is not valid YAML: %s", exc)
        return {}
    if not isinstance(raw, dict):
        return {}
    out: dict[str, LearnedCorrection] = {}
    for ctx, entry in raw.items():
        try:
            model = LearnedCorrection.model_validate(entry)
            CompiledCorrection.from_model(model)
        except (ValidationError, ValueError) as exc:
            log.warning("learned model of context %s is not usable, left out: %s", ctx, exc)
            continue
        out[str(ctx)] = model
    return out


def effective_corrections(
    spec: ZetaRouterSpec, models: Mapping[str, LearnedCorrection]
) -> dict[str, LearnedCorrection]:
    """The corrections the routers should run, per context.

    None unless learning is enabled and ``spec.learning.model`` is ``learned`` (``prior`` rolls
    back to the prior scorers); only contexts that learn; at most ``TOTAL_BYTES`` together, in
    the spec's context order (a context added since its neighbours were pruned for fewer
    contexts waits for their next refit rather than pushing the ConfigMap past its limit).
    """
    learning = spec.learning
    if not learning.enabled or learning.model != "learned":
        return {}
    out: dict[str, LearnedCorrection] = {}
    used = 0
    for ctx in spec.contexts:
        model = models.get(ctx.name)
        if model is None or not learning.learns(ctx.name):
            continue
        size = serialised_size(model)
        if used + size > TOTAL_BYTES:
            log.warning(
                "learned model of context %s left out: the learned models would take more "
                "than %d bytes of the routing ConfigMap",
                ctx.name,
                TOTAL_BYTES,
            )
            continue
        used += size
        out[ctx.name] = model
    return out
