"""The curriculum: environment difficulty as a function of the learning-rate clock.

The learning rate and the difficulty share one clock (the learning-rate schedule). In the
default ``anti`` mode, within cycle ``k`` the learning rate anneals while the difficulty rises,

    d(t) = lo + (ceiling_k - lo) · (1 - level(t)),     ceiling_k = min(hi, ceiling + rise·k),

so at each restart the learning rate jumps up and the agent goes back to easy settings, and
across cycles the ceiling rises until the hardest setting ``hi`` is trained on.

=======  =====================================================================================
mode     difficulty at step t
=======  =====================================================================================
anti     ``lo + (ceiling_k - lo)·(1 - level)``: hard when the learning rate is low (default)
in       ``lo + (ceiling_k - lo)·level``: hard when the learning rate is high (the control)
fixed    ``value`` always
linear   ``lo + (hi - lo)·min(1, t / ramp_steps)``: a plain ramp
gated    starts at ``lo``; rises by ``step`` (up to ``hi``) once the success rate of the last
         ``window`` episodes played at the current difficulty is at least ``threshold`` on
         ``patience`` consecutive episodes
random_d each episode of each environment draws its own difficulty from the distribution the
         ``anti`` mode visits (the domain-randomisation control; below)
=======  =====================================================================================

``random_d``: episode ``e`` (0-based) of training environment ``i`` runs at
``anti(t)``, the ``anti`` mode's difficulty (same clock, ``lo``, ``hi``, ``ceiling``, ``rise``)
at a step ``t`` drawn uniformly from ``[0, steps)`` (the run's budget) by a generator seeded
with ``(seed, i, e)``, rounded like every difficulty sent to the environments. So the draws
follow the anti-phase arm's difficulties *uniformly in time* (its values weighted by how long
it holds them, not by how many episodes it plays at each), with no order and no link to the
learning rate; they are a pure function of the run's seed, the environment and the episode,
so a resumed run draws what an uninterrupted one would. The trainer asks for each environment's
next draw as an episode ends, which the environment applies at its next reset (the knob's rule).

``gated`` keeps state (its level and the recent outcomes) and ``random_d`` the episode each
environment is playing; both are saved with each checkpoint through
:meth:`Curriculum.state_dict`. The other modes are pure functions of the step.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.coupling import Coupled
from common.schedules import Schedule
from rlcycle.envs import check_difficulty

__all__ = ["MODES", "Curriculum", "curriculum_from_spec"]

MODES = ("anti", "in", "fixed", "linear", "gated", "random_d")

_RANDOM_D_STREAM = 0x72616E64  # "rand": keeps random_d's draws apart from other seeded streams
DECIMALS = 2
"""Every difficulty sent to the environments is rounded to this many decimals."""

DEFAULTS: dict[str, Any] = {
    "mode": "anti",
    "lo": 0.0,
    "hi": 1.0,
    "ceiling": 0.5,
    "rise": 0.25,
    "value": 1.0,
    "ramp_steps": 0,
    "threshold": 0.8,
    "window": 20,
    "patience": 5,
    "step": 0.25,
}
"""Keys of a ``[curriculum]`` table and their defaults."""


class Curriculum:
    """Difficulty in [0, 1] at any global step.

    Args:
        clock: the learning-rate schedule; its phase level (1 at a restart, 0 at a cycle's
            floor) and cycle index drive ``anti`` and ``in``.
        mode: one of :data:`MODES` (see the module table).
        lo: easiest difficulty, in [0, 1].
        hi: hardest difficulty, in [lo, 1].
        ceiling: ``anti``/``in``: the first cycle's hardest difficulty, in [lo, hi].
        rise: ``anti``/``in``: how much the ceiling rises per cycle (>= 0).
        value: ``fixed``: the difficulty, in [0, 1].
        ramp_steps: ``linear``: steps to go from ``lo`` to ``hi`` (> 0).
        threshold: ``gated``: success rate needed, in [0, 1].
        window: ``gated``: episodes in the success rate (>= 1).
        patience: ``gated``: consecutive episodes the rate must hold (>= 1).
        step: ``gated``: difficulty added at each advance, in (0, 1].
        total_steps: ``random_d``: the run's budget, the range of the drawn step (>= 1).
        seed: ``random_d``: the run's seed.
    """

    def __init__(
        self,
        clock: Schedule,
        mode: str = "anti",
        lo: float = 0.0,
        hi: float = 1.0,
        ceiling: float = 0.5,
        rise: float = 0.25,
        value: float = 1.0,
        ramp_steps: int = 1,
        threshold: float = 0.8,
        window: int = 20,
        patience: int = 5,
        step: float = 0.25,
        total_steps: int = 1,
        seed: int = 0,
    ) -> None:
        self.clock, self.mode = clock, mode
        self.lo, self.hi, self.ceiling, self.rise = lo, hi, ceiling, rise
        self.value, self.ramp_steps = value, ramp_steps
        self.threshold, self.window, self.patience, self.step = threshold, window, patience, step
        self.total_steps, self.seed = total_steps, seed
        if mode in ("anti", "in", "random_d"):
            wave = "in" if mode == "in" else "anti"
            self._wave = Coupled(clock, 0.0, 1.0, wave)  # (1 - level) or level
        self.level = lo  # gated: the current difficulty
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._streak = 0
        self.episodes: list[int] = []  # random_d: the episode each environment is playing

    @property
    def per_episode(self) -> bool:
        """Whether each environment's episodes get their own difficulty (``random_d``)."""
        return self.mode == "random_d"

    def ceiling_at(self, cycle: int) -> float:
        """The hardest difficulty of cycle ``cycle`` (``anti`` and ``in``)."""
        return min(self.hi, self.ceiling + self.rise * cycle)

    def _on_wave(self, step: float) -> float:
        top = self.ceiling_at(self.clock.phase(step).cycle)
        return self.lo + (top - self.lo) * self._wave.value(step)

    def difficulty(self, step: float) -> float:
        """The difficulty at global step ``step`` (env steps), in [lo, hi].

        ``random_d`` has none per step (see :meth:`episode_difficulty`): ``lo``.
        """
        if self.mode in ("anti", "in"):
            return self._on_wave(step)
        if self.mode == "fixed":
            return self.value
        if self.mode == "linear":
            return self.lo + (self.hi - self.lo) * min(1.0, step / self.ramp_steps)
        if self.mode == "random_d":
            return self.lo
        return self.level

    def episode_difficulty(self, env: int, episode: int) -> float:
        """``random_d``: the difficulty of episode ``episode`` of training environment ``env``.

        The ``anti`` mode's difficulty at a step drawn uniformly from ``[0, total_steps)`` by a
        generator seeded with ``(seed, env, episode)``, rounded to :data:`DECIMALS` decimals.
        """
        rng = np.random.default_rng((_RANDOM_D_STREAM, self.seed, env, episode))
        return round(self._on_wave(int(rng.integers(0, self.total_steps))), DECIMALS)

    def record(self, difficulty: float, success: bool) -> bool:
        """Count one finished episode played at ``difficulty``; ``gated`` may advance.

        Episodes at another difficulty than the current level (still running when it changed)
        are ignored. Returns True when the level advanced.
        """
        if self.mode != "gated" or not math.isclose(difficulty, self.level, abs_tol=1e-9):
            return False
        self._outcomes.append(bool(success))
        full = len(self._outcomes) == self.window
        rate = sum(self._outcomes) / self.window
        self._streak = self._streak + 1 if full and rate >= self.threshold else 0
        if self._streak < self.patience or self.level >= self.hi:
            return False
        self.level = min(self.hi, self.level + self.step)
        self._outcomes.clear()
        self._streak = 0
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "outcomes": list(self._outcomes),
            "streak": self._streak,
            "episodes": list(self.episodes),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.level = float(state["level"])
        self._outcomes = deque((bool(x) for x in state["outcomes"]), maxlen=self.window)
        self._streak = int(state["streak"])
        self.episodes = [int(e) for e in state.get("episodes", [])]


