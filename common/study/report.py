"""What a study found: scores read back from the run folders, statistics, ``results.md``.

Everything here is computed from the run folders on disk, so a report can be rebuilt at any
time by starting the study again (complete runs are skipped). Per base config, arm and metric
the summary holds the per-seed scores, the mean with its standard error, the interquartile
mean (IQM) with a stratified-bootstrap confidence interval and, for every arm but the baseline,
the probability of improvement over the baseline with its interval (see :mod:`common.stats`).
For a lower-is-better metric, improvement means a lower score.

Only finite numbers count as scores; a run that failed, or wrote ``null`` or NaN for a metric,
is left out of that metric's statistics, and ``n`` says how many scores remain.

A run resumed from a checkpoint (``final.resumes`` in its ``metrics.json``: how many times) may
not end exactly as an uninterrupted run of its seed would, so the summary counts resumed runs
per arm and lists them, and ``results.md`` marks them, for matched-seed comparisons. Likewise a
study that runs over several sittings may run its seeds with different code: the summary counts
the done runs of each code version (:func:`read_code_versions`) and ``results.md`` names them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.config import ConfigError, read_config
from common.phase_diagnostic import phase_diagnostic
from common.schedules import Schedule, build_schedules, from_spec
from common.stats import (
    bootstrap_ci,
    iqm,
    mean_se,
    probability_of_improvement,
    probability_of_improvement_ci,
)
from common.study.run import DoneRun, RunSpec, get_path, read_done
from common.study.spec import Area, Curve, Reach, Study, StudyError, config_label

__all__ = [
    "score",
    "series",
    "metric_value",
    "read_done_runs",
    "read_scores",
    "read_unfinished",
    "resume_count",
    "read_resumes",
    "read_code_versions",
    "read_backends",
    "read_rescored",
    "read_curves",
    "run_clock",
    "read_diagnostic",
    "summarize",
    "diagnostic_markdown",
    "sweep_markdown",
    "results_markdown",
    "compare_arms",
    "comparison_markdown",
]


def score(value: Any) -> float | None:
    """A metric value as a score: a finite number (``true`` = 1), else ``None``."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def series(entries: Any, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of a list of entries, sorted by step.

    Entries lacking the step or the value, or with a non-finite one, are skipped.
    """
    points = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            step, value = score(get_path(entry, x)), score(get_path(entry, y))
        except KeyError:
            continue
        if step is not None and value is not None:
            points.append((step, value))
    if not points:
        return np.empty(0), np.empty(0)
    steps, values = np.array(sorted(points)).T
    return steps, values


def metric_value(study: Study, metrics: Any, spec: str | Reach | Area) -> float | None:
    """The score of a metric (its path, a :class:`~common.study.spec.Reach` or an
    :class:`~common.study.spec.Area`) in a run's ``metrics.json`` content; ``None`` if it holds
    no finite number there.

    A reach metric is the first step of the study's curve at which its value reaches the
    level, or the curve's last step if it never does. An area metric is the trapezoid area
    under the curve between its first and last step, divided by their distance.

    Raises:
        KeyError: the path (or the curve) is not in ``metrics``.
    """
    if isinstance(spec, str):
        return score(get_path(metrics, spec))
    assert study.curve is not None  # parse_study guarantees it
    steps, values = series(get_path(metrics, study.curve.key), study.curve.x, spec.y)
    if steps.size == 0:
        return None
    if isinstance(spec, Area):
        if steps.size == 1:
            return float(values[0])
        area = np.sum(np.diff(steps) * (values[1:] + values[:-1]) / 2)
        return float(area / (steps[-1] - steps[0]))
    hits = np.flatnonzero(values >= spec.at_least)
    return float(steps[hits[0]] if hits.size else steps[-1])


def read_done_runs(runs: Sequence[RunSpec], cwd: str | Path = ".") -> dict[RunSpec, DoneRun]:
    """The done runs among ``runs`` with their records, each run folder read once."""
    found = {run: read_done(run, cwd) for run in runs}
    return {run: done for run, done in found.items() if done is not None}


def read_scores(
    study: Study, done: Sequence[DoneRun]
) -> dict[tuple[str, str, int], dict[str, float | None]]:
    """Each done run's scores: ``{(config label, arm or view, seed): {metric: score or None}}``
    (a view's metric that is missing from a run is ``None``)."""
    scores: dict[tuple[str, str, int], dict[str, float | None]] = {}
    for run, metrics in ((d.run, d.metrics) for d in done):
        scores[run.label, run.arm, run.seed] = {
            name: metric_value(study, metrics, spec) for name, spec in study.metrics.items()
        }
        for view_name, view in study.views.items():
            if view.arm == run.arm:
                scores[run.label, view_name, run.seed] = {
                    name: _view_value(study, metrics, view.metrics.get(name, spec))
                    for name, spec in study.metrics.items()
                }
    return scores


def read_unfinished(
    runs: Sequence[RunSpec], cwd: str | Path = "."
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Of runs that are not done, a record of each failed one (``{"config", "arm", "seed",
    "dir", "error"}``: those with an ``error.txt``) and of each not run yet (the same without
    ``error``)."""
    failed, pending = [], []
    for run in runs:
        entry = {"config": run.label, "arm": run.arm, "seed": run.seed, "dir": run.dir}
        try:
            error = (Path(cwd) / run.dir / "error.txt").read_text().strip()
        except OSError:
            pending.append(entry)
            continue
        failed.append({**entry, "error": error})
    return failed, pending


def _view_value(study: Study, metrics: Any, spec: str | Reach | Area | None) -> float | None:
    if spec is None:  # the view has no reading of this metric
        return None
    try:
        return metric_value(study, metrics, spec)
    except KeyError:
        return None


def resume_count(metrics: Any) -> int:
    """How many times a run was resumed: ``final.resumes`` in its metrics (missing: 0)."""
    try:
        value = get_path(metrics, "final.resumes")
    except KeyError:
        return 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def read_resumes(done: Sequence[DoneRun]) -> dict[tuple[str, str, int], int]:
    """How many times each done run was resumed: ``{(config label, arm, seed): count}``."""
    return {(d.run.label, d.run.arm, d.run.seed): resume_count(d.metrics) for d in done}


def read_backends(done: Sequence[DoneRun]) -> dict[str, int]:
    """How many done runs each backend ran (``backend`` in ``study_run.json``), most first,
    then by name; runs from before it was recorded count as ``not recorded``."""
    counts = Counter(str(d.record.get("backend", "not recorded")) for d in done)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def read_rescored(done: Sequence[DoneRun]) -> list[dict[str, Any]]:
    """The done runs that had metrics added after training (``final.rescored.added`` in their
    metrics, e.g. by ``gancycle-eval --record``), grouped by what was added:
    ``[{"added": [metric paths], "runs": [run names]}]``, most runs first."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for d in done:
        try:
            added = get_path(d.metrics, "final.rescored.added")
        except (KeyError, IndexError, TypeError):
            continue
        if isinstance(added, list) and added:
            groups.setdefault(tuple(map(str, added)), []).append(d.run.name)
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    return [{"added": list(added), "runs": names} for added, names in ordered]


def read_code_versions(done: Sequence[DoneRun]) -> list[dict[str, Any]]:
    """The code the done runs ran (their ``study_run.json``'s ``code``), most runs first:
    ``[{"commit", "py_changed", "commit_at_start", "runs": [run names]}]``; ``commit`` is
    ``None`` for runs that recorded none (outside git, or before studies recorded it), and
    ``commit_at_start`` names the other code a resumed run started with (else ``None``)."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for d in done:
        code, start = d.record.get("code") or {}, d.record.get("code_at_start") or {}
        key = (code.get("commit"), bool(code.get("py_changed")), start.get("commit"))
        groups.setdefault(key, []).append(d.run.name)
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    return [
        {"commit": commit, "py_changed": changed, "commit_at_start": start, "runs": names}
        for (commit, changed, start), names in ordered
    ]


def read_curves(
    curve: Curve, done: Sequence[DoneRun], y: str | None = None
) -> dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]]:
    """The time series of every done run: ``{config label: {arm: [(steps, values), ...]}}``.

    ``y`` is the path plotted (default: the curve's ``y``). A run with no usable entry (see
    :func:`series`) adds no series.
    """
    curves: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {}
    for d in done:
        try:
            entries = get_path(d.metrics, curve.key)
        except KeyError:
            continue
        steps, values = series(entries, curve.x, curve.y if y is None else y)
        if steps.size:
            curves.setdefault(d.run.label, {}).setdefault(d.run.arm, []).append((steps, values))
    return curves


def run_clock(config: dict[str, Any], dotted: str) -> Schedule:
    """The schedule at ``dotted`` in a run's config (``lr.G``, or rlcycle's ``lr``), built.

    A follow table (``lr.D`` following ``G``) is built with the table of schedules it sits in,
    so its clock resolves.

    Raises:
        ConfigError: nothing at ``dotted``, or not a schedule; the message names the path.
    """
    try:
        spec = get_path(config, dotted)
        if isinstance(spec, dict) and "follow" in spec and "." in dotted:
            table, name = dotted.rsplit(".", 1)
            return build_schedules(get_path(config, table), table)[name]
        return from_spec(spec, dotted)
    except KeyError:
        raise ConfigError(f"diagnostic.clock = {dotted!r}: not in the run's config") from None
    except ValueError as e:
        raise ConfigError(f"diagnostic.clock = {dotted!r}: not a schedule ({e})") from None


def read_diagnostic(
    study: Study, done: Sequence[DoneRun], cwd: str | Path = ".", **bootstrap: Any
) -> dict[str, dict[str, dict[str, Any]]]:
    """The phase diagnostic per base config, metric and arm (:mod:`common.phase_diagnostic`).

    Each done run's curve and its own clock (from its ``config.toml`` under ``cwd``); ``bootstrap``
    takes ``reps``, ``level`` and ``seed``.

    Returns:
        ``{config label: {metric path: {arm: phase_diagnostic(...)}}}`` (empty without one).
    """
    diagnostic, curve = study.diagnostic, study.curve
    if diagnostic is None or curve is None:
        return {}
    found: dict[str, dict[str, dict[str, list]]] = {}
    for run, metrics in ((d.run, d.metrics) for d in done):
        try:
            entries = get_path(metrics, curve.key)
        except KeyError:
            continue
        clock = run_clock(read_config(Path(cwd) / run.dir / "config.toml"), diagnostic.clock)
        for metric in diagnostic.metrics:
            steps, values = series(entries, curve.x, metric)
            by_arm = found.setdefault(run.label, {}).setdefault(metric, {})
            by_arm.setdefault(run.arm, []).append((steps, values, clock))
    return {
        label: {
            metric: {
                arm: phase_diagnostic(
                    arms[arm], diagnostic.bins, skip_cycles=diagnostic.skip_cycles, **bootstrap
                )
                for arm in study.arms
                if arm in arms
            }
            for metric, arms in metrics.items()
        }
        for label, metrics in found.items()
    }


def _interval(pair: tuple[float, float]) -> list[float]:
    return [pair[0], pair[1]]


def _metric_stats(
    per_seed: list[float | None],
    baseline: list[float | None] | None,
    higher: bool,
    bootstrap: dict[str, Any],
) -> dict[str, Any]:
    """Statistics of one arm's scores on one metric (``None`` where there are no scores).

    ``per_seed`` holds the arm's score of each of the study's seeds (``None``: not done),
    ``baseline`` the baseline arm's the same way, or ``None`` for the baseline arm itself
    (which gets no probability of improvement).
    """
    values = [v for v in per_seed if v is not None]
    out: dict[str, Any] = {"n": len(values), "mean": None, "se": None, "iqm": None}
    out["iqm_ci"] = None
    if baseline is not None:
        out["poi"], out["poi_ci"], out["poi_n"] = None, None, 0
    if values:
        out["mean"], out["se"] = mean_se(values)
        out["iqm"] = iqm(values)
        out["iqm_ci"] = _interval(bootstrap_ci(values, iqm, **bootstrap))
    if values and baseline is not None:
        out["poi_n"], out["poi"], out["poi_ci"] = _improvement(
            per_seed, baseline, higher, bootstrap
        )
    return out


def _improvement(
    per_seed: list[float | None],
    other: list[float | None],
    higher: bool,
    bootstrap: dict[str, Any],
) -> tuple[int, float | None, list[float] | None]:
    """P(a run of one arm beats a run of the other) and its bootstrap interval.

    ``per_seed`` and ``other`` hold the two arms' scores seed by seed (``None``: not done).
    Only the seeds both arms have count: a seed's runs share their initialisation and data
    across arms, so a partly done study compares like with like. Returns the number of seeds
    compared, P and its interval (``None`` for no shared seed).
    """
    shared = [(a, b) for a, b in zip(per_seed, other, strict=True) if None not in (a, b)]
    if not shared:
        return 0, None, None
    sign = 1.0 if higher else -1.0
    x, y = sign * np.asarray(shared, dtype=float).T
    return (
        len(shared),
        probability_of_improvement(x, y),
        _interval(probability_of_improvement_ci(x, y, **bootstrap)),
    )


def _finite_or_none(obj: Any) -> Any:
    """NaN and infinities as ``None`` (JSON has no NaN), recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return obj


def summarize(
    study: Study,
    runs: Sequence[RunSpec],
    cwd: str | Path = ".",
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    done: dict[RunSpec, DoneRun] | None = None,
) -> dict[str, Any]:
    """The study's ``summary.json`` content, from the run folders.

    Args:
        study: the study.
        runs: its planned runs (:func:`~common.study.run.plan_runs`).
        cwd: the working directory the run folders are relative to.
        reps, level, seed: the bootstrap's replicates, coverage in (0, 1) and seed.
        done: the done runs if already read (:func:`read_done_runs`), else read here.

    Returns:
        ``{"study", "description", "command", "baseline", "seeds", "metrics", "views", "bootstrap",
        "runs", "done", "configs": {label: {"config", "arms": {arm: {["view_of",] "runs",
        "done", "resumes", "resumed", "metrics": {metric: {"seeds", "scores", "n", "mean", "se",
        "iqm", "iqm_ci" [, "poi", "poi_ci", "poi_n"]}}}}}}, "failed": [...], "pending": [...],
        "resumed": [...]}``; views are listed among the arms, with ``view_of`` naming their
        arm; ``poi`` is absent for the baseline, ``poi_n`` the seeds it compares. ``resumes`` is
        each seed's resume count (0 for a run not done), ``resumed`` how many of the arm's runs
        were resumed; the top-level ``resumed`` lists those runs (``{"config", "arm", "seed",
        "dir", "resumes"}``), and ``code`` the done runs' code versions
        (:func:`read_code_versions`). A study with a sweep adds ``"sweep": {"x", "points":
        {arm: value}}``. A study with a diagnostic adds ``"diagnostic": {"metrics", "clock",
        "bins", "skip_cycles"}`` and, per config with done runs, ``"diagnostic": {metric
        path: {arm: ...}}`` (:func:`read_diagnostic`).
    """
    done = read_done_runs(runs, cwd) if done is None else done
    finished = list(done.values())
    scores = read_scores(study, finished)
    failed, pending = read_unfinished([run for run in runs if run not in done], cwd)
    resumes = read_resumes(finished)
    bootstrap = {"reps": reps, "level": level, "seed": seed}
    seeds = sorted({run.seed for run in runs})
    configs: dict[str, Any] = {}
    for config in study.configs:
        label = config_label(config)
        table: dict[str, Any] = {}
        rows = [*study.arms, *study.views]
        for arm in [study.baseline, *(a for a in rows if a != study.baseline)]:
            done = [s for s in seeds if (label, arm, s) in scores]
            runs_of = study.views[arm].arm if arm in study.views else arm
            counts = [resumes.get((label, runs_of, s), 0) for s in seeds]
            entry: dict[str, Any] = {
                "runs": len(seeds),
                "done": len(done),
                "resumes": counts,
                "resumed": sum(1 for n in counts if n),
                "metrics": {},
            }
            if arm in study.views:
                entry = {"view_of": study.views[arm].arm, **entry}
            for metric in study.metrics:
                per_seed = [scores.get((label, arm, s), {}).get(metric) for s in seeds]
                base = None
                if arm != study.baseline:
                    base = table[study.baseline]["metrics"][metric]["scores"]
                stats = _metric_stats(per_seed, base, study.higher_is_better[metric], bootstrap)
                entry["metrics"][metric] = {"seeds": seeds, "scores": per_seed, **stats}
            table[arm] = entry
        configs[label] = {"config": config, "arms": {a: table[a] for a in rows}}
    extra: dict[str, Any] = {}
    if study.sweep is not None:
        extra["sweep"] = {"x": study.sweep.x, "points": dict(study.sweep.points)}
    if study.diagnostic is not None:
        d = study.diagnostic
        extra["diagnostic"] = {
            "metrics": list(d.metrics),
            "clock": d.clock,
            "bins": d.bins,
            "skip_cycles": d.skip_cycles,
        }
        try:  # a clock the runs lack must not cost the rest of the report
            for label, by_metric in read_diagnostic(study, finished, cwd, **bootstrap).items():
                configs[label]["diagnostic"] = by_metric
        except ConfigError as e:
            extra["diagnostic"]["error"] = str(e)
    return _finite_or_none(
        {
            "study": study.name,
            "description": study.description,
            "command": study.command,
            "baseline": study.baseline,
            "seeds": seeds,
            "metrics": {
                m: {"path": str(p), "higher_is_better": study.higher_is_better[m]}
                for m, p in study.metrics.items()
            },
            "views": {
                v: {
                    "arm": view.arm,
                    "metrics": {m: None if p is None else str(p) for m, p in view.metrics.items()},
                    **({"reading": view.reading} if view.reading else {}),
                }
                for v, view in study.views.items()
            },
            "bootstrap": bootstrap,
            "runs": len(runs),
            "done": len(runs) - len(failed) - len(pending),
            "configs": configs,
            "failed": failed,
            "pending": pending,
            "resumed": [
                {
                    "config": run.label,
                    "arm": run.arm,
                    "seed": run.seed,
                    "dir": run.dir,
                    "resumes": resumes[run.label, run.arm, run.seed],
                }
                for run in runs
                if resumes.get((run.label, run.arm, run.seed))
            ],
            "code": read_code_versions(finished),
            "backends": read_backends(finished),
            "rescored": read_rescored(finished),
            **extra,
        }
    )


def _fmt(x: float | None) -> str:
    """A number for a table: thousands separated from 10 000 on, else 3 significant digits."""
    if x is None:
        return "—"
    if abs(x) >= 10_000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}"


