"""Gymnasium environments with a difficulty knob ``d`` in [0, 1].

Each environment is the stock gymnasium one with its physics mapped from ``d``. The knob is set
with ``env.set_difficulty(d)`` and takes effect at the next ``reset()``, never mid-episode:
``env.next_difficulty`` is what was asked for, ``env.difficulty`` what the current episode runs
at. Every step's ``info`` carries ``"difficulty"`` so that episode returns can be bucketed.

From a vectorised environment, ``vec_env.env_method("set_difficulty", d)`` reaches the base
environment in every worker (DummyVecEnv and SubprocVecEnv alike); ``set_attr`` would only
set an attribute on the outermost wrapper.

==============================  =====================================================  =======
id                              physics at difficulty d                                 success
==============================  =====================================================  =======
rlcycle/CartPole-v1             pole mass 0.1·(1+4d) kg, half-length 0.5·(1+0.5d) m,   return
                                push 10·(1-0.4d) N; d = 0 is the stock CartPole-v1       >= 475
rlcycle/LunarLander-v3          d = 0: no wind; d > 0: wind on, wind_power 15·d,        return
                                turbulence_power 1.5·d (d = 1 is the stock windy          >= 200
                                LunarLander-v3 with wind_power 15, turbulence 1.5)
rlcycle/LunarLanderContinuous-v3  the same, continuous actions                          >= 200
rlcycle/Pendulum-v1             pendulum mass 1·(1+0.5d) kg: the same torque moves a     return
                                heavier pendulum (2/3 of the authority at d = 1)         >= -200
==============================  =====================================================  =======

CartPole and Pendulum also hand out the state of the episode in progress in plain types
(:meth:`DifficultyMixin.physics_state`), so that a resumed run continues it exactly; a Box2D
world (LunarLander) cannot be captured, and its episodes start afresh on resume.

``gymnasium.make("rlcycle/CartPole-v1", difficulty=0.5)`` works once this module is imported
(``import rlcycle`` does it); :func:`make_env` imports it for you, also in subprocess workers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.box2d.lunar_lander import LunarLander
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.classic_control.pendulum import PendulumEnv

__all__ = [
    "ENVS",
    "EnvInfo",
    "check_difficulty",
    "CartPoleCurriculum",
    "LunarLanderCurriculum",
    "PendulumCurriculum",
    "make_env",
]


def check_difficulty(d: Any, name: str = "difficulty") -> float:
    """``d`` as a float, or a ValueError naming ``name`` unless it is a number in [0, 1]."""
    if isinstance(d, bool) or not isinstance(d, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} = {d!r}: must be a number in [0, 1]")
    d = float(d)
    if not (math.isfinite(d) and 0.0 <= d <= 1.0):
        raise ValueError(f"{name} = {d!r}: must be in [0, 1]")
    return d


class DifficultyMixin(ABC):
    """Adds ``set_difficulty`` / ``difficulty`` to a gymnasium environment.

    Subclasses implement :meth:`apply_difficulty`, which writes the physics for ``d``; the
    mixin calls it at each ``reset()`` with the latest requested difficulty.
    """

    difficulty: float
    next_difficulty: float

    def _init_difficulty(self, difficulty: float) -> None:
        self.next_difficulty = check_difficulty(difficulty)
        self.difficulty = self.next_difficulty
        self.apply_difficulty(self.difficulty)

    def set_difficulty(self, difficulty: float) -> None:
        """Ask for difficulty ``d`` in [0, 1]; it applies from the next ``reset()`` on."""
        self.next_difficulty = check_difficulty(difficulty)

    @abstractmethod
    def apply_difficulty(self, d: float) -> None:
        """Write the physics for difficulty ``d`` (called at reset)."""

    def physics_state(self) -> dict[str, Any] | None:
        """The episode in progress in plain types, or None where it cannot be captured."""
        return None

    def load_physics_state(self, state: dict[str, Any]) -> None:
        """Continue the episode that :meth:`physics_state` captured."""
        raise NotImplementedError(f"{type(self).__name__}: its episodes cannot be restored")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self.next_difficulty != self.difficulty:
            self.difficulty = self.next_difficulty
            self.apply_difficulty(self.difficulty)
        return super().reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        info["difficulty"] = self.difficulty
        return obs, reward, terminated, truncated, info


class CartPoleCurriculum(DifficultyMixin, CartPoleEnv):
    """CartPole-v1 with a heavier, longer pole and a weaker push as ``d`` rises.

    ``total_mass`` and ``polemass_length`` are derived quantities that the dynamics read;
    they are recomputed whenever the masses or the length change.
    """

    def __init__(self, difficulty: float = 0.0, render_mode: str | None = None, **kwargs: Any):
        super().__init__(render_mode=render_mode, **kwargs)
        self._init_difficulty(difficulty)

    def apply_difficulty(self, d: float) -> None:
        self.masspole = 0.1 * (1.0 + 4.0 * d)
        self.length = 0.5 * (1.0 + 0.5 * d)
        self.force_mag = 10.0 * (1.0 - 0.4 * d)
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length

    def physics_state(self) -> dict[str, Any] | None:
        state = None if self.state is None else [float(x) for x in self.state]
        return {"state": state, "steps_beyond_terminated": self.steps_beyond_terminated}

    def load_physics_state(self, state: dict[str, Any]) -> None:
        values = state["state"]
        self.state = None if values is None else np.array(values, dtype=np.float64)
        beyond = state["steps_beyond_terminated"]
        self.steps_beyond_terminated = None if beyond is None else int(beyond)


class LunarLanderCurriculum(DifficultyMixin, LunarLander):
    """LunarLander-v3 (discrete or continuous) with wind and turbulence growing with ``d``."""

    def __init__(
        self,
        difficulty: float = 0.0,
        render_mode: str | None = None,
        continuous: bool = False,
        **kwargs: Any,
    ):
        super().__init__(render_mode=render_mode, continuous=continuous, **kwargs)
        self._init_difficulty(difficulty)

    def apply_difficulty(self, d: float) -> None:
        self.enable_wind = d > 0.0
        self.wind_power = 15.0 * d
        self.turbulence_power = 1.5 * d


class PendulumCurriculum(DifficultyMixin, PendulumEnv):
    """Pendulum-v1 with a heavier pendulum as ``d`` rises (same torque limit)."""

    def __init__(self, difficulty: float = 0.0, render_mode: str | None = None, **kwargs: Any):
        super().__init__(render_mode=render_mode, **kwargs)
        self._init_difficulty(difficulty)

    def apply_difficulty(self, d: float) -> None:
        self.m = 1.0 + 0.5 * d

    def physics_state(self) -> dict[str, Any] | None:
        return {"state": None if self.state is None else [float(x) for x in self.state]}

    def load_physics_state(self, state: dict[str, Any]) -> None:
        values = state["state"]
        self.state = None if values is None else np.array(values, dtype=np.float64)


@dataclass(frozen=True)
class EnvInfo:
    """What the trainer needs to know about a curriculum environment.

    Attributes:
        id: the registered gymnasium id.
        stock: the stock gymnasium id it extends.
        success: an episode whose return is at least this counts as a success.
        discrete: whether the action space is discrete.
    """

    id: str
    stock: str
    success: float
    discrete: bool


ENVS: dict[str, EnvInfo] = {
    info.id: info
    for info in (
        EnvInfo("rlcycle/CartPole-v1", "CartPole-v1", 475.0, True),
        EnvInfo("rlcycle/LunarLander-v3", "LunarLander-v3", 200.0, True),
        EnvInfo("rlcycle/LunarLanderContinuous-v3", "LunarLanderContinuous-v3", 200.0, False),
        EnvInfo("rlcycle/Pendulum-v1", "Pendulum-v1", -200.0, False),
    )
}
"""The curriculum environments by id."""

_ENTRY = {
    "rlcycle/CartPole-v1": ("rlcycle.envs:CartPoleCurriculum", {}),
    "rlcycle/LunarLander-v3": ("rlcycle.envs:LunarLanderCurriculum", {}),
    "rlcycle/LunarLanderContinuous-v3": (
        "rlcycle.envs:LunarLanderCurriculum",
        {"continuous": True},
    ),
    "rlcycle/Pendulum-v1": ("rlcycle.envs:PendulumCurriculum", {}),
}

for _id, (_entry, _kwargs) in _ENTRY.items():
    if _id not in gym.registry:
        _stock = gym.spec(ENVS[_id].stock)
        gym.register(
            id=_id,
            entry_point=_entry,
            kwargs=_kwargs,
            max_episode_steps=_stock.max_episode_steps,
            reward_threshold=_stock.reward_threshold,
        )


def make_env(id: str, difficulty: float = 0.0, **kwargs: Any) -> gym.Env:
    """``gymnasium.make(id, difficulty=...)`` for a curriculum id.

    A module-level function, so SubprocVecEnv workers unpickle it by reference, which imports
    this module and registers the ids there too.
    """
    if id not in ENVS:
        raise ValueError(f"env.id = {id!r}: must be one of {' | '.join(ENVS)}")
    return gym.make(id, difficulty=difficulty, **kwargs)
