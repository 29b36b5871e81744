"""Run a study: every arm × seed as a run folder, then summary.json, results.md and figures.

    python scripts/study.py gan_rhythm                    # all cores of this machine
    python scripts/study.py rl_rhythm --backend ray --address auto
    python scripts/study.py gan_rhythm --backend population   # runs batched as populations
    python scripts/study.py gan_rhythm --seeds 2 --steps 500 --dry-run
    python scripts/study.py gan_rhythm --runs-root records --report-only   # results so far

Start the same command again after an interruption: runs whose metrics.json is complete are
skipped, and runs cut off mid-way continue from their checkpoints (--resume). Shipped
studies live in <package>/studies/<NAME>.toml (rlcycle, gancycle).
"""

from __future__ import annotations

import sys
from pathlib import Path

from common.cli import CliParser, run_cli
from common.study import find_study, known_studies, run_study


def main() -> int:
    names = ", ".join(known_studies()) or "none shipped yet"
    parser = CliParser(description=__doc__)
    parser.add_argument("study", metavar="NAME|PATH", help=f"a shipped study ({names}) or a file")
    parser.add_argument("--seeds", type=int, default=None, help="runs per arm (default: study's)")
    parser.add_argument(
        "--backend",
        choices=["local", "ray", "population"],
        default="local",
        help="executor: a process per run, Ray tasks, or runs batched as populations "
        "(the study's population program)",
    )
    parser.add_argument(
        "--population-size",
        type=int,
        default=None,
        help="most runs per population (population only; default 64)",
    )
    parser.add_argument(
        "--address", default=None, help="Ray cluster to join (ray only; default: start one)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="runs at a time (local only; default: cores)"
    )
    parser.add_argument(
        "--runs-root",
        type=Path,
        default=Path("runs"),
        help="where run folders go; 'records' keeps each run's config, metrics and command "
        "line in git, so a long study continues from any clone (records/README.md)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps of every run, for a quick try (into runs/<study>-steps<N>)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="CONFIG",
        help="run only this base config's runs this time, e.g. ring8 (repeatable); "
        "the report covers all",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write summary.json, results.md and figures from the runs done so far; run "
        "nothing (partial results of a long study, also while it runs)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the commands and check every arm's overrides (exit 2 if one is bad); "
        "run nothing",
    )
    args = parser.parse_args()

    study = find_study(args.study)
    try:
        outcome = run_study(
            study,
            seeds=args.seeds,
            backend=args.backend,
            workers=args.workers,
            address=args.address,
            runs_root=args.runs_root,
            steps=args.steps,
            dry_run=args.dry_run,
            only=args.only,
            population_size=args.population_size,
            report_only=args.report_only,
        )
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    if args.dry_run:
        print("\n".join(outcome.commands()))
        print(f"# {len(outcome.todo)} of {len(outcome.runs)} runs to do", file=sys.stderr)
        for line in outcome.bad_arms:
            print(f"bad arm: {line}", file=sys.stderr)
        return 2 if outcome.bad_arms else 0
    print(f"{outcome.folder}/results.md, summary.json, figures/")
    if args.report_only:
        done = len(outcome.runs) - len(outcome.todo)
        print(f"{done} of {len(outcome.runs)} runs done; nothing run", file=sys.stderr)
    if outcome.failed:
        print(f"{len(outcome.failed)} run(s) failed; see results.md", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
