"""Request traces for the simulator: read from CSV or generated (steady, diurnal, burst).

CSV columns (header required, any order, extra columns ignored):
``arrival`` (seconds from the start), ``context``, ``prompt_tokens``, ``output_tokens``,
``score`` (the router's decision score in [0, 1]).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PATTERNS = ("steady", "diurnal", "burst")
CSV_COLUMNS = ("arrival", "context", "prompt_tokens", "output_tokens", "score")


class TraceError(ValueError):
    """A trace that cannot be used, with the file, line and field at fault."""


@dataclass(frozen=True)
class Trace:
    """Requests in arrival order, column-wise (plain lists: the simulator's hot loop reads them)."""

    arrival: list[float]
    context: list[str]
    prompt_tokens: list[int]
    output_tokens: list[int]
    score: list[float]
    name: str = "trace"

    def __post_init__(self) -> None:
        n = len(self.arrival)
        if not all(
            len(c) == n for c in (self.context, self.prompt_tokens, self.output_tokens, self.score)
        ):
            raise TraceError("trace columns differ in length")
        if any(b < a for a, b in zip(self.arrival, self.arrival[1:], strict=False)):
            raise TraceError("arrivals must be in non-decreasing order")

    def __len__(self) -> int:
        return len(self.arrival)

    @property
    def duration(self) -> float:
        return self.arrival[-1] if self.arrival else 0.0

    @property
    def contexts(self) -> list[str]:
        return sorted(set(self.context))


def load_csv(path: Path) -> Trace:
    """Read a trace; rows are sorted by arrival. Raises TraceError naming the line and field."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read trace: {exc.strerror}") from exc
    rows: list[tuple[float, str, int, int, float]] = []
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(
                f"{path}: missing column(s) {', '.join(missing)}; "
                f"expected a header with {', '.join(CSV_COLUMNS)}"
            )
        for line, row in enumerate(reader, start=2):
            rows.append(_parse_row(path, line, row))
    if not rows:
        raise TraceError(f"{path}: the trace has no requests")
    rows.sort(key=lambda r: r[0])
    return Trace(
        arrival=[r[0] for r in rows],
        context=[r[1] for r in rows],
        prompt_tokens=[r[2] for r in rows],
        output_tokens=[r[3] for r in rows],
        score=[r[4] for r in rows],
        name=path.stem,
    )


def _parse_row(path: Path, line: int, row: dict[str, str]) -> tuple[float, str, int, int, float]:
    def num(field: str, kind: type[float] | type[int]) -> float:
        raw = (row.get(field) or "").strip()
        try:
            value = float(raw) if kind is float else int(raw)
        except ValueError:
            what = "a number" if kind is float else "an integer"
            raise TraceError(f"{path}:{line}: {field} {raw!r} is not {what}") from None
        if not math.isfinite(value) or value < 0:
            raise TraceError(f"{path}:{line}: {field} must be >= 0, got {raw!r}")
        return value

    arrival = num("arrival", float)
    prompt = int(num("prompt_tokens", int))
    output = int(num("output_tokens", int))
    score = num("score", float)
    if score > 1:
        raise TraceError(f"{path}:{line}: score must be in [0, 1], got {row['score']!r}")
    context = (row.get("context") or "").strip()
    if not context:
        raise TraceError(f"{path}:{line}: context is empty")
    return arrival, context, prompt, output, score


def write_csv(trace: Trace, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in zip(
            trace.arrival,
            trace.context,
            trace.prompt_tokens,
            trace.output_tokens,
            trace.score,
            strict=True,
        ):
            writer.writerow([f"{row[0]:.3f}", row[1], row[2], row[3], f"{row[4]:.4f}"])


@dataclass(frozen=True)
class ContextMix:
    """A context's share of the traffic and the Beta distribution of its decision scores."""

    name: str
    weight: float = 1.0
    score_alpha: float = 2.0
    score_beta: float = 3.0


@dataclass(frozen=True)
class PatternSpec:
    pattern: str
    duration_seconds: float = 7200.0
    mean_rate: float = 10.0
    """Mean requests per second over the trace."""
    prompt_tokens_median: float = 400.0
    output_tokens_median: float = 150.0
    burst_factor: float = 3.0
    burst_seconds: float = 300.0
    burst_every_seconds: float = 1800.0
    diurnal_amplitude: float = 0.8
    """Peak-to-mean swing of the diurnal pattern (0.8: from 0.2x to 1.8x the mean)."""

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise TraceError(f"unknown pattern {self.pattern!r}; choose one of {PATTERNS}")
        if self.duration_seconds <= 0 or self.mean_rate <= 0:
            raise TraceError("duration and mean rate must be > 0")
        if not 0 <= self.diurnal_amplitude < 1:
            raise TraceError("diurnal amplitude must be in [0, 1)")


def rate_at(spec: PatternSpec, t: np.ndarray) -> np.ndarray:
    """Arrival rate (requests/s) of a pattern at times ``t``."""
    if spec.pattern == "steady":
        return np.full_like(t, spec.mean_rate, dtype=float)
    if spec.pattern == "diurnal":
        # One day folded into the trace: the night trough at the start and end, the peak midway.
        phase = 2 * math.pi * t / spec.duration_seconds
        return spec.mean_rate * (1 - spec.diurnal_amplitude * np.cos(phase))
    # Burst: a baseline with periodic bursts, scaled so the mean stays mean_rate.
    in_burst = (t % spec.burst_every_seconds) >= spec.burst_every_seconds - spec.burst_seconds
    duty = spec.burst_seconds / spec.burst_every_seconds
    base = spec.mean_rate / (1 + duty * (spec.burst_factor - 1))
    return np.where(in_burst, base * spec.burst_factor, base)


def generate(spec: PatternSpec, contexts: Sequence[ContextMix], seed: int = 0) -> Trace:
    """A Poisson trace (thinning of the pattern's rate curve), reproducible for a seed."""
    if not contexts:
        raise TraceError("at least one context is needed to generate a trace")
    rng = np.random.default_rng(seed)
    peak = float(rate_at(spec, np.linspace(0, spec.duration_seconds, 20_001)).max())
    expected = int(peak * spec.duration_seconds * 1.1) + 100
    gaps = rng.exponential(1.0 / peak, size=expected)
    times = np.cumsum(gaps)
    times = times[times < spec.duration_seconds]
    keep = rng.random(times.size) < rate_at(spec, times) / peak
    times = times[keep]
    n = times.size
    weights = np.array([c.weight for c in contexts], dtype=float)
    ctx_idx = rng.choice(len(contexts), size=n, p=weights / weights.sum())
    scores = np.empty(n)
    for i, c in enumerate(contexts):
        mask = ctx_idx == i
        scores[mask] = rng.beta(c.score_alpha, c.score_beta, size=int(mask.sum()))
    # Token counts: log-normal around the medians; harder requests (higher score) run longer.
    prompt = rng.lognormal(math.log(spec.prompt_tokens_median), 0.8, n) * (0.6 + 0.8 * scores)
    output = rng.lognormal(math.log(spec.output_tokens_median), 0.6, n) * (0.6 + 0.8 * scores)
    return Trace(
        arrival=[float(x) for x in times],
        context=[contexts[i].name for i in ctx_idx],
        prompt_tokens=[max(1, int(x)) for x in np.minimum(prompt, 16_000)],
        output_tokens=[max(1, int(x)) for x in np.minimum(output, 4_000)],
        score=[float(x) for x in scores],
        name=spec.pattern,
    )


#: The hours of a day-with-night trace: (start hour, relative rate at the start, at the end).
DAY_SHAPE: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),  # night: the night share only
    (6.0, 0.0, 1.0),  # morning ramp
    (9.0, 1.0, 1.0),  # working day
    (18.0, 1.0, 0.0),  # evening ramp
    (22.0, 0.0, 0.0),  # night again
)


