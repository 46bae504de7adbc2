"""The learned correction of a context's score, and the scorer that applies it.

``score = sigmoid(prior(x) + correction(x, words))`` where ``prior`` is the context's logistic
scorer (the shipped default weights unless the spec sets others) and

``correction = bias + sum(weights[f] * feature[f]) + sum(w[i] for i in idx) / sqrt(len(idx))``

over the cheap features and the hashed word uni/bigram indices of the request
(``scoring.ngrams``). The correction is what the operator learns from outcome labels; without
one a context scores with its prior alone.

:class:`LearnedCorrection` is the serialised form carried by the routing configuration (one per
context, under ``contexts[].learned``) and by the operator's model store. The hashed weights
are compact: the largest ones only, quantised to 8 bits, their sorted indices delta-coded as
varints, zlib-compressed and base64-encoded (``encode_ngrams`` / ``decode_ngrams``), so that a
model of tens of thousands of weights takes tens of KiB of the ConfigMap's 1 MiB.
:class:`CompiledCorrection` is the decoded, validated form the request path uses.
"""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from zeta_router.scoring import ngrams
from zeta_router.scoring.features import FEATURE_NAMES, vector_and_text
from zeta_router.scoring.scorer import Scorer

FloatArray = NDArray[np.float64]
IndexArray = NDArray[np.int64]

FORMAT_VERSION: Literal[1] = 1
_QUANT_LEVELS = 127

#: Bytes of the routing ConfigMap that all contexts' learned corrections may take together; the
#: rest of ``routing.yaml`` (tiers, thresholds, prior weights of up to 32 contexts, the judge
#: prompt) needs a few tens of KiB, and a ConfigMap holds at most 1 MiB.
TOTAL_BYTES = 640 * 1024
#: At most this much for one context, however few contexts learn.
MAX_BYTES_PER_CONTEXT = 160 * 1024


#: Longest ``source`` text kept with a correction (room for it is kept when pruning).
MAX_SOURCE_CHARS = 400


