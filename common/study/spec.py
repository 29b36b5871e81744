"""A study file: named arms (config overrides) × seeds, on one or several base configs.

A study is a TOML file::

    name = "gan_rhythm"
    command = "gancycle-train"          # the program each run is; see common.study.run
    population = "python -m gancycle.population_cli"   # optional: the program that trains
                                        # runs as populations (--backend population)
    configs = ["ring8", "grid25"]       # or config = "ring8", or [configs.<name>] tables (below);
                                        # each base config gets its own results table
    seeds = 10                          # runs seed0 .. seed9 of every arm
    baseline = "constant"               # the arm every other arm is compared with
    metrics = { modes = "final.G.modes", kl = "final.G.kl" }   # name = dotted path into
                                        # metrics.json; or a list of paths. The first is the
                                        # headline.
    higher_is_better = { kl = false }   # default true (false for a Reach metric)
    curve = { key = "history", x = "step", y = "G.modes" }     # optional; see Curve (y: a list
                                                               # plots each path)

    [shared]                            # overrides for every arm
    steps = 12000

    # instead of the configs list, tables of overrides for one base config each:
    # [configs.ring8]
    # [configs.grid25]
    # "eval.every" = 1000

    [arms.constant]                     # overrides of this arm, nested or quoted dotted keys
    lr.G.min = 5.05e-4
    [arms.anti]                         # an arm with no overrides runs the base config
    [arms.anti.on.grid25]               # overrides of this arm on one base config only
    "reset.G" = "exp_avg"

    [views.anti_ensemble]               # no runs of its own: arm anti's runs, other paths
    arm = "anti"
    metrics = { modes = "final.ensemble.modes", kl = "final.ensemble.kl" }

    [readings.ema]                      # every arm read so: views constant_ema, anti_ema
    modes = "final.ema.modes"
    kl = "final.ema.kl"

    [diagnostic]                        # optional: where in the cycle each arm's curve moves
    metric = "G.modes"                  # path(s) in a curve entry (default: the curve's y)
    clock = "lr.G"                      # dotted path in each run's config.toml to a schedule
    bins = 4                            # position bins per cycle (default 4)
    skip_cycles = 1                     # the clock's first cycles left out (default 0)

    [sweep]                             # optional: arms (or views) as points of one knob
    x = "D ahead of G (cycles)"         # what the knob is (the figure's x axis)
    points = { in_phase = 0.0, offset_1_8 = 0.125, shift_D = 0.5 }   # arm = its value

Each override becomes ``--set key=value`` with the value written as TOML, in the order shared,
config, arm, arm on that config (so the most specific value wins). ``on`` is the one key an
arm's table reserves. A view compares another reading of the same runs (a snapshot ensemble
against its last model, say) on matched seeds at no cost; metrics it does not list are read as
for its arm, and a metric set to ``false`` has no reading in the view (a deterministic
ensemble has no sampled counterpart, say). A reading is a view of every arm alike, each named
``<arm>_<reading>``.

The diagnostic (:mod:`common.phase_diagnostic`) attributes each change of the curve's metric
between evaluations to the phase of the run's clock (high- against low-rate half, position
bins), with CIs across seeds; it needs ``curve``. A sweep reads arms already in the study as
the points of one knob: every metric's IQM and CI against the knob's value, in a table and a
figure; an arm that is a point of the sweep under another name (an offset of 0 is the in-phase
arm) is listed once, not run twice.

A dotted path walks tables by key and lists by index (``history.-1.step``); a key that itself
holds dots (``eval/return/d=0.5``) is matched whole, longest key first. A metric may also be
the first step at which the curve reaches a level (see :class:`Reach`)::

    [metrics]
    success = "eval.eval/success/d=1"
    steps_to_success = { reach = "metrics.eval/success/d=1", at_least = 0.8 }

or the area under the curve per step, its mean over the run (see :class:`Area`)::

    learning = { area = "metrics.eval/return/d=1" }
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from common.config import ConfigError, package_folders, read_config

__all__ = [
    "StudyError",
    "Curve",
    "Reach",
    "Area",
    "Diagnostic",
    "Sweep",
    "Arm",
    "View",
    "config_label",
    "Study",
    "STUDY_PACKAGES",
    "known_studies",
    "find_study",
    "load_study",
    "parse_study",
    "overrides",
    "toml_value",
]

STUDY_PACKAGES = ("rlcycle", "gancycle")
"""Packages whose ``studies/`` folder is searched for a study by name."""

_KEYS = {
    "name": "the study's name (its folder under the runs root)",
    "description": "one line saying what the study asks",
    "command": "the program each run is, e.g. gancycle-train",
    "population": "the program that trains many runs as populations (--backend population)",
    "config": "one base config",
    "configs": "several base configs: a list, or tables of per-config overrides",
    "seeds": "runs per arm and config (seeds 0 .. seeds-1)",
    "baseline": "the arm the others are compared with",
    "metrics": "dotted paths into metrics.json (list, or table name = path | {reach, at_least})",
    "higher_is_better": "table metric = true | false",
    "curve": "the time series in metrics.json to plot",
    "shared": "overrides for every arm",
    "arms": "tables of overrides, one per arm",
    "views": "tables { arm, metrics }: an arm's runs read through other metric paths",
    "readings": "tables metric = path: every arm read so too (rows <arm>_<reading>)",
    "diagnostic": "table { metric, clock, bins, skip_cycles }: metric changes by cycle phase",
    "sweep": "table { x, points = { arm = value } }: arms as points of one knob",
}
_DIAGNOSTIC_KEYS = ("metric", "clock", "bins", "skip_cycles")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class StudyError(ConfigError):
    """A bad study file or study option; the message is one line naming the key or path."""


@dataclass(frozen=True)
class Curve:
    """A time series each run writes in ``metrics.json``, plotted per arm over steps.

    Attributes:
        key: dotted path to a list of entries, e.g. ``history``.
        x: dotted path inside an entry to its step (the x axis), e.g. ``step``.
        y: dotted path inside an entry to the plotted value, e.g. ``G.modes`` (what reach
            and area metrics and the diagnostic read by default).
        more: further paths inside an entry, each plotted in a figure of its own
            (``y = ["G.modes", "G.high_quality"]`` in the file).
    """

    key: str
    x: str
    y: str
    more: tuple[str, ...] = ()

    @property
    def ys(self) -> tuple[str, ...]:
        """Every plotted path, ``y`` first."""
        return (self.y, *self.more)


@dataclass(frozen=True)
class Reach:
    """A metric read off the study's curve: the first step at which ``y`` is >= ``at_least``.

    A run that never gets there counts as its last step (a lower bound of the true value, the
    usual way to score time-to-threshold within a budget). Lower is better.

    Attributes:
        y: dotted path inside a curve entry, e.g. ``metrics.eval/success/d=1``.
        at_least: the level to reach, in the units of ``y``.
    """

    y: str
    at_least: float

    def __str__(self) -> str:
        return f"first step with {self.y} >= {self.at_least:g}"


@dataclass(frozen=True)
class Area:
    """A metric read off the study's curve: the area under ``y`` divided by the steps it spans.

    The trapezoid rule between the first and the last evaluation, divided by their distance:
    the curve's mean over the run, in the units of ``y`` (a run evaluated once scores that
    value). Higher is better by default. Only the evaluations made count, so compare it
    between arms evaluated at the same steps.

    Attributes:
        y: dotted path inside a curve entry, e.g. ``metrics.eval/return/d=1``.
    """

    y: str

    def __str__(self) -> str:
        return f"area under {self.y} per step"


@dataclass(frozen=True)
class Diagnostic:
    """The phase diagnostic of a study (:mod:`common.phase_diagnostic`).

    Attributes:
        metrics: dotted paths inside an entry of the study's curve, each diagnosed.
        clock: dotted path in a run's ``config.toml`` to the schedule whose phase places each
            change (``lr.G``; ``lr`` for rlcycle's one clock).
        bins: position bins per cycle (>= 1).
        skip_cycles: the clock's first cycles left out (learning from scratch; >= 0).
    """

    metrics: tuple[str, ...]
    clock: str
    bins: int = 4
    skip_cycles: int = 0


@dataclass(frozen=True)
class Sweep:
    """Arms (or views) read as points of one knob, in the order of its values.

    Attributes:
        x: what the knob is, e.g. ``D ahead of G (cycles)``.
        points: arm or view name -> the knob's value in it, ascending.
    """

    x: str
    points: dict[str, float]


@dataclass(frozen=True)
class Arm:
    """An arm: ``--set`` overrides for every base config, and more for some configs only.

    Attributes:
        sets: ``key=value`` overrides on every base config.
        on: config label -> further overrides on that config only (applied after ``sets``).
    """

    sets: tuple[str, ...] = ()
    on: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def sets_for(self, label: str) -> tuple[str, ...]:
        """The arm's overrides on base config ``label``."""
        return self.sets + self.on.get(label, ())


@dataclass(frozen=True)
class View:
    """Another reading of an arm's runs: some metrics at other paths of the same metrics.json.

    Attributes:
        arm: the arm whose runs are read.
        metrics: metric name -> its path (or :class:`Reach`) for this view, or ``None`` where
            the view has no reading of it (``false`` in the file); a metric not listed is read
            as for the arm.
        reading: the ``[readings]`` table this view was made from, for every arm alike, or
            ``""`` for a view of its own.
    """

    arm: str
    metrics: dict[str, str | Reach | Area | None]
    reading: str = ""


@dataclass(frozen=True)
class Study:
    """A parsed, validated study file.

    Attributes:
        name: folder name of the study under the runs root.
        command: the program of each run, split with :func:`shlex.split` when run.
        population: the program that trains a list of runs as populations, or ``""`` (see
            :func:`common.study.backends.run_population`).
        configs: base config (a shipped name or a TOML path) -> its own ``--set`` overrides.
        seeds: runs per arm and config, seeds ``0 .. seeds-1``; at least 1.
        baseline: the arm every other arm is compared with.
        metrics: metric name -> dotted path into ``metrics.json`` or a :class:`Reach` on the
            curve; the first is the headline.
        higher_is_better: metric name -> whether larger is better (default: yes, but for a
            :class:`Reach` metric, where fewer steps are better).
        shared: ``--set`` overrides for every run.
        arms: arm name -> its overrides.
        views: view name -> the view (rows of the report beside the arms, without runs).
        curve: the time series to plot, or ``None``.
        diagnostic: the phase diagnostic to report, or ``None``.
        sweep: arms read as points of one knob, or ``None``.
        description: one line, or ``""``.
        source: the file the study came from, or ``None``.
    """

    name: str
    command: str
    configs: dict[str, tuple[str, ...]]
    seeds: int
    baseline: str
    metrics: dict[str, str | Reach | Area]
    higher_is_better: dict[str, bool]
    shared: tuple[str, ...]
    arms: dict[str, Arm]
    views: dict[str, View] = field(default_factory=dict)
    curve: Curve | None = None
    diagnostic: Diagnostic | None = None
    sweep: Sweep | None = None
    description: str = ""
    source: Path | None = field(default=None, compare=False)
    population: str = ""

    @property
    def headline(self) -> str:
        """The first metric's name."""
        return next(iter(self.metrics))

    def required_paths(self) -> tuple[str, ...]:
        """Paths a run's ``metrics.json`` must hold to be complete."""
        paths = [m for m in self.metrics.values() if isinstance(m, str)]
        if self.curve is not None and len(paths) < len(self.metrics):
            paths.append(self.curve.key)
        return tuple(paths)


def config_label(config: str) -> str:
    """The name a base config goes by in folders and tables: a TOML path's stem, or the name."""
    return Path(config).stem if config.endswith(".toml") else config


def overrides(table: dict[str, Any], where: str, prefix: str = "") -> tuple[str, ...]:
    """A (possibly nested) table of overrides as ``dotted.key=value`` strings.

    Nested tables and quoted dotted keys are the same thing: ``lr.G.max = 1e-3`` and
    ``"lr.G.max" = 1e-3`` both give ``lr.G.max=0.001``. Values are written as TOML, so the
    trainer's ``--set`` parses them back to the same type.
    """
    out: list[str] = []
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(overrides(value, where, f"{dotted}."))
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise StudyError(f"{where}.{dotted} = {value}: must be a finite number")
        if isinstance(value, (list, tuple)) and any(isinstance(v, dict) for v in value):
            raise StudyError(f"{where}.{dotted}: arrays of tables cannot be passed with --set")
        out.append(f"{dotted}={toml_value(value)}")
    return tuple(out)


def toml_value(value: Any) -> str:
    """``value`` written as a one-line TOML value: ``0.0002``, ``"anti"``, ``[0.0, 0.5]``."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).strip()[len("v = ") :]


def _fail(where: str, message: str) -> StudyError:
    return StudyError(f"{where}: {message}")


def _string(raw: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"{key} = {value!r}: must be a non-empty string ({_KEYS[key]})")
    return value


def _table(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise _fail(where, f"{key} = {value!r}: must be a table ({_KEYS[key]})")
    return value


def _configs(raw: dict[str, Any], where: str) -> dict[str, tuple[str, ...]]:
    if ("config" in raw) == ("configs" in raw):
        raise _fail(where, "give exactly one of config = NAME or configs = [NAME, ...]")
    if "config" in raw:
        return {_string(raw, "config", where): ()}
    value = raw["configs"]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        configs = {v: () for v in value}
        if len(configs) != len(value):
            raise _fail(where, f"configs = {value!r}: a config is listed twice")
    elif isinstance(value, dict) and value:
        configs = {}
        for name, table in value.items():
            if not isinstance(table, dict):
                raise _fail(where, f"configs.{name}: must be a table of overrides")
            configs[name] = overrides(table, f"{where}: configs.{name}")
    else:
        raise _fail(where, f"configs = {value!r}: must be a list of config names or tables")
    return configs


def _metric(name: str, value: Any, where: str) -> str | Reach | Area:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and set(value) == {"area"}:
        if isinstance(value["area"], str) and value["area"]:
            return Area(y=value["area"])
    if isinstance(value, dict) and set(value) == {"reach", "at_least"}:
        y, level = value["reach"], value["at_least"]
        ok_level = isinstance(level, (int, float)) and not isinstance(level, bool)
        if isinstance(y, str) and y and ok_level and math.isfinite(level):
            return Reach(y=y, at_least=float(level))
    raise _fail(
        where,
        f"metrics.{name} = {value!r}: must be a dotted path into metrics.json, "
        '{ reach = "<path in a curve entry>", at_least = <number> } or '
        '{ area = "<path in a curve entry>" }',
    )


def _metrics(raw: dict[str, Any], where: str) -> dict[str, str | Reach | Area]:
    value = raw.get("metrics")
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        if len(set(value)) != len(value):
            raise _fail(where, f"metrics = {value!r}: a metric is listed twice")
        return {v: v for v in value}
    if isinstance(value, dict) and value:
        return {name: _metric(name, v, where) for name, v in value.items()}
    raise _fail(
        where, f"metrics = {value!r}: must be a list of dotted paths or a table name = path"
    )


def _curve(raw: dict[str, Any], metrics: dict[str, str | Reach | Area], where: str) -> Curve | None:
    value = raw.get("curve")
    headline = next(iter(metrics.values()))
    headline_path = headline if isinstance(headline, str) else headline.y
    if value is None:
        reaches = [name for name, m in metrics.items() if not isinstance(m, str)]
        if reaches:
            raise _fail(
                where, f"metrics.{reaches[0]}: a reach or area metric needs curve = {{ key, x }}"
            )
        return None
    if isinstance(value, str) and value:
        return Curve(key=value, x="step", y=headline_path)
    if isinstance(value, dict) and isinstance(value.get("key"), str):
        unknown = sorted(set(value) - {"key", "x", "y"})
        if unknown:
            raise _fail(where, f"curve.{unknown[0]}: unknown key; allowed: key, x, y")
        x, y = value.get("x", "step"), value.get("y", headline_path)
        ys = y if isinstance(y, list) and y else [y]
        if isinstance(x, str) and x and all(isinstance(p, str) and p for p in ys):
            return Curve(key=value["key"], x=x, y=ys[0], more=tuple(ys[1:]))
    raise _fail(
        where,
        f'curve = {value!r}: must be a key (curve = "history") or a table '
        '{ key = "history", x = "step", y = "<path in an entry>" or a list of them }',
    )


def _diagnostic(raw: dict[str, Any], curve: Curve | None, where: str) -> Diagnostic | None:
    if "diagnostic" not in raw:
        return None
    table = _table(raw, "diagnostic", where)
    unknown = sorted(set(table) - set(_DIAGNOSTIC_KEYS))
    if unknown:
        raise _fail(
            where, f"diagnostic.{unknown[0]}: unknown key; allowed: {', '.join(_DIAGNOSTIC_KEYS)}"
        )
    if curve is None:
        raise _fail(where, "diagnostic: needs curve = { key, x } (the evaluations it reads)")
    metric = table.get("metric", curve.y)
    metrics = [metric] if isinstance(metric, str) else metric
    if (
        not isinstance(metrics, list)
        or not metrics
        or not all(isinstance(m, str) and m for m in metrics)
    ):
        raise _fail(where, f"diagnostic.metric = {metric!r}: a path in a curve entry, or a list")
    clock = table.get("clock")
    if not isinstance(clock, str) or not clock:
        raise _fail(
            where, f"diagnostic.clock = {clock!r}: the dotted path of a schedule in config.toml"
        )
    bins = table.get("bins", 4)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise _fail(where, f"diagnostic.bins = {bins!r}: must be an integer >= 1")
    skip = table.get("skip_cycles", 0)
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise _fail(where, f"diagnostic.skip_cycles = {skip!r}: must be an integer >= 0")
    return Diagnostic(metrics=tuple(metrics), clock=clock, bins=bins, skip_cycles=skip)


def _sweep(raw: dict[str, Any], rows: list[str], where: str) -> Sweep | None:
    if "sweep" not in raw:
        return None
    table = _table(raw, "sweep", where)
    unknown = sorted(set(table) - {"x", "points"})
    if unknown:
        raise _fail(where, f"sweep.{unknown[0]}: unknown key; allowed: x, points")
    x = table.get("x")
    if not isinstance(x, str) or not x.strip():
        raise _fail(where, f'sweep.x = {x!r}: what the knob is, e.g. x = "D ahead of G (cycles)"')
    points = table.get("points")
    if not isinstance(points, dict) or len(points) < 2:
        raise _fail(where, f"sweep.points = {points!r}: a table arm = value, at least two")
    for name, value in points.items():
        if name not in rows:
            known = ", ".join(rows)
            raise _fail(where, f"sweep.points.{name}: not an arm or view; arms and views: {known}")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise _fail(where, f"sweep.points.{name} = {value!r}: must be a finite number")
    ordered = sorted(points.items(), key=lambda item: item[1])
    return Sweep(x=x, points={name: float(value) for name, value in ordered})


def _arm(name: str, table: Any, labels: list[str], where: str) -> Arm:
    if not _NAME.match(name):
        raise _fail(where, f"arms.{name}: letters, digits and _ . + - only (a folder name)")
    if not isinstance(table, dict):
        raise _fail(where, f"arms.{name}: must be a table of overrides")
    table = dict(table)
    on = table.pop("on", {})
    if not isinstance(on, dict) or not all(isinstance(t, dict) for t in on.values()):
        raise _fail(where, f"arms.{name}.on: must hold tables [arms.{name}.on.<config>]")
    for label in on:
        if label not in labels:
            raise _fail(
                where, f"arms.{name}.on.{label}: not a config; configs: " + ", ".join(labels)
            )
    return Arm(
        sets=overrides(table, f"{where}: arms.{name}"),
        on={label: overrides(t, f"{where}: arms.{name}.on.{label}") for label, t in on.items()},
    )


def _view(
    name: str, table: Any, arms: dict[str, Arm], metrics: dict[str, str | Reach | Area], where: str
) -> View:
    if not isinstance(table, dict) or set(table) != {"arm", "metrics"}:
        raise _fail(where, f"views.{name}: must be a table with keys arm and metrics")
    if name in arms or not _NAME.match(name):
        raise _fail(where, f"views.{name}: must be a new name (letters, digits and _ . + -)")
    if table["arm"] not in arms:
        raise _fail(
            where, f"views.{name}.arm = {table['arm']!r}: not an arm; arms: " + ", ".join(arms)
        )
    return View(
        arm=table["arm"],
        metrics=_view_metrics(f"views.{name}.metrics", table["metrics"], metrics, where),
    )


def _readings(
    raw: dict[str, Any],
    arms: dict[str, Arm],
    views: dict[str, View],
    metrics: dict[str, str | Reach | Area],
    where: str,
) -> dict[str, View]:
    """``[readings.<name>]`` tables as views ``<arm>_<name>`` of every arm, arm by arm."""
    readings = {
        name: _view_metrics(f"readings.{name}", paths, metrics, where)
        for name, paths in _table(raw, "readings", where).items()
    }
    made = {}
    for arm in arms:
        for reading, paths in readings.items():
            name = f"{arm}_{reading}"
            if name in arms or name in views or not _NAME.match(name):
                raise _fail(
                    where,
                    f"readings.{reading}: its row for arm {arm}, {name!r}, must be a new name "
                    "(not an arm or a view; letters, digits and _ . + -)",
                )
            made[name] = View(arm=arm, metrics=paths, reading=reading)
    return made


def _view_metrics(
    key: str, paths: Any, metrics: dict[str, str | Reach | Area], where: str
) -> dict[str, str | Reach | Area | None]:
    """A view's or reading's table metric = path (``false``: no reading of the metric)."""
    if not isinstance(paths, dict) or not paths:
        raise _fail(where, f"{key}: must be a table metric = path")
    for metric in paths:
        if metric not in metrics:
            raise _fail(where, f"{key}.{metric}: not a metric; metrics: " + ", ".join(metrics))
    return {m: None if v is False else _metric(m, v, where) for m, v in paths.items()}


def parse_study(raw: dict[str, Any], where: str = "study") -> Study:
    """Validate the plain data of a study file (``where`` names it in error messages).

    Raises:
        StudyError: an unknown or missing key, or a value of the wrong kind; one line.
    """
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise _fail(where, f"{unknown[0]}: unknown key; allowed: {', '.join(_KEYS)}")
    name = _string(raw, "name", where)
    if not _NAME.match(name):
        raise _fail(where, f"name = {name!r}: letters, digits and _ . + - only (a folder name)")
    seeds = raw.get("seeds")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise _fail(where, f"seeds = {seeds!r}: must be an integer >= 1")
    metrics = _metrics(raw, where)

    higher = _table(raw, "higher_is_better", where)
    for metric, flag in higher.items():
        if metric not in metrics:
            raise _fail(
                where, f"higher_is_better.{metric}: not a metric; metrics: " + ", ".join(metrics)
            )
        if not isinstance(flag, bool):
            raise _fail(where, f"higher_is_better.{metric} = {flag!r}: must be true or false")

    configs = _configs(raw, where)
    labels = [config_label(c) for c in configs]
    if len(configs) > 1 and len(set(labels)) != len(labels):
        raise _fail(where, f"configs: two configs share a name ({', '.join(labels)})")

    arms_raw = _table(raw, "arms", where)
    if not arms_raw:
        raise _fail(where, "arms: no arms; add tables [arms.<name>] of overrides")
    arms = {name: _arm(name, table, labels, where) for name, table in arms_raw.items()}
    baseline = _string(raw, "baseline", where, default=next(iter(arms)))
    if baseline not in arms:
        raise _fail(where, f"baseline = {baseline!r}: not an arm; arms: {', '.join(arms)}")
    curve = _curve(raw, metrics, where)
    views = {
        name: _view(name, table, arms, metrics, where)
        for name, table in _table(raw, "views", where).items()
    }
    views |= _readings(raw, arms, views, metrics, where)
    for view_name, view in views.items():
        if curve is None and any(isinstance(m, (Reach, Area)) for m in view.metrics.values()):
            key = f"readings.{view.reading}" if view.reading else f"views.{view_name}"
            raise _fail(where, f"{key}: a reach or area metric needs curve = {{ key, x }}")

    return Study(
        name=name,
        command=_string(raw, "command", where),
        configs=configs,
        seeds=seeds,
        baseline=baseline,
        metrics=metrics,
        higher_is_better={m: higher.get(m, not isinstance(metrics[m], Reach)) for m in metrics},
        shared=overrides(_table(raw, "shared", where), f"{where}: shared"),
        arms=arms,
        views=views,
        curve=curve,
        diagnostic=_diagnostic(raw, curve, where),
        sweep=_sweep(raw, [*arms, *views], where),
        description=_string(raw, "description", where) if "description" in raw else "",
        population=_string(raw, "population", where) if "population" in raw else "",
    )


def load_study(path: str | Path) -> Study:
    """Read and validate a study file."""
    path = Path(path)
    study = parse_study(read_config(path), where=str(path))
    return Study(**{**study.__dict__, "source": path})


def _study_folders() -> list[Path]:
    """``<package>/studies`` of each package in :data:`STUDY_PACKAGES` that is installed (found
    without importing it: :func:`common.config.package_folders`)."""
    return [folder for package in STUDY_PACKAGES for folder in package_folders(package, "studies")]


def known_studies() -> dict[str, Path]:
    """Every study shipped in the packages: name -> file."""
    found: dict[str, Path] = {}
    for folder in _study_folders():
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def find_study(name_or_path: str) -> Study:
    """A study shipped as ``<package>/studies/<NAME>.toml``, or any study file by path.

    Raises:
        StudyError: neither a shipped study nor an existing file; the message lists the
            shipped ones.
    """
    shipped = known_studies()
    if name_or_path in shipped:
        return load_study(shipped[name_or_path])
    if Path(name_or_path).is_file():
        return load_study(name_or_path)
    names = ", ".join(shipped) or "none yet"
    raise StudyError(f"study {name_or_path!r}: not a shipped study ({names}) nor a study TOML file")
