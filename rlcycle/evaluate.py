"""Held-out evaluation at a fixed grid of difficulties, for one policy or a snapshot ensemble.

Evaluation environments are separate from the training ones (their own seeds, never touched by
the curriculum), the policy acts on its mode (with ``eval.sampled`` also on drawn actions, keyed
``eval/sampled_return/...``), and each difficulty gets ``episodes`` episodes.
Metrics are keyed like the TensorBoard tags, ``eval/return/d=0.5`` and ``eval/success/d=0.5``
(the fraction of episodes with a return at or above the environment's success threshold); the
ensemble's are ``eval/ensemble_return/d=...`` and ``eval/ensemble_success/d=...``.

The snapshot ensemble (:class:`EnsemblePolicy`) averages what each snapshot would act on:
action probabilities for PPO/A2C with discrete actions (then the most probable action),
Gaussian means for PPO/A2C with continuous actions, squashed means for SAC, Q-values for DQN
(then the greedy action).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.vec_env import DummyVecEnv

from common.config import read_run_config
from common.runs import MISFITS, checkpoint_misfit
from common.snapshots import SnapshotEnsemble
from common.tb import eval_tag
from rlcycle.algos import ON_POLICY, build_model
from rlcycle.checkpoints import policy_weights, read_checkpoint
from rlcycle.envs import ENVS, check_difficulty, make_env
from rlcycle.lr import StepSchedule
from rlcycle.settings import CheckedConfig, check_config

__all__ = [
    "EVAL_ENVS_MAX",
    "EVAL_SEED_OFFSET",
    "EnsemblePolicy",
    "evaluate",
    "evaluate_grid",
    "rebuild_policy",
    "evaluate_run",
]

EVAL_SEED_OFFSET = 10_000
"""Evaluation environments are seeded ``seed + EVAL_SEED_OFFSET``, apart from training's."""

EVAL_ENVS_MAX = 100
"""Most environments one evaluation steps together (one per episode up to this many)."""