def day_envelope(t: np.ndarray, night_share: float) -> np.ndarray:
    """Relative arrival rate over a day at times ``t`` (seconds, wrapped to 24 h): the
    :data:`DAY_SHAPE` (linear ramps), never below ``night_share``."""
    hours = (t % 86400.0) / 3600.0
    out = np.zeros_like(hours, dtype=float)
    bounds = [h for h, _, _ in DAY_SHAPE] + [24.0]
    for (start, a, b), end in zip(DAY_SHAPE, bounds[1:], strict=True):
        mask = (hours >= start) & (hours < end)
        out[mask] = a + (b - a) * (hours[mask] - start) / (end - start)
    result: np.ndarray = np.maximum(out, night_share)
    return result


def day_with_night(
    base: Trace, night_share: float = 0.002, seed: int = 0, name: str | None = None
) -> Trace:
    """A day-long trace with a night, built from ``base``: ``base`` is repeated back to back
    until it covers 24 hours (its requests' tokens, contexts and scores as they are, shifted in
    time), then thinned by :func:`day_envelope`, so the day keeps ``base``'s own rate and
    burstiness and the night keeps ``night_share`` of it. Reproducible for a seed."""
    if not len(base) or base.duration <= 0:
        raise TraceError("the base trace needs requests spread over some time")
    # One mean gap after the last request, so copies follow each other as the requests do.
    period = base.duration * len(base) / max(len(base) - 1, 1)
    copies = math.ceil(86400.0 / period)
    rng = np.random.default_rng(seed)
    arrival = np.concatenate([np.asarray(base.arrival) + k * period for k in range(copies)])
    index = np.tile(np.arange(len(base)), copies)
    keep = (arrival < 86400.0) & (rng.random(arrival.size) < day_envelope(arrival, night_share))
    picked = index[keep]
    return Trace(
        arrival=[float(x) for x in arrival[keep]],
        context=[base.context[i] for i in picked],
        prompt_tokens=[base.prompt_tokens[i] for i in picked],
        output_tokens=[base.output_tokens[i] for i in picked],
        score=[base.score[i] for i in picked],
        name=name or f"{base.name}-day",
    )


