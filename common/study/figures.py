"""A study's figures: IQM with its confidence interval per arm, the same against a swept knob,
curves over steps, and the phase diagnostic (metric change per position bin of the cycle).

Drawn on :class:`matplotlib.figure.Figure` objects (no pyplot state, no display needed) and
written atomically as PNG.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from common.runs import atomic_write

__all__ = ["save_png", "iqm_figure", "sweep_figure", "mean_band", "curve_figure", "phase_figure"]


def save_png(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def iqm_figure(summary: dict[str, Any], label: str) -> Figure:
    """One panel per metric: each arm's IQM (dot) and its CI (bar) on base config ``label``.

    Arms run top to bottom in the study's order, one row each; an arm's readings (its runs read
    through other paths, ``[readings.<name>]``) are marks of their own colour on the arm's row,
    a little below its own, so that one arm's readings compare at a glance. The dashed line
    marks the baseline's IQM.
    """
    config = summary["configs"][label]
    views = summary.get("views", {})
    reading_of = {  # (arm, reading) -> the view that reads the arm's runs so
        (entry["view_of"], views[name]["reading"]): name
        for name, entry in config["arms"].items()
        if views.get(name, {}).get("reading")
    }
    readings = list(dict.fromkeys(reading for _, reading in reading_of))
    rows_of = [arm for arm in config["arms"] if arm not in reading_of.values()]
    layers = [("raw", None), *((reading, reading) for reading in readings)]
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]
    step = 0.6 / len(layers)  # the layers share the middle 60% of a row
    metrics = summary["metrics"]
    level = round(100 * summary["bootstrap"]["level"])
    height = 0.45 * len(rows_of) * max(1.0, 0.5 * len(layers)) + 1.4
    fig = Figure(figsize=(3.6 * len(metrics), height), layout="constrained")
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    rows = np.arange(len(rows_of))[::-1]
    for ax, (metric, info) in zip(axes, metrics.items(), strict=True):
        for row, arm in zip(rows, rows_of, strict=True):
            if config["arms"][arm]["metrics"][metric]["iqm"] is None:
                ax.annotate(
                    "no scores",
                    (0.02, row),
                    xycoords=("axes fraction", "data"),
                    va="center",
                    fontsize=8,
                    color="gray",
                )
                continue
            for k, (name, reading) in enumerate(layers):
                view = arm if reading is None else reading_of.get((arm, reading))
                s = config["arms"][view]["metrics"][metric] if view else {"iqm": None}
                if s["iqm"] is None:  # no reading of this metric
                    continue
                color = colors[k % len(colors)]
                if reading is None and arm == summary["baseline"]:
                    color = "black"
                y = row + (len(layers) - 1) * step / 2 - k * step
                lo, hi = s["iqm_ci"]
                ax.plot([lo, hi], [y, y], color=color, lw=5, alpha=0.35, solid_capstyle="butt")
                ax.plot([s["iqm"]], [y], "o", color=color, ms=5, label=name)
        base = config["arms"][summary["baseline"]]["metrics"][metric]["iqm"]
        if base is not None:
            ax.axvline(base, color="black", ls="--", lw=0.8)
        arrow = "↑" if info["higher_is_better"] else "↓"
        ax.set_title(f"{metric} {arrow}", fontsize=10)
        ax.set_xlabel(f"IQM, {level}% CI")
        ax.grid(axis="x", alpha=0.3)
        ax.set_ylim(-0.6, len(rows_of) - 0.4)
    if readings:
        handles = [
            Line2D([], [], marker="o", ls="", color=colors[k % len(colors)], label=name)
            for k, (name, _) in enumerate(layers)
        ]
        axes[0].legend(handles=handles, fontsize=8, loc="best")
    names = [
        f"{a} (baseline)"
        if a == summary["baseline"]
        else f"{a} ({config['arms'][a]['view_of']}'s runs)"
        if "view_of" in config["arms"][a]
        else a
        for a in rows_of
    ]
    axes[0].set_yticks(rows, names)
    fig.suptitle(f"{summary['study']}: {label}", fontsize=11)
    return fig


def sweep_figure(summary: dict[str, Any], label: str) -> Figure:
    """One panel per metric: the IQM (dot) and its CI (bar) of each point of the study's sweep
    against the knob's value on base config ``label``; the dashed line is the baseline's IQM."""
    sweep, config = summary["sweep"], summary["configs"][label]
    metrics = summary["metrics"]
    level = round(100 * summary["bootstrap"]["level"])
    fig = Figure(figsize=(3.6 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (metric, info) in zip(axes, metrics.items(), strict=True):
        points = []  # (x, IQM, CI low, CI high) of the points with scores
        for arm, x in sweep["points"].items():
            s = config["arms"][arm]["metrics"][metric]
            if s["iqm"] is not None:
                points.append((x, s["iqm"], *(s["iqm_ci"] or (s["iqm"], s["iqm"]))))
        if points:
            x, iqm, low, high = np.array(points).T
            yerr = np.array([iqm - low, high - iqm])
            ax.errorbar(x, iqm, yerr=yerr, fmt="o-", color="tab:blue", capsize=3, lw=1)
        base = config["arms"][summary["baseline"]]["metrics"][metric]["iqm"]
        if base is not None:
            ax.axhline(
                base, color="black", ls="--", lw=0.8, label=f"baseline {summary['baseline']}"
            )
            ax.legend(fontsize=8)
        arrow = "↑" if info["higher_is_better"] else "↓"
        ax.set_title(f"{metric} {arrow}", fontsize=10)
        ax.set_xlabel(sweep["x"])
        ax.set_ylabel(f"IQM, {level}% CI")
        values = sorted(set(sweep["points"].values()))
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.grid(alpha=0.3)
    fig.suptitle(f"{summary['study']}: {label}", fontsize=11)
    return fig


def mean_band(
    series: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard error over seeds of curves that may be sampled at different steps.

    Each curve is interpolated onto the union of all steps, within its own range only; at each
    step the mean is over the curves that reach it, and the standard error is NaN where fewer
    than two do.

    Returns:
        ``(steps, mean, se)``.
    """
    grid = np.unique(np.concatenate([steps for steps, _ in series]))
    stacked = np.full((len(series), grid.size), np.nan)
    for i, (steps, values) in enumerate(series):
        inside = (grid >= steps[0]) & (grid <= steps[-1])
        stacked[i, inside] = np.interp(grid[inside], steps, values)
    count = np.sum(~np.isnan(stacked), axis=0)
    mean = np.nanmean(stacked, axis=0)
    se = np.full(grid.size, np.nan)
    several = count > 1
    se[several] = np.nanstd(stacked[:, several], axis=0, ddof=1) / np.sqrt(count[several])
    return grid, mean, se


