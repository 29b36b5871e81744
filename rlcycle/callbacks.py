"""The SB3 callbacks of a run, one job each, combined with SB3's ``CallbackList``.

The learning rate itself goes through SB3's ``lr_schedule`` (:mod:`rlcycle.lr`); these callbacks
do everything else the clock drives:

- :class:`ClockCallback`, every env step: write couplings (e.g. ``ent_coef``), fire restart
  hooks when the clock enters a new cycle (optimizer-state reset, snapshot of the policy), send
  the curriculum's difficulty to every worker with ``env_method("set_difficulty", d)``, and count
  finished episodes by difficulty;
- :class:`ProbeCallback`, at each rollout's end: the curvature probe;
- at each update boundary (after SB3's ``train()``, i.e. at the next rollout's start), each at
  its own interval and in this order: :class:`EvaluationCallback` (held-out evaluation, into an
  :class:`Evaluations` record), :class:`LogCallback` (write the logs),
  :class:`CheckpointCallback` (save the run).

Logging goes through SB3's own logger, and SB3's periodic dumps are switched off
(``learn(log_interval=None)``): :class:`LogCallback` dumps at update boundaries, so every
``train/*`` value SB3 recorded (``train/learning_rate`` included) is stamped with the step at
which that update ran, and ours (``lr/policy``, ``schedule/level``, ``curriculum/difficulty``...)
share the same steps and event file.

An on-policy algorithm collects a rollout, then trains on it at the learning rate of the step
it has reached (SB3 reads the rate once per ``train()``): the update at step ``T`` trains on
the steps just before ``T``. So the environments run one rollout ahead of the clock: during the
rollout that the update at ``T`` trains on, they are sent the curriculum's difficulty from
``T`` on (``lead`` env steps ahead). The update at a restart then applies the peak rate to the
easiest rollout of the new cycle, and the cycle's hardest rollout is trained at its lowest
rate: the curriculum's anti-phase holds at the resolution SB3 gives (one rate per rollout).
The logged ``curriculum/difficulty`` is the mean of the values sent during the rollout the
update trained on. Each episode takes the value sent before its reset.

The difficulty sent to the environments is the curriculum's value rounded to
:data:`DECIMALS` decimals: a pure function of the step (so a resumed run sends the same values)
that changes about a hundred times per sweep of [0, 1] instead of at every step. A
``random_d`` curriculum gives each environment's episodes their own draws instead (a pure
function of the environment and its episode count): :meth:`ClockCallback.prime` sets each
environment's first one before the environments are reset, and each episode's end asks that
environment for the one after its next.

Each callback with state has ``state_dict`` / ``load_state_dict`` in plain types, for
checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from common.coupling import CallableTarget, Coupled
from common.dynamics import hessian_top_eigenvalue, stability_margin
from common.schedules import Schedule
from common.snapshots import SnapshotEnsemble
from common.torch_driver import ResetOptimizerState, ScheduleDriver
from rlcycle.algos import algo_optimizers
from rlcycle.curriculum import DECIMALS, Curriculum

__all__ = [
    "DECIMALS",
    "BUCKETS",
    "bucket_tag",
    "Evaluations",
    "ResumeCallback",
    "UpdateCallback",
    "ClockCallback",
    "ProbeCallback",
    "EvaluationCallback",
    "LogCallback",
    "CheckpointCallback",
]

BUCKETS = 4
"""Training returns are logged per difficulty bucket: [0, 0.25), [0.25, 0.5), ... [0.75, 1]."""


def bucket_tag(difficulty: float, metric: str = "return") -> str:
    """``curriculum/<metric>/d=<lo>-<hi>`` for the bucket holding ``difficulty``."""
    k = min(int(difficulty * BUCKETS), BUCKETS - 1)
    return f"curriculum/{metric}/d={k / BUCKETS:g}-{(k + 1) / BUCKETS:g}"


def _due(step: int, previous: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in ``(previous, step]``; never when ``every`` = 0."""
    return every > 0 and step // every > previous // every