def _number(spec: Mapping[str, Any], key: str, integer: bool = False) -> Any:
    raw = spec[key]
    kind = int if integer else (int, float)
    if isinstance(raw, bool) or not isinstance(raw, kind) or not math.isfinite(raw):
        raise ValueError(
            f"curriculum.{key} = {raw!r}: must be {'an integer' if integer else 'a number'}"
        )
    return raw if integer else float(raw)


def curriculum_from_spec(
    spec: Mapping[str, Any], clock: Schedule, total_steps: int, seed: int = 0
) -> Curriculum:
    """Build a :class:`Curriculum` from a ``[curriculum]`` table.

    Args:
        spec: keys from :data:`DEFAULTS` (missing ones take the default).
        clock: the learning-rate schedule.
        total_steps: the run's length; ``linear`` with ``ramp_steps = 0`` ramps over it, and
            ``random_d`` draws its steps from it.
        seed: the run's seed (``random_d``'s draws).

    Raises:
        ValueError: an unknown key or mode, or a value out of range; the message names it.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"curriculum = {spec!r}: must be a table (mode, lo, hi, ...)")
    unknown = sorted(set(spec) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"curriculum.{unknown[0]}: unknown key; allowed: {', '.join(DEFAULTS)}")
    spec = {**DEFAULTS, **spec}
    if spec["mode"] not in MODES:
        raise ValueError(f"curriculum.mode = {spec['mode']!r}: must be one of {' | '.join(MODES)}")
    args: dict[str, Any] = {"mode": spec["mode"]}
    for key in ("lo", "hi", "ceiling", "value", "threshold"):
        args[key] = check_difficulty(spec[key], f"curriculum.{key}")  # all in [0, 1]
    for key in ("rise", "step"):
        args[key] = _number(spec, key)
    for key in ("ramp_steps", "window", "patience"):
        args[key] = _number(spec, key, integer=True)
    if args["lo"] > args["hi"]:
        raise ValueError(f"curriculum.lo = {args['lo']}: must be <= hi ({args['hi']})")
    if not args["lo"] <= args["ceiling"] <= args["hi"]:
        raise ValueError(
            f"curriculum.ceiling = {args['ceiling']}: must be in [lo, hi] = "
            f"[{args['lo']}, {args['hi']}]"
        )
    if args["rise"] < 0:
        raise ValueError(f"curriculum.rise = {args['rise']}: must be >= 0")
    if not 0 < args["step"] <= 1:
        raise ValueError(f"curriculum.step = {args['step']}: must be in (0, 1]")
    if args["ramp_steps"] < 0:
        raise ValueError(f"curriculum.ramp_steps = {args['ramp_steps']}: must be >= 0 (0 = run)")
    args["ramp_steps"] = args["ramp_steps"] or total_steps
    for key in ("window", "patience"):
        if args[key] < 1:
            raise ValueError(f"curriculum.{key} = {args[key]}: must be >= 1")
    return Curriculum(clock, **args, total_steps=max(1, int(total_steps)), seed=int(seed))