def curve_figure(
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    title: str,
    ylabel: str,
    xlabel: str = "step",
) -> Figure:
    """One line per arm, the mean over seeds, with a ± standard-error band."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for arm, series in curves.items():
        steps, mean, se = mean_band(series)
        (line,) = ax.plot(steps, mean, label=f"{arm} (n={len(series)})")
        ax.fill_between(steps, mean - se, mean + se, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{ylabel} (mean ± s.e.)")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def phase_figure(summary: dict[str, Any], label: str, metric: str) -> Figure:
    """The phase diagnostic of ``metric`` on base config ``label``: one panel per arm.

    Each panel shows the mean change per position bin of the cycle (dot) with its CI (bar),
    over seeds; a bin mostly attributed from intervals spanning several bins (split > 50%) is
    drawn hollow. Panels share the y axis; the dashed line is no change.
    """
    info = summary["diagnostic"]
    arms = summary["configs"][label]["diagnostic"][metric]
    level = round(100 * summary["bootstrap"]["level"])
    cols = min(4, len(arms))
    rows = -(-len(arms) // cols)
    fig = Figure(figsize=(2.6 * cols + 0.6, 2.2 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    centers = (np.arange(info["bins"]) + 0.5) / info["bins"]
    for ax, (arm, out) in zip(axes, arms.items(), strict=False):
        ax.axhline(0.0, color="black", ls="--", lw=0.8)
        for x, b in zip(centers, out["bins"], strict=True):
            if b["mean"] is None:
                continue
            hollow = b["split"] is not None and b["split"] > 0.5
            ax.plot([x, x], b["ci"], color="tab:blue", lw=5, alpha=0.35, solid_capstyle="butt")
            ax.plot([x], [b["mean"]], "o", color="tab:blue", mfc="white" if hollow else "tab:blue")
        ax.set_title(f"{arm} (n={out['runs']})", fontsize=9)
        if not out["runs"]:
            ax.annotate("no runs", (0.5, 0.5), xycoords="axes fraction", ha="center", color="gray")
        ax.grid(alpha=0.3)
        ax.set_xlim(0.0, 1.0)
    for ax in axes[len(arms) :]:
        ax.set_visible(False)
    fig.supxlabel(f"position in the cycle of {info['clock']} (0 = restart)", fontsize=9)
    fig.supylabel(f"change of {metric} per bin (mean, {level}% CI)", fontsize=9)
    skip = info.get("skip_cycles", 0)
    after = (
        "" if not skip else " (after the first cycle)" if skip == 1 else f" (after {skip} cycles)"
    )
    fig.suptitle(f"{summary['study']}: {label}: where in the cycle{after}", fontsize=11)
    return fig
