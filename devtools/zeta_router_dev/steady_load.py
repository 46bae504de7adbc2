"""Client load for checks that nothing is lost: steady requests through one endpoint (the entry
Service of a ZetaRouter), and long streams held open while pods go away.

Every request is counted exactly once, as the official ``openai`` client sees it, with retries
off (a retry would hide a failure): *answered* (a whole answer: a non-streamed 200, or a stream
that ended with a ``finish_reason``), *failed* (an error status or a broken connection, by
cause) or *truncated* (a stream that ended without a ``finish_reason``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import openai
from openai.types.chat import ChatCompletionMessageParam

PROMPTS = (
    "Say hello in one short sentence.",
    "Name three colours.",
    "Write two lines about the sea.",
    "Prove that the square root of two is irrational, step by step.",
)


@dataclass
class LoadReport:
    sent: int = 0
    answered: int = 0
    streamed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    truncated: int = 0
    tiers: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    samples: list[str] = field(default_factory=list)
    """What the first few failed or truncated requests said, for diagnosis."""

    @property
    def lost(self) -> int:
        """Requests that did not get a whole answer."""
        return sum(self.failed.values()) + self.truncated

    def add(self, other: LoadReport) -> None:
        self.sent += other.sent
        self.answered += other.answered
        self.streamed += other.streamed
        self.failed.update(other.failed)
        self.truncated += other.truncated
        self.tiers.update(other.tiers)
        self.samples.extend(other.samples[: max(0, 10 - len(self.samples))])

    def summary(self) -> str:
        causes = ", ".join(f"{c} {n}" for c, n in sorted(self.failed.items())) or "none"
        tiers = ", ".join(f"{t} {n}" for t, n in sorted(self.tiers.items()))
        text = (
            f"{self.sent} requests in {self.seconds:.0f} s ({self.streamed} streamed): "
            f"{self.answered} answered, {sum(self.failed.values())} failed ({causes}), "
            f"{self.truncated} truncated; by tier: {tiers}"
        )
        return "\n".join([text, *(f"  - {s}" for s in self.samples)])


def _cause(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"http_{exc.status_code}"
    inner = exc.__cause__ or exc.__context__
    name = type(exc).__name__
    return f"{name}({type(inner).__name__})" if inner is not None else name


def one_request(
    client: openai.OpenAI,
    model: str,
    prompt: str,
    stream: bool,
    max_tokens: int,
    headers: Mapping[str, str] | None = None,
    started: threading.Event | None = None,
) -> LoadReport:
    """Send one chat completion and count how it ended."""
    out = LoadReport(sent=1, streamed=int(stream))
    began = time.strftime("%H:%M:%S")
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": prompt}]
    try:
        if not stream:
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                messages=messages,
                max_tokens=max_tokens,
                extra_headers=dict(headers or {}),
            )
            done = raw.parse()
            if done.choices and done.choices[0].finish_reason:
                out.answered = 1
                out.tiers[raw.headers.get("x-zeta-tier", "?")] += 1
            else:
                out.truncated = 1
                out.samples.append(f"{began} truncated answer (no finish_reason)")
            return out
        chunks = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            stream=True,
            extra_headers=dict(headers or {}),
        )
        with chunks:
            tier = chunks.response.headers.get("x-zeta-tier", "?")
            finish = None
            for chunk in chunks:
                if chunk.choices:
                    if started is not None and chunk.choices[0].delta.content:
                        started.set()
                    finish = chunk.choices[0].finish_reason or finish
        if finish:
            out.answered = 1
            out.tiers[tier] += 1
        else:
            out.truncated = 1
            out.samples.append(f"{began} stream from tier {tier} ended without finish_reason")
    except Exception as exc:  # every way a request can end badly is a count, never a crash
        out.failed[_cause(exc)] += 1
        stream_or_not = "stream" if stream else "request"
        out.samples.append(f"{began} {stream_or_not} failed: {_cause(exc)}: {str(exc)[:300]}")
    return out


class SteadyLoad:
    """``clients`` threads sending chat completions back to back to ``base_url`` (every
    ``stream_every``-th one streamed), until :meth:`stop`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        clients: int = 3,
        stream_every: int = 2,
        max_tokens: int = 24,
        timeout: float = 300.0,
        pause: float = 0.0,
        pinned: tuple[str | None, ...] = (None,),
    ) -> None:
        """``pinned``: tiers the requests go to in turn (``X-Zeta-Tier``, which the ZetaRouter
        must allow); ``None`` lets the router choose."""
        self.pinned = pinned
        self.base_url = base_url
        self.model = model
        self.clients = clients
        self.stream_every = stream_every
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.pause = pause
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reports: list[LoadReport] = []
        self._lock = threading.Lock()
        self._started = 0.0
        self._answered = 0
        self._answered_changed = threading.Condition(self._lock)

    def _run(self, index: int) -> None:
        client = openai.OpenAI(
            base_url=self.base_url, api_key="unused", max_retries=0, timeout=self.timeout
        )
        mine = LoadReport()
        n = 0
        while not self._stop.is_set():
            stream = self.stream_every > 0 and (n + index) % self.stream_every == 0
            prompt = PROMPTS[(n + index) % len(PROMPTS)]
            tier = self.pinned[(n + index) % len(self.pinned)]
            headers = {"X-Zeta-Tier": tier} if tier else None
            one = one_request(client, self.model, prompt, stream, self.max_tokens, headers)
            mine.add(one)
            with self._answered_changed:
                self._answered += one.answered
                self._answered_changed.notify_all()
            n += 1
            if self.pause:
                self._stop.wait(self.pause)
        with self._lock:
            self._reports.append(mine)

    def start(self) -> SteadyLoad:
        self._started = time.monotonic()
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def wait_answered(self, count: int, timeout: float = 300.0) -> None:
        """Return once ``count`` more requests have been answered than when called (the load
        is flowing); TimeoutError if not within ``timeout`` seconds."""
        with self._answered_changed:
            target = self._answered + count
            if not self._answered_changed.wait_for(lambda: self._answered >= target, timeout):
                raise TimeoutError(
                    f"{count} requests were not answered within {timeout:g}s "
                    f"({self._answered - target + count} were)"
                )

    def stop(self) -> LoadReport:
        """Stop sending and wait for the requests in flight; the counts of everything sent."""
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 30)
        total = LoadReport(seconds=time.monotonic() - self._started)
        with self._lock:
            for r in self._reports:
                total.add(r)
        return total