class EnsemblePolicy:
    """A snapshot ensemble with SB3's ``predict`` signature, for ``evaluate_policy``.

    Args:
        policy: the algorithm's policy (``model.policy``); it is copied, not changed.
        state_dicts: one ``policy.state_dict()`` per snapshot.
    """

    def __init__(self, policy: BasePolicy, state_dicts: Iterable[Mapping[str, torch.Tensor]]):
        self.members: list[BasePolicy] = []
        for state in state_dicts:
            # A fresh policy like SB3's own load does (deepcopy fails on gSDE's noise tensors).
            member = type(policy)(**policy._get_constructor_parameters()).to(policy.device)
            member.load_state_dict(state)
            member.set_training_mode(False)
            self.members.append(member)
        if not self.members:
            raise ValueError("snapshot ensemble is empty: no cycle has ended yet")
        self.action_space = policy.action_space

    def _average(self, obs: torch.Tensor) -> torch.Tensor:
        """The ensemble's action for a batch of observations, in the policy's action units."""
        outs = []
        for member in self.members:
            if isinstance(member, ActorCriticPolicy):  # PPO, A2C
                dist = member.get_distribution(obs).distribution
                outs.append(
                    dist.probs if isinstance(self.action_space, spaces.Discrete) else dist.mean
                )
            elif hasattr(member, "q_net"):  # DQN
                outs.append(member.q_net(obs))
            else:  # SAC: tanh of the Gaussian mean, in [-1, 1]
                outs.append(member.actor(obs, deterministic=True))
        mean = torch.stack(outs).mean(dim=0)
        if isinstance(self.action_space, spaces.Discrete):
            return mean.argmax(dim=-1)
        return mean

    @torch.no_grad()
    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Ensemble actions for a batch of observations (always deterministic)."""
        first = self.members[0]
        obs, vectorized = first.obs_to_tensor(observation)
        actions = self._average(obs).cpu().numpy().reshape((-1, *self.action_space.shape))
        if isinstance(self.action_space, spaces.Box):
            if first.squash_output:
                actions = first.unscale_action(actions)
            else:
                actions = np.clip(actions, self.action_space.low, self.action_space.high)
        return (actions if vectorized else actions.squeeze(axis=0)), None


def evaluate(
    policy: Any,
    env_id: str,
    difficulty: float,
    episodes: int = 10,
    seed: int = 0,
    n_envs: int | None = None,
    deterministic: bool = True,
) -> tuple[float, float]:
    """Mean return and success rate of ``policy`` over ``episodes`` episodes at ``difficulty``.

    Args:
        policy: anything with SB3's ``predict`` (a model, a policy, an :class:`EnsemblePolicy`).
        env_id: a curriculum id from :data:`rlcycle.envs.ENVS`.
        difficulty: in [0, 1].
        episodes: episodes to average (>= 1).
        seed: environment seed (the evaluation environments' own).
        n_envs: environments stepped together, at most ``episodes``. The default, one per
            episode (up to :data:`EVAL_ENVS_MAX`), gives episode ``i`` the environment seeded
            ``seed + i``, so an episode's start does not depend on how many are evaluated, and
            one batched policy call serves every episode's step.
        deterministic: act on the policy's mode; ``False`` draws actions as training does, from
            torch's generator seeded with ``seed`` (the caller's random state is left as it was).
    """
    difficulty = check_difficulty(difficulty)
    if episodes < 1:
        raise ValueError(f"episodes = {episodes}: must be >= 1")
    env = make_vec_env(
        make_env,
        n_envs=min(n_envs or EVAL_ENVS_MAX, episodes),
        seed=seed,
        env_kwargs={"id": env_id, "difficulty": difficulty},
        vec_env_cls=DummyVecEnv,
    )
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            returns, _ = evaluate_policy(
                policy,
                env,
                n_eval_episodes=episodes,
                deterministic=deterministic,
                return_episode_rewards=True,
            )
    finally:
        env.close()
    returns = np.asarray(returns, dtype=float)
    return float(returns.mean()), float((returns >= ENVS[env_id].success).mean())


def evaluate_grid(
    policy: Any,
    env_id: str,
    difficulties: Iterable[float] = (0.0, 0.5, 1.0),
    episodes: int = 10,
    seed: int = 0,
    prefix: str = "",
    deterministic: bool = True,
) -> dict[str, float]:
    """:func:`evaluate` at each difficulty: ``{"eval/<prefix>return/d=<d>": ..., ...}``.

    The mean over difficulties is ``eval/<prefix>return`` and ``eval/<prefix>success``.
    """
    out: dict[str, float] = {}
    returns, successes = [], []
    for d in difficulties:
        mean_return, success = evaluate(
            policy, env_id, d, episodes, seed + EVAL_SEED_OFFSET, deterministic=deterministic
        )
        out[eval_tag(f"{prefix}return", d)] = mean_return
        out[eval_tag(f"{prefix}success", d)] = success
        returns.append(mean_return)
        successes.append(success)
    out[eval_tag(f"{prefix}return")] = float(np.mean(returns))
    out[eval_tag(f"{prefix}success")] = float(np.mean(successes))
    return out


def rebuild_policy(
    checked: CheckedConfig, weights: Mapping[str, torch.Tensor], device: str = "cpu"
) -> BasePolicy:
    """The policy of a run, rebuilt from its checked config with ``weights`` loaded.

    The algorithm is built as training built it (an off-policy one with a one-entry replay
    buffer: nothing is collected here), so no object is unpickled.
    """
    config = checked.config
    algo, env_id = config["algo"], config["env"]["id"]
    hyper = dict(config.get(algo, {}))
    if algo not in ON_POLICY:
        hyper["buffer_size"] = 1
    env = DummyVecEnv([partial(make_env, env_id)] * config["n_envs"])  # as in training
    try:
        lr = StepSchedule(checked.schedules["policy"], config["steps"])
        scheduled = checked.extras["scheduled"]
        model = build_model(algo, env, hyper, lr, config["seed"], device, scheduled)
    finally:
        env.close()
    model.policy.load_state_dict(weights)
    model.policy.set_training_mode(False)
    return model.policy


def evaluate_run(
    run_dir: str | Path,
    difficulties: Sequence[float] | None = None,
    episodes: int | None = None,
    ensemble: bool = False,
    seed: int | None = None,
    sampled: bool | None = None,
) -> dict[str, float]:
    """Evaluate a saved run's policy (its last checkpoint's: the final one once it finished).

    The algorithm is rebuilt from the run's ``config.toml`` and the policy's weights are read
    from ``checkpoints/last.pt`` and ``snapshots/cycle_<k>.pt`` with ``weights_only=True``;
    SB3's pickle-based ``model.zip`` is never read.

    Args:
        run_dir: the run folder.
        difficulties: the grid (default: the run's ``eval.difficulties``), each in [0, 1].
        episodes: per difficulty (default: the run's ``eval.episodes``), >= 1.
        ensemble: also evaluate the snapshot ensemble in ``run_dir/snapshots``.
        seed: evaluation seed (default: the run's).
        sampled: also score the policy with actions drawn (default: the run's ``eval.sampled``).
    """
    run_dir = Path(run_dir)
    checked = check_config(read_run_config(run_dir, "rlcycle", "--run"))
    config = checked.config
    grid = list(difficulties) if difficulties else config["eval"]["difficulties"]
    for d in grid:
        check_difficulty(d, "--difficulty")
    episodes = episodes if episodes is not None else config["eval"]["episodes"]
    if episodes < 1:
        raise ValueError(f"--episodes {episodes}: must be >= 1")
    seed = config["seed"] if seed is None else seed
    weights = policy_weights(read_checkpoint(run_dir))
    try:
        policy = rebuild_policy(checked, weights)
    except MISFITS as e:
        raise checkpoint_misfit(run_dir / "checkpoints" / "last.pt", e) from None
    env_id = config["env"]["id"]
    metrics = evaluate_grid(policy, env_id, grid, episodes, seed)
    if config["eval"]["sampled"] if sampled is None else sampled:
        metrics.update(evaluate_grid(policy, env_id, grid, episodes, seed, "sampled_", False))
    if ensemble:
        snapshots = SnapshotEnsemble(max(config["snapshots"]["max"], 1))
        snapshots.load(run_dir / "snapshots")
        try:
            members = EnsemblePolicy(policy, snapshots.state_dicts)
        except MISFITS as e:
            raise checkpoint_misfit(run_dir / "snapshots", e) from None
        metrics.update(evaluate_grid(members, env_id, grid, episodes, seed, "ensemble_"))
    return metrics