@dataclass
class Evaluations:
    """The held-out evaluations of a run: ``history`` holds ``{"step", "metrics"}`` entries."""

    history: list[dict[str, Any]] = field(default_factory=list)

    def add(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record an evaluation at ``step``; it replaces an earlier one at the same step."""
        self.history = [h for h in self.history if h["step"] != step]
        self.history.append({"step": int(step), "metrics": dict(metrics)})


class ResumeCallback(BaseCallback):
    """Calls ``restore()`` once, as the resumed run's first rollout begins.

    SB3 draws gSDE's exploration noise (from torch's generator) as each rollout begins, before
    any callback runs; the checkpoint was taken just after that draw. Restoring the random
    generators and the noise here, rather than before ``learn``, makes the first rollout of a
    resumed run the one the stopped run would have collected.
    """

    def __init__(self, restore: Callable[[], None]) -> None:
        super().__init__()
        self.restore: Callable[[], None] | None = restore

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.restore is not None:
            self.restore()
            self.restore = None


class ClockCallback(BaseCallback):
    """The clock and the curriculum: couplings, restarts, difficulty, episode outcomes.

    Args:
        clock: the learning-rate schedule (env steps), whose cycles are the restarts.
        curriculum: difficulty at each step.
        success: an episode with at least this return counts as a success.
        couplings: model attribute (``ent_coef``) -> coupled schedule, written every step.
        reset: optimizer state zeroed at each restart: None (nothing), True (the first moment,
            :func:`common.torch_driver.default_reset_keys`) or the state keys.
        snapshots: where to keep the policy at each cycle end, ``cycle_<k>.pt`` for the 0-based
            cycle k it ends (None: no snapshots).
        lead: env steps the difficulty runs ahead of the clock: the steps each update trains
            on for an on-policy algorithm (:func:`rlcycle.algos.rollout_steps`), 0 otherwise.
    """

    def __init__(
        self,
        clock: Schedule,
        curriculum: Curriculum,
        success: float,
        couplings: Mapping[str, Coupled] | None = None,
        reset: bool | tuple[str, ...] | None = None,
        snapshots: SnapshotEnsemble | None = None,
        lead: int = 0,
    ) -> None:
        super().__init__()
        self.clock, self.curriculum, self.success = clock, curriculum, success
        self.lead = lead
        self.couplings = dict(couplings or {})
        self.reset, self.snapshots = reset, snapshots
        self.driver = ScheduleDriver(clock)
        self.difficulty = math.nan  # the value last sent to the environments
        self._in_play: list[float] = []  # random_d: each environment's episode's difficulty
        self._sent: list[float] = []  # the difficulty in effect at each step of this rollout
        self.rollout_difficulty = math.nan  # their mean over the last complete rollout

    def _init_callback(self) -> None:
        for name, coupled in self.couplings.items():
            self.driver.bind(name, coupled, CallableTarget(self._setter(name), name))
        if self.reset:
            keys = None if self.reset is True else list(self.reset)
            for optimizer in algo_optimizers(self.model).values():
                self.driver.on_restart(ResetOptimizerState(optimizer, keys))
        if self.snapshots is not None:  # the policy at each cycle's end, the last one too
            self.driver.on_restart(self.snapshots.hook(self.model.policy))
            self.driver.on_end(self.snapshots.hook(self.model.policy))

    def _setter(self, name: str) -> Callable[[float], None]:
        def set_value(value: float) -> None:
            setattr(self.model, name, value)

        return set_value

    def state_dict(self) -> dict[str, Any]:
        return {"driver": self.driver.state_dict(), "curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.driver.load_state_dict(state["driver"])
        self.curriculum.load_state_dict(state["curriculum"])

    @property
    def trained_difficulty(self) -> float:
        """The mean difficulty sent during the last complete rollout, the one the last update
        trained on; before any rollout, the value last sent. Not :attr:`difficulty`, which runs
        one rollout ahead (at a run's end: the next cycle's restart, never trained on)."""
        return self.difficulty if math.isnan(self.rollout_difficulty) else self.rollout_difficulty

    def target_difficulty(self, step: float) -> float:
        """The difficulty the environments should run at ``step``: the curriculum's at
        ``step + lead`` (rounded)."""
        return round(self.curriculum.difficulty(step + self.lead), DECIMALS)

    def send_difficulty(self, step: float) -> float:
        """Send the difficulty for ``step`` to every worker if it changed; returns it."""
        if self.curriculum.per_episode:
            return self.difficulty
        d = self.target_difficulty(step)
        if d != self.difficulty:
            self.training_env.env_method("set_difficulty", d)
            self.difficulty = d
        return d

    def prime(self, env: Any) -> None:
        """``random_d``: ask each environment for its current episode's draw, before the
        environments are (re)set at the start of learning; other modes: nothing.

        A fresh run's environments start episode 0; a resumed one's restart (or, where their
        state was restored, continue) the episode the checkpoint counted.
        """
        if not self.curriculum.per_episode:
            return
        episodes = self.curriculum.episodes
        if len(episodes) != env.num_envs:
            episodes[:] = [0] * env.num_envs
        self._in_play = [self.curriculum.episode_difficulty(i, e) for i, e in enumerate(episodes)]
        for i, d in enumerate(self._in_play):
            env.env_method("set_difficulty", d, indices=[i])
        self.difficulty = float(np.mean(self._in_play))

    def _ask_next_draw(self, env: int) -> None:
        """``random_d``: environment ``env``'s next episode's draw (applied at its next reset)."""
        d = self.curriculum.episode_difficulty(env, self.curriculum.episodes[env] + 1)
        self.training_env.env_method("set_difficulty", d, indices=[env])

    def _on_training_start(self) -> None:
        self.driver.set(self.num_timesteps)
        if self.curriculum.per_episode:
            if len(self.curriculum.episodes) != self.training_env.num_envs:
                self.prime(self.training_env)  # not primed: count from here
            for i in range(len(self.curriculum.episodes)):
                self._ask_next_draw(i)
        self.send_difficulty(self.num_timesteps)

    def _on_rollout_start(self) -> None:
        self._sent = []

    def _on_rollout_end(self) -> None:
        if self._sent:
            self.rollout_difficulty = float(np.mean(self._sent))

    def _on_step(self) -> bool:
        step = self.num_timesteps
        self._sent.append(self.difficulty)  # what the step just taken was sent
        self.driver.set(step)
        for info in self.locals.get("infos", ()):
            episode = info.get("episode")
            if episode is not None:
                self._episode_done(float(episode["r"]), info.get("difficulty", self.difficulty))
        if self.curriculum.per_episode:
            self._next_episodes(self.locals["dones"])
        self.send_difficulty(step)
        return True

    def _next_episodes(self, dones: Any) -> None:
        """``random_d``: each environment whose episode ended has begun its next (at the draw
        asked for earlier); ask for the one after."""
        ended = np.flatnonzero(dones)
        for i in map(int, ended):
            self.curriculum.episodes[i] += 1
            self._in_play[i] = self.curriculum.episode_difficulty(i, self.curriculum.episodes[i])
            self._ask_next_draw(i)
        if ended.size:  # logged: the difficulty of the episodes in play, on average
            self.difficulty = float(np.mean(self._in_play))

    def _episode_done(self, episode_return: float, difficulty: float) -> None:
        success = episode_return >= self.success
        self.logger.record_mean(bucket_tag(difficulty), episode_return)
        self.logger.record_mean("curriculum/success_rate", float(success))
        self.curriculum.record(difficulty, success)


class ProbeCallback(BaseCallback):
    """Every ``every`` rollouts, ``dynamics/stability_margin``: ``lr · L / 4``.

    L is the top Hessian eigenvalue of the policy-gradient surrogate
    ``-mean(A · π(a|s) / π_old(a|s))`` (normalised advantages) on at most ``batch`` samples of
    the rollout just collected, at the current weights: the loss the next update descends.
    On-policy algorithms only.

    Args:
        clock: the learning-rate schedule.
        every: rollouts between probes (>= 1).
        iters: power iterations per probe.
        batch: at most this many samples of the rollout.
    """

    def __init__(self, clock: Schedule, every: int, iters: int = 20, batch: int = 512) -> None:
        super().__init__()
        self.clock, self.every, self.iters, self.batch = clock, every, iters, batch
        self.rollouts = 0

    def state_dict(self) -> dict[str, Any]:
        return {"rollouts": self.rollouts}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rollouts = int(state["rollouts"])

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.rollouts += 1
        if self.rollouts % self.every == 0 and isinstance(self.model, OnPolicyAlgorithm):
            self.logger.record("dynamics/stability_margin", self.probe())

    def probe(self) -> float:
        """The stability margin at the current weights and step."""
        model = self.model
        policy = model.policy
        numpy_rng = np.random.get_state()  # get() shuffles; keep training's random stream
        batch = next(model.rollout_buffer.get(batch_size=None))
        np.random.set_state(numpy_rng)
        n = min(self.batch, len(batch.advantages))
        obs, actions = batch.observations[:n], batch.actions[:n]
        if isinstance(model.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        advantages = batch.advantages[:n]
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        old_log_prob = batch.old_log_prob[:n]
        params = [p for name, p in policy.named_parameters() if "value" not in name]

        def loss() -> torch.Tensor:
            _, log_prob, _ = policy.evaluate_actions(obs, actions)
            return -(advantages * torch.exp(log_prob - old_log_prob)).mean()

        L = hessian_top_eigenvalue(loss, params, iters=self.iters)
        # The next train() runs at this step's learning rate.
        return stability_margin(self.clock.value(self.num_timesteps), L)


class UpdateCallback(BaseCallback):
    """Calls :meth:`_on_update` at each update boundary: the first rollout start after an
    update, i.e. once SB3's ``train()`` has run on the steps collected since the last one."""

    def __init__(self) -> None:
        super().__init__()
        self.boundary = 0  # env steps at the last update boundary

    def _on_training_start(self) -> None:
        self.boundary = self.num_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        step = self.num_timesteps
        if step > self.boundary:
            previous, self.boundary = self.boundary, step
            self._on_update(step, previous)

    def _on_update(self, step: int, previous: int) -> None:
        """Called with the boundary's step and the previous boundary's."""


