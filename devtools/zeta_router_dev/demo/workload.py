"""The demo's client side: ``concurrency`` threads, each sending the next request of the mixed
workload through the official ``openai`` client, round-robin over the routers (as the
ZetaRouter's entry Service spreads connections over its pods). The context goes in the
``X-Zeta-Context`` header; the tier that answered comes back in ``x-zeta-tier``."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from zeta_router_dev.demo.prompts import Request
from zeta_router_dev.demo.stats import NO_TIER, RequestRecord

if TYPE_CHECKING:
    import openai

CONTEXT_HEADER = "X-Zeta-Context"
TIER_HEADER = "x-zeta-tier"
SCORE_HEADER = "x-zeta-score"


class Workload:
    def __init__(
        self,
        base_urls: Sequence[str],
        model: str,
        requests: Iterator[Request],
        concurrency: int = 2,
        max_tokens: int = 24,
        timeout: float = 120.0,
        new_connections: bool = False,
    ) -> None:
        """``new_connections``: every request on a connection of its own, as from many
        clients (a Service balances connections, not requests)."""
        import openai

        if not base_urls:
            raise ValueError("no router to send requests to")
        # `Connection: close`: the server ends each connection after its answer.
        headers = {"Connection": "close"} if new_connections else None
        self._clients = [
            openai.OpenAI(
                base_url=u,
                api_key="unused",
                max_retries=0,
                timeout=timeout,
                default_headers=headers,
            )
            for u in base_urls
        ]
        self.model = model
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self._requests = requests
        self._next_router = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._records: list[RequestRecord] = []
        self._threads: list[threading.Thread] = []
        self.t0 = time.monotonic()

    def now(self) -> float:
        """Seconds since the workload started."""
        return time.monotonic() - self.t0

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def in_flight(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    def start(self) -> Workload:
        self.t0 = time.monotonic()
        for i in range(self.concurrency):
            t = threading.Thread(target=self._run, name=f"demo-client-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """No new requests; wait up to ``timeout`` s for those in flight (the rest are dropped:
        their threads are daemons and their servers are about to stop)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _take(self) -> tuple[Request, int]:
        with self._lock:
            return next(self._requests), next(self._next_router) % len(self._clients)

    def _run(self) -> None:
        while not self._stop.is_set():
            req, router = self._take()
            record = self.send(req, router)
            if self._stop.is_set():
                return  # answered (or failed) while shutting down: not part of the run
            with self._lock:
                self._records.append(record)
            if not record.ok:
                self._stop.wait(0.5)

    def send(self, req: Request, router: int = 0) -> RequestRecord:
        import openai

        client: openai.OpenAI = self._clients[router]
        start = self.now()
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=[{"role": "user", "content": req.text}],
                max_tokens=self.max_tokens,
                extra_headers={CONTEXT_HEADER: req.context},
            )
            completion: Any = raw.parse()
        except openai.OpenAIError as e:
            return RequestRecord(
                start=start,
                latency=self.now() - start,
                context=req.context,
                level=req.level,
                ok=False,
                error=_short(e),
                router=router,
            )
        usage = getattr(completion, "usage", None)
        score = raw.headers.get(SCORE_HEADER)
        return RequestRecord(
            start=start,
            latency=self.now() - start,
            context=raw.headers.get("x-zeta-context") or req.context,
            level=req.level,
            tier=raw.headers.get(TIER_HEADER) or NO_TIER,
            score=float(score) if score else None,
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            router=router,
        )


def _short(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    text = f"{type(e).__name__}: {e}"
    text = text if status is None else f"HTTP {status} {text}"
    return text[:200]
