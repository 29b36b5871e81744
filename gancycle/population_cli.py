"""``python -m gancycle.population_cli --plan PLAN.json``: a study's runs as populations.

The program a gancycle study names as its ``population`` (``scripts/study.py NAME --backend
population``; see :func:`common.study.backends.run_population`). Each run of the plan is a
``gancycle-train`` command line; the runs that can share a population (the same
:data:`~gancycle.population.SHARED` keys and device) train as populations of at most
``--population-size`` members (:func:`gancycle.population_runs.train_population`), the others
one by one as ``gancycle-train`` trains them. Every run writes its own run folder; a run cut off
(``--resume``) continues from its checkpoint. A population that fails is reported and the others
go on; the exit code is 1 if any run failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from common.cli import CliParser, run_cli
from common.config import ConfigError

__all__ = ["main", "read_plan"]

PROGRAM = "gancycle-train"


def read_plan(path: Path) -> list[list[str]]:
    """The runs' ``gancycle-train`` arguments (program words dropped) in ``--plan`` ``path``."""
    try:
        plan = json.loads(path.read_text())
        commands = [list(run["argv"]) for run in plan["runs"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--plan {path}: not a population plan ({e})") from None
    runs = []
    for argv in commands:
        if not argv or Path(argv[0]).name != PROGRAM:
            raise ConfigError(f"--plan {path}: run {argv[:1]}: only {PROGRAM} runs")
        runs.append(argv[1:])
    return runs


def _parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="python -m gancycle.population_cli", description=__doc__)
    parser.add_argument("--plan", type=Path, required=True, metavar="FILE", help="the runs")
    parser.add_argument("--population-size", type=int, default=64, help="most runs per population")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads for each population (default 0: the runs' own threads setting)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="resolve every run and how they pack into populations, print one line, train nothing",
    )
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.population_size < 1:
        raise ConfigError(f"--population-size {args.population_size}: must be >= 1")
    if args.threads < 0:
        raise ConfigError(f"--threads {args.threads}: must be >= 0 (0: the runs' own setting)")
    from gancycle.cli import resolve_train_command
    from gancycle.population_runs import pack_populations, train_population
    from gancycle.trainer import train

    runs = []
    for argv in read_plan(args.plan):
        try:
            runs.append(resolve_train_command(argv, check=args.check))
        except ConfigError as e:
            raise ConfigError(f"{_out(argv)}: {e}") from None
    groups, alone = pack_populations(
        [checked for checked, _, _ in runs],
        args.population_size,
        [str(Path(run_dir).parent) for _, run_dir, _ in runs],  # a study arm's seeds
    )
    if args.check:
        _check(runs, groups, alone)
        print(f"checked: {len(runs)} runs, {len(groups)} population(s), {len(alone)} alone")
        return 0
    failed = 0
    for group in [*groups, *([k] for k in alone)]:
        members = [runs[k] for k in group]
        names = ", ".join(str(run_dir) for _, run_dir, _ in members)
        print(f"training {len(group)} run(s): {names}", flush=True)
        try:
            if group[0] in alone:
                checked, run_dir, resume = members[0]
                train(checked, run_dir, resume=resume, progress=False)
            else:
                configs, run_dirs, resume = zip(*members, strict=True)
                train_population(configs, run_dirs, resume=resume, threads=args.threads)
        except Exception as e:  # one population failing does not stop the others
            traceback.print_exc()
            print(f"error: {names}: {e}", file=sys.stderr, flush=True)
            failed += len(group)
    return 1 if failed else 0


def _out(argv: Sequence[str]) -> str:
    """The run folder a command line names (its ``--out`` or ``--resume``), for messages."""
    for flag in ("--out", "--resume"):
        if flag in argv[:-1]:
            return argv[list(argv).index(flag) + 1]
    return " ".join(argv)


def _check(runs: Sequence[tuple], groups: list[list[int]], alone: list[int]) -> None:
    """What training would refuse before it starts: each population's members together
    (shared keys, offsets), and the runs trained alone as single runs."""
    from gancycle.population import check_members
    from gancycle.settings import check_single_run

    for group in groups:
        try:
            check_members([runs[k][0] for k in group])
        except ConfigError as e:
            raise ConfigError(f"{runs[group[0]][1]} and its population: {e}") from None
    for k in alone:
        try:
            check_single_run(runs[k][0].config)
        except ConfigError as e:
            raise ConfigError(f"{runs[k][1]}: {e}") from None


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The population program of gancycle studies (see the module docstring)."""
    run_cli(lambda: _main(argv))


if __name__ == "__main__":
    main()
