"""Labels from each source, the routers' bounded sample store, and the operator's join."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zeta_router.scoring import ngrams
from zeta_router.scoring.features import FEATURE_NAMES, vector_and_text
from zeta_router.scoring.labels import (
    LabelFileError,
    agreement_label,
    feedback_label,
    judge_label,
    judge_messages,
    parse_verdict,
    read_label_file,
)
from zeta_router.scoring.samples import Batch, Joiner, Label, Sample, SampleStore, WireError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def sample(key: str, text: str = "a question about law", t: float = 1_000_000.0) -> Sample:
    x, analysed = vector_and_text({"messages": [{"role": "user", "content": text}]})
    return Sample(key, "default", "small", t, tuple(x), ngrams.indices(analysed))


def label(key: str, value: float, source: str = "feedback", t: float = 1_000_000.0) -> Label:
    return Label(key, "default", value, source, t)


# -- labels ---------------------------------------------------------------------------------------


def test_labels_are_on_the_gain_scale() -> None:
    # A poor answer of a smaller tier: the larger one was needed (label 1); a perfect one:
    # they did as well (0.5, a tie, as two models both right in the labelled data).
    assert feedback_label(0.0, served=0, top=1) == 1.0
    assert feedback_label(0.25, served=0, top=1) == 0.875
    assert feedback_label(1.0, served=1, top=2) == 0.5
    assert feedback_label(0.0, served=1, top=1) is None  # the largest tier's answer
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        feedback_label(1.5, 0, 1)
    assert agreement_label(0.8) == pytest.approx(0.6)
    assert agreement_label(1.2) == 0.5
    assert agreement_label(0.0) == 1.0


@pytest.mark.parametrize(
    ("text", "verdict"),
    [("YES", True), ("yes.", True), ("  No, it misses a step", False), ("**NO**", False),
     ("Maybe", None), ("", None), ("42", None)],
)  # fmt: skip
def test_judge_verdicts(text: str, verdict: bool | None) -> None:
    assert parse_verdict(text) is verdict


def test_judge_prompt_is_filled_literally_and_bounded() -> None:
    messages = judge_messages(
        "R={request} A={reference} B={candidate}", "what {x}?", "ref", "c" * 10_000
    )
    content = messages[0]["content"]
    assert content.startswith("R=what {x}? A=ref B=ccc")
    assert content.endswith("[...]")
    assert len(content) < 6100
    assert judge_label(True) == 0.5
    assert judge_label(False) == 1.0


def test_label_files() -> None:
    rows = read_label_file("prompt,label,context\nhi,1,chat\nbye,0,\nworse,-1,\n")
    assert [(r.prompt, r.label, r.context) for r in rows] == [
        ("hi", 1.0, "chat"),
        ("bye", 0.5, None),
        ("worse", 0.0, None),
    ]
    # The two-model layout of `zeta-router fit`: the less accurate column is the weak model.
    pairs = read_label_file(
        "prompt,big,small\na,True,False\nb,True,True\nc,False,True\nd,True,False\n"
    )
    assert [r.label for r in pairs] == [1.0, 0.5, 0.0, 1.0]
    for text, message in [
        ("question,label\nx,1\n", "no 'prompt' column"),
        ("prompt,label\nx,high\n", "line 2: label 'high' is not a number"),
        ("prompt,label\nx,2\n", r"not in \[-1, 1\]"),
        ("prompt,a\nx,True\n", "exactly two"),
        ("prompt,a,b\nx,True,maybe\n", "column 'b': expected True/False"),
        ("prompt,label\n", "no rows"),
    ]:
        with pytest.raises(LabelFileError, match=message):
            read_label_file(text)


# -- the routers' store ---------------------------------------------------------------------------


def test_store_pages_records_in_order_and_bounds_them() -> None:
    clock = Clock()
    store = SampleStore(max_samples=3, ttl_seconds=60, clock=clock)
    for i in range(5):
        store.add(sample(f"k{i}", t=clock.now))
    store.add(label("k4", 1.0, t=clock.now))
    assert store.counts == (3, 1)
    batch = store.since(0)
    assert [s.key for s in batch.samples] == ["k2", "k3", "k4"]
    assert [lab.key for lab in batch.labels] == ["k4"]
    assert batch.dropped == 2
    assert not batch.more
    # Paging: a limit, then the rest from the number handed back.
    first = store.since(0, limit=2)
    assert first.more
    rest = store.since(first.next)
    assert [s.key for s in first.samples + rest.samples] == ["k2", "k3", "k4"]
    assert store.since(rest.next).samples == []
    # Old records go after the time-to-live.
    clock.now += 61
    assert store.since(0).samples == []
    assert len(store) == 0


def test_wire_format_round_trips_and_refuses_garbage() -> None:
    clock = Clock()
    store = SampleStore(10, 60, clock)
    s = sample("k1", "Which statute governs this contract dispute?")
    store.add(s)
    store.add(label("k1", 0.75))
    wire = json.loads(json.dumps(store.since(0).to_wire()))
    # What travels: numbers and hashed indices, never the text.
    assert "statute" not in json.dumps(wire)
    batch, problems = Batch.from_wire(wire)
    assert problems == []
    got = batch.samples[0]
    assert got.key == "k1"
    assert np.array_equal(got.indices, s.indices)
    assert got.x == pytest.approx(s.x, rel=1e-5)
    assert batch.labels[0] == label("k1", 0.75)
    wire["samples"].append({"key": "k2", "x": [1, 2]})
    wire["labels"].append({"key": "k3", "context": "c", "value": 7, "source": "f", "time": 1})
    batch, problems = Batch.from_wire(wire)
    assert len(batch.samples) == 1
    assert len(batch.labels) == 1
    assert len(problems) == 2
    assert any("label value: not in [0, 1]" in p for p in problems)
    assert not any("7.0" in p for p in problems)
    with pytest.raises(WireError):
        Batch.from_wire(["not", "an", "object"])
    with pytest.raises(WireError, match="next"):
        Batch.from_wire({"epoch": "e", "next": -1})


# -- the operator's join ------------------------------------------------------------------------


def test_join_across_replicas_in_either_order() -> None:
    j = Joiner(max_labels=100, ttl_seconds=3600)
    now = 1_000_000.0
    # Router A answered k1 and k2; router B received the feedback for k1 (and k3 unknown).
    a = Batch("ea", 2, [sample("k1"), sample("k2", "a poem")], [], False)
    b = Batch("eb", 2, [], [label("k1", 1.0), label("k3", 0.0)], False)
    assert j.ingest("b", b, now) == 0  # labels wait for their samples
    assert j.ingest("a", a, now) == 1
    assert j.counts() == {"default": 1}
    assert j.pending == (1, 1)  # k2's sample, k3's label
    # The judge's label of k1 arrives later: the mean of both sources.
    j.ingest("a", Batch("ea", 3, [], [label("k1", 0.0, "judge")], False), now)
    data = j.labelled("default")
    assert data.y.tolist() == [0.5]
    assert data.x.shape == (1, len(FEATURE_NAMES))
    # Cursors follow each router; a restarted router (new epoch) is read from the start.
    assert j.cursor("a", "ea") == 3
    assert j.cursor("a", "other-epoch") == 0
    assert j.cursor("nobody") == 0
    # Waiting records expire.
    j.ingest("a", Batch("ea", 3, [], [], False), now + 7200)
    assert j.pending == (0, 0)


def test_windows_keep_the_most_recent_labels_after_the_file() -> None:
    j = Joiner(max_labels=3, ttl_seconds=3600)
    s = sample("x")
    j.add_examples("default", [(f"file:{i}", s.x, s.indices, 1.0) for i in range(2)])
    for i in range(3):
        j.ingest("r", Batch("e", i + 1, [sample(f"t{i}")], [label(f"t{i}", 0.0)], False), 0.0)
    data = j.labelled("default")
    assert data.y.tolist() == [0.0, 0.0, 0.0]  # the file's examples were the oldest
    j.add_examples("other", [(f"file:{i}", s.x, s.indices, 1.0) for i in range(2)])
    j.drop_source("other", "file")
    assert j.counts()["other"] == 0


def test_the_learner_takes_only_samples_of_the_zetarouters_ngram_key() -> None:
    from dataclasses import replace

    from zeta_router.learning.loop import _same_key

    key = ngrams.derive_key(b"the ZetaRouter's n-gram secret")
    kid = ngrams.key_id(key)
    assert kid != ngrams.key_id(ngrams.derive_key(b"another"))
    ours = replace(sample("k1"), key_id=kid)
    wire = json.loads(json.dumps(ours.to_wire()))
    assert wire["kid"] == kid
    assert Sample.from_wire(wire).key_id == kid
    assert "kid" not in sample("k0").to_wire()  # unkeyed (offline): no key id
    other = replace(sample("k2"), key_id=ngrams.key_id(ngrams.derive_key(b"another")))
    batch = Batch("e", 3, [ours, other, sample("k3")], [label("k1", 1.0)], more=False)
    kept = _same_key(batch, kid, "ns/chat: pod")
    assert [s.key for s in kept.samples] == ["k1"]
    assert kept.labels == batch.labels  # labels carry no indices: all kept
    assert _same_key(Batch("e", 1, [ours], [], more=False), kid, "x").samples == [ours]
