"""Cheap context analysis of a request: the numbers the scorer turns into a routing score.

Pure functions, no I/O. ``extract`` takes the JSON body of a chat or completion request; ``from_prompt``
takes a bare prompt string (used by offline evaluation, so that it runs the exact code path the
sidecar runs, through ``extract``).

Placeholder feature set: the routing-quality work replaces it with the fitted one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

FEATURE_NAMES: tuple[str, ...] = (
    "log_prompt_tokens",
    "turns",
    "reasoning_cues",
    "code_like",
    "math_like",
)

_REASONING = re.compile(r"\b(prove|step by step|why|explain|derive|analy[sz]e|compare)\b", re.I)
_CODE = re.compile(r"```|\bdef |\bclass |[{};]\s*$", re.M)
_MATH = re.compile(r"\$|\\frac|\\sum|\d+\s*[-+*/^=]\s*\d+")


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, Mapping) and "text" in p
        )
    return ""


def request_text(body: Mapping[str, Any]) -> tuple[str, int]:
    """The prompt text of a chat or completion body, and its number of turns."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = [_message_text(m.get("content")) for m in messages if isinstance(m, Mapping)]
        return "\n".join(parts), len(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return "\n".join(str(p) for p in prompt), 1
    return (prompt if isinstance(prompt, str) else ""), 1


def extract(body: Mapping[str, Any]) -> dict[str, float]:
    text, turns = request_text(body)
    tokens = len(text) / 4.0
    return {
        "log_prompt_tokens": math.log1p(tokens),
        "turns": float(turns),
        "reasoning_cues": float(len(_REASONING.findall(text))),
        "code_like": float(len(_CODE.findall(text))),
        "math_like": float(len(_MATH.findall(text))),
    }


def from_prompt(prompt: str) -> dict[str, float]:
    return extract({"messages": [{"role": "user", "content": prompt}]})
