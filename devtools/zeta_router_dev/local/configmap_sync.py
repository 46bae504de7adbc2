"""Plays the kubelet's ConfigMap volume for router processes running outside the cluster (the
demo, the end-to-end tests): copies ``<name>-routing``'s ``routing.yaml`` into a local file
whenever it changes (written atomically, as the kubelet swaps a symlink), pointing each tier's
URLs at the local model servers instead of the in-cluster Services. The router hot-reloads the
file and reports its generation."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

import yaml

from zeta_router.api.routing import CONFIGMAP_KEY, configmap_routing
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router.render import names


class ConfigMapSync:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        path: Path,
        tier_urls: Mapping[str, str],
        interval: float = 0.3,
    ) -> None:
        self.kube = kube
        self.cm_path = api_path("v1", "configmaps", namespace, names.routing_configmap_name(name))
        self.path = path
        self.tier_urls = dict(tier_urls)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="configmap-sync", daemon=True)
        self._last: str | None = None
        self.copies = 0

    def sync_once(self) -> bool:
        """Copy the ConfigMap if it changed; True when the file was (re)written."""
        try:
            cm = self.kube.get(self.cm_path)
        except ApiError as e:
            if e.not_found:
                return False
            raise
        text = (cm.get("data") or {}).get(CONFIGMAP_KEY)
        if text is None or text == self._last:
            return False
        config = configmap_routing(cm)
        if config is None:
            raise ValueError(f"{self.cm_path}: not a routing configuration")
        tiers = [
            t.model_copy(
                update={"url": self.tier_urls[t.name], "local_url": self.tier_urls[t.name]}
            )
            for t in config.tiers
        ]
        local = config.model_copy(update={"tiers": tiers})
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(local.model_dump(mode="json", by_alias=True)))
        os.replace(tmp, self.path)
        self._last = text
        self.copies += 1
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync_once()
            except (ApiError, OSError, ValueError):
                continue  # the next round tries again, as the kubelet would

    def start(self) -> ConfigMapSync:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
