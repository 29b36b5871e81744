"""Difficulty environments: the mapping d -> physics, next-reset semantics, worker read-back."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from rlcycle.envs import ENVS, make_env
from rlcycle.vecenv import make_training_env


def rollout(env: gym.Env, seed: int, actions) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for action in actions:
        obs, _, terminated, truncated, _ = env.step(action)
        out.append(obs)
        if terminated or truncated:
            break
    return out


def same_trajectory(a: gym.Env, b: gym.Env, seed: int, actions) -> bool:
    ta, tb = rollout(a, seed, actions), rollout(b, seed, actions)
    return len(ta) == len(tb) and all(np.array_equal(x, y) for x, y in zip(ta, tb, strict=True))


def random_actions(space: gym.Space, n: int, seed: int = 0) -> list:
    space.seed(seed)
    return [space.sample() for _ in range(n)]


WINDY = {"enable_wind": True, "wind_power": 15.0, "turbulence_power": 1.5}


@pytest.mark.parametrize("via_setter", [False, True])
def test_lunarlander_hardest_is_the_stock_windy_lander(via_setter):
    stock = gym.make("LunarLander-v3", **WINDY)
    if via_setter:
        ours = make_env("rlcycle/LunarLander-v3", difficulty=0.0)
        ours.reset(seed=1)
        ours.unwrapped.set_difficulty(1.0)
    else:
        ours = make_env("rlcycle/LunarLander-v3", difficulty=1.0)
    actions = random_actions(stock.action_space, 400)
    for seed in (0, 7):
        assert same_trajectory(ours, stock, seed, actions)
    assert ours.unwrapped.difficulty == 1.0


def test_lunarlander_wind_scales_with_difficulty_and_is_off_at_zero():
    continuous = make_env("rlcycle/LunarLanderContinuous-v3", difficulty=0.5)
    stock = gym.make(
        "LunarLanderContinuous-v3", enable_wind=True, wind_power=7.5, turbulence_power=0.75
    )
    assert same_trajectory(continuous, stock, 3, random_actions(stock.action_space, 300))
    calm = make_env("rlcycle/LunarLander-v3", difficulty=0.0)
    assert not calm.unwrapped.enable_wind
    actions = random_actions(calm.action_space, 300)
    assert same_trajectory(calm, gym.make("LunarLander-v3"), 5, actions)
    assert not same_trajectory(calm, gym.make("LunarLander-v3", **WINDY), 5, actions)


def test_cartpole_easiest_is_stock_and_derived_physics_are_recomputed():
    actions = [i % 2 for i in range(200)]
    ours = make_env("rlcycle/CartPole-v1", difficulty=0.0)
    assert same_trajectory(ours, gym.make("CartPole-v1"), 2, actions)

    ours.unwrapped.set_difficulty(1.0)
    ours.reset(seed=2)
    env = ours.unwrapped
    assert (env.masspole, env.length, env.force_mag) == pytest.approx((0.5, 0.75, 6.0))
    assert env.total_mass == pytest.approx(env.masscart + env.masspole)
    assert env.polemass_length == pytest.approx(env.masspole * env.length)

    # A stock CartPole with the same masses, length and push, derived terms set by hand.
    reference = CartPoleEnv()
    reference.masspole, reference.length, reference.force_mag = 0.5, 0.75, 6.0
    reference.total_mass = reference.masspole + reference.masscart
    reference.polemass_length = reference.masspole * reference.length
    assert same_trajectory(ours, gym.wrappers.TimeLimit(reference, 500), 4, actions)
    # Forgetting the derived terms (the known bug) gives other dynamics.
    stale = CartPoleEnv()
    stale.masspole, stale.length, stale.force_mag = 0.5, 0.75, 6.0
    assert not same_trajectory(ours, gym.wrappers.TimeLimit(stale, 500), 4, actions)


def test_pendulum_mass_follows_difficulty_and_zero_is_stock():
    actions = random_actions(gym.make("Pendulum-v1").action_space, 50)
    ours = make_env("rlcycle/Pendulum-v1", difficulty=0.0)
    assert same_trajectory(ours, gym.make("Pendulum-v1"), 0, actions)
    heavy = make_env("rlcycle/Pendulum-v1", difficulty=1.0)
    assert heavy.unwrapped.m == pytest.approx(1.5)
    assert not same_trajectory(heavy, gym.make("Pendulum-v1"), 0, actions)


def test_difficulty_applies_at_the_next_reset_only_and_is_reported_in_info():
    env = make_env("rlcycle/CartPole-v1", difficulty=0.0)
    env.reset(seed=0)
    env.unwrapped.set_difficulty(0.5)
    base = env.unwrapped
    assert (base.next_difficulty, base.difficulty, base.masspole) == (0.5, 0.0, 0.1)
    _, _, _, _, info = env.step(0)
    assert info["difficulty"] == 0.0  # mid-episode: unchanged
    env.reset()
    assert base.difficulty == 0.5 and base.masspole == pytest.approx(0.3)
    _, _, _, _, info = env.step(0)
    assert info["difficulty"] == 0.5


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "hard", True])
def test_difficulty_outside_unit_interval_is_rejected(bad):
    env = make_env("rlcycle/CartPole-v1")
    with pytest.raises(ValueError, match=r"difficulty = .*\[0, 1\]"):
        env.unwrapped.set_difficulty(bad)
    with pytest.raises(ValueError, match="difficulty"):
        make_env("rlcycle/LunarLander-v3", difficulty=bad)


def test_registered_ids_keep_the_stock_time_limits():
    for env_id, info in ENVS.items():
        assert gym.spec(env_id).max_episode_steps == gym.spec(info.stock).max_episode_steps
    with pytest.raises(ValueError, match="env.id = 'CartPole-v1'"):
        make_env("CartPole-v1")


def test_difficulty_reaches_subprocess_workers_through_env_method():
    env = make_training_env("rlcycle/LunarLander-v3", 2, seed=0, difficulty=0.0, vec="subproc")
    try:
        assert env.get_attr("difficulty") == [0.0, 0.0]
        env.env_method("set_difficulty", 0.6)
        assert env.get_attr("next_difficulty") == [0.6, 0.6]
        assert env.get_attr("wind_power") == [0.0, 0.0]  # not before the next reset
        env.reset()
        assert env.get_attr("difficulty") == [0.6, 0.6]
        assert env.get_attr("wind_power") == pytest.approx([9.0, 9.0])
        assert env.get_attr("enable_wind") == [True, True]
        _, _, _, infos = env.step(np.zeros(2, dtype=int))
        assert [info["difficulty"] for info in infos] == [0.6, 0.6]
    finally:
        env.close()
