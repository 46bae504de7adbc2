"""`zeta-router simulate`: compare the autoscaling policy with baselines on a request trace."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from zeta_router.plotting import PlottingUnavailableError, require_matplotlib
from zeta_router.sim.controllers import CONTROLLERS
from zeta_router.sim.report import compare, format_table, plot, write_json
from zeta_router.sim.scenario import ScenarioError, default_scenario, load_scenario
from zeta_router.sim.trace import PATTERNS, PatternSpec, Trace, TraceError, generate, load_csv
from zeta_router.sim.trace import write_csv as write_trace_csv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Replay a request trace against tiers modelled in simulated time, driving the operator's "
        "autoscaling policy, and compare it with a static deployment (every tier at max) and a "
        "per-tier queue autoscaler with a fixed threshold (a plain HPA/KEDA setup)."
    )
    parser.epilog = (
        "examples:\n"
        "  zeta-router simulate                          # the three generated patterns\n"
        "  zeta-router simulate --pattern burst --rate 15 --output out/\n"
        "  zeta-router simulate --trace requests.csv --scenario my-tiers.yaml\n"
        "  zeta-router simulate --print-scenario > my-tiers.yaml   # start from the default\n"
        "\n"
        "trace CSV columns: arrival (s), context, prompt_tokens, output_tokens, score"
    )
    source = parser.add_argument_group("trace")
    source.add_argument(
        "--trace",
        type=Path,
        action="append",
        default=[],
        metavar="CSV",
        help="replay this trace (repeatable)",
    )
    source.add_argument(
        "--pattern",
        choices=PATTERNS,
        action="append",
        default=[],
        help="generate a trace with this pattern (repeatable; default: all three "
        "when no --trace is given)",
    )
    source.add_argument(
        "--duration",
        type=_positive,
        default=7200.0,
        metavar="SECONDS",
        help="length of generated traces (default: %(default)s)",
    )
    source.add_argument(
        "--rate",
        type=_positive,
        default=10.0,
        metavar="REQ_PER_S",
        help="mean arrival rate of generated traces (default: %(default)s)",
    )
    source.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    source.add_argument(
        "--write-trace",
        type=Path,
        metavar="DIR",
        help="also save each generated trace as DIR/<pattern>.csv",
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        metavar="YAML",
        help="tiers, contexts and autoscaling settings (default: a 7B + 14B pair on GPUs)",
    )
    parser.add_argument(
        "--print-scenario",
        action="store_true",
        help="print the scenario in use as YAML and exit",
    )
    parser.add_argument(
        "--controllers",
        default=",".join(CONTROLLERS),
        help="comma-separated controllers to compare (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="write results.json and one PNG plot per trace into DIR",
    )
    parser.add_argument("--no-plot", action="store_true", help="with --output, skip the PNGs")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def run(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario) if args.scenario else default_scenario()
    except ScenarioError as exc:
        print(f"zeta-router simulate: {exc}", file=sys.stderr)
        return 2
    if args.print_scenario:
        print(yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    if args.output and not args.no_plot:
        try:
            require_matplotlib()
        except PlottingUnavailableError as exc:
            print(f"zeta-router simulate: {exc} (or pass --no-plot)", file=sys.stderr)
            return 2
    controllers = [c.strip() for c in args.controllers.split(",") if c.strip()]
    unknown = [c for c in controllers if c not in CONTROLLERS]
    if unknown or not controllers:
        print(
            f"zeta-router simulate: unknown controller(s) {unknown}; "
            f"choose from {', '.join(CONTROLLERS)}",
            file=sys.stderr,
        )
        return 2
    traces: list[Trace] = []
    try:
        for path in args.trace:
            traces.append(load_csv(path))
        patterns = args.pattern or ([] if args.trace else list(PATTERNS))
        for pattern in patterns:
            spec = PatternSpec(pattern, duration_seconds=args.duration, mean_rate=args.rate)
            trace = generate(spec, scenario.context_mix(), seed=args.seed)
            traces.append(trace)
            if args.write_trace:
                args.write_trace.mkdir(parents=True, exist_ok=True)
                write_trace_csv(trace, args.write_trace / f"{pattern}.csv")
        results = compare(scenario, traces, controllers, seed=args.seed)
    except (TraceError, ValueError) as exc:
        print(f"zeta-router simulate: {exc}", file=sys.stderr)
        return 2
    print(format_table(results))
    print(
        f"\nSLO: TTFT <= {scenario.slo_seconds}s. quality: estimated share of correct answers "
        "(per-score quality model of each tier)."
    )
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        write_json(args.output / "results.json", scenario, results)
        written = [args.output / "results.json"]
        if not args.no_plot:
            for trace in traces:
                png = args.output / f"simulate-{trace.name}.png"
                plot(png, scenario, results, trace.name)
                written.append(png)
        print("wrote " + ", ".join(str(p) for p in written))
    return 0
