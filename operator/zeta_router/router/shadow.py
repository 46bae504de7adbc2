"""Shadow sampling: how often would the next larger tier have answered the same?

A sampled request answered by a smaller tier is sent again, in the background, to the next
larger tier; the two answers are compared (normalised exact match when both are short, token F1
otherwise) and the agreement goes to a metric and to a bounded JSONL log. The client never waits
for any of it.
"""

from __future__ import annotations

import json
import re
import string
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

SHORT_ANSWER_TOKENS = 4

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> list[str]:
    text = _PUNCT.sub(" ", text.lower())
    return _ARTICLES.sub(" ", text).split()


def agreement(a: str, b: str) -> tuple[float, str]:
    """Agreement in [0, 1] between two answers, and the method used (``exact`` or ``f1``)."""
    ta, tb = normalise(a), normalise(b)
    if len(ta) <= SHORT_ANSWER_TOKENS and len(tb) <= SHORT_ANSWER_TOKENS:
        return (1.0 if ta == tb else 0.0), "exact"
    common = sum((Counter(ta) & Counter(tb)).values())
    if common == 0:
        return 0.0, "f1"
    precision, recall = common / len(ta), common / len(tb)
    return 2 * precision * recall / (precision + recall), "f1"


def answer_text(body: Any) -> str | None:
    """The generated text of a non-streamed chat or completion response body."""
    if not isinstance(body, dict):
        return None
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    first = choices[0]
    message = first.get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return str(message["content"])
    text = first.get("text")
    return text if isinstance(text, str) else None


def delta_text(event: Any) -> str:
    """The text carried by one streamed chunk (chat delta or completion text)."""
    if not isinstance(event, dict):
        return ""
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    first = choices[0]
    delta = first.get("delta")
    if isinstance(delta, dict) and isinstance(delta.get("content"), str):
        return str(delta["content"])
    text = first.get("text")
    return text if isinstance(text, str) else ""


class JsonlLog:
    """Append-only JSONL file bounded to ``max_bytes``: when full it is moved to ``<name>.1``
    (replacing the previous one) and a new file is started."""

    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self._lock:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > self.max_bytes:
                self.path.replace(self.path.with_name(self.path.name + ".1"))
            with self.path.open("ab") as f:
                f.write(line)


def shadow_record(
    *,
    request_id: str,
    context: str,
    score: float,
    tier: str,
    shadow_tier: str,
    value: float,
    method: str,
    prompt: str | None = None,
    answers: tuple[str, str] | None = None,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "time": round(time.time(), 3),
        "request_id": request_id,
        "context": context,
        "score": round(score, 6),
        "tier": tier,
        "shadow_tier": shadow_tier,
        "agreement": round(value, 6),
        "method": method,
    }
    if prompt is not None:
        rec["prompt"] = prompt
    if answers is not None:
        rec["answer"], rec["shadow_answer"] = answers
    return rec