class EvaluationCallback(UpdateCallback):
    """Every ``every`` env steps, ``evaluate(model) -> {tag: value}``, logged and recorded.

    Args:
        evaluate: the held-out evaluation.
        every: env steps between evaluations (0: none during training).
        evaluations: where each result goes.
    """

    def __init__(
        self,
        evaluate: Callable[[Any], dict[str, float]],
        every: int,
        evaluations: Evaluations,
    ) -> None:
        super().__init__()
        self.evaluate, self.every, self.evaluations = evaluate, every, evaluations

    def _on_update(self, step: int, previous: int) -> None:
        if _due(step, previous, self.every):
            metrics = self.evaluate(self.model)
            for tag, value in metrics.items():
                self.logger.record(tag, value)
            self.evaluations.add(step, metrics)


class LogCallback(UpdateCallback):
    """Writes the logs every ``every`` env steps (at update boundaries) and at the end.

    Each write records the clock's scalars (``lr/<optimizer>``, ``schedule/level``,
    ``schedule/cycle``, ``curriculum/difficulty``: the mean sent during the rollout the last
    update trained on, ``hparam/<coupling>``) beside what SB3 and the other callbacks recorded,
    then dumps them all at the current step.

    Args:
        clock: the clock callback, whose difficulty and couplings are logged.
        every: env steps between writes.
    """

    def __init__(self, clock: ClockCallback, every: int) -> None:
        super().__init__()
        self.clock, self.every = clock, every
        self.rollouts = 0  # SB3's "time/iterations"
        self.last_dump = -1

    def state_dict(self) -> dict[str, Any]:
        return {"rollouts": self.rollouts}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rollouts = int(state["rollouts"])

    def _on_rollout_end(self) -> None:
        self.rollouts += 1

    def _on_update(self, step: int, previous: int) -> None:
        if _due(step, previous, self.every):
            self.dump()

    def _on_training_end(self) -> None:
        if self.num_timesteps > self.last_dump:
            self.dump()

    def dump(self) -> None:
        """Record the clock's scalars and write every pending value at the current step."""
        step = self.num_timesteps
        phase = self.clock.clock.phase(step)
        if self.model._n_updates > 0:  # read back from the optimizers once SB3 has set them
            for name, optimizer in algo_optimizers(self.model).items():
                self.logger.record(f"lr/{name}", float(optimizer.param_groups[0]["lr"]))
        self.logger.record("schedule/level", phase.level)
        self.logger.record("schedule/cycle", phase.cycle)
        self.logger.record("curriculum/difficulty", self.clock.rollout_difficulty)
        for name, value in self.clock.driver.values(step).items():
            self.logger.record(f"hparam/{name}", value)
        if isinstance(self.model, OnPolicyAlgorithm):
            self.model.dump_logs(self.rollouts)
        else:
            self.model.dump_logs()
        self.last_dump = step


class CheckpointCallback(UpdateCallback):
    """Calls ``save()`` every ``every`` env steps (at update boundaries; 0: never)."""

    def __init__(self, save: Callable[[], Any], every: int) -> None:
        super().__init__()
        self.save, self.every = save, every

    def _on_update(self, step: int, previous: int) -> None:
        if _due(step, previous, self.every):
            self.save()
