"""The curriculum: anti/in/fixed/linear/gated/random_d difficulty from the learning-rate clock."""

import numpy as np
import pytest
import torch

from common.schedules import from_spec
from rlcycle.curriculum import curriculum_from_spec

CLOCK = {"kind": "cosine_restarts", "max": 1e-3, "min": 1e-5, "period": 1000}


def build(seed=0, **spec):
    return curriculum_from_spec(spec, from_spec(CLOCK), total_steps=4000, seed=seed)


def test_anti_phase_rises_as_the_lr_anneals_with_a_rising_ceiling():
    cur = build(mode="anti", lo=0.1, hi=1.0, ceiling=0.5, rise=0.25)
    clock = cur.clock
    steps = np.arange(0, 4000)
    d = np.array([cur.difficulty(t) for t in steps])
    lr = clock.values(steps)
    # Each restart goes back to the easiest setting while the lr jumps to its peak.
    for k in range(4):
        assert d[k * 1000] == pytest.approx(0.1)
        assert lr[k * 1000] == pytest.approx(1e-3)
    # Within a cycle, difficulty and lr move in opposite directions.
    for k in range(4):
        cycle = slice(k * 1000, (k + 1) * 1000)
        assert np.corrcoef(d[cycle], lr[cycle])[0, 1] < -0.999
    # The ceilings: 0.5, 0.75, 1.0, then capped at hi.
    tops = [d[k * 1000 + 999] for k in range(4)]
    assert tops == pytest.approx([0.5, 0.75, 1.0, 1.0], abs=1e-4)
    # The formula, point by point.
    levels = clock.levels(steps)
    ceilings = np.minimum(1.0, 0.5 + 0.25 * (steps // 1000))
    assert d == pytest.approx(0.1 + (ceilings - 0.1) * (1 - levels))


def test_in_phase_is_the_mirror_image_of_anti_phase():
    anti = build(mode="anti", ceiling=0.8, rise=0.0)
    inp = build(mode="in", ceiling=0.8, rise=0.0)
    for t in range(0, 3000, 37):
        assert anti.difficulty(t) + inp.difficulty(t) == pytest.approx(0.8)
    assert inp.difficulty(0) == pytest.approx(0.8)  # hard exactly when the lr peaks


def test_fixed_and_linear():
    assert build(mode="fixed", value=0.3).difficulty(1234) == 0.3
    ramp = build(mode="linear", lo=0.2, hi=0.6)  # ramp_steps = 0: over the run (4000)
    assert [ramp.difficulty(t) for t in (0, 2000, 4000, 9000)] == pytest.approx(
        [0.2, 0.4, 0.6, 0.6]
    )
    assert build(mode="linear", ramp_steps=1000).difficulty(500) == pytest.approx(0.5)


def test_gated_advances_after_the_window_and_patience_only():
    cur = build(mode="gated", lo=0.0, hi=0.5, step=0.25, threshold=0.75, window=4, patience=2)
    assert cur.difficulty(0) == 0.0
    # Episodes at another difficulty (started before a change) do not count.
    for _ in range(10):
        assert not cur.record(0.3, True)
    # The window must fill first: 4 successes give the first passing rate, patience wants 2.
    results = [cur.record(0.0, True) for _ in range(5)]
    assert results == [False, False, False, False, True]
    assert cur.difficulty(10**6) == 0.25  # gated ignores the clock
    # The window restarts at the new level. 3/4 passes (streak 1), then 2/4 breaks the streak.
    outcomes = [True, True, True, False, False, True]
    assert not any(cur.record(0.25, s) for s in outcomes)
    assert cur.level == 0.25
    # Window [T, F, F, T] -> [F, F, T, T] 1/2 -> [F, T, T, T] 3/4 -> [T, T, T, T]: advance.
    assert [cur.record(0.25, True) for _ in range(3)] == [False, False, True]
    assert cur.level == 0.5
    # Capped at hi.
    assert not any(cur.record(0.5, True) for _ in range(20))
    assert cur.level == 0.5


def test_gated_state_survives_a_weights_only_checkpoint(tmp_path):
    cur = build(mode="gated", window=5, patience=3, threshold=0.6)
    for s in (True, False, True, True, True):
        cur.record(0.0, s)
    torch.save(cur.state_dict(), tmp_path / "c.pt")
    twin = build(mode="gated", window=5, patience=3, threshold=0.6)
    twin.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    assert twin.state_dict() == cur.state_dict()
    assert [twin.record(0.0, True) for _ in range(3)] == [cur.record(0.0, True) for _ in range(3)]


def test_random_d_draws_the_anti_phase_difficulties_uniformly_in_time():
    cur, anti = build(mode="random_d", seed=3), build(mode="anti")
    draws = np.array([cur.episode_difficulty(env, e) for env in range(8) for e in range(500)])
    # The anti arm's difficulty at every step of the run, rounded as the trainer sends it.
    visited = np.array([round(anti.difficulty(t), 2) for t in range(4000)])
    assert set(draws) <= set(visited)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert np.quantile(draws, q) == pytest.approx(np.quantile(visited, q), abs=0.04), q
    assert draws.mean() == pytest.approx(visited.mean(), abs=0.01)
    # A pure function of (seed, env, episode): the same again, another seed or env differs.
    assert cur.episode_difficulty(2, 7) == build(mode="random_d", seed=3).episode_difficulty(2, 7)
    other_seed = build(mode="random_d", seed=4)
    assert [cur.episode_difficulty(0, e) for e in range(20)] != [
        other_seed.episode_difficulty(0, e) for e in range(20)
    ]
    assert [cur.episode_difficulty(0, e) for e in range(20)] != [
        cur.episode_difficulty(1, e) for e in range(20)
    ]
    assert cur.per_episode and not anti.per_episode
    assert cur.difficulty(1234) == 0.0  # no per-step difficulty: lo


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"mode": "sideways"}, r"curriculum.mode = 'sideways': must be one of anti"),
        ({"hi": 1.5}, r"curriculum.hi = 1.5: must be in \[0, 1\]"),
        ({"value": -0.2}, r"curriculum.value = -0.2: must be in \[0, 1\]"),
        ({"lo": 0.6, "hi": 0.4, "ceiling": 0.5}, r"curriculum.lo = 0.6: must be <= hi"),
        ({"ceiling": 0.9, "hi": 0.8}, r"curriculum.ceiling = 0.9: must be in \[lo, hi\]"),
        ({"window": 0}, r"curriculum.window = 0: must be >= 1"),
        ({"window": 2.5}, r"curriculum.window = 2.5: must be an integer"),
        ({"speed": 2}, r"curriculum.speed: unknown key; allowed: mode, lo"),
    ],
)
def test_bad_specs_name_the_key(spec, message):
    with pytest.raises(ValueError, match=message):
        build(**spec)


