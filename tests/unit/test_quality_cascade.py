"""The answer-side judge and the cascade study (`zeta-router eval --cascade`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from support.routing_eval import REPO, gsm8k_dev_dir
from zeta_router.cli import main
from zeta_router.quality import metrics
from zeta_router.quality.cascade import (
    CASCADE,
    answer_matrix,
    at_equal_cost,
    fit_judge,
    judge_logits,
)
from zeta_router.quality.data import load
from zeta_router.scoring.judge import ANSWER_FEATURES, answer_features, default_judge

SMALL = Path(__file__).parent / "data" / "routing_eval_small"
F = {n: i for i, n in enumerate(ANSWER_FEATURES)}


def test_the_judge_re_evaluates_the_arithmetic_an_answer_states() -> None:
    right = answer_features("q", "She has 16 - 3 = 13 eggs, sells 13 * 2 = <<13*2=26>>26.\n#### 26")
    wrong = answer_features("q", "She has 16 - 3 = 12 eggs, sells 12 * 2 = 24.\n#### 24")
    assert right[F["arithmetic_errors"]] == 0.0
    assert right[F["arithmetic_checked"]] > 0.0
    assert wrong[F["arithmetic_errors"]] > 0.0
    # Precedence, thousands separators and the multiplication sign are read as written.
    assert answer_features("q", "2 + 3 * 4 = 14 and 1,000 x 3 = 3,000")[F["arithmetic_errors"]] == 0


def test_the_judge_sees_a_missing_or_fractional_final_number_and_hedging() -> None:
    cut = answer_features("q", "First 15 + 25 = <<15+2")
    assert cut[F["no_final_marker"]] == 1.0
    assert cut[F["truncated"]] == 1.0
    half = answer_features("q", "So 5 / 2 = 2.5 bolts.\n#### 2.5")
    assert half[F["non_integer_final"]] == 1.0
    hedged = answer_features("q", "However, assuming you can't have half a bolt, it is 3.\n#### 3")
    assert hedged[F["hedging"]] > 0.0
    plain = answer_features("q", "2 + 1 = 3.\n#### 3")
    assert plain[F["hedging"]] == plain[F["non_integer_final"]] == 0.0


def test_equal_cost_gives_the_router_the_share_the_small_calls_cost() -> None:
    weak = np.array([True, False, True, False])
    strong = np.array([True, True, True, True])
    c = metrics.curve(np.arange(4.0), weak, strong)
    p = at_equal_cost(c, c, 0.25, 0.5)
    assert p.router_share == pytest.approx(0.5)
    assert at_equal_cost(c, c, 0.8, 0.5).router_share == 1.0


def test_eval_cascade_reports_the_cascade_beside_routing_on_the_same_folds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["eval", "--cascade", "--json", "--data", str(gsm8k_dev_dir()), "--repeats", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)["cascade"]
    apgr = {r["name"]: r["apgr"] for r in report["results"]}
    assert set(apgr) == {
        CASCADE,
        "cascade (rules only)",
        "scorer (prompt)",
        "prompt length",
        "random",
        "oracle",
    }
    assert apgr["random"] == pytest.approx(0.5)
    # What docs/routing-quality.md reports: on the math dev set the judged cascade ranks far
    # better than the prompt alone at equal large-tier share.
    assert apgr[CASCADE] > apgr["scorer (prompt)"] + 0.1
    assert set(report["equal_cost"]) == {"0.1", "0.25", "0.5"}


def test_eval_cascade_needs_answers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--cascade", "--data", str(SMALL)]) != 0
    _, err = capsys.readouterr()
    assert "needs the small model's answers" in err
    assert load(SMALL).weak_answers is None
    ds = load(gsm8k_dev_dir())
    assert ds.weak_answers is not None
    assert ds.strong_answers is not None
    assert len(ds.weak_answers) == len(ds) == 655


def test_the_cascade_figures_in_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/routing-quality.md's cascade table is what `eval --cascade` prints (within 0.01)."""
    text = (REPO / "docs" / "routing-quality.md").read_text(encoding="utf-8")
    lines = text[text.index("<!-- figures:cascade -->") :].splitlines()[3:]
    documented = {}
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        documented[cells[0]] = [
            float(c.rstrip("%")) / (100 if c.endswith("%") else 1) for c in cells[1:]
        ]
    assert main(["eval", "--cascade", "--json", "--data", str(gsm8k_dev_dir())]) == 0
    results = json.loads(capsys.readouterr()[0])["cascade"]["results"]
    measured = {
        r["name"]: [
            r["apgr"],
            r["cpt"]["0.5"],
            r["cpt"]["0.8"],
            *(r["accuracy_at_strong_share"][k] for k in ("0.1", "0.2", "0.3", "0.5")),
        ]
        for r in results
    }
    assert set(documented) == set(measured)
    for name, values in measured.items():
        assert values == pytest.approx(documented[name], abs=0.01), name


def test_the_shipped_judge_is_the_judge_fitted_on_the_math_dev_set() -> None:
    ds = load(gsm8k_dev_dir())
    assert ds.weak_answers is not None
    refit = fit_judge(answer_matrix(ds.prompts, ds.weak_answers), ds.weak)
    shipped = default_judge().weights
    assert refit.bias == pytest.approx(shipped.bias, rel=1e-5)
    assert set(refit.weights) == set(shipped.weights)
    for name, w in refit.weights.items():
        assert w == pytest.approx(shipped.weights[name], rel=1e-5, abs=1e-6), name
    assert "gsm8k-dev (655 answers" in (shipped.source or "")
    # The router's judge and the study's matrix agree on every answer.
    j = default_judge()
    x = answer_matrix(ds.prompts[:20], ds.weak_answers[:20])
    logits = judge_logits(shipped, x)
    for i in range(20):
        expected = 1.0 / (1.0 + np.exp(-logits[i]))
        assert j.doubt(ds.prompts[i], ds.weak_answers[i]) == pytest.approx(expected, abs=1e-12)


def test_the_judge_doubts_a_wrong_answer_more_than_a_right_one() -> None:
    j = default_judge()
    q = "Janet sells 16 - 3 - 4 eggs at $2 each. How much does she make?"
    right = "She has 16 - 3 - 4 = 9 eggs and makes 9 * 2 = 18 dollars.\n#### 18"
    wrong = "She has 16 - 3 - 4 = 10 eggs and makes 10 * 2 = 20.5 dollars. However, maybe 21."
    assert j.doubt(q, wrong) > 0.5 > j.doubt(q, right)
    # Bounded cost: a huge answer is read from its tail only.
    assert 0.0 < j.doubt(q, "1 + 1 = 2. " * 100_000 + "#### 2") < 1.0
