"""`kalshi-pipeline bench`: measure the project's target figures.

    kalshi-pipeline bench                 # the full run (about 37 min, chaos included)
    kalshi-pipeline bench --quick         # every scenario but chaos, short (about 4 min)
    kalshi-pipeline bench --chaos         # the chaos scenario alone (10 min; with --quick, 75 s)
    kalshi-pipeline bench --output PATH   # where the results JSON goes

The full run writes `benchmarks/results/latest.json` and rewrites the README's results section;
other runs write `benchmarks/results/<plan>.json` and leave the README alone unless `--readme`.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from kalshi_pipeline.bench.display import Display
from kalshi_pipeline.bench.plan import FULL, QUICK, SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
PY_SPY = Path(sys.executable).with_name("py-spy")


def _results_dir() -> Path:
    if (ROOT / "benchmarks").is_dir():
        return ROOT / "benchmarks" / "results"
    return Path.cwd() / "benchmarks" / "results"


def _scenarios(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)} or all"
        )
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="a short run of every scenario but chaos (about 4 min)"
    )
    parser.add_argument(
        "--chaos",
        action="store_true",
        help="run the chaos scenario alone: random faults, a SIGKILL and a handover every 90 s, "
        "for 10 min",
    )
    parser.add_argument("--output", type=Path, metavar="PATH", help="the results JSON")
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        metavar="LIST",
        help=f"comma-separated, from: {', '.join(SCENARIOS)}, or all",
    )
    parser.add_argument(
        "--chaos-seconds", type=float, metavar="S", help="length of the chaos scenario"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record py-spy profiles (raw collapsed stacks) of every engine process into DIR",
    )
    readme = parser.add_mutually_exclusive_group()
    readme.add_argument(
        "--readme",
        dest="readme",
        action="store_true",
        default=None,
        help="rewrite the README's results section from this run",
    )
    readme.add_argument(
        "--no-readme",
        dest="readme",
        action="store_false",
        help="leave the README alone (the default for all but a full run)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="print the table of an earlier results JSON, judged against the targets as they "
        "stand (rewrite the README with --readme; write the re-judged JSON with --output)",
    )
    parser.add_argument("--seed", type=int, default=7, help="simulator and fault seed")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)


def _print(results: dict[str, Any]) -> None:
    from kalshi_pipeline.bench.report import compression_table, scaling_table, table

    out = Console()
    out.print(table(results))
    for extra in (scaling_table(results), compression_table(results)):
        if extra is not None:
            out.print(extra)
    for note in results.get("notes", []):
        out.print(f"- {note}")


def main_from_args(args: argparse.Namespace) -> int:
    # imported here, not at the top: every `kalshi-pipeline` command builds this module's
    # parser, and `stream`'s process must not load DuckDB and Arrow (its store process does)
    from kalshi_pipeline.bench.report import judge, update_readme
    from kalshi_pipeline.bench.suite import run, write_json

    readme = ROOT / "README.md"
    if args.render is not None:
        results = json.loads(args.render.read_text())
        results["targets"] = judge(results)  # as the targets stand now
        _print(results)
        if args.output is not None:
            write_json(results, args.output)
        if args.readme and not update_readme(readme, results):
            print(f"bench: no results section markers in {readme}", file=sys.stderr)
            return 1
        return 0
    if args.profile is not None and not PY_SPY.exists():
        print(
            f"bench: --profile needs py-spy next to this Python ({PY_SPY}); "
            f"install it with {Path(sys.executable).with_name('pip')} install py-spy",
            file=sys.stderr,
        )
        return 2
    plan = QUICK if args.quick else FULL
    if args.chaos_seconds is not None:
        plan = replace(
            plan, chaos_s=args.chaos_seconds, name=f"{plan.name} chaos {args.chaos_seconds:g}s"
        )
    plan = plan.scaled(args.scale)
    if args.scenarios is not None:
        scenarios = args.scenarios
    elif args.chaos:
        scenarios = ["chaos"]
    elif args.quick:
        scenarios = [s for s in SCENARIOS if s != "chaos"]
    else:
        scenarios = list(SCENARIOS)
    complete = plan.name == "full" and scenarios == list(SCENARIOS)
    if args.output is not None:
        output = args.output
    elif complete:
        output = _results_dir() / "latest.json"
    else:
        label = re.sub(r"[^A-Za-z0-9.]+", "-", plan.name)
        output = _results_dir() / f"{label}{'-only-chaos' if scenarios == ['chaos'] else ''}.json"
    command = "kalshi-pipeline bench" + "".join(
        f" {flag}" for flag, on in (("--quick", args.quick), ("--chaos", args.chaos)) if on
    )

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with Display() as display:
            results = run(
                plan,
                scenarios,
                display,
                seed=args.seed,
                profile_dir=args.profile,
                keep=args.keep,
                command=command,
            )
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    results["run"]["output"] = _relative(output)
    write_json(results, output)
    _print(results)
    print(f"results: {output}", file=sys.stderr)
    wanted = args.readme if args.readme is not None else complete
    if wanted and update_readme(readme, results):
        print(f"README results section rewritten: {readme}", file=sys.stderr)
    return 1 if results["errors"] else 0


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kalshi-pipeline bench",
        description="Measure the project's target figures: the simulator and the engine each in a "
        "process of their own.",
    )
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return main_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
