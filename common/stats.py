"""Statistics for comparisons over a handful of seeds: IQM, bootstrap CIs, P(improvement).

The definitions follow rliable (Agarwal et al., 2021, *Deep Reinforcement Learning at the Edge
of the Statistical Precipice*), the field's reference for few-run comparisons:

- Scores are a ``runs × tasks`` matrix; a 1-D array is one task. Runs are seeds, tasks are
  environments or datasets whose scores are not exchangeable.
- The interquartile mean (IQM) is the mean of the middle 50% of all scores pooled over tasks
  (``scipy.stats.trim_mean(scores, 0.25)``, as rliable computes it): robust to
  one outlier seed, yet less noisy than the median.
- A bootstrap CI is *stratified*: each replicate redraws runs with replacement *within* each
  task, so every replicate keeps the same number of scores per task.
- The probability of improvement ``P(X > Y)`` is the Mann-Whitney U statistic over ``n·m``
  pairs, ties counting half, averaged over tasks. 0.5 means no difference; it says how often a
  run of X beats a run of Y, not by how much.

Every function takes plain sequences or arrays of finite numbers (drop failed runs first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "as_score_matrix",
    "iqm",
    "mean_se",
    "bootstrap_ci",
    "probability_of_improvement",
    "probability_of_improvement_ci",
]

Scores = Sequence[float] | Sequence[Sequence[float]] | np.ndarray
Statistic = Callable[..., float]


def as_score_matrix(scores: Scores, name: str = "scores") -> np.ndarray:
    """``scores`` as a float ``runs × tasks`` matrix (a 1-D input becomes one column).

    Raises:
        ValueError: no runs, more than two dimensions, or a NaN or infinite score.
    """
    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(
            f"{name}: expected a non-empty list of runs or a runs × tasks matrix, "
            f"got shape {np.shape(scores)}"
        )
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name}: contains NaN or infinite scores; drop failed runs first")
    return matrix


def iqm(scores: Scores) -> float:
    """Interquartile mean of all scores pooled over tasks.

    Cuts ``floor(n/4)`` scores from each end of the ``n`` sorted scores and averages the rest:
    the IQM of 1..8 is the mean of 3..6, 4.5.
    """
    flat = np.sort(as_score_matrix(scores), axis=None)
    cut = flat.size // 4  # scipy.stats.trim_mean(flat, 0.25) cuts int(0.25 * n), as here
    return float(flat[cut : flat.size - cut].mean())


def mean_se(scores: Scores) -> tuple[float, float]:
    """Mean of all scores and its standard error ``std(ddof=1) / sqrt(n)`` (NaN for one score)."""
    flat = as_score_matrix(scores).ravel()
    se = float(np.std(flat, ddof=1) / np.sqrt(flat.size)) if flat.size > 1 else float("nan")
    return float(np.mean(flat)), se


def probability_of_improvement(x: Scores, y: Scores) -> float:
    """``P(X > Y) + P(X = Y) / 2`` for a run of X against a run of Y, averaged over tasks.

    Per task this is ``U / (n·m)``, the Mann-Whitney U statistic of X's ``n`` runs against Y's
    ``m`` runs, normalised to [0, 1]. X and Y need the same tasks, not the same number of runs.
    For a lower-is-better score pass the negated scores.
    """
    a, b = as_score_matrix(x, "x"), as_score_matrix(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has {a.shape[1]} tasks and y has {b.shape[1]}; they must match")
    wins = (a[:, None, :] > b[None, :, :]).mean(axis=(0, 1))
    ties = (a[:, None, :] == b[None, :, :]).mean(axis=(0, 1))
    return float(np.mean(wins + 0.5 * ties))


def _stratified_replicates(matrix: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``reps`` resamples of ``matrix``, runs redrawn with replacement within each task."""
    runs, tasks = matrix.shape
    rows = rng.integers(0, runs, size=(reps, runs, tasks))
    return matrix[rows, np.arange(tasks)]


def _percentile_ci(
    samples: list[np.ndarray], statistic: Statistic, reps: int, level: float, seed: int
) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level = {level}: must be in (0, 1), e.g. 0.95")
    if reps < 1:
        raise ValueError(f"reps = {reps}: must be >= 1 (2000 is customary)")
    rng = np.random.default_rng(seed)
    replicates = [_stratified_replicates(m, reps, rng) for m in samples]
    values = np.array([statistic(*(r[i] for r in replicates)) for i in range(reps)])
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_ci(
    scores: Scores,
    statistic: Statistic,
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile confidence interval of ``statistic(scores)`` by stratified bootstrap.

    Args:
        scores: runs, or a runs × tasks matrix (runs are resampled within each task).
        statistic: maps a runs × tasks matrix to a number, e.g. :func:`iqm`.
        reps: bootstrap replicates.
        level: coverage in (0, 1).
        seed: seed of the resampling generator; the same seed gives the same interval.

    Returns:
        ``(low, high)``, the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the replicates.
    """
    return _percentile_ci([as_score_matrix(scores)], statistic, reps, level, seed)


def probability_of_improvement_ci(
    x: Scores, y: Scores, reps: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Confidence interval of :func:`probability_of_improvement` of X over Y.

    X and Y are resampled independently, each stratified over tasks (rliable's
    ``StratifiedIndependentBootstrap``).
    """
    a, b = as_score_matrix(x, "x"), as_score_matrix(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has {a.shape[1]} tasks and y has {b.shape[1]}; they must match")
    return _percentile_ci([a, b], probability_of_improvement, reps, level, seed)
