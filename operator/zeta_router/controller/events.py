"""Kubernetes Events about ZetaRouters (core/v1, which every supported server has).

Repeats of the same event (same object, type, reason and message) update the count of the event
already posted instead of adding a new one, as Kubernetes' own event recorder does, so a spec
that stays invalid does not flood `kubectl describe` on every drift check.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from zeta_router.kube import MERGE_PATCH, ApiError, Kube, api_path

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
COMPONENT = "zeta-router-operator"
_MAX_REMEMBERED = 4096


class EventRecorder:
    def __init__(self, kube: Kube, component: str = COMPONENT, instance: str = "") -> None:
        self.kube = kube
        self.component = component
        self.instance = instance
        self._lock = threading.Lock()
        self._posted: dict[tuple[str, str, str, str], tuple[str, str, int]] = {}

    def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post (or count again) an event about ``obj``; failures are logged, never raised:
        an event is worth less than the reconciliation that produced it."""
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        uid = str(meta.get("uid") or "")
        message = message[:1024]
        key = (uid, type_, reason, message)
        now = _now_micro()
        with self._lock:
            seen = self._posted.get(key)
        try:
            if seen is not None:
                name, ns, count = seen
                self.kube.patch(
                    api_path("v1", "events", ns, name),
                    {"count": count + 1, "lastTimestamp": now[:19] + "Z"},
                    MERGE_PATCH,
                )
                with self._lock:
                    self._posted[key] = (name, ns, count + 1)
                return
            name = f"{meta.get('name', 'unknown')}.{uuid.uuid4().hex[:16]}"
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {
                    "apiVersion": obj.get("apiVersion"),
                    "kind": obj.get("kind"),
                    "name": meta.get("name"),
                    "namespace": namespace,
                    "uid": uid,
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "type": type_,
                "reason": reason,
                "message": message,
                "count": 1,
                "firstTimestamp": now[:19] + "Z",
                "lastTimestamp": now[:19] + "Z",
                "source": {"component": self.component},
                "reportingComponent": f"zeta.ai/{self.component}",
                "reportingInstance": self.instance,
            }
            self.kube.create(api_path("v1", "events", namespace), event)
            with self._lock:
                if len(self._posted) >= _MAX_REMEMBERED:
                    self._posted.clear()
                self._posted[key] = (name, namespace, 1)
        except ApiError as e:
            if e.not_found and seen is not None:
                # The event expired (event TTL): post a fresh one next time.
                with self._lock:
                    self._posted.pop(key, None)
            log.warning("could not post event %s/%s: %s", reason, message, e)

    def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.post(obj, NORMAL, reason, message)

    def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.post(obj, WARNING, reason, message)


def _now_micro() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
