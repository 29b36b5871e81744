"""Where in the cycle does a run improve? A metric's changes attributed to the clock's phase.

Given runs' evaluation histories (the steps and values of a metric, e.g. read from the
``history`` of ``metrics.json``) and the clock they trained on (a built
:class:`~common.schedules.Schedule`), each change of the metric between two consecutive
evaluations is attributed to the phase of the cycle in which it happened:

- the *high-rate* half (the clock's level >= 0.5) against the *low-rate* half (level < 0.5);
- ``bins`` equal bins of the cycle's position (bin 0 starts at the restart).

A clock whose floor is its peak (a constant rate written as a cosine with ``min = max``) keeps
its whole clock, level included: its halves and bins split the cycle as a cycling rate's do,
which makes a constant arm the diagnostic's null (any phase effect there is not the rate's).

Per run the result is the total change won (or lost) in each part over the run; across runs,
the mean per part with a stratified-bootstrap CI (:mod:`common.stats`), and the per-run
difference high - low with its CI. The mean, not the IQM: the parts of a run add up to its
whole change, and means keep that sum. It answers "are modes won at the peaks and lost in the
troughs?" (a positive high - low) and "does validation only improve in the high-rate phase?".
A run that starts from scratch learns most in its first cycle, wherever in the cycle that
happens; ``skip_cycles`` leaves the first cycles out, so that the answer is about the rhythm.

An interval between evaluations that spans several parts is split **pro rata by steps**: each
interval is cut into :data:`SUBSTEPS` equal pieces, each piece's midpoint is placed by the
clock's ``phase``, and the change is shared in proportion to the pieces. This assumes the
metric moved evenly inside the interval, which can only smear a real phase effect across the
parts it spans, never create one (a uniform change is attributed uniformly): the split is
conservative. Dropping the intervals longer than a part instead would throw away most of the
data whenever evaluations and cycles are not commensurate (RL evaluates every 50k env steps on
cycles of 262k), and would keep a biased subset. So nothing is dropped, and each part reports
``split``: the share of its steps that came from intervals spanning more than one part. A part
whose attribution is mostly split says little; evaluate more often (or use fewer bins) to
resolve it. The steps before the first evaluation have no starting value and are not counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.schedules import Schedule
from common.stats import bootstrap_ci

__all__ = [
    "SUBSTEPS",
    "PhaseShares",
    "attribute_run",
    "phase_diagnostic",
]

SUBSTEPS = 64
"""Pieces each interval between two evaluations is cut into to place it in the cycle."""


@dataclass(frozen=True)
class PhaseShares:
    """One run's metric changes by phase of the cycle.

    Attributes:
        bins: change attributed to each position bin (``len == bins``), summed over the run.
        high: change attributed to the high-rate half (level >= 0.5).
        low: change attributed to the low-rate half.
        bin_steps: steps attributed to each bin.
        bin_split_steps: of those, the steps from intervals spanning more than one bin.
        high_steps, low_steps: steps attributed to each half.
        split_steps_halves: steps from intervals spanning both halves.
    """

    bins: np.ndarray
    high: float
    low: float
    bin_steps: np.ndarray
    bin_split_steps: np.ndarray
    high_steps: float
    low_steps: float
    split_steps_halves: float


def _place(clock: Schedule, start: float, end: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin index and high-rate flag of the midpoints of :data:`SUBSTEPS` pieces of (start, end]."""
    width = (end - start) / SUBSTEPS
    phases = [clock.phase(start + (j + 0.5) * width) for j in range(SUBSTEPS)]
    which = np.array([min(int(p.position * bins), bins - 1) for p in phases])
    high = np.array([p.level >= 0.5 for p in phases])
    return which, high


def _last_per_step(steps: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, ...]:
    """Steps and values with, of entries at the same step, the later one kept."""
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    if steps.ndim != 1 or steps.shape != values.shape or np.any(np.diff(steps) < 0):
        raise ValueError("steps must not decrease, one value per step")
    keep = np.append(np.diff(steps) > 0, True)
    return steps[keep], values[keep]


def _counted(
    steps: Sequence[float], values: Sequence[float], clock: Schedule, skip_cycles: int
) -> tuple[np.ndarray, np.ndarray]:
    """The evaluations that count: one per step (the later), from the start of the clock's
    cycle ``skip_cycles`` on."""
    if skip_cycles < 0:
        raise ValueError(f"skip_cycles = {skip_cycles}: must be >= 0")
    steps, values = _last_per_step(steps, values)
    if skip_cycles == 0:
        return steps, values
    keep = np.array([clock.phase(float(s)).cycle >= skip_cycles for s in steps], dtype=bool)
    return steps[keep], values[keep]


