"""`zeta-router eval`, `fit` and `calibrate` end to end on a small subset of the real data."""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import pytest
import yaml

from zeta_router.cli import main
from zeta_router.quality.data import load

SMALL = Path(__file__).parent / "data" / "routing_eval_small"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def independent_apgr(scores_csv: Path, data_dir: Path) -> float:
    """APGR recomputed from --scores-out and the CSVs alone, without the project's metrics."""
    labels: dict[tuple[str, int], tuple[bool, bool]] = {}
    for path in data_dir.rglob("*.csv"):
        with path.open(newline="", encoding="utf-8") as fh:
            for i, rec in enumerate(csv.DictReader(fh)):
                labels[(str(path.relative_to(data_dir)), i)] = (
                    rec["mistralai/Mixtral-8x7B-Instruct-v0.1"] == "True",
                    rec["gpt-4-1106-preview"] == "True",
                )
    with scores_csv.open(newline="", encoding="utf-8") as fh:
        rows = [
            (float(r["score"]), *labels[(r["file"], int(r["row"]))]) for r in csv.DictReader(fh)
        ]
    n = len(rows)
    weak = sum(w for _, w, _ in rows) / n
    strong = sum(s for _, _, s in rows) / n
    rows.sort(key=lambda r: -r[0])
    correct = sum(w for _, w, _ in rows)
    pgr = [0.0]
    # Prompts of equal score go strong in a random order: by its expectation, each of them
    # adds the group's mean gain.
    for _, group in itertools.groupby(rows, key=lambda r: r[0]):
        members = list(group)
        mean_gain = sum(s - w for _, w, s in members) / len(members)
        for _ in members:
            correct += mean_gain
            pgr.append((correct / n - weak) / (strong - weak))
    return sum((a + b) / 2 for a, b in itertools.pairwise(pgr)) / n


def test_eval_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "eval", "--data", str(SMALL))
    assert code == 0
    assert "172 prompts in 7 subjects (2 contaminated left out)" in out
    for row in ("scorer ", "prompt length", "random", "oracle", "CPT(50%)", "acc@30%"):
        assert row in out
    assert re.search(r"^random\s+0\.500\s+50\.0%\s+80\.0%", out, re.M)


