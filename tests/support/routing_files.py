"""Routing files (the ``<name>-routing`` ConfigMap content) for router tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from zeta_router.api.routing import RoutingConfig

#: A scorer that gives every request 0.5, whatever the feature set: thresholds below 0.5 send
#: everything to the larger tier, above 0.5 to the smaller one.
FLAT_SCORER = {"bias": 0.0, "weights": {}, "source": "tests: constant 0.5"}


def routing_config(
    tiers: dict[str, str],
    thresholds: dict[str, list[float]] | None = None,
    *,
    generation: int = 1,
    scorer: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    thresholds = thresholds or {"default": [0.5] * (len(tiers) - 1)}
    cfg: dict[str, Any] = {
        "generation": generation,
        "router": "assistant",
        "tiers": [{"name": n, "url": u, "engine": "llamacpp"} for n, u in tiers.items()],
        "contexts": [{"name": n, "thresholds": t} for n, t in thresholds.items()],
        "defaultContext": next(iter(thresholds)),
    }
    if scorer is not None:
        cfg["scorer"] = scorer
    cfg.update(extra)
    return cfg


#: The environment variable the external tier's key is read from in :func:`external_routing`.
EXTERNAL_KEY_ENV = "ZETA_EXTERNAL_KEY_HOSTED"


def external_routing(
    cluster_url: str,
    provider_url: str,
    provider_model: str,
    *,
    to_external: bool,
    overflow_only: bool = False,
    limits: dict[str, int] | None = None,
    key_file: Path | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Tiers ``small`` (the cluster's, at ``cluster_url``) and ``hosted`` (external, at
    ``provider_url``/v1, its key in ``key_file``, else in :data:`EXTERNAL_KEY_ENV`, prices 0.5
    and 1.5 per 1000 prompt and completion tokens). The flat scorer gives every request 0.5:
    ``to_external`` decides hosted (cut point 0.4), else small (0.6)."""
    key = {"apiKeyEnv": EXTERNAL_KEY_ENV} if key_file is None else {"apiKeyFile": str(key_file)}
    external: dict[str, Any] = {
        **key,
        "overflowOnly": overflow_only,
        "promptCostPer1kTokens": 0.5,
        "completionCostPer1kTokens": 1.5,
        **(limits or {}),
    }
    hosted = {
        "name": "hosted",
        "url": provider_url + "/v1",
        "servedModelName": provider_model,
        "engine": "external",
        "external": external,
    }
    cfg = routing_config(
        {"small": cluster_url},
        {"default": [0.4 if to_external else 0.6]},
        scorer=FLAT_SCORER,
        **extra,
    )
    cfg["tiers"].append(hosted)
    return cfg


def write_plain(path: Path, cfg: dict[str, Any] | str) -> None:
    """Rewrite the file in place (an editor, or a hostPath)."""
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))


class ConfigMapDir:
    """A directory laid out like a mounted ConfigMap: ``routing.yaml -> ..data/routing.yaml``,
    ``..data -> ..<version>``; an update writes a new version directory and swaps ``..data``
    atomically, as the kubelet does."""

    def __init__(self, root: Path, filename: str = "routing.yaml") -> None:
        self.root = root
        self.filename = filename
        self.version = 0
        root.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.root / self.filename

    def write(self, cfg: dict[str, Any] | str) -> None:
        self.version += 1
        version_dir = self.root / f"..2026_01_01_00_00_00.{self.version:04d}"
        version_dir.mkdir()
        (version_dir / self.filename).write_text(
            cfg if isinstance(cfg, str) else yaml.safe_dump(cfg)
        )
        tmp_link = self.root / "..data_tmp"
        tmp_link.symlink_to(version_dir.name)
        old = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        os.replace(tmp_link, self.root / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to(f"..data/{self.filename}")
        if old is not None:
            for f in old.iterdir():
                f.unlink()
            old.rmdir()


def with_key_files(cfg: RoutingConfig, folder: Path, key: str = "sk-test") -> RoutingConfig:
    """``cfg`` (a rendered routing file) with each external tier's ``apiKeyFile`` moved into
    ``folder``, as a file holding ``key``: the rendered path is in the router container's
    Secret volume, which a test on this machine does not have."""
    tiers = []
    for t in cfg.tiers:
        if t.external is not None and t.external.api_key_file is not None:
            path = folder / f"{t.name}-api-key"
            path.write_text(key + "\n")
            t = t.model_copy(
                update={"external": t.external.model_copy(update={"api_key_file": str(path)})}
            )
        tiers.append(t)
    return cfg.model_copy(update={"tiers": tiers})
