"""Snapshot ensembles of real SB3 policies: averaged distributions, means, Q-values."""

import numpy as np
import pytest
import torch

from rlcycle.algos import ALGOS
from rlcycle.envs import make_env
from rlcycle.evaluate import EnsemblePolicy

CASES = {  # algo, env id
    "ppo-discrete": ("ppo", "rlcycle/CartPole-v1"),
    "ppo-gaussian": ("ppo", "rlcycle/Pendulum-v1"),
    "ppo-gsde": ("ppo", "rlcycle/Pendulum-v1"),
    "sac": ("sac", "rlcycle/Pendulum-v1"),
    "dqn": ("dqn", "rlcycle/CartPole-v1"),
}


def model(case: str, seed: int):
    algo, env_id = CASES[case]
    kwargs = {"learning_starts": 0, "buffer_size": 100} if algo in ("sac", "dqn") else {}
    if case == "ppo-gsde":
        kwargs["use_sde"] = True
    return ALGOS[algo]("MlpPolicy", make_env(env_id), seed=seed, device="cpu", **kwargs)


def observations(m, n: int = 64) -> np.ndarray:
    m.observation_space.seed(0)
    return np.stack([m.observation_space.sample() for _ in range(n)])


def spread(m) -> None:
    """Give a fresh policy's output layer a larger scale, so members disagree clearly."""
    with torch.no_grad():
        for name, p in m.policy.named_parameters():
            if name.startswith(("action_net", "q_net.q_net.4", "actor.mu")):
                p.mul_(100.0)


@pytest.mark.parametrize("case", list(CASES))
def test_ensemble_of_identical_snapshots_acts_like_the_policy(case):
    m = model(case, seed=0)
    spread(m)
    obs = observations(m)
    ensemble = EnsemblePolicy(m.policy, [m.policy.state_dict()] * 3)
    got, _ = ensemble.predict(obs)
    want, _ = m.predict(obs, deterministic=True)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    single, _ = ensemble.predict(obs[0])  # one observation, not a batch
    np.testing.assert_allclose(single, want[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_ensemble_averages_what_the_members_would_do(case):
    members = [model(case, seed) for seed in (1, 2)]
    for m in members:
        spread(m)
    obs = observations(members[0])
    t = torch.as_tensor(obs, dtype=torch.float32)
    with torch.no_grad():
        if case == "ppo-discrete":
            probs = [m.policy.get_distribution(t).distribution.probs for m in members]
            want = torch.stack(probs).mean(0).argmax(-1).numpy()
        elif case in ("ppo-gaussian", "ppo-gsde"):
            means = [m.policy.get_distribution(t).distribution.mean for m in members]
            want = torch.stack(means).mean(0).clamp(-2.0, 2.0).numpy()
        elif case == "sac":
            squashed = [m.policy.actor(t, deterministic=True) for m in members]
            want = 2.0 * torch.stack(squashed).mean(0).numpy()  # Pendulum: torque in [-2, 2]
        else:
            q = [m.policy.q_net(t) for m in members]
            want = torch.stack(q).mean(0).argmax(-1).numpy()
    ensemble = EnsemblePolicy(members[0].policy, [m.policy.state_dict() for m in members])
    got, _ = ensemble.predict(obs)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5)
    each = [m.predict(obs, deterministic=True)[0].reshape(want.shape) for m in members]
    assert not np.allclose(each[0], each[1])  # the members disagree, so averaging matters
    if case in ("ppo-gaussian", "ppo-gsde", "sac"):  # a mean of actions is neither member's action
        assert not any(np.allclose(got.reshape(want.shape), e) for e in each)


def test_an_empty_ensemble_is_an_error():
    m = model("ppo-discrete", 0)
    with pytest.raises(ValueError, match="snapshot ensemble is empty"):
        EnsemblePolicy(m.policy, [])