def _ci(pair: list[float] | None) -> str:
    return "" if pair is None else f" [{_fmt(pair[0])}, {_fmt(pair[1])}]"


def _probability(p: float | None, ci: list[float] | None) -> str:
    if p is None:
        return "—"
    return f"{p:.2f}" + ("" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]")


def _seeds(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}–{seeds[-1]}"


def _code_name(version: dict[str, Any]) -> str:
    """``abc1234``, ``abc1234 with uncommitted .py changes``, ``not recorded``; with
    ``(started at def5678)`` for a run resumed with other code than it started with."""
    if version["commit"] is None:
        name = "not recorded"
    else:
        name = f"`{version['commit'][:7]}`"
        if version["py_changed"]:
            name += " with uncommitted .py changes"
    if version.get("commit_at_start"):
        name += f" (started at `{version['commit_at_start'][:7]}`)"
    return name


def _code_line(versions: list[dict[str, Any]]) -> str:
    """The code the done runs ran, in one sentence."""
    if len(versions) == 1 and versions[0]["commit"] is None:
        return "Code: not recorded by the done runs (they ran before studies recorded it)."
    if len(versions) == 1:
        return f"Code: every done run ran commit {_code_name(versions[0])}."
    counts = ", ".join(f"{_code_name(v)} ({len(v['runs'])})" for v in versions)
    commits = [v["commit"][:7] for v in versions if v["commit"]]
    diff = (
        f"; `git diff {commits[0]} {commits[1]} -- '*.py'` shows what changed"
        if len(commits) >= 2
        else ""
    )
    return (
        f"Code: the done runs ran {len(versions)} versions of the code, runs per version "
        f"{counts} (listed under Code versions{diff})."
    )


