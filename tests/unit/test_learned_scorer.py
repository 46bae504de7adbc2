"""The learned correction in the scoring core: hashed n-grams, the compact model format, and the
scorer that adds the correction to the prior."""

from __future__ import annotations

import argparse
import base64
import hmac
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from zeta_router.scoring import ngrams
from zeta_router.scoring.features import FEATURE_NAMES, vector_and_text
from zeta_router.scoring.learned import (
    CompiledCorrection,
    LearnedCorrection,
    LearnedScorer,
    decode_ngrams,
    encode_ngrams,
    scorer_for,
)
from zeta_router.scoring.scorer import default_scorer

TEXTS = [
    "",
    "Hello",
    "What is the capital of France?",
    "Prove that sqrt(2) is irrational; then derive the bound step by step.",
    "Ünïcödé wörds, Grüße aus Köln — and ASCII too",
    "请逐步解释为什么这个算法的时间复杂度是对数级别的",
    "x = 3 + 4 * y; 12 numbers 345 and digits 6 7 8 split words",
]


def body(text: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("bits", [10, 18, 24])
def test_indices_match_the_written_specification(text: str, bits: int) -> None:
    got = ngrams.indices(text, bits)
    assert got.tolist() == ngrams.indices_reference(text, bits)
    assert np.all(np.diff(got) > 0)
    assert got.size == 0 or (got.min() >= 0 and got.max() < 1 << bits)


def test_indices_do_not_depend_on_the_word_cache() -> None:
    text = "the cache only memoises values that never change"
    first = ngrams.indices(text)
    ngrams._WORD_HASH.clear()
    assert ngrams.indices(text).tolist() == first.tolist()


def test_indices_are_a_set_of_words_and_neighbouring_pairs() -> None:
    # Counts and order beyond neighbouring pairs are not kept.
    assert (
        ngrams.indices("very very good").tolist()
        == ngrams.indices("Very, very, VERY good.").tolist()
    )
    assert ngrams.indices("a b").tolist() != ngrams.indices("b a").tolist()
    assert ngrams.words("Grüße, 42 times!") == ["grüße", "times"]


def test_bits_are_checked() -> None:
    with pytest.raises(ValueError, match="hash bits"):
        ngrams.check_bits(9)
    with pytest.raises(ValidationError):
        LearnedCorrection(hash_bits=30)


def test_encoding_round_trips_within_half_a_step() -> None:
    rng = np.random.default_rng(0)
    keys = np.sort(rng.choice(1 << 18, size=5000, replace=False)).astype(np.int64)
    values = rng.normal(0, 0.3, size=keys.size)
    text, count, scale = encode_ngrams(keys, values)
    got_keys, codes = decode_ngrams(text, count, 18)
    kept = np.isin(keys, got_keys)
    assert got_keys.tolist() == keys[kept].tolist()
    assert np.max(np.abs(codes * scale - values[kept])) <= scale / 2 + 1e-12
    # Only weights that quantise to 0 are dropped.
    assert np.all(np.abs(values[~kept]) < scale / 2 + 1e-12)
    # Compact: well under 3 bytes a weight for a dense-ish set.
    assert len(text) < 3 * count


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.model_copy(update={"ngrams": "not base64!"}), "base64"),
        (lambda m: m.model_copy(update={"ngram_count": m.ngram_count + 1}), "ngrams"),
        (lambda m: m.model_copy(update={"ngram_count": m.ngram_count - 1}), "more than"),
        (lambda m: m.model_copy(update={"hash_bits": 10}), r"outside \[0, 2\*\*10\)"),
        (lambda m: m.model_copy(update={"weights": {"no_such_feature": 1.0}}), "unknown"),
        (lambda m: m.model_copy(update={"bias": math.inf}), "finite"),
        (lambda m: m.model_copy(update={"ngrams": "", "ngram_count": 3}), "base64"),
    ],
)
def test_a_broken_model_is_refused_with_the_reason(mutate: object, message: str) -> None:
    keys = np.array([5, 900, 70_000], dtype=np.int64)
    good = CompiledCorrection(
        bits=18, bias=0.1, coef=np.zeros(len(FEATURE_NAMES)), keys=keys, values=np.ones(3)
    ).to_model()
    CompiledCorrection.from_model(good)
    assert callable(mutate)
    with pytest.raises(ValueError, match=message):
        CompiledCorrection.from_model(mutate(good))