class LongStreams:
    """``count`` long streamed answers, started at once; :meth:`wait_started` returns once each
    has produced a token (so they are in flight), :meth:`join` when all have ended."""

    def __init__(
        self,
        base_url: str,
        model: str,
        count: int = 4,
        max_tokens: int = 160,
        headers: Mapping[str, str] | None = None,
        timeout: float = 600.0,
    ) -> None:
        self.reports: list[LoadReport] = []
        self._started = time.monotonic()
        self._events = [threading.Event() for _ in range(count)]
        self._threads = []
        self._lock = threading.Lock()
        self.timeout = timeout
        prompt = "Write a long story about a lighthouse keeper and the sea, in detail."
        for i in range(count):
            client = openai.OpenAI(
                base_url=base_url, api_key="unused", max_retries=0, timeout=timeout
            )

            def run(c: openai.OpenAI = client, ev: threading.Event = self._events[i]) -> None:
                report = one_request(c, model, prompt, True, max_tokens, headers, ev)
                ev.set()  # also when it failed before its first token
                with self._lock:
                    self.reports.append(report)

            t = threading.Thread(target=run, name=f"stream-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def wait_started(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        for ev in self._events:
            if not ev.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"streams did not start within {timeout:g}s")

    def join(self) -> LoadReport:
        for t in self._threads:
            t.join(self.timeout + 30)
        total = LoadReport(seconds=time.monotonic() - self._started)
        with self._lock:
            for r in self.reports:
                total.add(r)
        return total
