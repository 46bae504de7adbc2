"""Hashed samples of requests and their labels: kept by the routers, joined by the operator.

With no shared store, the replica that answered a request holds its **sample** (the cheap
features and the hashed uni/bigram indices, never its text) and whichever replica receives the
client's feedback holds the **label** (the signed request id tells it the context, the tier and
the request's key, the same on every replica). Shadow pairs are judged by the replica that
answered, so their labels sit next to their samples. The operator pulls both from every router
(:class:`SampleStore` ``since``, served on the router's admin port) and joins them by key
(:class:`Joiner`).

A router keeps at most ``max_samples`` samples and as many labels, none older than ``ttl``
seconds, in memory only; the operator keeps the last ``max_labels`` labelled examples per
context, in memory only. Nothing in either can give back a prompt: see docs/routing-quality.md.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from zeta_router.scoring import ngrams
from zeta_router.scoring.features import FEATURE_NAMES
from zeta_router.scoring.learner import Labelled

IndexArray = NDArray[np.int64]
#: Most records one ``since`` answer carries (the operator asks again for the rest).
PAGE = 2000
_N_FEATURES = len(FEATURE_NAMES)


class WireError(ValueError):
    """A record from a router that cannot be used (the message says which field and why, never
    the value it held: the operator logs it)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """What a router keeps of a request it answered."""

    key: str  # the request's key (the same in every id the request was given)
    context: str
    tier: str  # the tier that answered
    time: float  # wall clock, seconds
    x: tuple[float, ...]  # cheap features, FEATURE_NAMES order
    indices: IndexArray  # hashed uni/bigram indices, sorted
    bits: int = ngrams.DEFAULT_BITS
    key_id: str | None = None  # ngrams.key_id of the n-gram key (None: unkeyed)

    def to_wire(self) -> dict[str, Any]:
        out = {
            "key": self.key,
            "context": self.context,
            "tier": self.tier,
            "time": round(self.time, 3),
            "x": [float(f"{v:.6g}") for v in self.x],
            "bits": self.bits,
            "idx": base64.b64encode(ngrams.pack(self.indices)).decode("ascii"),
        }
        if self.key_id is not None:
            out["kid"] = self.key_id
        return out

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Sample:
        key, context, tier = _text(raw, "key"), _text(raw, "context"), _text(raw, "tier")
        x = raw.get("x")
        if not isinstance(x, list) or len(x) != _N_FEATURES:
            raise WireError(f"sample x: expected {_N_FEATURES} numbers")
        values = tuple(_number(v, "sample x") for v in x)
        bits = raw.get("bits")
        if not isinstance(bits, int) or not ngrams.MIN_BITS <= bits <= ngrams.MAX_BITS:
            raise WireError("sample bits: expected an integer in [10, 24]")
        idx = raw.get("idx")
        if not isinstance(idx, str):
            raise WireError("sample idx: expected a string")
        try:
            indices = ngrams.unpack(base64.b64decode(idx, validate=True), None, bits)
        except (binascii.Error, ValueError):
            raise WireError("sample idx: not base64 of packed indices") from None
        kid = raw.get("kid")
        if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= 64):
            raise WireError("sample kid: expected a short string")
        return cls(
            key, context, tier, _number(raw.get("time"), "sample time"), values, indices, bits, kid
        )


@dataclass(frozen=True, slots=True)
class Label:
    """An outcome label of a request (see ``scoring.labels``)."""

    key: str
    context: str
    value: float  # in [0, 1]
    source: str
    time: float

    def to_wire(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "context": self.context,
            "value": round(self.value, 6),
            "source": self.source,
            "time": round(self.time, 3),
        }

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Label:
        value = _number(raw.get("value"), "label value")
        if not 0.0 <= value <= 1.0:
            raise WireError("label value: not in [0, 1]")
        return cls(
            _text(raw, "key"),
            _text(raw, "context"),
            value,
            _text(raw, "source"),
            _number(raw.get("time"), "label time"),
        )


def _text(raw: Mapping[str, Any], name: str) -> str:
    v = raw.get(name)
    if not isinstance(v, str) or not v or len(v) > 512:
        raise WireError(f"{name}: expected a non-empty string")
    return v


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise WireError(f"{what}: expected a finite number")
    return float(v)


@dataclass(frozen=True)
class Batch:
    """One answer of a router's store: records after a sequence number."""

    epoch: str
    next: int  # ask for records after this one next time
    samples: list[Sample]
    labels: list[Label]
    more: bool  # more records wait beyond this page
    dropped: int = 0  # records the store dropped (bound or age) before they were collected

    def to_wire(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "next": self.next,
            "more": self.more,
            "dropped": self.dropped,
            "samples": [s.to_wire() for s in self.samples],
            "labels": [lab.to_wire() for lab in self.labels],
        }

    @classmethod
    def from_wire(cls, raw: Any) -> tuple[Batch, list[str]]:
        """The batch, and one line per record left out because it was not usable."""
        if not isinstance(raw, Mapping):
            raise WireError("expected a JSON object")
        epoch = _text(raw, "epoch")
        nxt = raw.get("next")
        if not isinstance(nxt, int) or isinstance(nxt, bool) or nxt < 0:
            raise WireError("next: expected an integer >= 0")
        problems: list[str] = []
        samples = _records(raw.get("samples"), Sample.from_wire, problems)
        labels = _records(raw.get("labels"), Label.from_wire, problems)
        dropped = raw.get("dropped")
        return (
            cls(
                epoch,
                nxt,
                samples,
                labels,
                bool(raw.get("more")),
                dropped if isinstance(dropped, int) and not isinstance(dropped, bool) else 0,
            ),
            problems,
        )