def attribute_run(
    steps: Sequence[float],
    values: Sequence[float],
    clock: Schedule,
    bins: int = 4,
    skip_cycles: int = 0,
) -> PhaseShares:
    """Attribute each change between consecutive evaluations to the cycle's phase (pro rata).

    Args:
        steps: the evaluations' steps, not decreasing, on the clock's axis: the change over
            ``(s0, s1]`` is placed at the steps inside it. Of two evaluations at the same
            step the later counts.
        values: the metric at each of them (finite).
        clock: the schedule whose phase places each step.
        bins: position bins per cycle (>= 1).
        skip_cycles: leave out the changes in the clock's first ``skip_cycles`` cycles (a run
            learning from scratch gains most in its first cycle, wherever in the cycle that
            happens): counting starts at the evaluation at that cycle's restart.
    """
    return _attribute(*_counted(steps, values, clock, skip_cycles), clock, bins)


def _attribute(steps: np.ndarray, values: np.ndarray, clock: Schedule, bins: int) -> PhaseShares:
    """:func:`attribute_run` on evaluations already counted (:func:`_counted`)."""
    if bins < 1:
        raise ValueError(f"bins = {bins}: must be >= 1")
    per_bin, bin_steps, bin_split = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    high = low = high_steps = low_steps = split_halves = 0.0
    for start, end, change in zip(steps[:-1], steps[1:], np.diff(values), strict=True):
        which, is_high = _place(clock, start, end, bins)
        share = np.bincount(which, minlength=bins) / SUBSTEPS
        length = end - start
        per_bin += change * share
        bin_steps += length * share
        if np.count_nonzero(share) > 1:
            bin_split += length * share
        high_share = float(is_high.mean())
        high += change * high_share
        low += change * (1.0 - high_share)
        high_steps += length * high_share
        low_steps += length * (1.0 - high_share)
        if 0.0 < high_share < 1.0:
            split_halves += length
    return PhaseShares(
        per_bin, high, low, bin_steps, bin_split, high_steps, low_steps, split_halves
    )


def _mean_ci(scores: Sequence[float], bootstrap: Mapping[str, Any]) -> dict[str, Any]:
    values = [float(v) for v in scores]
    if not values:
        return {"scores": [], "mean": None, "ci": None}
    lo, hi = bootstrap_ci(values, lambda m: float(np.mean(m)), **bootstrap)
    return {"scores": values, "mean": float(np.mean(values)), "ci": [lo, hi]}


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def phase_diagnostic(
    runs: Sequence[tuple[Sequence[float], Sequence[float], Schedule]],
    bins: int = 4,
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    skip_cycles: int = 0,
) -> dict[str, Any]:
    """The phase attribution of several runs (seeds), with bootstrap CIs across them.

    Args:
        runs: per run ``(steps, values, clock)``: its evaluations and the schedule it trained
            on. Runs with fewer than two evaluations (from cycle ``skip_cycles`` on) are left
            out.
        bins: position bins per cycle.
        reps, level, seed: the bootstrap (see :func:`common.stats.bootstrap_ci`).
        skip_cycles: the clock's first cycles left out of every run (:func:`attribute_run`).

    Returns:
        ``{"runs", "skip_cycles", "bins": [{"lo", "hi", "scores", "mean", "ci", "steps",
        "split"}...], "high": {...}, "low": {...}, "high_minus_low": {...}, "split_halves"}``:
        per part the per-run changes (``scores``), their mean and CI, the mean steps it covers
        per run and ``split``, the share of those steps that came from intervals spanning
        several parts.
    """
    counted = [(*_counted(s, v, clock, skip_cycles), clock) for s, v, clock in runs]
    shares = [_attribute(s, v, clock, bins) for s, v, clock in counted if len(s) >= 2]
    bootstrap = {"reps": reps, "level": level, "seed": seed}
    out: dict[str, Any] = {"runs": len(shares), "skip_cycles": skip_cycles, "bins": []}
    for k in range(bins):
        steps = sum(float(r.bin_steps[k]) for r in shares)
        split = sum(float(r.bin_split_steps[k]) for r in shares)
        out["bins"].append(
            {
                "lo": k / bins,
                "hi": (k + 1) / bins,
                **_mean_ci([r.bins[k] for r in shares], bootstrap),
                "steps": steps / len(shares) if shares else None,
                "split": _share(split, steps),
            }
        )
    out["high"] = _mean_ci([r.high for r in shares], bootstrap)
    out["low"] = _mean_ci([r.low for r in shares], bootstrap)
    out["high_minus_low"] = _mean_ci([r.high - r.low for r in shares], bootstrap)
    halves = sum(r.high_steps + r.low_steps for r in shares)
    out["split_halves"] = _share(sum(r.split_steps_halves for r in shares), halves)
    return out