def test_zero_correction_scores_like_the_prior() -> None:
    prior = default_scorer()
    learned = LearnedScorer(prior, CompiledCorrection.zero())
    for text in TEXTS:
        assert learned.score_body(body(text)) == pytest.approx(prior.score_body(body(text)))


def test_correction_adds_bias_features_and_the_words_present() -> None:
    prior = default_scorer()
    text = "Explain how the committee reached its decision"
    x, analysed = vector_and_text(body(text))
    idx = ngrams.indices(analysed)
    word = int(ngrams.indices("committee")[0])
    assert word in idx.tolist()
    coef = np.zeros(len(FEATURE_NAMES))
    coef[FEATURE_NAMES.index("log_prompt_tokens")] = 0.5
    corr = CompiledCorrection(
        bits=18,
        bias=-0.25,
        coef=coef,
        keys=np.array([word, (1 << 18) - 1], dtype=np.int64),
        values=np.array([2.0, 3.0]),
    )
    want = prior.decision_vector(x) - 0.25 + 0.5 * x[0] + 2.0 / math.sqrt(idx.size)
    assert LearnedScorer(prior, corr).decision_body(body(text)) == pytest.approx(want)
    # Through the serialised form the model is the same (up to quantisation).
    again = scorer_for(prior, corr.to_model())
    assert isinstance(again, LearnedScorer)
    assert again.decision_body(body(text)) == pytest.approx(want, abs=0.02)
    assert scorer_for(prior, None) is prior


def test_correction_sees_only_the_analysed_text_of_long_requests() -> None:
    head = "alpha " * 2000
    tail = " omega" * 2000
    middle = " zebra" * 2000
    _, text = vector_and_text(body(head + middle + tail))
    assert "zebra" not in ngrams.words(text)
    assert {"alpha", "omega"} <= set(ngrams.words(text))


@pytest.mark.parametrize("text", TEXTS)
def test_keyed_indices_match_the_specification_and_hide_the_words(text: str) -> None:
    key = ngrams.derive_key(b"the ZetaRouter's n-gram secret")
    assert (
        key
        == hmac.new(b"the ZetaRouter's n-gram secret", b"zeta-router n-grams", "sha256").digest()
    )
    for w in ngrams.words(text):
        mac = hmac.new(key, w.encode("utf-8"), "sha256").digest()
        assert ngrams.keyed_hash(key, w) == int.from_bytes(mac[:4], "big")
    keyed = ngrams.indices(text, 18, key)
    assert keyed.tolist() == ngrams.indices_reference(text, 18, key)
    if ngrams.words(text):
        # Not the unkeyed (dictionary-attackable) indices, nor another key's.
        assert keyed.tolist() != ngrams.indices(text, 18).tolist()
        other = ngrams.indices(text, 18, ngrams.derive_key(b"another secret"))
        assert keyed.tolist() != other.tolist()


def test_the_operator_and_the_routers_make_the_same_ngram_key(tmp_path: Path) -> None:
    """The router makes its key of the mounted Secret's files; the operator's learner of the
    Secret's data: the same bytes, with or without an ngram-key field."""
    from zeta_router.learning.loop import ngram_key as operator_key
    from zeta_router.router.cli import ngram_key as router_key

    class SecretReader:
        def __init__(self, data: dict[str, bytes]) -> None:
            self.data = {k: base64.b64encode(v).decode() for k, v in data.items()}

        def get(self, path: str) -> dict[str, object]:
            assert path.endswith("/secrets/chat-router-key")
            return {"data": self.data}

    (tmp_path / "key").write_bytes(b"new-request-key-0123456789\nold-request-key-0123456789\n")
    args = argparse.Namespace(
        ngram_key_file=tmp_path / "ngram-key", request_key_file=tmp_path / "key"
    )
    # A Secret made before the n-gram key had a field: the first request key stands in.
    old = {"key": (tmp_path / "key").read_bytes()}
    assert router_key(args) == operator_key(SecretReader(old), "ns", "chat")  # type: ignore[arg-type]
    (tmp_path / "ngram-key").write_bytes(b"n-gram-secret-0123456789\n")
    both = {**old, "ngram-key": (tmp_path / "ngram-key").read_bytes()}
    assert router_key(args) == operator_key(SecretReader(both), "ns", "chat")  # type: ignore[arg-type]
    assert router_key(args) == ngrams.derive_key(b"n-gram-secret-0123456789")
