"""The SB3 side: which algorithms, their hyperparameters, their optimizers, and building one.

Four algorithms: PPO and A2C (on-policy, discrete or continuous actions), DQN (discrete only)
and SAC (continuous only). Their hyperparameters come from a config table named after the
algorithm (``[ppo]``, ``[dqn]``...), passed to the SB3 constructor as they are, except the
learning rate, which always comes from the ``[lr]`` schedule through :class:`StepSchedule`.
The arguments SB3 itself accepts as a schedule (:data:`SCHEDULED`: PPO's ``clip_range`` and
``clip_range_vf``) may also be a schedule table, e.g. rl-zoo's ``lin_0.2`` for CartPole, 0.2
falling linearly to 0 over the run (half a triangle of twice the run's length)::

    [ppo.clip_range]
    kind = "triangular"
    max = 0.2
    min = 0.0
    period = 200_000      # twice the run's steps
    offset = 0.5          # start at the peak

They reach SB3 as a :class:`StepSchedule` over the run's steps, which SB3 reads at each
``train()`` as it reads the learning rate (and logs as ``train/clip_range``).

A saved run is never loaded with SB3's ``load`` (it unpickles the zip's ``data`` section): the
algorithm is rebuilt from the run's config with :func:`build_model` and only tensors are loaded
into it (:mod:`rlcycle.checkpoints`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from common.config import ConfigError, Key, integer, number
from common.schedules import Schedule, from_spec
from rlcycle.envs import ENVS
from rlcycle.lr import StepSchedule

__all__ = [
    "ALGOS",
    "ON_POLICY",
    "SCHEDULED",
    "check_algo",
    "build_model",
    "algo_optimizers",
    "rollout_steps",
]

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC}
ON_POLICY = ("ppo", "a2c")
SCHEDULED = {"ppo": ("clip_range", "clip_range_vf")}
"""Constructor arguments that may be a schedule table (SB3 takes a schedule for them)."""


_COUNT = integer(1, 1)  # "an integer >= 1"
_FRACTION = number(0.0, 0, 1)  # "a number in [0, 1]"
_NON_NEGATIVE = Key(0.0, number(0.0, 0).check, "a finite number >= 0")
_POSITIVE = Key(0.0, lambda v: _NON_NEGATIVE.check(v) and v > 0, "a number > 0")

_RANGES: dict[str, Key] = {
    "n_steps": _COUNT,
    "batch_size": _COUNT,
    "n_epochs": _COUNT,
    "gamma": _FRACTION,
    "gae_lambda": _FRACTION,
    "clip_range": Key(0.0, _POSITIVE.check, "a number > 0, or a schedule table"),
    "max_grad_norm": _POSITIVE,
    "vf_coef": _NON_NEGATIVE,
}
"""Ranges of SB3 arguments that SB3 checks late or not at all (an assertion when the model is
built, a failure mid-run, or a run that trains with gamma = 2), as config keys check theirs."""
_ON_POLICY_RANGES = {**_RANGES, "ent_coef": _NON_NEGATIVE}  # SAC's may be "auto"

_SET_ELSEWHERE = {
    "learning_rate": "the [lr] schedule (e.g. --set lr.max=3e-4)",
    "env": "[env] id",
    "seed": "the top-level seed (--seed)",
    "device": "the top-level device (--device)",
    "tensorboard_log": "the run folder (--out)",
    "verbose": "nothing (runs log to TensorBoard)",
    "_init_setup_model": "nothing",
}


def check_algo(algo: Any, env_id: str, hyper: Mapping[str, Any]) -> dict[str, Schedule]:
    """Raise a :class:`ConfigError` naming the key if ``algo`` cannot train on ``env_id``.

    Checks the algorithm's name, that its action space matches (DQN discrete, SAC continuous)
    and that every key of its hyperparameter table is an argument of the SB3 constructor.
    Returns the arguments given as schedule tables (:data:`SCHEDULED`), built.
    """
    if algo not in ALGOS:
        raise ConfigError(f"algo = {algo!r}: must be one of {' | '.join(ALGOS)}")
    discrete = ENVS[env_id].discrete
    if algo == "dqn" and not discrete:
        raise ConfigError(
            f"algo = 'dqn': needs discrete actions, but env.id = {env_id!r} is continuous; "
            "use ppo, a2c or sac"
        )
    if algo == "sac" and discrete:
        raise ConfigError(
            f"algo = 'sac': needs continuous actions, but env.id = {env_id!r} is discrete; "
            "use ppo, a2c or dqn"
        )
    allowed = [p for p in inspect.signature(ALGOS[algo].__init__).parameters if p != "self"]
    ranges = _ON_POLICY_RANGES if algo in ON_POLICY else _RANGES
    scheduled = {}
    for key in hyper:
        if key in _SET_ELSEWHERE:
            raise ConfigError(f"{algo}.{key}: not set here; it comes from {_SET_ELSEWHERE[key]}")
        if key not in allowed:
            usable = ", ".join(p for p in allowed if p not in _SET_ELSEWHERE)
            raise ConfigError(
                f"{algo}.{key}: not a {ALGOS[algo].__name__} argument; allowed: {usable}"
            )
        if key in SCHEDULED.get(algo, ()) and isinstance(hyper[key], Mapping):
            scheduled[key] = from_spec(hyper[key], f"{algo}.{key}")  # one line naming the key
            continue
        if key in ranges:
            ranges[key].validated(f"{algo}.{key}", hyper[key])
    return scheduled


def build_model(
    algo: str,
    env: VecEnv,
    hyper: Mapping[str, Any],
    lr: StepSchedule,
    seed: int,
    device: torch.device | str = "cpu",
    scheduled: Mapping[str, Schedule] | None = None,
) -> BaseAlgorithm:
    """A fresh SB3 model whose learning rate follows ``lr``.

    Args:
        algo: a key of :data:`ALGOS`.
        env: the training environments.
        hyper: constructor arguments (``policy`` defaults to ``MlpPolicy``).
        lr: the learning-rate schedule in SB3's form (its ``total_steps`` serve the others).
        seed: seeds the model's generators.
        device: where the networks live.
        scheduled: the arguments of ``hyper`` given as schedule tables, built
            (:func:`check_algo`'s result, kept by ``check_config`` as ``extras["scheduled"]``).
    """
    hyper = dict(hyper)
    for key, schedule in (scheduled or {}).items():
        hyper[key] = StepSchedule(schedule, lr.total_steps)
    policy = hyper.pop("policy", "MlpPolicy")
    return ALGOS[algo](policy, env, learning_rate=lr, seed=seed, device=device, verbose=0, **hyper)


def algo_optimizers(model: BaseAlgorithm) -> dict[str, torch.optim.Optimizer]:
    """Every optimizer the algorithm steps, by name; the first one is ``policy``.

    PPO, A2C and DQN have one (``policy``); SAC has the actor's (named ``policy``), the
    critic's and, with a learned entropy coefficient, ``ent_coef``'s. SB3 writes the learning
    rate into all of them at every ``train()``.
    """
    if isinstance(model, SAC):
        out = {"policy": model.actor.optimizer, "critic": model.critic.optimizer}
        if model.ent_coef_optimizer is not None:
            out["ent_coef"] = model.ent_coef_optimizer
        return out
    return {"policy": model.policy.optimizer}


def rollout_steps(algo: str, n_envs: int, hyper: Mapping[str, Any]) -> int:
    """Env steps an on-policy update trains on (``n_envs`` x ``n_steps``, SB3's default
    ``n_steps`` where the table sets none); 0 for the off-policy algorithms, whose updates
    sample a replay buffer."""
    if algo not in ON_POLICY:
        return 0
    default = inspect.signature(ALGOS[algo].__init__).parameters["n_steps"].default
    return n_envs * int(hyper.get("n_steps", default))