def bytes_per_context(contexts: int) -> int:
    """The size budget of one context's correction when ``contexts`` contexts learn."""
    return min(MAX_BYTES_PER_CONTEXT, TOTAL_BYTES // max(1, contexts))


def serialised_size(model: LearnedCorrection) -> int:
    """Bytes the correction takes in the ConfigMap (its JSON; YAML of it is about the same)."""
    return len(model.model_dump_json(by_alias=True, exclude_none=True))


class LearnedCorrection(BaseModel):
    """A learned correction of a context's score (see the module docstring)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    version: Literal[1] = Field(default=FORMAT_VERSION, description="Format version.")
    hash_bits: int = Field(
        default=ngrams.DEFAULT_BITS,
        ge=ngrams.MIN_BITS,
        le=ngrams.MAX_BITS,
        description="Hashed indices are in [0, 2**hashBits).",
    )
    bias: float = Field(default=0.0, description="Added to the prior's logit.")
    weights: dict[str, float] = Field(
        default_factory=dict, description="Correction per cheap feature (raw feature units)."
    )
    ngrams: str = Field(
        default="",
        description="Hashed uni/bigram weights: base64(zlib(varint index gaps + int8 values)).",
    )
    ngram_count: int = Field(default=0, ge=0, description="Number of hashed weights.")
    ngram_scale: float = Field(
        default=0.0, ge=0.0, description="Value of one int8 step of the hashed weights."
    )
    labels: int = Field(default=0, ge=0, description="Labels the correction was learned from.")
    source: str | None = Field(
        default=None, max_length=MAX_SOURCE_CHARS, description="Where the correction came from."
    )


def quantise(values: FloatArray) -> tuple[NDArray[np.int8], float]:
    """int8 codes and the step they are multiples of (symmetric, the largest maps to 127)."""
    top = float(np.max(np.abs(values))) if values.size else 0.0
    if top == 0.0 or not math.isfinite(top):
        return np.zeros(values.size, dtype=np.int8), 0.0
    scale = top / _QUANT_LEVELS
    codes = np.clip(np.rint(values / scale), -_QUANT_LEVELS, _QUANT_LEVELS).astype(np.int8)
    return codes, scale


def encode_ngrams(keys: IndexArray, values: FloatArray) -> tuple[str, int, float]:
    """``(ngrams, ngram_count, ngram_scale)`` for sorted unique ``keys`` and their weights.

    Weights that quantise to 0 are dropped."""
    order = np.argsort(keys, kind="stable")
    keys = np.asarray(keys, dtype=np.int64)[order]
    codes, scale = quantise(np.asarray(values, dtype=np.float64)[order])
    keep = codes != 0
    keys, codes = keys[keep], codes[keep]
    if keys.size and np.any(np.diff(keys) <= 0):
        raise ValueError("hashed indices must be unique")
    if keys.size == 0:
        return "", 0, 0.0
    raw = ngrams.pack(keys) + codes.tobytes()
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii"), int(keys.size), scale


def decode_ngrams(text: str, count: int, bits: int) -> tuple[IndexArray, NDArray[np.int8]]:
    """Sorted indices and int8 codes from ``encode_ngrams``'s text. Raises ``ValueError``
    naming what is wrong."""
    if count == 0:
        if text:
            raise ValueError("ngrams is set but ngramCount is 0")
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8)
    try:
        raw = zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))
    except (binascii.Error, ValueError, zlib.error, UnicodeEncodeError) as exc:
        raise ValueError(f"ngrams is not valid base64 zlib data ({exc})") from None
    if len(raw) < count:
        raise ValueError(f"ngrams holds fewer bytes than ngramCount={count} needs")
    codes = np.frombuffer(raw[len(raw) - count :], dtype=np.int8).copy()
    try:
        keys = ngrams.unpack(raw[: len(raw) - count], count, bits)
    except ValueError as exc:
        raise ValueError(f"ngrams: {exc}") from None
    return keys, codes


@dataclass(frozen=True)
class CompiledCorrection:
    """A validated correction, ready for the request path (immutable)."""

    bits: int
    bias: float
    coef: FloatArray  # one per FEATURE_NAMES entry, raw units
    keys: IndexArray  # sorted hashed indices
    values: FloatArray  # their weights
    labels: int = 0
    source: str | None = None

    @classmethod
    def zero(cls, bits: int = ngrams.DEFAULT_BITS) -> CompiledCorrection:
        """No correction: the prior alone."""
        return cls(
            bits=bits,
            bias=0.0,
            coef=np.zeros(len(FEATURE_NAMES)),
            keys=np.zeros(0, dtype=np.int64),
            values=np.zeros(0),
        )

    @classmethod
    def from_model(cls, model: LearnedCorrection) -> CompiledCorrection:
        """Decode and check ``model``; ``ValueError`` says what is wrong."""
        unknown = sorted(set(model.weights) - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"learned correction names unknown features: {', '.join(unknown)}")
        bad = [k for k, v in model.weights.items() if not math.isfinite(v)]
        for name in ("bias", "ngram_scale"):
            if not math.isfinite(getattr(model, name)):
                bad.insert(0, name)
        if bad:
            raise ValueError(f"learned correction must hold finite numbers: {', '.join(bad)}")
        keys, codes = decode_ngrams(model.ngrams, model.ngram_count, model.hash_bits)
        return cls(
            bits=model.hash_bits,
            bias=model.bias,
            coef=np.array([model.weights.get(f, 0.0) for f in FEATURE_NAMES], dtype=np.float64),
            keys=keys,
            values=codes.astype(np.float64) * model.ngram_scale,
            labels=model.labels,
            source=model.source,
        )

    def to_model(self, source: str | None = None, labels: int | None = None) -> LearnedCorrection:
        """The serialised form (hashed weights quantised; dense weights to 6 digits)."""
        text, count, scale = encode_ngrams(self.keys, self.values)
        return LearnedCorrection(
            hash_bits=self.bits,
            bias=_round(self.bias),
            weights={
                f: _round(w) for f, w in zip(FEATURE_NAMES, self.coef, strict=True) if _round(w)
            },
            ngrams=text,
            ngram_count=count,
            ngram_scale=scale,
            labels=self.labels if labels is None else labels,
            source=_clip(self.source if source is None else source),
        )

    def ngram_sum(self, idx: IndexArray) -> float:
        """``sum(w[i]) / sqrt(len(idx))`` over the indices of one request."""
        if idx.size == 0 or self.keys.size == 0:
            return 0.0
        pos = np.searchsorted(self.keys, idx)
        np.minimum(pos, self.keys.size - 1, out=pos)
        hit = self.keys[pos] == idx
        return float(self.values[pos[hit]].sum()) / math.sqrt(idx.size)

    def correction(self, x: FloatArray | list[float], idx: IndexArray) -> float:
        """The correction (in logits) for features ``x`` (``FEATURE_NAMES`` order) and
        indices ``idx``."""
        return self.bias + float(np.dot(self.coef, x)) + self.ngram_sum(idx)


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_SOURCE_CHARS:
        return text
    return text[: MAX_SOURCE_CHARS - 3] + "..."


def _round(value: float) -> float:
    return float(f"{float(value):.6g}")


class BodyScorer(Protocol):
    """What the router needs of a context's scorer."""

    def score_body(self, body: Mapping[str, Any]) -> float: ...


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class LearnedScorer:
    """A prior logistic scorer plus a learned correction. Immutable; safe to share."""

    __slots__ = ("correction", "key", "prior")

    def __init__(
        self, prior: Scorer, correction: CompiledCorrection, key: bytes | None = None
    ) -> None:
        self.prior = prior
        self.correction = correction
        self.key = key  # the n-gram key the correction was learned under

    def decision_body(self, body: Mapping[str, Any]) -> float:
        """The logit: the prior's plus the correction."""
        x, text = vector_and_text(body)
        idx = ngrams.indices(text, self.correction.bits, self.key)
        return self.prior.decision_vector(x) + self.correction.correction(x, idx)

    def score_body(self, body: Mapping[str, Any]) -> float:
        return _sigmoid(self.decision_body(body))


def scorer_for(
    prior: Scorer, learned: LearnedCorrection | None, key: bytes | None = None
) -> Scorer | LearnedScorer:
    """The scorer of a context: its prior, corrected when a learned correction is given.
    Raises ``ValueError`` for a correction that cannot be used."""
    if learned is None:
        return prior
    return LearnedScorer(prior, CompiledCorrection.from_model(learned), key)
