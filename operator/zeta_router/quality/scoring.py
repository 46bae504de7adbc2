"""Scoring labelled prompts exactly as the router sidecar does, and reading scorer files.

A scorer file is one of:

- bare weights (``{bias, weights, source}``, JSON or YAML, as written by ``zeta-router fit``);
- a routing config (``routing.yaml``, see ``zeta_router.api.routing``): the context's weights,
  else the config's default weights, else the shipped ones;
- a ZetaRouter manifest or spec snippet (``spec.router.contexts``, as ``zeta-router
  calibrate`` writes): the context's ``scorer``, else the shipped weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import ValidationError

from zeta_router.api.routing import RoutingConfig, ScorerWeights
from zeta_router.scoring.features import from_prompt
from zeta_router.scoring.scorer import Scorer, default_weights


class ScorerFileError(ValueError):
    """A scorer file cannot be read or is not valid; the message says why."""


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScorerFileError(f"cannot read scorer file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ScorerFileError(f"{path} is not valid JSON/YAML: {exc}") from None
    except yaml.YAMLError as exc:
        raise ScorerFileError(f"{path} is not valid JSON/YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ScorerFileError(f"{path}: expected a mapping at the top level")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what is wrong and where (PyYAML's own message spans several lines)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else str(problem)


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
    )


def load_scorer(
    path: str | Path | None, context: str | None = None, *, context_applies: bool = True
) -> ScorerWeights:
    """The weights in ``path`` (``None``: the shipped default weights).

    For a routing config, ``context`` picks the context (default: its ``defaultContext``).
    Elsewhere a context is an error, unless ``context_applies`` is false (the caller uses the
    name for something else and only wants it honoured when ``path`` is a routing config).
    """
    if path is None:
        if context is not None and context_applies:
            raise ScorerFileError("a context can only be chosen from a routing config file")
        return default_weights()
    p = Path(path)
    data = _read_mapping(p)
    try:
        if "spec" in data:
            weights = _from_spec(p, data["spec"], context)
        elif "tiers" in data or "contexts" in data:
            config = RoutingConfig.model_validate(data)
            name = context or config.default_context
            ctx = next((c for c in config.contexts if c.name == name), None)
            if ctx is None:
                known = ", ".join(c.name for c in config.contexts)
                raise ScorerFileError(f"{p}: no context {name!r} (contexts: {known})")
            weights = ctx.scorer or config.scorer or default_weights()
        else:
            if context is not None and context_applies:
                raise ScorerFileError(
                    f"{p} holds bare weights, not a routing config; --context does not apply"
                )
            weights = ScorerWeights.model_validate(data)
    except ValidationError as exc:
        raise ScorerFileError(f"{p}: {_validation_message(exc)}") from None
    try:
        Scorer(weights)
    except ValueError as exc:
        raise ScorerFileError(f"{p}: {exc}") from None
    return weights


def _from_spec(path: Path, spec: Any, context: str | None) -> ScorerWeights:
    router = spec.get("router") if isinstance(spec, dict) else None
    contexts = router.get("contexts") if isinstance(router, dict) else None
    if not isinstance(contexts, list) or not all(isinstance(c, dict) for c in contexts):
        raise ScorerFileError(f"{path}: no spec.router.contexts list")
    names = [str(c.get("name")) for c in contexts]
    if context is None:
        if len(contexts) != 1:
            raise ScorerFileError(f"{path}: choose a context with --context (one of {names})")
        chosen = contexts[0]
    else:
        found = [c for c in contexts if c.get("name") == context]
        if not found:
            raise ScorerFileError(f"{path}: no context {context!r} (contexts: {', '.join(names)})")
        chosen = found[0]
    raw = chosen.get("scorer")
    return default_weights() if raw is None else ScorerWeights.model_validate(raw)


def score_prompts(weights: ScorerWeights, prompts: Iterable[str]) -> NDArray[np.float64]:
    """One score per prompt through the sidecar's own path: ``extract`` then ``Scorer.score``."""
    scorer = Scorer(weights)
    return np.fromiter((scorer.score(from_prompt(p)) for p in prompts), dtype=np.float64)


def dump_weights(weights: ScorerWeights, path: Path) -> None:
    """Write weights as JSON (``.json``) or YAML (anything else), camelCase like the config."""
    data = weights.model_dump(by_alias=True, exclude_none=True)
    if path.suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
