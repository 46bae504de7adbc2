"""Labelled requests made up for the learner's tests: the label depends on the topic word."""

from __future__ import annotations

import numpy as np

from zeta_router.scoring import ngrams
from zeta_router.scoring.features import vector_and_text
from zeta_router.scoring.learner import Labelled

TOPICS = ["law", "poetry", "chemistry", "cooking", "history", "tax"]
HARD = {"law", "chemistry", "tax"}  # the larger tier is needed for these


def synthetic(n: int, seed: int, invert: bool = False) -> Labelled:
    """Requests about a topic, with filler words, through the router's own feature path.
    Labels by topic: the larger tier is mostly needed for HARD topics and mostly no better on
    the others (``invert``: the other way round)."""
    rng = np.random.default_rng(seed)
    filler = [f"word{i}" for i in range(300)]
    xs, idx, ys = [], [], []
    for _ in range(n):
        topic = TOPICS[int(rng.integers(len(TOPICS)))]
        words = [*rng.choice(filler, size=int(rng.integers(5, 30))), topic, "question"]
        rng.shuffle(words)
        text = " ".join(words).replace("word", "w")
        x, analysed = vector_and_text({"messages": [{"role": "user", "content": text}]})
        hard = (topic in HARD) != invert
        u = rng.random()
        y = (1.0 if u < 0.8 else 0.5) if hard else (0.0 if u < 0.2 else 0.5)
        xs.append(x)
        idx.append(ngrams.indices(analysed))
        ys.append(y)
    return Labelled(np.array(xs), idx, np.array(ys))
