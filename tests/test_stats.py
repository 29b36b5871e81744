"""IQM, standard error, stratified bootstrap CIs and probability of improvement on known inputs."""

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, trim_mean

from common.stats import (
    bootstrap_ci,
    iqm,
    mean_se,
    probability_of_improvement,
    probability_of_improvement_ci,
)


def width(ci):
    return ci[1] - ci[0]


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(range(1, 9)) == 4.5  # mean of 3, 4, 5, 6
    assert iqm([1, 2, 3, 4, 5, 6, 7, 1000]) == 4.5  # one wild seed does not move it
    assert iqm([[1, 5], [2, 6], [3, 7], [4, 8]]) == 4.5  # pooled over tasks
    rng = np.random.default_rng(0)
    for n in range(1, 23):  # sizes that are and are not multiples of 4, as rliable computes it
        scores = rng.exponential(size=n)
        assert iqm(scores) == pytest.approx(trim_mean(scores, 0.25), rel=1e-12)


def test_mean_and_standard_error():
    mean, se = mean_se([1, 2, 3, 4])
    assert mean == 2.5
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)  # sample std sqrt(5/3) over sqrt(4)
    mean, se = mean_se([7.0])
    assert mean == 7.0 and math.isnan(se)


def test_probability_of_improvement_on_hand_made_tables():
    assert probability_of_improvement([3, 4], [1, 2]) == 1.0
    assert probability_of_improvement([1, 2], [3, 4]) == 0.0
    assert probability_of_improvement([1, 2], [1, 2]) == 0.5  # 1 win, 1 loss, 2 ties of 4
    assert probability_of_improvement([5, 5], [5]) == 0.5  # ties count half
    assert probability_of_improvement([1, 3], [2, 2, 2]) == 0.5
    # Two tasks: X always wins on the first, always loses on the second: the mean is 0.5.
    assert probability_of_improvement([[3, 0], [4, 0]], [[1, 1], [2, 1]]) == 0.5


def test_probability_of_improvement_is_mann_whitney_u_normalised():
    rng = np.random.default_rng(1)
    for n, m in [(5, 5), (10, 3), (7, 12)]:
        x, y = rng.integers(0, 6, size=n), rng.integers(0, 6, size=m)  # many ties
        expected = mannwhitneyu(x, y).statistic / (n * m)
        assert probability_of_improvement(x, y) == pytest.approx(expected)
        assert probability_of_improvement(x, y) + probability_of_improvement(y, x) == (
            pytest.approx(1.0)
        )


def test_bootstrap_ci_contains_the_estimate_and_shrinks_with_more_seeds():
    rng = np.random.default_rng(2)
    few, many = rng.normal(10, 2, size=5), rng.normal(10, 2, size=80)
    ci_few, ci_many = bootstrap_ci(few, iqm), bootstrap_ci(many, iqm)
    assert ci_few[0] <= iqm(few) <= ci_few[1]
    assert ci_many[0] <= iqm(many) <= ci_many[1]
    assert width(ci_many) < width(ci_few) / 2  # about 1/sqrt(16) of it
    assert width(bootstrap_ci(many, iqm, level=0.5)) < width(ci_many)
    assert bootstrap_ci(many, iqm, seed=3) == bootstrap_ci(many, iqm, seed=3)
    assert bootstrap_ci(many, iqm, seed=3) != bootstrap_ci(many, iqm, seed=4)


def test_bootstrap_ci_of_the_mean_matches_normal_theory():
    scores = np.random.default_rng(3).normal(0, 2, size=400)
    lo, hi = bootstrap_ci(scores, lambda s: float(np.mean(s)), reps=4000)
    half = 1.96 * np.std(scores, ddof=1) / math.sqrt(len(scores))
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert (lo + hi) / 2 == pytest.approx(np.mean(scores), abs=0.2 * half)


def test_bootstrap_is_stratified_over_tasks():
    # Task 0 always scores 0, task 1 always 10: resampling runs within each task keeps three
    # scores of each, so every replicate's mean is 5. Pooling the tasks would not.
    scores = np.array([[0.0, 10.0]] * 3)
    assert bootstrap_ci(scores, lambda s: float(np.mean(s))) == (5.0, 5.0)
    pooled = bootstrap_ci(scores.ravel(), lambda s: float(np.mean(s)))
    assert width(pooled) > 3


def test_probability_of_improvement_ci():
    assert probability_of_improvement_ci([3, 4], [1, 2]) == (1.0, 1.0)
    rng = np.random.default_rng(4)
    x, y = rng.normal(0.5, 1, size=10), rng.normal(0, 1, size=10)
    lo, hi = probability_of_improvement_ci(x, y)
    assert 0 <= lo <= probability_of_improvement(x, y) <= hi <= 1
    assert hi - lo > 0.1  # ten seeds cannot pin it down


# Two runs × tasks tables and what rliable 1.2.0 reports for them with 100 000 replicates
# (rly.get_interval_estimates with metrics.aggregate_iqm and metrics.probability_of_improvement;
# run once by hand: rliable's arch dependency does not import beside pandas 3). The tasks sit at
# different levels, so a bootstrap that pooled them would give a far wider IQM interval
# (about [3.8, 8.2]).
X = [
    [3.379009, 7.628657, 8.437687],
    [3.044308, 9.266311, 10.636536],
    [0.606628, 5.730613, 8.446414],
    [0.493771, 7.125485, 9.067870],
    [0.985292, 4.944057, 9.396339],
    [1.169612, 5.741101, 9.974260],
]
Y = [
    [1.448300, 5.199056, 12.270284],
    [1.714647, 4.569537, 13.872322],
    [1.094276, 6.856144, 10.189315],
    [4.392284, 4.779707, 11.072487],
    [1.496665, 4.976649, 9.649485],
    [1.331994, 6.265981, 9.310443],
]
RLIABLE_IQM, RLIABLE_IQM_CI = 6.354520, (5.583959, 7.058418)
RLIABLE_POI, RLIABLE_POI_CI = 0.416667, (0.259259, 0.583333)


def test_agrees_with_rliable_reference_values():
    assert iqm(X) == pytest.approx(RLIABLE_IQM, abs=1e-5)
    tolerance = 0.05 * width(RLIABLE_IQM_CI)  # Monte Carlo error of both bootstraps
    assert bootstrap_ci(X, iqm, reps=20000) == pytest.approx(RLIABLE_IQM_CI, abs=tolerance)
    assert probability_of_improvement(X, Y) == pytest.approx(RLIABLE_POI, abs=1e-6)
    tolerance = 0.05 * width(RLIABLE_POI_CI)
    ci = probability_of_improvement_ci(X, Y, reps=20000)
    assert ci == pytest.approx(RLIABLE_POI_CI, abs=tolerance)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: iqm([]), "non-empty"),
        (lambda: iqm([1.0, float("nan")]), "NaN"),
        (lambda: probability_of_improvement([[1, 2]], [[1, 2, 3]]), "tasks"),
        (lambda: bootstrap_ci([1, 2], iqm, level=95), "level"),
    ],
)
def test_bad_input_names_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
