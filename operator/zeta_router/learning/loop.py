"""The learning loop in the operator: a kopf daemon per ZetaRouter that, while
``spec.learning.enabled``, every ``spec.learning.interval``:

1. reads the cold-start file when it changed (``spec.learning.sources.coldStart``);
2. collects samples and labels from every router of the ZetaRouter and joins them by request
   key (``learning.collect``, ``scoring.samples.Joiner``);
3. refits each learning context and decides (``learning.cycle``);
4. writes adopted corrections to the store ``<name>-learned`` (server-side apply, its own field
   manager) and asks the controller to reconcile, so the routing ConfigMap carries them at once;
5. reports in ``status.learning`` and posts Events.

Its memory (joined labels, cursors per router, verdicts) is in this process only: a restarted
operator collects again what the routers still hold (``sampleTtl``) and re-reads the file; the
adopted corrections are in the store and survive.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from zeta_router.api.models import (
    API_VERSION,
    GROUP,
    PLURAL,
    VERSION,
    SpecError,
    ZetaRouterSpec,
    parse_status,
    parse_zetarouter,
)
from zeta_router.controller.status import patch_status
from zeta_router.kube import APPLY_PATCH, ApiError, Kube, api_path
from zeta_router.learning import collect, cycle
from zeta_router.render.configmap import effective_thresholds
from zeta_router.render.learned import (
    LEARNING_MANAGER,
    build_model_store,
    model_store_name,
    parse_model_store,
)
from zeta_router.scoring import ngrams
from zeta_router.scoring.features import vector_and_text
from zeta_router.scoring.labels import LabelFileError, read_label_file
from zeta_router.scoring.learned import LearnedCorrection
from zeta_router.scoring.samples import Joiner

if TYPE_CHECKING:
    import kopf

    from zeta_router.controller.events import EventRecorder
    from zeta_router.controller.handlers import OperatorContext
    from zeta_router.controller.reconcile import Reconciler

log = logging.getLogger(__name__)

#: How often a daemon whose ZetaRouter does not learn looks again (its spec is a live view).
IDLE_SECONDS = 10.0

#: Threads that run the learning intervals of all ZetaRouters (apart from kopf's handlers).
LEARNING_THREADS = 2


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Memory:
    uid: str
    joiner: Joiner
    contexts: dict[str, cycle.ContextMemory] = field(default_factory=dict)
    cold_start: tuple[str, str] | None = None  # (resourceVersion, key) of the file read
    model: str = "learned"
    lock: threading.Lock = field(default_factory=threading.Lock)


class LearningLoop:
    def __init__(
        self,
        kube: Kube,
        events: EventRecorder,
        reconciler: Reconciler | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.events = events
        self.reconciler = reconciler
        self.clock = clock
        self._memory: dict[tuple[str, str], _Memory] = {}
        self._guard = threading.Lock()

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._memory.pop((namespace, name), None)

    def _memory_for(self, namespace: str, name: str, uid: str, spec: ZetaRouterSpec) -> _Memory:
        learning = spec.learning
        with self._guard:
            mem = self._memory.get((namespace, name))
            if mem is None or mem.uid != uid:
                log.info("%s/%s: learning (%s mode)", namespace, name, learning.mode)
                mem = self._memory[(namespace, name)] = _Memory(
                    uid=uid,
                    joiner=Joiner(learning.max_labels, learning.sample_ttl_seconds),
                    model=learning.model,
                )
            mem.joiner.max_labels = learning.max_labels
            mem.joiner.ttl = learning.sample_ttl_seconds
            return mem

    # ---- one interval -------------------------------------------------------------------------

    def run_once(self, body: Mapping[str, Any]) -> float:
        """One interval for ``body``; returns the seconds to wait before the next."""
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return IDLE_SECONDS
        namespace, name = str(meta["namespace"]), str(meta["name"])
        try:
            spec = parse_zetarouter(body)
        except SpecError:
            return IDLE_SECONDS  # the controller reports it (SpecValid=False)
        if not spec.learning.enabled:
            if (namespace, name) in self._memory:
                log.info(
                    "%s/%s: learning stopped (spec.learning.enabled is false)", namespace, name
                )
            self.forget(namespace, name)
            if (body.get("status") or {}).get("learning") is not None:
                patch_status(self.kube, namespace, name, fields={"learning": None})
            return IDLE_SECONDS
        mem = self._memory_for(namespace, name, str(meta.get("uid") or ""), spec)
        started = self.clock()
        with mem.lock:
            self._interval(body, spec, mem, namespace, name)
        log.debug("%s/%s: learning interval took %.1fs", namespace, name, self.clock() - started)
        return spec.learning.interval_seconds

    def _interval(
        self,
        body: Mapping[str, Any],
        spec: ZetaRouterSpec,
        mem: _Memory,
        namespace: str,
        name: str,
    ) -> None:
        now = self.clock()
        stamp = _rfc3339(now)
        self._cold_start(body, spec, mem, namespace)
        reached, total = self._collect(spec, mem, namespace, name, now)
        store_cm = self.kube.get_or_none(
            api_path("v1", "configmaps", namespace, model_store_name(name))
        )
        store = parse_model_store(store_cm)
        learning_contexts = [c.name for c in spec.contexts if spec.learning.learns(c.name)]
        result = cycle.run(
            spec,
            effective_thresholds(spec, parse_status(body)),
            {c: mem.joiner.labelled(c) for c in learning_contexts},
            mem.joiner.versions(),
            {c: mem.joiner.recent(c) for c in learning_contexts},
            store,
            mem.contexts,
            stamp,
        )
        if result.store_changed(store):
            self._write_store(body, namespace, name, result.models)
            if self.reconciler is not None:
                # The controller renders the routing ConfigMap from the store just written:
                # routers get the model now, not at the next drift check.
                self.reconciler.reconcile_named(namespace, name, "learning")
        if mem.model != spec.learning.model:
            if spec.learning.model == "prior":
                self.events.normal(
                    body,
                    "LearnedModelRolledBack",
                    "spec.learning.model is prior: routers score with the prior alone; the "
                    "adopted models are kept",
                )
            mem.model = spec.learning.model
        for event in result.events:
            log.info("%s/%s: %s: %s", namespace, name, event.reason, event.message)
            self.events.post(body, event.type, event.reason, event.message)
        patch_status(
            self.kube,
            namespace,
            name,
            fields={
                "learning": {
                    "mode": spec.learning.mode,
                    "lastCollection": stamp,
                    "routers": f"{reached}/{total}",
                    "contexts": result.contexts,
                }
            },
        )

    # ---- cold start ---------------------------------------------------------------------------

    def _cold_start(
        self, body: Mapping[str, Any], spec: ZetaRouterSpec, mem: _Memory, namespace: str
    ) -> None:
        cold = spec.learning.sources.cold_start
        learning_contexts = [c.name for c in spec.contexts if spec.learning.learns(c.name)]
        if cold is None:
            if mem.cold_start is not None:
                for ctx in learning_contexts:
                    mem.joiner.drop_source(ctx, "file")
                mem.cold_start = None
            return
        cm = self.kube.get_or_none(api_path("v1", "configmaps", namespace, cold.config_map))
        if cm is None:
            self.events.warning(
                body,
                "ColdStartFileMissing",
                f"ConfigMap {cold.config_map} (spec.learning.sources.coldStart) does not exist",
            )
            return
        version = (str((cm.get("metadata") or {}).get("resourceVersion")), cold.key)
        if version == mem.cold_start:
            return
        mem.cold_start = version
        text = (cm.get("data") or {}).get(cold.key)
        where = f"ConfigMap {cold.config_map}, key {cold.key}"
        try:
            if not isinstance(text, str):
                raise LabelFileError(f"{where}: no such key")
            rows = read_label_file(text, name=where)
        except LabelFileError as exc:
            self.events.warning(body, "ColdStartFileInvalid", str(exc))
            return
        by_context: dict[str, list[tuple[str, tuple[float, ...], Any, float]]] = {}
        for row in rows:
            wanted = cold.context or row.context
            if wanted is None:
                targets = learning_contexts
            else:
                targets = [wanted] if wanted in learning_contexts else []
            if not targets:
                continue
            x, analysed = vector_and_text({"messages": [{"role": "user", "content": row.prompt}]})
            idx = ngrams.indices(analysed)
            for ctx in targets:
                by_context.setdefault(ctx, []).append(
                    (f"file:{row.line}", tuple(x), idx, row.label)
                )
        for ctx in learning_contexts:
            mem.joiner.drop_source(ctx, "file")
            if ctx in by_context:
                mem.joiner.add_examples(ctx, by_context[ctx])
        used = sum(len(v) for v in by_context.values())
        self.events.normal(
            body,
            "ColdStartFileRead",
            f"{len(rows)} labelled prompts from {where} ({used} labels for "
            f"{', '.join(sorted(by_context)) or 'no learning context'}); only their hashed form "
            "is kept",
        )

    # ---- collection ---------------------------------------------------------------------------

    def _collect(
        self, spec: ZetaRouterSpec, mem: _Memory, namespace: str, name: str, now: float
    ) -> tuple[int, int]:
        try:
            routers = collect.list_routers(self.kube, namespace, name, spec.router.admin_port)
        except ApiError as exc:
            log.warning("%s/%s: cannot list the routers' pods: %s", namespace, name, exc)
            return 0, 0
        reached = 0
        for endpoint in routers:
            known = mem.joiner.cursors.get(endpoint.pod)
            after = known[1] if known is not None else 0
            try:
                for _ in range(collect.MAX_PAGES):
                    batch, problems = collect.fetch(endpoint, after)
                    if known is not None and batch.epoch != known[0] and after != 0:
                        # The router restarted since: its numbers start again.
                        known, after = None, 0
                        continue
                    mem.joiner.ingest(endpoint.pod, batch, now)
                    for p in problems[:3]:
                        log.warning(
                            "%s/%s: %s: record left out: %s", namespace, name, endpoint.pod, p
                        )
                    known, after = (batch.epoch, batch.next), batch.next
                    if not batch.more:
                        break
                reached += 1
            except collect.CollectError as exc:
                log.info("%s/%s: %s", namespace, name, exc)
        return reached, len(routers)

    # ---- the store ----------------------------------------------------------------------------

    def _write_store(
        self,
        body: Mapping[str, Any],
        namespace: str,
        name: str,
        models: Mapping[str, LearnedCorrection],
    ) -> None:
        cm = build_model_store(name, models)
        meta = body["metadata"]
        cm["metadata"]["namespace"] = namespace
        # Owned by the ZetaRouter (it goes when the ZetaRouter goes), but not as its
        # controller: the controller neither lists nor prunes it.
        cm["metadata"]["ownerReferences"] = [
            {
                "apiVersion": body.get("apiVersion", API_VERSION),
                "kind": body.get("kind", "ZetaRouter"),
                "name": meta["name"],
                "uid": meta["uid"],
            }
        ]
        self.kube.patch(
            api_path("v1", "configmaps", namespace, model_store_name(name)),
            cm,
            APPLY_PATCH,
            fieldManager=LEARNING_MANAGER,
            force="true",
        )


def register(registry: kopf.OperatorRegistry, context: OperatorContext) -> None:
    """Called by the controller (``zeta_router.controller.handlers``) to add the daemon."""
    import kopf

    loop = LearningLoop(context.kube, context.events, context.reconciler)

    # Async, with each interval's work in a small pool of its own: a sync daemon would hold
    # one of kopf's handler threads (settings.execution.max_workers) for its whole life, and
    # with as many ZetaRouters as threads no handler could run at all. Refits are CPU-bound, so
    # more threads than this would not make them faster.
    pool = ThreadPoolExecutor(max_workers=LEARNING_THREADS, thread_name_prefix="learning")

    async def daemon(stopped: kopf.DaemonStopped, body: kopf.Body, **_: Any) -> None:
        running = asyncio.get_running_loop()
        while not stopped:
            try:
                wait = await running.run_in_executor(pool, loop.run_once, body)
            except ApiError as e:
                # Logged, not raised: the next interval tries again.
                log.warning("%s/%s: learning: %s", body.metadata.namespace, body.metadata.name, e)
                wait = IDLE_SECONDS
            await stopped.wait(max(1.0, wait if math.isfinite(wait) else IDLE_SECONDS))

    def on_delete(meta: kopf.Meta, **_: Any) -> None:
        loop.forget(str(meta.get("namespace")), str(meta.get("name")))

    async def daemon_while_on(stopped: kopf.DaemonStopped, body: kopf.Body, **kw: Any) -> None:
        await daemon(stopped=stopped, body=body, **kw)
        if (
            stopped.reason is not None
            and stopped.reason & kopf.DaemonStoppingReason.FILTERS_MISMATCH
        ):
            # Turned off: forget and clear the status once (the daemon runs only while it is on).
            try:
                await asyncio.get_running_loop().run_in_executor(pool, loop.run_once, body)
            except ApiError as e:
                log.warning("%s/%s: learning: %s", body.metadata.namespace, body.metadata.name, e)

    def wanted(spec: kopf.Spec, **_: Any) -> bool:
        return learns(spec)

    kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        id="learning",
        cancellation_timeout=10.0,
        when=wanted,
    )(daemon_while_on)
    kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, id="learning-forget", optional=True)(
        on_delete
    )


def learns(spec: Mapping[str, Any]) -> bool:
    """Whether a ZetaRouter's spec turns learning on: only those get the learner's daemon."""
    return bool((spec.get("learning") or {}).get("enabled"))