_T = TypeVar("_T")


def _records(raw: Any, parse: Callable[[Mapping[str, Any]], _T], problems: list[str]) -> list[_T]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise WireError("expected lists of samples and labels")
    out = []
    for item in raw:
        try:
            if not isinstance(item, Mapping):
                raise WireError("expected an object")
            out.append(parse(item))
        except WireError as exc:
            problems.append(str(exc))
    return out


class SampleStore:
    """A router's samples and labels (see the module docstring). Thread-safe.

    Every record gets the next sequence number; :meth:`since` answers the records after a
    number, a page at a time, with the store's ``epoch`` (random per process: a restarted
    router starts its numbers again, and the operator notices by the epoch).
    """

    def __init__(
        self,
        max_samples: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.epoch = os.urandom(8).hex()
        self._clock = clock
        self._lock = threading.Lock()
        self._records: deque[tuple[int, Sample | Label]] = deque()
        self._seq = 0
        self._dropped = 0
        self._samples = 0
        self._labels = 0
        self.max_samples = max_samples
        self.ttl = ttl_seconds

    def resize(self, max_samples: int, ttl_seconds: float) -> None:
        with self._lock:
            self.max_samples, self.ttl = max_samples, ttl_seconds
            self._trim(self._clock())

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    @property
    def counts(self) -> tuple[int, int]:
        """Samples and labels held."""
        with self._lock:
            return self._samples, self._labels

    def add(self, record: Sample | Label) -> None:
        with self._lock:
            self._seq += 1
            self._records.append((self._seq, record))
            if isinstance(record, Sample):
                self._samples += 1
            else:
                self._labels += 1
            self._trim(self._clock())

    def _trim(self, now: float) -> None:
        cutoff = now - self.ttl
        while self._records and (
            self._records[0][1].time < cutoff
            or self._samples > self.max_samples
            or self._labels > self.max_samples
        ):
            _, rec = self._records.popleft()
            if isinstance(rec, Sample):
                self._samples -= 1
            else:
                self._labels -= 1
            self._dropped += 1

    def since(self, after: int, limit: int = PAGE) -> Batch:
        """Records numbered above ``after`` (oldest first), at most ``limit`` of them."""
        with self._lock:
            self._trim(self._clock())
            first = self._records[0][0] if self._records else self._seq + 1
            start = max(0, after + 1 - first)
            page = list(itertools.islice(self._records, start, start + limit))
            last = page[-1][0] if page else max(after, first - 1)
            more = bool(self._records) and self._records[-1][0] > last
            return Batch(
                epoch=self.epoch,
                next=min(last, self._seq),
                samples=[r for _, r in page if isinstance(r, Sample)],
                labels=[r for _, r in page if isinstance(r, Label)],
                more=more,
                dropped=self._dropped,
            )


@dataclass
class _Example:
    x: tuple[float, ...]
    indices: IndexArray
    labels: dict[str, float] = field(default_factory=dict)  # by source

    @property
    def y(self) -> float:
        return sum(self.labels.values()) / len(self.labels)


class Joiner:
    """The operator's side: samples and labels from every router joined by request key into
    each context's window of labelled examples, most recent label last.

    A label waits for its sample (and a sample for its label) at most ``ttl`` seconds, and at
    most ``max_pending`` of each wait. A request labelled by several sources gets their mean.
    Each context keeps its last ``max_labels`` examples.
    """

    def __init__(
        self,
        max_labels: int,
        ttl_seconds: float,
        bits: int = ngrams.DEFAULT_BITS,
        max_pending: int = 200_000,
    ) -> None:
        self.max_labels = max_labels
        self.ttl = ttl_seconds
        self.bits = bits
        self.max_pending = max_pending
        self._samples: OrderedDict[str, Sample] = OrderedDict()
        self._labels: OrderedDict[str, list[Label]] = OrderedDict()
        self._windows: dict[str, OrderedDict[str, _Example]] = {}
        self._versions: dict[str, int] = {}
        self._recent: dict[str, deque[Sample]] = {}
        self.cursors: dict[str, tuple[str, int]] = {}

    def _changed(self, context: str) -> None:
        self._versions[context] = self._versions.get(context, 0) + 1

    def versions(self) -> dict[str, int]:
        """How often each context's examples changed so far (a refit is worth it only when
        that moved)."""
        return dict(self._versions)

    def cursor(self, router: str, epoch: str | None = None) -> int:
        """Where to ask ``router`` from (0 for a router not seen, or restarted)."""
        known = self.cursors.get(router)
        if known is None or (epoch is not None and known[0] != epoch):
            return 0
        return known[1]

    def ingest(self, router: str, batch: Batch, now: float) -> int:
        """Take a router's batch; returns how many examples were joined or relabelled."""
        known = self.cursors.get(router)
        if known is not None and known[0] != batch.epoch:
            known = None  # restarted: its numbers start again
        self.cursors[router] = (batch.epoch, batch.next)
        joined = 0
        for s in batch.samples:
            if s.bits != self.bits:
                continue
            recent = self._recent.get(s.context)
            if recent is None or recent.maxlen != self.max_labels:
                recent = self._recent[s.context] = deque(recent or (), maxlen=self.max_labels)
            recent.append(s)
            if s.key in self._labels:
                for lab in self._labels.pop(s.key):
                    joined += self._join(s.x, s.indices, lab)
            elif not self._in_window(s.key):
                self._samples[s.key] = s
        for lab in batch.labels:
            sample = self._samples.get(lab.key)
            if sample is not None:
                joined += self._join(sample.x, sample.indices, lab)
            elif self._in_window(lab.key):
                joined += self._relabel(lab)
            else:
                self._labels.setdefault(lab.key, []).append(lab)
        self._expire(now)
        return joined

    def _in_window(self, key: str) -> bool:
        return any(key in w for w in self._windows.values())

    def _join(self, x: tuple[float, ...], indices: IndexArray, lab: Label) -> int:
        window = self._windows.setdefault(lab.context, OrderedDict())
        ex = window.get(lab.key)
        if ex is None:
            ex = window[lab.key] = _Example(x, indices)
        ex.labels[lab.source] = lab.value
        window.move_to_end(lab.key)
        while len(window) > self.max_labels:
            window.popitem(last=False)
        self._changed(lab.context)
        return 1

    def _relabel(self, lab: Label) -> int:
        window = self._windows.get(lab.context)
        ex = window.get(lab.key) if window is not None else None
        if ex is None or window is None:
            return 0
        ex.labels[lab.source] = lab.value
        window.move_to_end(lab.key)
        self._changed(lab.context)
        return 1

    def _expire(self, now: float) -> None:
        cutoff = now - self.ttl
        for pending in (self._samples, self._labels):
            while pending and (len(pending) > self.max_pending or _oldest(pending) < cutoff):
                pending.popitem(last=False)

    def add_examples(
        self, context: str, rows: Iterable[tuple[str, tuple[float, ...], IndexArray, float]]
    ) -> int:
        """Examples that need no join (a labelled file): ``(key, x, indices, label)``, oldest
        first, placed before anything already in the window (they are older than traffic)."""
        window = self._windows.setdefault(context, OrderedDict())
        fresh: OrderedDict[str, _Example] = OrderedDict()
        for key, x, idx, y in rows:
            fresh[key] = _Example(x, idx, {"file": y})
        for key, ex in window.items():
            fresh.pop(key, None)
            fresh[key] = ex
        while len(fresh) > self.max_labels:
            fresh.popitem(last=False)
        self._windows[context] = fresh
        self._changed(context)
        return len(fresh)

    def drop_source(self, context: str, source: str) -> None:
        """Forget the labels of one source in a context (a labelled file that changed)."""
        window = self._windows.get(context)
        if window is None:
            return
        for key in [k for k, ex in window.items() if source in ex.labels]:
            ex = window[key]
            del ex.labels[source]
            if not ex.labels:
                del window[key]
            self._changed(context)

    def counts(self) -> dict[str, int]:
        return {ctx: len(w) for ctx, w in self._windows.items()}

    @property
    def pending(self) -> tuple[int, int]:
        """Samples waiting for a label, labels waiting for a sample."""
        return len(self._samples), len(self._labels)

    def recent(self, context: str) -> Labelled:
        """The last ``max_labels`` samples of the context, labelled or not (their labels are
        0.5 placeholders): what its traffic looks like, for keeping the large-tier share."""
        samples = list(self._recent.get(context) or ())
        x = np.array([s.x for s in samples], dtype=np.float64).reshape(len(samples), _N_FEATURES)
        return Labelled(x, [s.indices for s in samples], np.full(len(samples), 0.5))

    def labelled(self, context: str) -> Labelled:
        """The context's examples, oldest label first."""
        window = self._windows.get(context) or OrderedDict()
        exs: Sequence[_Example] = list(window.values())
        x = np.array([e.x for e in exs], dtype=np.float64).reshape(len(exs), _N_FEATURES)
        return Labelled(x, [e.indices for e in exs], np.array([e.y for e in exs], dtype=float))


def _oldest(pending: OrderedDict[str, Any]) -> float:
    first = next(iter(pending.values()))
    if isinstance(first, list):
        return float(min(lab.time for lab in first))
    t: float = first.time
    return t
