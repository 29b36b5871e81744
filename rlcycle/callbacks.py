"""The SB3 callback that joins the clock, the difficulty, restarts, snapshots and the logs.

The learning rate itself goes through SB3's ``lr_schedule`` (:mod:`rlcycle.lr`); this callback
does everything else the clock drives:

- every env step: write couplings (e.g. ``ent_coef``), fire restart hooks when the clock enters
  a new cycle (optimizer-state reset, snapshot of the policy), send the curriculum's difficulty
  to every worker with ``env_method("set_difficulty", d)``, and count finished episodes by
  difficulty;
- at each update boundary (after SB3's ``train()``, i.e. at the next rollout's start): probe
  the curvature, evaluate, checkpoint and write the logs, each at its own interval.

Logging goes through SB3's own logger, and SB3's periodic dumps are switched off
(``learn(log_interval=None)``): the callback dumps at update boundaries, so every ``train/*``
value SB3 recorded (``train/learning_rate`` included) is stamped with the step at which that
update ran, and ours (``lr/policy``, ``schedule/level``, ``curriculum/difficulty``...) share the
same steps and event file.

The difficulty sent to the environments is the curriculum's value rounded to
:data:`DECIMALS` decimals: a pure function of the step (so a resumed run sends the same values)
that changes about a hundred times per sweep of [0, 1] instead of at every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
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
from rlcycle.curriculum import Curriculum

__all__ = ["DECIMALS", "BUCKETS", "CurriculumCallback", "bucket_tag"]

DECIMALS = 2
"""The difficulty sent to the environments is rounded to this many decimals."""

BUCKETS = 4
"""Training returns are logged per difficulty bucket: [0, 0.25), [0.25, 0.5), ... [0.75, 1]."""


def bucket_tag(difficulty: float, metric: str = "return") -> str:
    """``curriculum/<metric>/d=<lo>-<hi>`` for the bucket holding ``difficulty``."""
    k = min(int(difficulty * BUCKETS), BUCKETS - 1)
    return f"curriculum/{metric}/d={k / BUCKETS:g}-{(k + 1) / BUCKETS:g}"


def _due(step: int, previous: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in ``(previous, step]``; never when ``every`` = 0."""
    return every > 0 and step // every > previous // every


