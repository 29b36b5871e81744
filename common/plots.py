"""Pictures of schedules, their couplings, and the double-well demo (matplotlib, to PNG)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.coupling import coupled_from_spec  # noqa: E402
from common.double_well import DoubleWell, deep_fraction, descend  # noqa: E402
from common.schedules import Schedule, build_schedules  # noqa: E402

__all__ = [
    "config_table",
    "plot_schedules",
    "plot_config",
    "plot_shift_vs_mirror",
    "plot_double_well",
]


def plot_schedules(
    specs: Mapping[str, Mapping[str, Any] | Schedule],
    couplings: Mapping[str, Mapping[str, Any]] | None = None,
    steps: int = 10_000,
    path: str | Path | None = None,
    title: str = "",
    where: str = "",
) -> plt.Figure:
    """Plot named schedules over ``steps``; couplings on a second panel.

    Args:
        specs: name -> schedule spec (or schedule), e.g. ``{"G": {...}, "D": {...}}``; a
            follow spec (``{"follow": "G", ...}``) names another schedule of ``specs``.
        couplings: name -> ``{"mode", "lo", "hi", "clock": <a name in specs>}``; each is drawn
            against its clock (the first schedule when ``clock`` is left out).
        steps: the horizontal range, in steps.
        path: where to save a PNG (optional).
        where: the table's dotted path, for error messages (``"lr"``).
    """
    schedules = build_schedules(specs, where=where)
    t = np.linspace(0, steps, min(steps + 1, 4001))
    rows = 2 if couplings else 1
    fig, axes = plt.subplots(rows, 1, figsize=(9, 3.2 * rows), sharex=True, squeeze=False)
    ax = axes[0, 0]
    for name, schedule in schedules.items():
        ax.plot(t, schedule.values(t), label=name)
    ax.set_ylabel("value")
    ax.legend(loc="upper right")
    ax.set_title(title or "schedules")
    ax.grid(alpha=0.3)
    if couplings:
        ax = axes[1, 0]
        first = next(iter(schedules))
        for name, spec in couplings.items():
            clock_name = spec.get("clock", first)
            if clock_name not in schedules:
                raise ValueError(
                    f"couplings.{name}.clock = {clock_name!r}: not one of {', '.join(schedules)}"
                )
            coupled = coupled_from_spec(spec, schedules[clock_name], name=f"couplings.{name}")
            ax.plot(t, coupled.values(t), label=f"{name} ({coupled.mode}-phase with {clock_name})")
        ax.set_ylabel("coupled value")
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def config_table(config: Mapping[str, Any], table: str) -> Mapping[str, Any]:
    """The table at dotted path ``table`` (``"lr.G"``) of a config."""
    node: Any = config
    parts = table.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, Mapping) or not isinstance(node.get(part), Mapping):
            inside = ".".join(parts[:depth]) or "the config"
            tables = [k for k, v in node.items() if isinstance(v, Mapping)]
            raise ValueError(f"{table}: no such table; {inside} has: {', '.join(tables) or '-'}")
        node = node[part]
    return node


def plot_config(
    config: Mapping[str, Any],
    table: str = "lr",
    couplings_table: str = "couplings",
    **kwargs: Any,
) -> plt.Figure:
    """Plot the schedule table of a config (``[lr]`` or ``[lr.G]``, ``[lr.D]``...).

    ``table`` is a dotted path; a table with a ``kind`` key is one schedule, otherwise each
    sub-table is one. Couplings are read from ``couplings_table`` when present: each entry with
    ``mode``, ``lo`` and ``hi`` (others, e.g. without ``lo``, are skipped).
    """
    node = config_table(config, table)
    *parent, last = table.split(".")
    one = "kind" in node or "follow" in node
    specs, where = ({last: node}, ".".join(parent)) if one else (dict(node), table)
    couplings = {
        name: spec
        for name, spec in config.get(couplings_table, {}).items()
        if isinstance(spec, Mapping) and {"mode", "lo", "hi"} <= set(spec)
    }
    return plot_schedules(specs, couplings or None, where=where, **kwargs)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def plot_shift_vs_mirror(
    clock: Mapping[str, Any] | Schedule,
    cycles: int = 3,
    path: str | Path | None = None,
    name: str = "G",
) -> tuple[plt.Figure, dict[str, float]]:
    """A cyclic schedule beside its half-cycle shift and beside its mirror, one panel each.

    (a) D with ``offset`` moved on by half a cycle: the same curve, shifted. (b) D as
    ``{follow = name, mode = "anti"}`` with the clock's range: high exactly while the clock is
    low. Each panel's title gives the correlation of the pair over ``cycles`` cycles.

    Returns:
        The figure and the correlations ``{"shift": ..., "mirror": ...}``.
    """
    spec = dict(clock.spec() if isinstance(clock, Schedule) else clock)
    shift = {**spec, "offset": (spec.get("offset", 0.0) + 0.5) % 1.0}
    mirror = {"follow": name, "mode": "anti", "max": spec["max"], "min": spec.get("min", 0.0)}
    table = build_schedules({name: spec, "shift": shift, "mirror": mirror}, where="")
    g = table[name]
    if not hasattr(g, "cycle_start"):
        raise ValueError(f"{name}: kind {g.kind!r} has no cycles to shift or mirror")
    end = g.warmup + g.cycle_start(cycles) - g.offset * g.period
    t = np.linspace(0, end, min(int(end), 4000), endpoint=False)
    restarts = [g.warmup + g.cycle_start(k) - g.offset * g.period for k in range(1, cycles)]
    fig, axes = plt.subplots(2, 1, figsize=(9, 5.8), sharex=True)
    correlations = {}
    panels = (
        ("shift", "(a) shift", f"D: offset = {shift['offset']:g}"),
        ("mirror", "(b) mirror", f'D: follow = "{name}", mode = "anti"'),
    )
    for ax, (key, letter, label) in zip(axes, panels, strict=True):
        ours, theirs = g.values(t), table[key].values(t)
        correlations[key] = _correlation(ours, theirs)
        ax.plot(t, ours, color="tab:blue", label=name)
        ax.plot(t, theirs, color="tab:orange", label=label)
        for step in restarts:
            ax.axvline(step, color="grey", ls=":", lw=0.8)
        ax.set_title(f"{letter}: {label}   correlation with {name} = {correlations[key]:+.2f}")
        ax.set_ylabel("learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax.set_ylim(top=ax.get_ylim()[1] * 1.25)  # room for the legend above the curves
        ax.legend(loc="upper center", ncol=2, fontsize=9, frameon=False)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(f"step  (dotted: {name}'s restarts)")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig, correlations


def plot_double_well(
    cyclic: Schedule,
    monotone: Schedule,
    steps: int = 3000,
    noise: float = 3.0,
    seed: int | None = None,
    seeds: int = 20,
    path: str | Path | None = None,
) -> tuple[plt.Figure, dict[str, float]]:
    """One trajectory under each schedule over the landscape, and the deep-well fractions.

    ``seed=None`` shows the first seed whose two runs end in different wells (if any), since
    that is the case the picture is about; the legend gives the fractions over all seeds.
    """
    well = DoubleWell()
    runs = {"cyclical": cyclic, "monotone": monotone}
    fractions = {name: deep_fraction(s, seeds, steps, noise, well) for name, s in runs.items()}
    if seed is None:
        ends = {
            s: [well.in_deep_well(descend(r, steps, noise, s, well)[-1]) for r in runs.values()]
            for s in range(seeds)
        }
        seed = next((s for s, (a, b) in ends.items() if a != b), 0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[2, 1])
    t = np.arange(steps + 1)
    for name, schedule in runs.items():
        left.plot(
            t,
            descend(schedule, steps, noise, seed, well),
            lw=0.8,
            label=f"{name}: {fractions[name]:.0%} of {seeds} seeds end deep",
        )
    shallow, deep = well.minima()
    for y, label in ((shallow, "shallow"), (deep, "deep")):
        left.axhline(y, color="grey", ls=":", lw=0.8)
        left.text(steps, y, f" {label}", va="center", fontsize=8)
    left.set_xlabel("step")
    left.set_ylabel("θ")
    left.legend(loc="lower left", fontsize=8)
    left.set_title(f"noisy gradient descent from the shallow well (seed {seed})")
    theta = np.linspace(-1.6, 1.6, 400)
    right.plot(well.f(theta), theta, color="black")
    right.set_xlabel(f"f(θ) = θ⁴ − 2θ² + {well.tilt}θ")
    right.set_title("landscape")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig, fractions
