"""The training environments, and their episodes in progress as plain data for a checkpoint.

:func:`make_training_env` builds ``n_envs`` monitored copies of a curriculum environment, each
wrapped in :class:`Resumable`, whose ``get_run_state`` / ``set_run_state`` capture and restore
everything an episode in progress depends on: the environment's random generator, its physics
state (:meth:`rlcycle.envs.DifficultyMixin.physics_state`), its difficulty, the time limit's step
count and the monitor's running return. Both work through ``env_method``, in this process
(``dummy``) or in worker processes (``subproc``).

A run resumed with the states restored continues the very episodes the checkpoint interrupted;
where an environment cannot be captured (a Box2D world), :func:`env_states` returns None and a
resumed run starts fresh episodes instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from rlcycle.envs import make_env

__all__ = ["Resumable", "make_training_env", "env_states", "load_env_states"]


class Resumable(gym.Wrapper):
    """The outermost wrapper of a training environment: its episode state, out and back in."""

    def _layers(self) -> Iterator[gym.Env]:
        layer: gym.Env = self.env
        while isinstance(layer, gym.Wrapper):
            yield layer
            layer = layer.env

    def get_run_state(self) -> dict[str, Any] | None:
        """The episode in progress in plain types; None if it cannot be captured."""
        base = self.env.unwrapped
        physics = base.physics_state()
        if physics is None:
            return None
        state: dict[str, Any] = {
            "physics": physics,
            "rng": base.np_random.bit_generator.state,
            "difficulty": base.difficulty,
            "next_difficulty": base.next_difficulty,
        }
        for layer in self._layers():
            if isinstance(layer, TimeLimit):
                state["elapsed_steps"] = layer._elapsed_steps
            elif isinstance(layer, Monitor):
                state["rewards"] = [float(r) for r in layer.rewards]
                state["needs_reset"] = bool(layer.needs_reset)
                state["total_steps"] = int(layer.total_steps)
        return state

    def set_run_state(self, state: dict[str, Any]) -> None:
        """Continue the episode that :meth:`get_run_state` captured."""
        base = self.env.unwrapped
        base.difficulty = float(state["difficulty"])
        base.apply_difficulty(base.difficulty)
        base.set_difficulty(float(state["next_difficulty"]))
        base.load_physics_state(state["physics"])
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["rng"]
        base.np_random = rng
        for layer in self._layers():
            if isinstance(layer, TimeLimit):
                elapsed = state["elapsed_steps"]
                layer._elapsed_steps = None if elapsed is None else int(elapsed)
            elif isinstance(layer, Monitor):
                layer.rewards = [float(r) for r in state["rewards"]]
                layer.needs_reset = bool(state["needs_reset"])
                layer.total_steps = int(state["total_steps"])
            elif isinstance(layer, OrderEnforcing):
                layer._has_reset = True
            elif isinstance(layer, PassiveEnvChecker):
                layer.checked_reset = layer.checked_step = layer.checked_data_reuse = True


def make_training_env(
    env_id: str, n_envs: int, seed: int, difficulty: float, vec: str = "dummy"
) -> VecEnv:
    """``n_envs`` monitored, resumable copies of ``env_id`` at ``difficulty``."""
    return make_vec_env(
        make_env,
        n_envs=n_envs,
        seed=seed,
        env_kwargs={"id": env_id, "difficulty": difficulty},
        vec_env_cls=SubprocVecEnv if vec == "subproc" else DummyVecEnv,
        wrapper_class=Resumable,
    )


def env_states(env: VecEnv) -> list[dict[str, Any]] | None:
    """Every environment's episode state, or None if any cannot be captured."""
    states = env.env_method("get_run_state")
    return None if any(state is None for state in states) else states


def load_env_states(env: VecEnv, states: Sequence[dict[str, Any]]) -> None:
    """Put :func:`env_states`' states back, one per environment."""
    if len(states) != env.num_envs:
        raise ValueError(f"{len(states)} environment states for {env.num_envs} environments")
    for i, state in enumerate(states):
        env.env_method("set_run_state", state, indices=[i])