class CurriculumCallback(BaseCallback):
    """Runs the curriculum and everything else the clock drives during ``model.learn``.

    Args:
        clock: the learning-rate schedule (env steps), whose cycles are the restarts.
        curriculum: difficulty at each step.
        success: an episode with at least this return counts as a success.
        couplings: model attribute (``ent_coef``) -> coupled schedule, written every step.
        reset_optimizer: zero the optimizers' state at each restart; ``True`` for
            :func:`common.torch_driver.default_reset_keys`, or a list of state keys
            (``exp_avg``, ``exp_avg_sq``, ``step``, ``momentum_buffer``...).
        snapshots: where to keep the policy at each cycle end (None: no snapshots).
        log_every: write the logs at the first update boundary past each multiple (env steps).
        probe_every: estimate the policy loss's top Hessian eigenvalue every this many updates
            (0: never); on-policy algorithms only.
        probe_iters: power iterations per probe.
        probe_batch: at most this many samples of the latest rollout in the probe.
        evaluate: ``evaluate(model) -> {tag: value}``, called every ``eval_every`` env steps.
        eval_every: env steps between evaluations (0: none during training).
        checkpoint: ``checkpoint(callback)`` saves the run, every ``checkpoint_every`` steps.
        checkpoint_every: env steps between checkpoints (0: none during training).
    """

    def __init__(
        self,
        clock: Schedule,
        curriculum: Curriculum,
        success: float,
        couplings: Mapping[str, Coupled] | None = None,
        reset_optimizer: bool | list[str] = False,
        snapshots: SnapshotEnsemble | None = None,
        log_every: int = 1000,
        probe_every: int = 0,
        probe_iters: int = 20,
        probe_batch: int = 512,
        evaluate: Callable[[Any], dict[str, float]] | None = None,
        eval_every: int = 0,
        checkpoint: Callable[[CurriculumCallback], None] | None = None,
        checkpoint_every: int = 0,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.clock, self.curriculum, self.success = clock, curriculum, success
        self.couplings = dict(couplings or {})
        self.reset_optimizer = reset_optimizer
        self.snapshots = snapshots
        self.log_every, self.eval_every, self.checkpoint_every = (
            log_every,
            eval_every,
            checkpoint_every,
        )
        self.probe_every, self.probe_iters, self.probe_batch = probe_every, probe_iters, probe_batch
        self.evaluate_fn, self.checkpoint_fn = evaluate, checkpoint
        self.driver = ScheduleDriver(clock)
        self.difficulty = math.nan  # the value last sent to the environments
        self.updates = 0  # update boundaries passed (rollouts collected)
        self.boundary = 0  # env steps at the last update boundary
        self.last_dump = -1
        self.margin: float | None = None
        self.history: list[dict[str, Any]] = []  # {"step", "metrics"} of each evaluation

    # -- setup -------------------------------------------------------------------------------

    def _init_callback(self) -> None:
        for name, coupled in self.couplings.items():
            self.driver.bind(name, coupled, CallableTarget(self._setter(name), name))
        if self.reset_optimizer:
            keys = None if self.reset_optimizer is True else list(self.reset_optimizer)
            for optimizer in algo_optimizers(self.model).values():
                self.driver.on_restart(ResetOptimizerState(optimizer, keys))
        if self.snapshots is not None:
            self.driver.on_restart(self.snapshots.hook(self.model.policy))

    def _setter(self, name: str) -> Callable[[float], None]:
        def set_value(value: float) -> None:
            setattr(self.model, name, value)

        return set_value

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue the same curves (plain types)."""
        return {
            "driver": self.driver.state_dict(),
            "curriculum": self.curriculum.state_dict(),
            "updates": self.updates,
            "boundary": self.boundary,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.driver.load_state_dict(state["driver"])
        self.curriculum.load_state_dict(state["curriculum"])
        self.updates = int(state["updates"])
        self.boundary = int(state["boundary"])

    # -- every step --------------------------------------------------------------------------

    def target_difficulty(self, step: float) -> float:
        """The difficulty the environments should run at ``step`` (rounded)."""
        return round(self.curriculum.difficulty(step), DECIMALS)

    def send_difficulty(self, step: float) -> float:
        """Send the difficulty for ``step`` to every worker if it changed; returns it."""
        d = self.target_difficulty(step)
        if d != self.difficulty:
            self.training_env.env_method("set_difficulty", d)
            self.difficulty = d
        return d

    def _on_training_start(self) -> None:
        self.boundary = max(self.boundary, self.num_timesteps)
        self.driver.set(self.num_timesteps)
        self.send_difficulty(self.num_timesteps)

    def _on_step(self) -> bool:
        step = self.num_timesteps
        self.driver.set(step)
        for info in self.locals.get("infos", ()):
            episode = info.get("episode")
            if episode is not None:
                self._episode_done(float(episode["r"]), info.get("difficulty", self.difficulty))
        self.send_difficulty(step)
        return True

    def _episode_done(self, episode_return: float, difficulty: float) -> None:
        success = episode_return >= self.success
        self.logger.record_mean(bucket_tag(difficulty), episode_return)
        self.logger.record_mean("curriculum/success_rate", float(success))
        self.curriculum.record(difficulty, success)

    # -- update boundaries -------------------------------------------------------------------

    def _on_rollout_end(self) -> None:
        self.updates += 1
        if (
            self.probe_every
            and self.updates % self.probe_every == 0
            and isinstance(self.model, OnPolicyAlgorithm)
        ):
            self.margin = self.probe()

    def _on_rollout_start(self) -> None:
        step = self.num_timesteps
        if step > self.boundary:  # an update ran since the last boundary
            self._boundary(step)

    def _on_training_end(self) -> None:
        if self.num_timesteps > self.last_dump:
            self.dump()

    def _boundary(self, step: int) -> None:
        previous, self.boundary = self.boundary, step
        if self.evaluate_fn is not None and _due(step, previous, self.eval_every):
            metrics = self.evaluate_fn(self.model)
            for tag, value in metrics.items():
                self.logger.record(tag, value)
            self.history.append({"step": step, "metrics": metrics})
        if _due(step, previous, self.log_every):
            self.dump()
        if self.checkpoint_fn is not None and _due(step, previous, self.checkpoint_every):
            self.checkpoint_fn(self)

    def dump(self) -> None:
        """Record the clock's scalars and write every pending value at the current step."""
        step = self.num_timesteps
        phase = self.clock.phase(step)
        if self.model._n_updates > 0:  # read back from the optimizers once SB3 has set them
            for name, optimizer in algo_optimizers(self.model).items():
                self.logger.record(f"lr/{name}", float(optimizer.param_groups[0]["lr"]))
        self.logger.record("schedule/level", phase.level)
        self.logger.record("schedule/cycle", phase.cycle)
        self.logger.record("curriculum/difficulty", self.difficulty)
        for name, value in self.driver.values(step).items():
            self.logger.record(f"hparam/{name}", value)
        if self.margin is not None:
            self.logger.record("dynamics/stability_margin", self.margin)
        if isinstance(self.model, OnPolicyAlgorithm):
            self.model.dump_logs(self.updates)
        else:
            self.model.dump_logs()
        self.last_dump = step

    # -- curvature probe ---------------------------------------------------------------------

    def probe(self) -> float:
        """``lr · L / 4`` with L the top Hessian eigenvalue of the policy-gradient loss.

        The loss is the surrogate ``-mean(A · π(a|s) / π_old(a|s))`` (normalised advantages)
        on at most ``probe_batch`` samples of the rollout just collected, at the current
        weights: the loss the next update descends.
        """
        model = self.model
        policy = model.policy
        numpy_rng = np.random.get_state()  # get() shuffles; keep training's random stream
        batch = next(model.rollout_buffer.get(batch_size=None))
        np.random.set_state(numpy_rng)
        n = min(self.probe_batch, len(batch.advantages))
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

        L = hessian_top_eigenvalue(loss, params, iters=self.probe_iters)
        # The next train() runs at this step's learning rate.
        return stability_margin(self.clock.value(self.num_timesteps), L)