def test_eval_json_scores_and_plot_agree(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    scores = tmp_path / "scores.csv"
    png = tmp_path / "pgr.png"
    code, out, _ = run_cli(
        capsys,
        "eval",
        "--data",
        str(SMALL),
        "--json",
        "--scores-out",
        str(scores),
        "--plot",
        str(png),
    )
    assert code == 0
    report = json.loads(out)
    assert report["data"]["prompts"] == 172
    results = {r["name"]: r for r in report["results"]}
    assert results["random"]["apgr"] == pytest.approx(0.5)
    assert results["oracle"]["apgr"] > 1.0
    assert set(results["scorer"]["cpt"]) == {"0.5", "0.8"}
    assert set(results["scorer"]["accuracy_at_strong_share"]) == {"0.1", "0.2", "0.3", "0.5"}
    # Anyone can recompute the figure from the per-prompt scores.
    assert independent_apgr(scores, SMALL) == pytest.approx(results["scorer"]["apgr"], abs=1e-9)
    with scores.open() as fh:
        assert fh.readline().strip() == "file,row,score"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_then_eval_and_calibrate_with_the_fitted_weights(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    weights = tmp_path / "w.json"
    args = ["fit", "--data", str(SMALL), "--out", str(weights), "--folds", "3", "--repeats", "2"]
    code, out, _ = run_cli(capsys, *args, "--json")
    assert code == 0
    report = json.loads(out)
    cv = report["cross_validation"]
    assert cv["folds"] == 3
    assert cv["repeats"] == 2
    assert {r["name"] for r in cv["results"]} == {
        "fitted scorer",
        "prompt length",
        "random",
        "oracle",
    }
    first = weights.read_text()
    assert json.loads(first)["weights"]["log_prompt_tokens"] > 0

    # Same seed, same everything.
    code, out2, _ = run_cli(capsys, *args, "--json")
    assert code == 0
    assert weights.read_text() == first
    assert json.loads(out2)["cross_validation"] == cv

    code, out, _ = run_cli(capsys, "eval", "--data", str(SMALL), "--scorer", str(weights))
    assert code == 0
    assert "scorer (w.json)" in out

    snippet = tmp_path / "snippet.yaml"
    code, out, _ = run_cli(
        capsys,
        "calibrate",
        "--data",
        str(SMALL),
        "--context",
        "ZetaHRM",
        "--large-share",
        "0.3",
        "--scorer",
        str(weights),
        "--out",
        str(snippet),
    )
    assert code == 0
    assert "requested 30.0% at or above, got 30.2% of 172 prompts" in out
    ctx = yaml.safe_load(snippet.read_text())["spec"]["router"]["contexts"][0]
    assert ctx["name"] == "ZetaHRM"
    assert len(ctx["thresholds"]) == 1
    assert ctx["scorer"]["weights"] == json.loads(first)["weights"]
    # The snippet is itself a scorer file for eval.
    code, _, _ = run_cli(capsys, "eval", "--data", str(SMALL), "--scorer", str(snippet))
    assert code == 0


def test_fit_text_report_and_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "w.yaml"
    code, out, _ = run_cli(
        capsys,
        "fit",
        "--data",
        str(SMALL),
        "--out",
        str(out_file),
        "--features",
        "log_prompt_tokens,negations",
        "--no-fixed",
        "--target",
        "gain",
        "--spread",
        "none",
        "--folds",
        "50",
        "--repeats",
        "1",
    )
    assert code == 0
    assert "7 folds x 1 repeats" in out  # more folds than subjects: one subject per fold
    w = yaml.safe_load(out_file.read_text())
    assert set(w["weights"]) <= {"log_prompt_tokens", "negations"}
    assert "target=gain" in w["source"]


def test_calibrate_on_request_bodies(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    sample = tmp_path / "traffic.jsonl"
    bodies = [{"messages": [{"role": "user", "content": "hi " * n}]} for n in range(1, 41)]
    sample.write_text("\n".join(json.dumps(b) for b in bodies) + "\n")
    code, out, _ = run_cli(
        capsys,
        "calibrate",
        "--data",
        str(sample),
        "--context",
        "default",
        "--large-share",
        "0.25",
        "--json",
    )
    assert code == 0
    report = json.loads(out)
    assert report["prompts"] == 40
    assert report["achieved_shares"] == [0.25]
    # Shipped weights: nothing to carry along with the thresholds.
    ctx = yaml.safe_load(report["snippet"])["spec"]["router"]["contexts"][0]
    assert set(ctx) == {"name", "thresholds"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--data", "{tmp}/missing"], "does not exist"),
        (["eval", "--data", str(SMALL), "--scorer", "{tmp}/none.json"], "cannot read scorer file"),
        (["eval", "--data", str(SMALL), "--scorer", "{tmp}/bad.json"], "unknown features: nope"),
        (["eval", "--data", str(SMALL), "--scorer", "{tmp}/bad.yaml"], "not valid JSON/YAML"),
        (["eval", "--data", str(SMALL), "--context", "x"], "routing config"),
        (["fit", "--data", str(SMALL), "--out", "{tmp}/no/such/dir/w.json"], "does not exist"),
        (["fit", "--data", str(SMALL), "--out", "{tmp}/w.json", "--features", "nope"], "unknown"),
        (["fit", "--data", str(SMALL), "--out", "{tmp}/w.json", "--spread", "wide"], "--spread"),
        (
            ["calibrate", "--data", str(SMALL), "--context", "c", "--large-share", "0.2", "0.5"],
            "strictly decreasing",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"bias": 0, "weights": {"nope": 1}}))
    (tmp_path / "bad.yaml").write_text("weights: [unclosed\n")
    before = set(tmp_path.iterdir())
    code, out, err = run_cli(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2
    assert out == ""
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert set(tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("eval", ["--scores-out", "APGR", "in-sample"]),
        ("fit", ["grouped by subject", "net_gain", "--shrink-to"]),
        ("calibrate", ["--large-share", "JSONL", "spec snippet"]),
    ],
)
def test_help(capsys: pytest.CaptureFixture[str], command: str, words: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for w in words:
        assert w in out


def test_small_subset_really_is_labelled() -> None:
    ds = load(SMALL)
    assert 0 < ds.weak.mean() < ds.strong.mean() < 1
