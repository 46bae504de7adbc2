"""The simulator: traces, the tier model, the baselines, and `zeta-router simulate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from zeta_router.cli import main
from zeta_router.sim.controllers import PolicyController, QueueHPAController, StaticController
from zeta_router.sim.engine import simulate
from zeta_router.sim.scenario import (
    Scenario,
    ScenarioError,
    SimContext,
    SimTier,
    default_scenario,
    load_scenario,
)
from zeta_router.sim.trace import (
    ContextMix,
    PatternSpec,
    Trace,
    TraceError,
    generate,
    load_csv,
    write_csv,
)

MIX = [ContextMix("ZetaHRM", 0.6), ContextMix("ZetaTRM", 0.4, 2.5, 3.0)]


# ---- traces ----------------------------------------------------------------------------------


def test_generated_traces_are_reproducible_and_have_the_asked_rate() -> None:
    spec = PatternSpec("steady", duration_seconds=1000, mean_rate=8)
    a, b = generate(spec, MIX, seed=3), generate(spec, MIX, seed=3)
    assert a == b
    assert generate(spec, MIX, seed=4) != a
    assert 7.5 < len(a) / 1000 < 8.5
    assert all(0 <= s <= 1 for s in a.score)
    assert set(a.context) == {"ZetaHRM", "ZetaTRM"}
    share = a.context.count("ZetaHRM") / len(a)
    assert 0.55 < share < 0.65


def _count(trace: Trace, start: float, end: float) -> int:
    return sum(1 for t in trace.arrival if start <= t < end)


def test_diurnal_peaks_midway_and_burst_bursts() -> None:
    day = generate(PatternSpec("diurnal", duration_seconds=4000, mean_rate=10), MIX)
    assert _count(day, 1800, 2200) > 4 * _count(day, 0, 400)
    burst = generate(
        PatternSpec(
            "burst",
            duration_seconds=3600,
            mean_rate=10,
            burst_factor=3,
            burst_seconds=300,
            burst_every_seconds=1800,
        ),
        MIX,
    )
    inside = _count(burst, 1500, 1800) / 300
    outside = _count(burst, 600, 1200) / 600
    assert 2.5 < inside / outside < 3.5
    assert 9 < len(burst) / 3600 < 11


def test_csv_round_trip(tmp_path: Path) -> None:
    trace = generate(PatternSpec("steady", duration_seconds=60, mean_rate=5), MIX)
    path = tmp_path / "t.csv"
    write_csv(trace, path)
    back = load_csv(path)
    assert len(back) == len(trace)
    assert back.context == trace.context
    assert back.prompt_tokens == trace.prompt_tokens
    assert back.arrival == pytest.approx(trace.arrival, abs=1e-3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("arrival,context,score\n1,a,0.5\n", "missing column(s) prompt_tokens, output_tokens"),
        (
            "arrival,context,prompt_tokens,output_tokens,score\n1,a,10,5,0.5\nx,a,10,5,0.5\n",
            "t.csv:3: arrival 'x' is not a number",
        ),
        (
            "arrival,context,prompt_tokens,output_tokens,score\n1,a,ten,5,0.5\n",
            "t.csv:2: prompt_tokens 'ten' is not an integer",
        ),
        (
            "arrival,context,prompt_tokens,output_tokens,score\n1,a,10,5,1.5\n",
            "t.csv:2: score must be in [0, 1]",
        ),
        (
            "arrival,context,prompt_tokens,output_tokens,score\n-1,a,10,5,0.5\n",
            "t.csv:2: arrival must be >= 0",
        ),
        ("arrival,context,prompt_tokens,output_tokens,score\n1,,10,5,0.5\n", "context is empty"),
        ("arrival,context,prompt_tokens,output_tokens,score\n", "the trace has no requests"),
    ],
)
def test_bad_csv_is_refused_with_line_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(TraceError) as err:
        load_csv(path)
    assert message in str(err.value)


def test_unknown_pattern_is_refused() -> None:
    with pytest.raises(TraceError, match="unknown pattern 'spiky'"):
        PatternSpec("spiky")


# ---- the tier model --------------------------------------------------------------------------


def one_tier(max_replicas: int, **kw: object) -> Scenario:
    tier = SimTier(
        name="only",
        min_replicas=1,
        max_replicas=max_replicas,
        initial_replicas=1,
        concurrency=4,
        decode_tokens_per_second=50,
        prefill_tokens_per_second=5000,
        startup_seconds=60,
        **kw,  # type: ignore[arg-type]
    )
    return Scenario(tiers=[tier], contexts=[SimContext(name="ZetaHRM", thresholds=[])])


def steady(rate: float, duration: float = 1200) -> Trace:
    return generate(
        PatternSpec("steady", duration_seconds=duration, mean_rate=rate),
        [ContextMix("ZetaHRM")],
        seed=7,
    )


def test_ample_static_capacity_meets_the_slo_and_costs_exactly_max_times_duration() -> None:
    scenario = one_tier(max_replicas=10, gpus_per_replica=2)
    trace = steady(rate=2)
    result = simulate(scenario, trace, StaticController())
    assert result.unserved == 0
    assert result.slo_attainment == 1.0
    assert result.gpu_hours == pytest.approx(10 * 2 * trace.duration / 3600)
    assert result.share_by_tier == {"only": 1.0}


def test_an_overloaded_tier_queues_and_misses_the_slo() -> None:
    scenario = one_tier(max_replicas=1)
    result = simulate(scenario, steady(rate=5, duration=600), StaticController())
    assert result.slo_attainment < 0.5
    assert result.ttft_p90 > 10
    assert result.unserved == 0  # the queue drains after the trace ends


def test_quality_model_charges_for_routing_down() -> None:
    base = default_scenario()
    trace = generate(PatternSpec("steady", duration_seconds=600), base.context_mix(), seed=2)
    shares, quality = [], []
    for cut in (0.3, 0.5, 0.8):
        scenario = base.model_copy(
            update={"contexts": [c.model_copy(update={"thresholds": [cut]}) for c in base.contexts]}
        )
        r = simulate(scenario, trace, StaticController())
        shares.append(r.share_by_tier["large"])
        quality.append(r.quality)
    assert shares[0] > shares[1] > shares[2]
    assert quality[0] > quality[1] > quality[2]


def test_the_policy_scales_a_rising_load_and_the_baselines_run_on_the_same_trace() -> None:
    scenario = one_tier(max_replicas=8).model_copy(
        update={"scale_down_delay_seconds": 120, "target_ttft_p90_seconds": 1.0}
    )
    low = steady(rate=0.5, duration=600)
    high = steady(rate=6, duration=1200)
    trace = Trace(
        arrival=low.arrival + [600 + t for t in high.arrival],
        context=low.context + high.context,
        prompt_tokens=low.prompt_tokens + high.prompt_tokens,
        output_tokens=low.output_tokens + high.output_tokens,
        score=low.score + high.score,
        name="step",
    )
    ours = simulate(scenario, trace, PolicyController())
    peak = max(p.replicas["only"] for p in ours.timeline)
    assert peak >= 3
    assert ours.decisions > 0
    early = [p.replicas["only"] for p in ours.timeline if p.time < 600]
    assert max(early) <= 2
    hpa = simulate(scenario, trace, QueueHPAController())
    static = simulate(scenario, trace, StaticController())
    assert static.gpu_hours > ours.gpu_hours
    assert hpa.requests == ours.requests == static.requests == len(trace)


def test_trace_contexts_must_exist_in_the_scenario() -> None:
    trace = generate(PatternSpec("steady", duration_seconds=30), [ContextMix("Other")])
    with pytest.raises(ValueError, match=r"context\(s\) \['Other'\]"):
        simulate(default_scenario(), trace, StaticController())


# ---- scenario files --------------------------------------------------------------------------


def test_default_scenario_maps_onto_the_policy_config() -> None:
    cfg = default_scenario().policy_config()
    assert [t.name for t in cfg.tiers] == ["small", "large"]
    assert cfg.contexts[0].thresholds == (0.5,)
    assert cfg.contexts[0].lower == 0.35


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("tiers: [", "not valid YAML"),
        ("- a\n", "a scenario is a mapping"),
        (
            "tiers: [{name: a}, {name: b}]\ncontexts: [{name: c, thresholds: []}]\n",
            "context c: 2 tiers need 1 thresholds, got 0",
        ),
        (
            "tiers: [{name: a, min_replicas: 3, max_replicas: 2}]\n"
            "contexts: [{name: c, thresholds: []}]\n",
            "need min 3 <= initial 1 <= max 2",
        ),
        ("tiers: []\ncontexts: []\n", "tiers: List should have at least 1 item"),
    ],
)
def test_bad_scenario_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(content)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert message in str(err.value)


# ---- the command line ------------------------------------------------------------------------


def test_simulate_command_writes_json_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = main(
        [
            "simulate",
            "--pattern",
            "burst",
            "--duration",
            "900",
            "--rate",
            "4",
            "--output",
            str(out),
            "--write-trace",
            str(tmp_path / "traces"),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    for name in ("zeta-router", "static", "hpa-queue"):
        assert name in printed
    doc = json.loads((out / "results.json").read_text())
    assert [r["controller"] for r in doc["results"]] == ["zeta-router", "static", "hpa-queue"]
    assert all(r["trace"] == "burst" for r in doc["results"])
    assert doc["results"][0]["timeline"]
    assert (out / "simulate-burst.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The saved trace replays to the same request count.
    replay = load_csv(tmp_path / "traces" / "burst.csv")
    assert len(replay) == doc["results"][0]["requests"]


def test_simulate_command_reports_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival,context\n")
    assert main(["simulate", "--trace", str(bad), "--no-plot"]) == 2
    assert "missing column(s)" in capsys.readouterr().err
    assert main(["simulate", "--controllers", "zeta-router,magic"]) == 2
    assert "unknown controller(s) ['magic']" in capsys.readouterr().err


def test_print_scenario_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--print-scenario"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert load_scenario(path) == default_scenario()
    assert yaml.safe_load(text)["tiers"][0]["name"] == "small"
