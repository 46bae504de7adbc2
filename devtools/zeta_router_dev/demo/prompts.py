"""The demo's prompts: easy, medium and hard questions, each sent in the contexts ZetaHRM and
ZetaTRM. Under the built-in thresholds (ZetaHRM 0.4, ZetaTRM 0.6) easy prompts go to the small
tier in both contexts, hard ones to the large tier in both, and medium ones depend on the
context: that is what the live view shows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

CONTEXTS: tuple[str, ...] = ("ZetaHRM", "ZetaTRM")
LEVELS: tuple[str, ...] = ("easy", "medium", "hard")
# Share of each level in the mix.
LEVEL_WEIGHTS: dict[str, float] = {"easy": 0.45, "medium": 0.3, "hard": 0.25}


@dataclass(frozen=True)
class Prompt:
    level: str
    text: str


PROMPTS: tuple[Prompt, ...] = (
    Prompt("easy", "What is 2 + 2?"),
    Prompt("easy", "Say hello in French."),
    Prompt("easy", "Name three fruits."),
    Prompt("easy", "Translate 'good morning' into Spanish."),
    Prompt("easy", "Write a haiku about autumn leaves."),
    Prompt("easy", "What colour is the sky on a clear day?"),
    Prompt(
        "medium",
        "Prove that the square root of 2 is irrational, step by step, and explain each "
        "inference, including why every fraction can be written in lowest terms.",
    ),
    Prompt(
        "medium",
        "Write a Python function that returns the longest palindromic substring of a string in "
        "O(n^2) time, and analyse its complexity in the best and the worst case.",
    ),
    Prompt(
        "medium",
        "Explain, step by step, why the derivative of sin(x) is cos(x) from the limit "
        "definition, and why the result changes when angles are measured in degrees.",
    ),
    Prompt(
        "hard",
        "Why does this Python function not return the right result when the list is empty, and "
        "how would you fix it without changing its signature?\n"
        "```python\ndef mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n"
        "    return total / len(xs)\n```",
    ),
    Prompt(
        "hard",
        "Prove that there are infinitely many primes. Then explain, step by step, why the same "
        "argument does not show that there are infinitely many twin primes, and what would be "
        "needed instead.",
    ),
    Prompt(
        "hard",
        "Compare the consistency guarantees of Raft and Paxos: first explain how leader election "
        "differs, then why a cluster of five nodes tolerates two failures but not three, and "
        "finally which one you would choose for a small key-value store, and why not the other.",
    ),
    Prompt(
        "hard",
        "Review this SQL query, explain why it is slow on a large table, and rewrite it so that "
        "it can use an index:\n```sql\nSELECT * FROM orders\nWHERE YEAR(created_at) = 2023\n"
        "  AND status <> 'cancelled'\nORDER BY total DESC;\n```",
    ),
)


@dataclass(frozen=True)
class Request:
    """One request of the workload: a prompt in a context."""

    context: str
    level: str
    text: str


def mixed_workload(
    seed: int = 0,
    prompts: Sequence[Prompt] = PROMPTS,
    contexts: Sequence[str] = CONTEXTS,
    weights: dict[str, float] | None = None,
) -> Iterator[Request]:
    """An endless, reproducible stream of requests: a level drawn by ``weights``, a prompt of
    that level and a context, each uniformly."""
    rng = random.Random(seed)
    shares = weights or LEVEL_WEIGHTS
    by_level = {lvl: [p for p in prompts if p.level == lvl] for lvl in shares}
    levels = [lvl for lvl in shares if by_level[lvl]]
    if not levels or not contexts:
        raise ValueError("the workload needs at least one prompt and one context")
    level_weights = [shares[lvl] for lvl in levels]
    while True:
        level = rng.choices(levels, level_weights)[0]
        prompt = rng.choice(by_level[level])
        yield Request(rng.choice(list(contexts)), level, prompt.text)
