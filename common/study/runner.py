"""Run a study: plan its runs, skip the done ones, execute the rest, write the report.

``runs/<study>/`` ends up holding the run folders and

- ``summary.json``: scores, statistics and failed runs (see :func:`~common.study.summarize`);
- ``results.md``: a Markdown table per base config and metric;
- ``figures/iqm_<config>.png``: IQM and CI per arm and metric;
- ``figures/curve_<config>.png``: the study's curve (if it names one), mean ± s.e. per arm;
- ``figures/sweep_<config>.png``: the sweep (if the study has one), IQM and CI per point;
- ``figures/phase_<config>[_<k>].png``: the phase diagnostic (if the study asks for it), the
  k-th of its metrics from the second on.

Stopping a study and starting it again reruns only the runs that are not done, or whose
``config.toml`` their command no longer builds (:mod:`common.study.stale`); a failed run is
reported with its error and does not stop the others.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.runs import atomic_write, atomic_write_json
from common.study.backends import (
    BACKENDS,
    POPULATION_SIZE,
    check_workers,
    run_local,
    run_population,
    run_ray,
)
from common.study.figures import (
    curve_figure,
    iqm_figure,
    phase_figure,
    save_png,
    sweep_figure,
)
from common.study.progress import RunProgress
from common.study.report import read_curves, read_done_runs, results_markdown, summarize
from common.study.run import (
    RunResult,
    RunSpec,
    adopt_run,
    is_done,
    missing_metrics,
    names_another_command,
    plan_runs,
    resolve_command,
    set_aside,
    study_folder,
)
from common.study.spec import Study, StudyError
from common.study.stale import compare_configs

__all__ = ["StudyOutcome", "run_study", "write_report", "check_arms"]


@dataclass
class StudyOutcome:
    """What :func:`run_study` did.

    Attributes:
        folder: the study's folder, ``<runs_root>/<study>``.
        runs: every planned run.
        todo: the runs that were not done when the study started.
        results: the result of each run executed now, in the order they ended.
        summary: the content of ``summary.json`` (``None`` after a dry run).
        bad_arms: after a dry run, one line per (config, arm) whose config the command refused
            (see :func:`check_arms`).
        stale: the runs whose ``config.toml`` their command no longer builds
            (:func:`~common.study.stale.stale_runs`); set aside and in ``todo``.
        adopted: the runs started by another command line that builds the same config (a
            study file reworded): kept, their ``study_run.json`` naming the study's command
            line now and the first as ``argv_at_start`` (not written by a dry run).
    """

    folder: Path
    runs: list[RunSpec]
    todo: list[RunSpec]
    results: list[RunResult] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    bad_arms: list[str] = field(default_factory=list)
    stale: list[RunSpec] = field(default_factory=list)
    adopted: list[RunSpec] = field(default_factory=list)

    @property
    def failed(self) -> list[RunResult]:
        """The runs executed now that failed."""
        return [r for r in self.results if not r.ok]

    def commands(self) -> list[str]:
        """The command line of each run to do, quoted for a shell."""
        return [shlex.join(run.argv) for run in self.todo]


def _check_program(study: Study, key: str = "command") -> None:
    command = getattr(study, key)
    program = resolve_command(shlex.split(command))[0]
    if not Path(program).is_file():
        raise StudyError(
            f"{key} = {command!r}: {program!r} is neither on PATH nor beside "
            f"{Path(sys.executable).name}; install cyclelab (pip install -e .) or fix the study"
        )


def check_arms(
    runs: Sequence[RunSpec], cwd: str | Path = ".", population: str | None = None
) -> list[str]:
    """Check each (config, arm)'s overrides against the trainer's schema; the bad ones.

    The first run of each arm on each config runs with ``--check`` added (the trainer resolves
    and checks its config, prints one line and trains nothing), several at a time. With a
    ``population`` program (``--backend population``) that program checks each arm's runs
    together instead (``--plan <runs> --check``): it trains what a single run refuses (members
    that average) and knows what members must share. ``common`` knows no package's keys: the
    trainer itself is the judge.

    Returns:
        ``"<config>/<arm>: <the command's last line>"`` for each refused arm, in plan order.
    """
    arms: dict[tuple[str, str], list[RunSpec]] = {}
    for run in runs:
        arms.setdefault((run.label, run.arm), []).append(run)

    def command(group: list[RunSpec], scratch: Path) -> list[str]:
        if population is None:
            return resolve_command([*group[0].argv, "--check"])
        plan = scratch / f"{group[0].label}-{group[0].arm}.json"
        atomic_write_json({"runs": [{"argv": list(run.argv)} for run in group]}, plan)
        return resolve_command([*shlex.split(population), "--plan", str(plan.resolve()), "--check"])

    def check(group: list[RunSpec], scratch: Path) -> str | None:
        where = f"{group[0].label}/{group[0].arm}"
        argv = command(group, scratch)
        try:
            done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
        except OSError as e:
            return f"{where}: could not start {argv[0]!r}: {e.strerror or e}"
        if done.returncode == 0:
            return None
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
        return f"{where}: {lines[-1] if lines else f'exit code {done.returncode}'}"

    if not arms:
        return []
    with (
        tempfile.TemporaryDirectory() as scratch,
        ThreadPoolExecutor(max_workers=min(len(arms), os.cpu_count() or 1)) as pool,
    ):
        checks = pool.map(check, arms.values(), [Path(scratch)] * len(arms))
        return [line for line in checks if line]


def write_report(
    study: Study, runs: list[RunSpec], folder: str | Path, cwd: str | Path = "."
) -> dict[str, Any]:
    """Write ``summary.json``, ``results.md`` and the figures into ``folder``; return the summary.

    Arms with no done run are left out of the curve figures (``curve_<config>.png``, then
    ``curve_<config>_<k>.png`` for the curve's k-th further path); a config with no done run
    at all gets no figures.
    """
    folder = Path(cwd) / folder
    done = read_done_runs(runs, cwd)
    summary = summarize(study, runs, cwd, done=done)
    atomic_write_json(summary, folder / "summary.json")
    text = results_markdown(summary).encode()
    atomic_write(folder / "results.md", lambda f: f.write(text))
    finished = list(done.values())
    plotted = study.curve.ys if study.curve else ()
    curves = {y: read_curves(study.curve, finished, y) for y in plotted}
    for label, config in summary["configs"].items():
        if not any(arm["done"] for arm in config["arms"].values()):
            continue
        save_png(iqm_figure(summary, label), folder / "figures" / f"iqm_{label}.png")
        if "sweep" in summary:
            save_png(sweep_figure(summary, label), folder / "figures" / f"sweep_{label}.png")
        for k, (y, by_label) in enumerate(curves.items()):
            if by_label.get(label):
                title = f"{study.name}: {label}"
                fig = curve_figure(by_label[label], title, ylabel=y, xlabel=study.curve.x)
                name = f"curve_{label}" + (f"_{k}" if k else "")
                save_png(fig, folder / "figures" / f"{name}.png")
        for k, metric in enumerate(config.get("diagnostic", {})):
            name = f"phase_{label}" + (f"_{k}" if k else "")
            save_png(phase_figure(summary, label, metric), folder / "figures" / f"{name}.png")
    return summary


def _check_runs_root(path: Path, given: str | Path) -> None:
    """Refuse a runs folder that is a file, or lies under one (before anything is planned)."""
    if path.exists() and not path.is_dir():
        raise StudyError(f"--runs-root {given}: a file, not a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StudyError(f"--runs-root {given}: {parent} is a file")
            return


def run_study(
    study: Study,
    *,
    seeds: int | None = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    runs_root: str | Path = "runs",
    steps: int | None = None,
    dry_run: bool = False,
    progress: bool = True,
    cwd: str | Path = ".",
    only: Sequence[str] | None = None,
    population_size: int | None = None,
    report_only: bool = False,
) -> StudyOutcome:
    """Run every run of ``study`` that is not done yet, then write its report.

    Args:
        study: the study (:func:`~common.study.find_study`).
        seeds: runs per arm and config (default: the study's).
        backend: ``local`` (a pool of processes on this machine), ``ray`` (Ray tasks) or
            ``population`` (the study's ``population`` program trains the runs as batched
            populations in one process; see :func:`~common.study.backends.run_population`).
        workers: runs at a time with ``local`` (default: one per core).
        address: the Ray cluster to join with ``ray`` (default: start a local instance).
        runs_root: folder holding the study's folder.
        steps: ``--steps`` for every run, for a quick try; such runs go to
            ``<runs_root>/<study>-steps<N>``.
        dry_run: plan only: the outcome lists the runs to do and their commands, and the arms
            whose overrides the trainer refuses (:func:`check_arms`).
        progress: report finished runs on stderr: a bar on a terminal, a line per run off one
            (:class:`~common.study.progress.RunProgress`).
        cwd: working directory of the runs (relative paths start here).
        only: run only these base configs (by label, e.g. ``ring8``) this time; the report
            still covers every config, the others as far as their runs are done.
        population_size: most runs per population with ``population`` (default 64).
        report_only: write the report of the runs done so far and run nothing (a long study's
            partial results, also while it runs elsewhere); ``todo`` lists the runs not done.

    Raises:
        StudyError: a bad option (the message names it) or a program that cannot be found.
    """
    if backend not in BACKENDS:
        raise StudyError(f"--backend {backend!r}: must be one of {' | '.join(BACKENDS)}")
    if backend != "local" and workers is not None:
        raise StudyError(f"--workers: only for --backend local, not {backend}")
    if backend != "ray" and address is not None:
        raise StudyError("--address: only for --backend ray")
    if backend != "population" and population_size is not None:
        raise StudyError("--population-size: only for --backend population")
    if backend == "population" and not study.population:
        raise StudyError(
            f"--backend population: study {study.name} names no population program; add e.g. "
            'population = "python -m gancycle.population_cli" to its file'
        )
    if report_only and dry_run:
        raise StudyError("--report-only: not with --dry-run (one writes the report, one plans)")
    check_workers(workers)  # here too, so that a dry run refuses what the run would
    _check_runs_root(Path(cwd) / runs_root, runs_root)
    runs = plan_runs(study, runs_root, seeds, steps)
    folder = study_folder(study, runs_root, steps)
    if report_only:
        todo = [run for run in runs if not is_done(run, cwd)]
        summary = write_report(study, runs, folder, cwd)
        return StudyOutcome(folder=folder, runs=runs, todo=todo, summary=summary)
    if only:
        labels = sorted({run.label for run in runs})
        for name in only:
            if name not in labels:
                raise StudyError(
                    f"--only {name!r}: not a config of {study.name}; configs: {', '.join(labels)}"
                )
    mine = [run for run in runs if not only or run.label in only]
    same_config = compare_configs(mine, cwd)
    stale = [run for run in mine if same_config.get(run) is False]
    adopted = [run for run in mine if same_config.get(run) and names_another_command(run, cwd)]

    def done(run: RunSpec) -> bool:
        if run in adopted:  # done under its first command line
            return not missing_metrics(Path(cwd) / run.dir, run.metrics)
        return is_done(run, cwd)

    todo = [run for run in mine if run in stale or not done(run)]
    outcome = StudyOutcome(folder=folder, runs=runs, todo=todo, stale=stale, adopted=adopted)
    if adopted and not dry_run:
        for run in adopted:
            adopt_run(run, cwd)
        print(
            f"{len(adopted)} run(s) started by another command line that builds the same config "
            f"(the study file reworded), e.g. {adopted[0].name}: kept; study_run.json names "
            "this command line, the first as argv_at_start",
            file=sys.stderr,
        )
    if stale and not dry_run:
        for run in stale:
            set_aside(Path(cwd) / run.dir)
        print(
            f"{len(stale)} run(s) hold a config.toml that their command no longer builds (a "
            f"base config changed), e.g. {stale[0].name}: set aside as <folder>.replaced-<time> "
            "and run again",
            file=sys.stderr,
        )
    if dry_run:
        _check_program(study)
        program = study.population if backend == "population" else None
        outcome.bad_arms = check_arms(runs, cwd, program)
        return outcome
    if todo and backend == "local":
        _check_program(study)
    if todo and backend == "population":
        _check_program(study, "population")

    if backend == "local":
        execute = run_local(todo, cwd, workers)
    elif backend == "ray":
        execute = run_ray(todo, cwd, address)
    else:
        size = POPULATION_SIZE if population_size is None else population_size
        execute = run_population(todo, study.population, folder, cwd, size)
    done = len(runs) - len(todo)
    with RunProgress(study.name, len(runs), done, progress) as report:
        for result in execute:
            outcome.results.append(result)
            report.update(result)
    outcome.summary = write_report(study, runs, folder, cwd)
    return outcome