@pytest.mark.parametrize("name", ["cartpole", "lunarlander"])
def test_shipped_anti_phase_holds_at_the_rate_sb3_applies_once_per_rollout(name):
    """SB3 reads the learning rate once per rollout, when it trains on it: in a shipped
    on-policy config that rate falls as the difficulty sent during the rollout rises, within
    every cycle (a period of whole rollouts; 15.5 rollouts on LunarLander put a restart inside
    a rollout), and the last update is not trained at a peak."""
    from conftest import logged_difficulty

    from common.config import load_config
    from rlcycle.settings import check_config

    checked = check_config(load_config(name, "rlcycle"))
    config, clock = checked.config, checked.schedules["policy"]
    curriculum = checked.extras["curriculum"]
    assert config["algo"] == "ppo" and config["curriculum"]["mode"] == "anti"
    rollout = config["n_envs"] * config["ppo"]["n_steps"]
    assert config["lr"]["period"] % rollout == 0
    ends = np.arange(rollout, config["steps"] + 1, rollout)  # SB3's updates
    applied = clock.values(ends)
    hardness = np.array([logged_difficulty(config, curriculum, int(end)) for end in ends])
    cycles = np.array([clock.phase(int(end)).cycle for end in ends])
    for cycle in np.unique(cycles):
        within = cycles == cycle
        if within.sum() > 2:
            assert np.corrcoef(applied[within], hardness[within])[0, 1] < -0.95, cycle
    assert clock.phase(int(ends[-1])).position > 0.5
