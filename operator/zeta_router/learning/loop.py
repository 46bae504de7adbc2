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
import base64
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
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
from zeta_router.controller.daemon import run_intervals
from zeta_router.controller.status import patch_status
from zeta_router.kube import APPLY_PATCH, ApiError, Kube, api_path
from zeta_router.learning import collect, cycle
from zeta_router.render import names
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
from zeta_router.scoring.samples import PAGE, Batch, Joiner

if TYPE_CHECKING:
    import kopf

    from zeta_router.controller.events import EventRecorder
    from zeta_router.controller.handlers import OperatorContext
    from zeta_router.controller.reconcile import Reconciler

log = logging.getLogger(__name__)

#: How often a daemon whose ZetaRouter does not learn looks again (its spec is a live view).
IDLE_SECONDS = 10.0

#: Refits (CPU-bound) running at once, across all ZetaRouters: more would not be faster.
LEARNING_THREADS = 2
_REFITS = threading.BoundedSemaphore(LEARNING_THREADS)


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
    page_limits: dict[str, int] = field(default_factory=dict)  # pod -> records asked per page


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
        with _REFITS:
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
        try:
            key = ngram_key(self.kube, namespace, str(body["metadata"]["name"]))
        except (ApiError, ValueError) as exc:
            # Hashed without the routers' key, its labels would match nothing they learn from.
            self.events.warning(
                body,
                "ColdStartFileNotRead",
                f"cannot read the n-gram key of Secret "
                f"{names.router_key_secret_name(str(body['metadata']['name']))}: {exc}",
            )
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
            idx = ngrams.indices(analysed, key=key)
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
        expected = self._expected_key_id(namespace, name)
        reached = 0
        # This ZetaRouter's collection has a budget of its own; each page a total deadline and a
        # size bound (collect.fetch). A router that answers slowly, endlessly or hugely costs
        # this ZetaRouter's interval that much, and no other ZetaRouter anything.
        budget_end = time.monotonic() + collect.COLLECT_BUDGET_SECONDS
        for endpoint in routers:
            known = mem.joiner.cursors.get(endpoint.pod)
            after = known[1] if known is not None else 0
            limit = mem.page_limits.get(endpoint.pod, PAGE)
            try:
                for _ in range(collect.MAX_PAGES):
                    left = budget_end - time.monotonic()
                    if left <= 0:
                        raise collect.CollectError(
                            f"{endpoint.pod}: left for the next interval (collection budget spent)"
                        )
                    try:
                        batch, problems = collect.fetch(
                            endpoint,
                            after,
                            limit,
                            deadline_seconds=min(collect.TIMEOUT_SECONDS, left),
                        )
                    except collect.CollectError as exc:
                        if not exc.too_large or limit <= 1:
                            raise
                        # A page of long prompts' samples past the size bound: ask for fewer.
                        limit = mem.page_limits[endpoint.pod] = max(1, limit // 4)
                        continue
                    if known is not None and batch.epoch != known[0] and after != 0:
                        # The router restarted since: its numbers start again.
                        known, after = None, 0
                        continue
                    if expected is not None:
                        batch = _same_key(batch, expected, f"{namespace}/{name}: {endpoint.pod}")
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

    def _expected_key_id(self, namespace: str, name: str) -> str | None:
        """The key id of the ZetaRouter's n-gram key (None: the key cannot be read, and samples
        are taken as they come)."""
        try:
            return ngrams.key_id(ngram_key(self.kube, namespace, name))
        except (ApiError, ValueError) as exc:
            log.debug("%s/%s: n-gram key not read (%s): samples not checked", namespace, name, exc)
            return None

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


def _same_key(batch: Batch, expected: str, where: str) -> Batch:
    """``batch`` without the samples hashed with another n-gram key than ``expected`` (a router
    started before the key changed, or none): their indices would teach nothing."""
    kept = [s for s in batch.samples if s.key_id == expected]
    if len(kept) == len(batch.samples):
        return batch
    log.warning(
        "%s: %d samples hashed with another n-gram key left out",
        where,
        len(batch.samples) - len(kept),
    )
    return dataclasses.replace(batch, samples=kept)


def ngram_key(kube: Kube, namespace: str, name: str) -> bytes:
    """The n-gram key of ZetaRouter ``namespace/name``, as its routers make it of the Secret
    ``<name>-router-key`` (``router.cli.ngram_key``): of its ``ngram-key``, else of the first
    line of its ``key``. Raises ``ApiError`` (not readable) or ``ValueError`` (no key in it)."""
    secret = kube.get(api_path("v1", "secrets", namespace, names.router_key_secret_name(name)))
    data = secret.get("data") or {}
    for field_name in (names.NGRAM_KEY_FIELD, names.ROUTER_KEY_FIELD):
        raw = data.get(field_name)
        if not raw:
            continue
        lines = [ln.strip() for ln in base64.b64decode(raw).splitlines() if ln.strip()]
        if lines:
            return ngrams.derive_key(lines[0])
    raise ValueError("it holds no key")


def register(registry: kopf.OperatorRegistry, context: OperatorContext) -> None:
    """Called by the controller (``zeta_router.controller.handlers``) to add the daemon."""
    import kopf

    loop = LearningLoop(context.kube, context.events, context.reconciler)

    # Each interval's work runs in a thread of this ZetaRouter's own (run_intervals); refits
    # (CPU-bound) take turns across ZetaRouters (LEARNING_THREADS at once).
    async def daemon(stopped: kopf.DaemonStopped, body: kopf.Body, **_: Any) -> None:
        def step() -> float:
            try:
                wait = loop.run_once(body)
            except ApiError as e:
                # Logged, not raised: the next interval tries again.
                log.warning("%s/%s: learning: %s", body.metadata.namespace, body.metadata.name, e)
                wait = IDLE_SECONDS
            return max(1.0, wait if math.isfinite(wait) else IDLE_SECONDS)

        await run_intervals(step, stopped, "learning")

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
                # Turned off, it only clears the status: no router is contacted.
                await asyncio.to_thread(loop.run_once, body)
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
