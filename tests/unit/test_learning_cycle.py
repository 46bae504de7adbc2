"""One learning interval of the operator, decided without a cluster: refit, verdicts, the store,
the status and the Events; and keeping the large-tier share when a model is adopted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from support.learning import synthetic
from zeta_router.api.models import parse_zetarouter
from zeta_router.learning.cycle import ContextMemory, model_id, run
from zeta_router.scoring.learned import CompiledCorrection
from zeta_router.scoring.learner import Labelled, LearnerConfig, decisions, keep_share, refit
from zeta_router.scoring.scorer import default_scorer

NOW = "2026-01-01T00:00:00Z"


def spec(**learning: Any):  # type: ignore[no-untyped-def]
    tier = {"engine": "llamacpp", "model": "m.gguf"}
    return parse_zetarouter(
        {
            "tiers": [{**tier, "name": "small"}, {**tier, "name": "large"}],
            "router": {"contexts": [{"name": "default", "thresholds": [0.5]}, {"name": "other"}]},
            "learning": {"enabled": True, "minLabels": 100, "contexts": ["default"], **learning},
        }
    )


def joined(data: Labelled) -> dict[str, Labelled]:
    return {"default": data}


def test_waiting_then_adopted_in_apply_mode() -> None:
    s = spec(mode="apply")
    memory: dict[str, ContextMemory] = {}
    few = synthetic(50, seed=1)
    out = run(s, {"default": [0.5]}, joined(few), {"default": 1}, {}, {}, memory, NOW)
    assert out.models == {}
    assert out.events == []
    assert out.contexts == [
        {
            "name": "default",
            "source": "prior",
            "labels": 50,
            "verdict": "waiting",
            "message": "50 labels, refitted from 100",
        }
    ]
    data = synthetic(600, seed=1)
    out = run(s, {"default": [0.5]}, joined(data), {"default": 2}, {}, {}, memory, NOW)
    assert set(out.models) == {"default"}
    model = out.models["default"]
    assert model.labels == 480
    assert model.source is not None
    assert "held-out APGR" in model.source
    status = out.contexts[0]
    assert status["verdict"] == "adopted"
    assert status["source"] == "learned"
    assert status["modelId"] == model_id(model)
    assert status["apgrAfter"] > status["apgrBefore"]
    assert status["heldOut"] == 120
    assert status["adoptedAt"] == NOW
    assert [e.reason for e in out.events] == ["LearnedModelAdopted"]
    # Nothing new since: no refit, no event, the same status.
    again = run(s, {"default": [0.5]}, joined(data), {"default": 2}, {}, out.models, memory, NOW)
    assert again.events == []
    assert again.models == out.models
    assert again.contexts[0]["verdict"] == "adopted"
    # A later refit refused: the model in use, and when it was adopted, are still reported.
    later = run(s, {"default": [0.5]}, joined(data), {"default": 3}, {}, out.models, memory, "T2")
    assert later.contexts[0]["verdict"] in ("refused", "waiting")
    assert later.contexts[0]["adoptedAt"] == NOW
    assert later.contexts[0]["modelId"] == status["modelId"]


def test_advisory_mode_recommends_once_and_stores_nothing() -> None:
    s = spec()  # advisory is the default
    memory: dict[str, ContextMemory] = {}
    data = synthetic(600, seed=1)
    out = run(s, {"default": [0.5]}, joined(data), {"default": 1}, {}, {}, memory, NOW)
    assert out.models == {}
    assert out.contexts[0]["verdict"] == "recommended"
    assert out.contexts[0]["source"] == "prior"
    assert [e.reason for e in out.events] == ["LearnedModelRecommended"]
    assert "advisory mode: not adopted" in out.events[0].message
    more = synthetic(700, seed=1)
    out = run(s, {"default": [0.5]}, joined(more), {"default": 2}, {}, {}, memory, NOW)
    assert out.contexts[0]["verdict"] == "recommended"
    assert out.events == []  # the same verdict again: the status says it, no new Event


def test_rolled_back_contexts_report_but_adopt_nothing() -> None:
    s = spec(mode="apply", model="prior")
    first = run(s, {}, joined(synthetic(600, seed=1)), {"default": 1}, {}, {}, {}, NOW)
    assert first.models == {}
    assert first.contexts[0]["source"] == "rolled-back"
    assert first.contexts[0]["verdict"] == "recommended"
    assert "spec.learning.model is prior" in first.events[0].message


def test_a_model_trained_on_inverted_labels_is_refused_and_the_store_kept() -> None:
    s = spec(mode="apply")
    memory: dict[str, ContextMemory] = {}
    good = run(s, {}, joined(synthetic(600, seed=1)), {"default": 1}, {}, {}, memory, NOW)
    bad_train, recent = synthetic(900, seed=4, invert=True), synthetic(200, seed=5)
    mixed = Labelled(
        np.vstack([bad_train.x, recent.x]),
        [*bad_train.indices, *recent.indices],
        np.concatenate([bad_train.y, recent.y]),
    )
    out = run(s, {}, joined(mixed), {"default": 2}, {}, good.models, memory, NOW)
    assert out.models == good.models
    status = out.contexts[0]
    assert status["verdict"] == "refused"
    assert status["source"] == "learned"
    assert status["apgrAfter"] < status["apgrBefore"]
    assert [e.reason for e in out.events] == ["LearnedModelRefused"]


def test_stored_models_of_contexts_that_no_longer_exist_are_dropped() -> None:
    s = spec(mode="apply")
    stale = synthetic(600, seed=1)
    step = refit(stale, default_scorer(), CompiledCorrection.zero(), LearnerConfig())
    assert step.candidate is not None
    store = {"gone": step.candidate.to_model(), "other": step.candidate.to_model()}
    out = run(s, {}, {}, {}, {}, store, {}, NOW)
    assert set(out.models) == {"other"}  # kept: a context that exists, even if not learning


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.8])
def test_keep_share_keeps_how_many_pass_the_cut(cut: float) -> None:
    prior = default_scorer()
    data = synthetic(600, seed=3)
    step = refit(data, prior, CompiledCorrection.zero(), LearnerConfig())
    assert step.candidate is not None
    zero = CompiledCorrection.zero()
    tau = np.log(cut / (1 - cut))
    before = float(np.mean(decisions(prior, zero, data) >= tau))
    shifted = keep_share(prior, zero, step.candidate, data, cut)
    after = float(np.mean(decisions(prior, shifted, data) >= tau))
    assert after == pytest.approx(before, abs=0.02)
    # Only the bias moved: the order, hence the APGR, is the candidate's.
    a, b = decisions(prior, step.candidate, data), decisions(prior, shifted, data)
    assert np.allclose(b - a, shifted.bias - step.candidate.bias)


def test_keep_share_can_be_turned_off() -> None:
    data = synthetic(600, seed=1)
    kept = run(
        spec(mode="apply"), {"default": [0.5]}, joined(data), {"default": 1}, {}, {}, {}, NOW
    )
    free = run(
        spec(mode="apply", keepShare=False),
        {"default": [0.5]},
        joined(data),
        {"default": 1},
        {},
        {},
        {},
        NOW,
    )
    assert kept.models["default"].bias != free.models["default"].bias
    assert kept.models["default"].ngrams == free.models["default"].ngrams


def test_the_share_is_kept_on_all_recent_traffic_not_only_the_labelled_part() -> None:
    """Labels come mostly from answers of the smaller tier, i.e. from requests below the cut;
    the share past the cut is measured on every recent sample."""
    prior = default_scorer()
    traffic = synthetic(800, seed=6)
    z = decisions(prior, CompiledCorrection.zero(), traffic)
    cut_logit = float(np.median(z))
    cut = float(1 / (1 + np.exp(-cut_logit)))
    below = np.nonzero(z < cut_logit)[0]
    labelled = Labelled(traffic.x[below], [traffic.indices[i] for i in below], traffic.y[below])
    out = run(
        spec(mode="apply"),
        {"default": [cut]},
        joined(labelled),
        {"default": 1},
        {"default": traffic},
        {},
        {},
        NOW,
    )
    model = CompiledCorrection.from_model(out.models["default"])
    share = float(np.mean(decisions(prior, model, traffic) >= cut_logit))
    assert share == pytest.approx(0.5, abs=0.05)


def test_router_endpoints_of_running_pods_and_the_address_map() -> None:
    from zeta_router.learning.collect import endpoints

    def pod(name: str, ip: str | None, phase: str = "Running", deleting: bool = False):  # type: ignore[no-untyped-def]
        meta: dict[str, Any] = {"name": name}
        if deleting:
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return {"metadata": meta, "status": {"phase": phase, "podIP": ip}}

    pods = [
        pod("b", "10.0.0.2"),
        pod("a", "10.0.0.1"),
        pod("pending", None, "Pending"),
        pod("going", "10.0.0.3", deleting=True),
    ]
    assert [(e.pod, e.url) for e in endpoints(pods, 8081, None)] == [
        ("a", "http://10.0.0.1:8081"),
        ("b", "http://10.0.0.2:8081"),
    ]
    # Outside the cluster network: only the pods the map names, where it says.
    assert [(e.pod, e.url) for e in endpoints(pods, 8081, {"10.0.0.2": "127.0.0.1:9"})] == [
        ("b", "http://127.0.0.1:9")
    ]