def load_azure_csv(
    path: Path, contexts: Sequence[ContextMix], seed: int = 0, name: str = "azure"
) -> Trace:
    """The Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``, as published
    in Azure/AzurePublicDataset) as a simulator trace: arrivals from the timestamps (from 0),
    token counts as given, and each request's context and decision score drawn from
    ``contexts`` (the trace has neither), reproducible for a seed."""
    import datetime as dt

    stamps: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    ts = dt.datetime.fromisoformat(row["TIMESTAMP"].strip()[:26])
                    stamps.append(ts.timestamp())
                    prompts.append(max(1, int(row["ContextTokens"])))
                    outputs.append(max(1, int(row["GeneratedTokens"])))
                except (KeyError, ValueError, AttributeError) as exc:
                    raise TraceError(f"{path}:{line}: not an Azure trace row ({exc})") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read trace: {exc.strerror}") from exc
    if not stamps:
        raise TraceError(f"{path}: the trace has no requests")
    order = np.argsort(np.asarray(stamps), kind="stable")
    t0 = stamps[int(order[0])]
    rng = np.random.default_rng(seed)
    weights = np.array([c.weight for c in contexts], dtype=float)
    ctx_idx = rng.choice(len(contexts), size=len(stamps), p=weights / weights.sum())
    scores = np.array([rng.beta(contexts[i].score_alpha, contexts[i].score_beta) for i in ctx_idx])
    return Trace(
        arrival=[stamps[int(i)] - t0 for i in order],
        context=[contexts[int(ctx_idx[i])].name for i in order],
        prompt_tokens=[prompts[int(i)] for i in order],
        output_tokens=[outputs[int(i)] for i in order],
        score=[float(scores[i]) for i in order],
        name=name,
    )