def _run_list(names: list[str]) -> str:
    """``grid25/gan seeds 0–2, 5; grid25/pacgan4 seed 0`` from run names."""
    seeds: dict[str, list[int]] = {}
    for name in names:
        group, seed = name.rsplit("/seed", 1)
        seeds.setdefault(group, []).append(int(seed))
    parts = []
    for group, numbers in seeds.items():
        numbers.sort()
        ranges, start = [], numbers[0]
        for previous, current in zip(numbers, [*numbers[1:], None], strict=True):
            if current != previous + 1:
                ranges.append(f"{start}" if start == previous else f"{start}–{previous}")
                start = current
        word = "seed" if len(numbers) == 1 else "seeds"
        parts.append(f"{group} {word} {', '.join(ranges)}")
    return "; ".join(parts)


def _readings(views: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The summary's readings: reading -> arm -> the name of the view that reads the arm so."""
    readings: dict[str, dict[str, str]] = {}
    for name, view in views.items():
        if "reading" in view:
            readings.setdefault(view["reading"], {})[view["arm"]] = name
    return readings


def _metric_table(
    summary: dict[str, Any],
    config: dict[str, Any],
    metric: str,
    readings: dict[str, dict[str, str]],
) -> list[str]:
    """One metric's table for one base config: a row per arm and per view of its own; each
    reading (:func:`_readings`) is a pair of columns beside its arm's row."""
    baseline, info = summary["baseline"], summary["metrics"][metric]
    level = round(100 * summary["bootstrap"]["level"])
    better = "higher" if info["higher_is_better"] else "lower"
    header = (
        f"| arm | n | mean ± s.e. | IQM [{level}% CI] | P(improve over {baseline}) [{level}% CI] |"
    )
    rule = "|---|---:|---:|---:|---:|"
    for reading in readings:
        header += f" {reading}: IQM [{level}% CI] | {reading}: P(improve) |"
        rule += "---:|---:|"
    lines = [f"### {metric} ({better} is better; `{info['path']}`)", "", header, rule]

    def probability(arm: str, part: dict[str, Any]) -> str:
        return "—" if arm == baseline else _probability(part["poi"], part["poi_ci"])

    read_as = {name for rows in readings.values() for name in rows.values()}
    for arm, entry in config["arms"].items():
        if arm in read_as:
            continue
        s = entry["metrics"][metric]
        mean = f"{_fmt(s['mean'])} ± {_fmt(s['se'])}" if s["n"] else "—"
        row = (
            f"| {_row_name(arm, entry, baseline)} | {s['n']} | {mean} | "
            f"{_fmt(s['iqm'])}{_ci(s['iqm_ci'])} | {probability(arm, s)} |"
        )
        for rows in readings.values():
            if arm in rows:
                r = config["arms"][rows[arm]]["metrics"][metric]
                row += f" {_fmt(r['iqm'])}{_ci(r['iqm_ci'])} | {probability(rows[arm], r)} |"
            else:
                row += " | |"
        lines.append(row)
    return [*lines, ""]


def _row_name(arm: str, entry: dict[str, Any], baseline: str) -> str:
    """``fast``, ``slow (baseline)``, ``early (fast's runs)``; with ``N resumed`` if any."""
    notes = []
    if arm == baseline:
        notes.append("baseline")
    if "view_of" in entry:
        notes.append(f"{entry['view_of']}'s runs")
    if entry.get("resumed"):
        notes.append(f"{entry['resumed']} resumed")
    return f"{arm} ({'; '.join(notes)})" if notes else arm


def _mean_ci_cell(part: dict[str, Any]) -> str:
    return "—" if part["mean"] is None else f"{_fmt(part['mean'])}{_ci(part['ci'])}"


def sweep_markdown(summary: dict[str, Any], label: str) -> list[str]:
    """The sweep's section of ``results.md`` for base config ``label`` (lines): each point's
    arm and every metric's IQM with its CI, in the order of the knob's values."""
    sweep = summary.get("sweep")
    if sweep is None:
        return []
    level = round(100 * summary["bootstrap"]["level"])
    arms = summary["configs"][label]["arms"]
    metrics = list(summary["metrics"])
    lines = [
        f"### Sweep: {sweep['x']}",
        "",
        f"| {sweep['x']} | arm | n | "
        + " | ".join(f"{m} IQM [{level}% CI]" for m in metrics)
        + " |",
        "|---:|---|---:|" + "---:|" * len(metrics),
    ]
    for arm, x in sweep["points"].items():
        stats = arms[arm]["metrics"]
        n = stats[metrics[0]]["n"]
        cells = " | ".join(f"{_fmt(stats[m]['iqm'])}{_ci(stats[m]['iqm_ci'])}" for m in metrics)
        lines.append(f"| {x:g} | {arm} | {n} | {cells} |")
    return [*lines, ""]


def _skipped(cycles: int) -> str:
    if not cycles:
        return ""
    first = "first cycle" if cycles == 1 else f"first {cycles} cycles"
    return (
        f" The clock's {first} (a run learning from scratch) left out: counting starts at the "
        "evaluation at its end; a run without later evaluations is left out (n)."
    )


def diagnostic_markdown(summary: dict[str, Any], label: str) -> list[str]:
    """The diagnostic's section of ``results.md`` for base config ``label`` (lines)."""
    info, config = summary.get("diagnostic"), summary["configs"][label]
    if info is None:
        return []
    level = round(100 * summary["bootstrap"]["level"])
    if "error" in info:
        return ["### Where in the cycle", "", f"Not computed: {info['error']}", ""]
    lines = []
    for metric, arms in config.get("diagnostic", {}).items():
        bins = info["bins"]
        heads = [f"{k / bins:g}–{(k + 1) / bins:g}" for k in range(bins)]
        lines += [
            f"### Where in the cycle: `{metric}` on `{info['clock']}`",
            "",
            "Each change of the metric between evaluations, attributed to the phase of the "
            f"run's clock: the high-rate half (level ≥ 0.5) against the low-rate half, and "
            f"{bins} bins of the cycle's position (0 = the restart). Per run the total change "
            f"in each part; mean over seeds [{level}% CI]. An interval spanning several parts "
            "is split pro rata by steps; *split*: the largest share, over the bins, of a bin's "
            f"steps attributed so.{_skipped(info.get('skip_cycles', 0))}",
            "",
            f"| arm | n | high | low | high − low | {' | '.join(heads)} | split |",
            "|---|---:|---:|---:|---:|" + "---:|" * bins + "---:|",
        ]
        for arm, out in arms.items():
            cells = [_mean_ci_cell(out[part]) for part in ("high", "low", "high_minus_low")]
            cells += [_mean_ci_cell(b) for b in out["bins"]]
            shares = [b["split"] for b in out["bins"] if b["split"] is not None]
            split = f"{max(shares):.0%}" if shares else "—"
            lines.append(f"| {arm} | {out['runs']} | {' | '.join(cells)} | {split} |")
        lines.append("")
    return lines


def _views_markdown(
    views: dict[str, dict[str, Any]], readings: dict[str, dict[str, str]]
) -> list[str]:
    """One paragraph per view of its own, and one per reading (a view of every arm alike)."""

    def reads(metrics: dict[str, str | None]) -> str:
        paths = ", ".join(f"{m} at `{p}`" for m, p in metrics.items() if p is not None)
        unread = [m for m, p in metrics.items() if p is None]
        return paths + (f"; no reading of {', '.join(unread)}" if unread else "")

    lines: list[str] = []
    for name, view in views.items():
        if "reading" in view:
            continue
        lines += [
            f"View `{name}`: the runs of `{view['arm']}`, reading {reads(view['metrics'])}.",
            "",
        ]
    for reading, by_arm in readings.items():
        first = views[next(iter(by_arm.values()))]
        lines += [
            f"Reading `{reading}`: every arm's runs read again, in the columns `{reading}:` "
            f"(`<arm>_{reading}` in summary.json): {reads(first['metrics'])}.",
            "",
        ]
    return lines


def results_markdown(summary: dict[str, Any]) -> str:
    """``results.md``: per base config, one table per metric, then the failed runs."""
    baseline = summary["baseline"]
    level = round(100 * summary["bootstrap"]["level"])
    lines = [f"# Study `{summary['study']}`", ""]
    if summary["description"]:
        lines += [summary["description"], ""]
    resumed = summary.get("resumed", [])
    also = f" ({len(resumed)} resumed from a checkpoint)" if resumed else ""
    lines += [
        f"{summary['done']} of {summary['runs']} runs done{also}, "
        f"{_seeds(summary['seeds'])} per arm. "
        "IQM: interquartile mean; "
        f"{level}% CIs from {summary['bootstrap']['reps']} stratified-bootstrap replicates. "
        f"P(improve): how often a run of the arm beats a run of the baseline `{baseline}` "
        "(ties count half; 0.5 = no difference), on the seeds both have done.",
        "",
    ]
    versions = summary.get("code", [])
    if versions:
        lines += [_code_line(versions), ""]
    backends = summary.get("backends", {})
    if len(backends) > 1:
        counts = ", ".join(f"{name} ({n})" for name, n in backends.items())
        lines += [
            f"Backends: {counts}; a population member matches its single run only to rounding.",
            "",
        ]
    readings = _readings(summary["views"])
    lines += _views_markdown(summary["views"], readings)
    for label, config in summary["configs"].items():
        lines += [f"## {label}", ""]
        if not any(arm["done"] for arm in config["arms"].values()):
            lines += ["No run done yet.", ""]
            continue
        for metric in summary["metrics"]:
            lines += _metric_table(summary, config, metric, readings)
        lines += sweep_markdown(summary, label)
        lines += diagnostic_markdown(summary, label)
    if summary.get("pending"):
        by_config = Counter(run["config"] for run in summary["pending"])
        counts = ", ".join(f"{n} of {config}" for config, n in by_config.items())
        lines += [f"## Not run yet ({len(summary['pending'])})", "", f"{counts}.", ""]
    if resumed:
        lines += [
            f"## Resumed runs ({len(resumed)})",
            "",
            "Resumed from a checkpoint after an interruption; such a run may not end exactly "
            "as an uninterrupted run of its seed would.",
            "",
        ]
        for r in resumed:
            times = "once" if r["resumes"] == 1 else f"{r['resumes']} times"
            lines.append(f"- `{r['dir']}`: seed {r['seed']}, resumed {times}")
        lines.append("")
    rescored = summary.get("rescored", [])
    if rescored:
        count = sum(len(group["runs"]) for group in rescored)
        lines += [
            f"## Metrics added after training ({count} runs)",
            "",
            "Scored again from the run's last checkpoint, once the metrics it held came out "
            "the same (`final.rescored` in its metrics.json says when and with which code):",
            "",
        ]
        for group in rescored:
            lines.append(f"- {', '.join(group['added'])}: {_run_list(group['runs'])}")
        lines.append("")
    if len(versions) > 1:
        lines += ["## Code versions", ""]
        for version in versions:
            lines.append(f"- {_code_name(version)}: {_run_list(version['runs'])}")
        lines.append("")
    if summary["failed"]:
        lines += [f"## Failed runs ({len(summary['failed'])})", ""]
        for f in summary["failed"]:
            last = f["error"].splitlines()[-1] if f["error"] else "no error recorded"
            lines.append(f"- `{f['dir']}`: {last}")
        lines.append("")
    return "\n".join(lines)


def read_summary(path: str | Path) -> dict[str, Any]:
    """A study's ``summary.json``, checked to hold what :func:`compare_arms` reads.

    Raises:
        FileNotFoundError: no readable JSON at ``path``.
        StudyError: JSON, but not a study's summary (the message names the path and what lacks).
    """
    path = Path(path)
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{path}: not a readable summary.json ({e})") from None

    def wrong(why: str) -> StudyError:
        return StudyError(f"{path}: not a study's summary.json ({why})")

    if not isinstance(summary, dict):
        raise wrong(f"a {type(summary).__name__}, not an object")
    for key in ("study", "bootstrap", "metrics", "configs"):
        if key not in summary:
            raise wrong(f"no {key!r}")
    configs = summary["configs"]
    if not isinstance(configs, dict) or not configs:
        raise wrong("no configs")
    for label, config in configs.items():
        arms = config.get("arms") if isinstance(config, dict) else None
        if not isinstance(arms, dict) or not arms:
            raise wrong(f"config {label!r} has no arms")
        for arm, entry in arms.items():
            metrics = entry.get("metrics") if isinstance(entry, dict) else None
            for metric in summary["metrics"]:
                scores = (
                    metrics.get(metric, {}).get("scores") if isinstance(metrics, dict) else None
                )
                if not isinstance(scores, list):
                    raise wrong(f"{label}/{arm} has no scores of {metric!r}")
    return summary


def compare_arms(summary: dict[str, Any], arm: str, other: str) -> dict[str, dict[str, Any]]:
    """How often a run of ``arm`` beats a run of ``other``, per base config and metric.

    The report's probability of improvement over the baseline, for any two arms of a finished
    (or partly finished) study, from the per-seed scores its ``summary.json`` holds, with the
    study's bootstrap settings, on the seeds both arms have done. Per config and metric:
    ``{"n": seeds compared, "poi", "poi_ci"}`` (``poi`` ``None`` where no seed is shared).

    Raises:
        StudyError: an arm the summary does not have (the message lists its arms).
    """
    arms = next(iter(summary["configs"].values()))["arms"]
    for name in (arm, other):
        if name not in arms:
            raise StudyError(
                f"arm {name!r}: not in study {summary['study']}; arms: {', '.join(arms)}"
            )
    out: dict[str, dict[str, Any]] = {}
    for label, config in summary["configs"].items():
        out[label] = {}
        for metric, info in summary["metrics"].items():
            x = config["arms"][arm]["metrics"][metric]["scores"]
            y = config["arms"][other]["metrics"][metric]["scores"]
            n, poi, poi_ci = _improvement(x, y, info["higher_is_better"], summary["bootstrap"])
            out[label][metric] = {"n": n, "poi": poi, "poi_ci": poi_ci}
    return out


def comparison_markdown(summary: dict[str, Any], arm: str, other: str) -> str:
    """:func:`compare_arms` as a table per base config."""
    level = round(100 * summary["bootstrap"]["level"])
    lines = [
        f"P({arm} beats {other}) in study `{summary['study']}`: how often a run of `{arm}` beats "
        f"a run of `{other}` (ties count half; 0.5 = no difference), {level}% CI, on the seeds "
        "both have done.",
        "",
    ]
    for label, metrics in compare_arms(summary, arm, other).items():
        lines += [f"## {label}", "", f"| metric | seeds | P({arm} > {other}) [{level}% CI] |"]
        lines.append("|---|---:|---:|")
        for metric, entry in metrics.items():
            poi = _probability(entry["poi"], entry["poi_ci"])
            lines.append(f"| {metric} | {entry['n']} | {poi} |")
        lines.append("")
    return "\n".join(lines)
