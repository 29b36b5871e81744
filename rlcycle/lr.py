"""The learning rate of an SB3 algorithm, driven by a core schedule through SB3's own hook.

SB3 calls ``model.lr_schedule(progress_remaining)`` once per ``train()`` and writes the result
into every optimizer of the algorithm (PPO/A2C/DQN: the policy's; SAC: actor, critic and the
entropy coefficient's), and logs it as ``train/learning_rate``. SB3 computes

    progress_remaining = 1 - num_timesteps / total_timesteps

so :class:`StepSchedule` maps it back to the global step and returns the core schedule's value
there. Because it goes through SB3's mechanism, SB3's log is the core's value at that step and
a saved ``model.zip`` reloads with its schedule: it pickles as the schedule's spec, so SB3's
``save`` / ``load`` carry it.
"""

from __future__ import annotations

from typing import Any

from common.schedules import Schedule, from_spec

__all__ = ["StepSchedule"]


class StepSchedule:
    """SB3 learning-rate schedule: ``progress_remaining`` -> core ``value(global step)``.

    Args:
        schedule: the built learning-rate schedule, in units of env steps.
        total_steps: the run's ``total_timesteps`` as SB3 sees it (the config's ``steps``;
            on resume ``learn(steps - done, reset_num_timesteps=False)`` keeps it the same).
    """

    def __init__(self, schedule: Schedule, total_steps: int) -> None:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule: a built Schedule, not {type(schedule).__name__}")
        self.schedule = schedule
        self.total_steps = int(total_steps)

    def step(self, progress_remaining: float) -> int:
        """The global step (env steps) that ``progress_remaining`` stands for."""
        return round((1.0 - progress_remaining) * self.total_steps)

    def __call__(self, progress_remaining: float) -> float:
        return float(self.schedule.value(self.step(progress_remaining)))

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.schedule.spec(), "total_steps": self.total_steps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(from_spec(state["spec"], "lr"), state["total_steps"])

    def __repr__(self) -> str:
        return f"StepSchedule({self.schedule!r}, total_steps={self.total_steps})"
