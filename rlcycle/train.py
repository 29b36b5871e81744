"""Train an SB3 agent on a curriculum whose difficulty follows the learning-rate clock.

One call, :func:`train`, does a whole run, top to bottom, holding the run folder for its whole
life (:func:`common.runs.hold_run_folder`: one trainer per folder; a fresh run never writes
into a folder that holds one):

1. check the config (:func:`rlcycle.settings.check_config` builds the clock, the curriculum
   and the couplings) and write it to ``<run>/config.toml``;
2. build the training environments and the algorithm, its learning rate on SB3's
   ``lr_schedule``; on resume, load the state of everything from ``<run>/checkpoints/last.pt``
   (:mod:`rlcycle.checkpoints`: tensors and plain data only);
3. ``model.learn`` with the run's callbacks in a ``CallbackList`` (:mod:`rlcycle.callbacks`:
   clock and curriculum, curvature probe, evaluation, logs, checkpoints), then yours;
4. save the final model (``<run>/model.zip``, for SB3's ``PPO.load``), evaluate it (and the
   snapshot ensemble) on held-out environments at the evaluation grid, write ``metrics.json``
   and an hparams entry.

A run folder holds ``config.toml``, TensorBoard events, ``metrics.json``, ``model.zip``,
``checkpoints/{last.pt[, replay_<step>.pt]}`` and ``snapshots/cycle_<k>.pt``. Every file is
written atomically and ``last.pt`` last, so a run killed at any moment resumes from a consistent
checkpoint.

A resumed run continues exactly where the checkpoint was taken (an update boundary): the
networks, optimizer states, replay buffer, counters, random generators, the episodes in progress
(for environments whose state is plain arrays: CartPole, Pendulum), the curriculum and the
pending logs, so it reaches the same weights and returns as a run never stopped. LunarLander's
Box2D episodes cannot be captured: there the resumed run starts fresh episodes (its
environments reseeded with ``seed + step``), and the learning-rate and difficulty curves are
still the same. A resumed run's TensorBoard events drop what the killed one logged after its
checkpoint (``purge_step``), so each curve reads as one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from stable_baselines3.common.vec_env import VecEnv
from torch.utils.tensorboard import SummaryWriter

from common.config import flatten, save_config
from common.runs import (
    MISFITS,
    atomic_write,
    atomic_write_json,
    check_resume_steps,
    checkpoint_misfit,
    hold_run_folder,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    torch_threads,
)
from common.snapshots import SnapshotEnsemble, snapshot_files
from common.tb import RunWriter
from rlcycle.algos import build_model, rollout_steps
from rlcycle.callbacks import (
    BUCKETS,
    CheckpointCallback,
    ClockCallback,
    EvaluationCallback,
    Evaluations,
    LogCallback,
    ProbeCallback,
    ResumeCallback,
    bucket_tag,
)
from rlcycle.checkpoints import (
    load_logger_state,
    load_model_state,
    load_noise_state,
    load_replay,
    logger_state,
    noise_state,
    read_checkpoint,
    save_checkpoint,
)
from rlcycle.envs import ENVS
from rlcycle.evaluate import EnsemblePolicy, evaluate_grid
from rlcycle.lr import StepSchedule
from rlcycle.settings import RESETS, CheckedConfig, check_config
from rlcycle.vecenv import env_states, load_env_states, make_training_env

__all__ = ["train", "make_training_env"]


@dataclass
class _Run:
    """One run's live parts, from building them to closing them."""

    checked: CheckedConfig
    run_dir: Path
    start: int  # the step training starts from (the checkpoint's on resume)
    resumes: int  # how many times this run was resumed, this time included
    env: VecEnv
    model: BaseAlgorithm
    writer: RunWriter  # SB3's logger writes through it too: one event file per session
    snapshots: SnapshotEnsemble | None
    evaluations: Evaluations
    callbacks: dict[str, BaseCallback]  # the run's own, in the order SB3 calls them

    @property
    def config(self) -> dict[str, Any]:
        return self.checked.config


def train(
    config: Mapping[str, Any] | CheckedConfig,
    run_dir: str | Path,
    resume: bool = False,
    callbacks: list[BaseCallback] | None = None,
) -> dict[str, Any]:
    """Run (or continue) one training run in ``run_dir``; returns what ``metrics.json`` holds.

    Args:
        config: a config as :func:`rlcycle.settings.check_config` accepts (a whole one, or
            only the keys that differ from the defaults), or what it returned.
        run_dir: the run folder (created if needed).
        resume: continue from ``run_dir/checkpoints/last.pt`` up to ``config["steps"]``.
        callbacks: your own SB3 callbacks, called after the run's at every event.

    Returns:
        ``{"final": {"steps", "wall_s", "steps_per_s", "eval": {tag: value},
        "snapshot_cycles", "resumes", "difficulty"}, "history": [{"step", "metrics"}...],
        "run_dir"}``; ``wall_s`` times this session's ``model.learn`` alone; ``difficulty`` is
        the mean difficulty sent during the rollout the last update trained on (``gated``: the
        level it reached; ``random_d``: the mean over the episodes in play), as the last
        ``curriculum/difficulty`` logs it.
    """
    checked = check_config(config)
    run_dir = Path(run_dir)
    device = resolve_device(checked.config["device"])  # one this machine lacks: no folder made
    with hold_run_folder(run_dir, resume), torch_threads(checked.config["threads"]):
        checkpoint = _checkpoint_to_resume(checked.config, run_dir) if resume else None
        try:
            run = _open_run(checked, run_dir, checkpoint, device)
        except MISFITS as e:
            if checkpoint is None:
                raise
            raise checkpoint_misfit(run_dir / "checkpoints" / "last.pt", e) from None
        try:
            save_config(checked.config, run_dir / "config.toml")  # once the run has opened
            if not checkpoint:
                run.writer.layout(_charts(run.config), "rlcycle", only_written=False)
            wall = _learn(run, callbacks or [])
            metrics = _finish(run, wall)
            final = metrics["final"]["eval"]
            scalars = {k: v for k, v in final.items() if "/d=" not in k}
            run.writer.hparams(_hparams(run.config), scalars)
        finally:
            run.writer.close()
            run.env.close()
    return {**metrics, "run_dir": str(run_dir)}


def _checkpoint_to_resume(config: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    checkpoint = read_checkpoint(run_dir)
    check_resume_steps(run_dir, checkpoint["step"], config["steps"])
    return checkpoint


# -- building --------------------------------------------------------------------------------


def _open_run(
    checked: CheckedConfig,
    run_dir: Path,
    checkpoint: Mapping[str, Any] | None,
    device: torch.device,
) -> _Run:
    """Build the run's parts; with a checkpoint, load every state it holds into them."""
    config = checked.config
    seed_everything(config["seed"])
    start = int(checkpoint["step"]) if checkpoint else 0
    clock_callback = _clock_callback(checked, run_dir, checkpoint)
    env = make_training_env(
        config["env"]["id"],
        config["n_envs"],
        config["seed"] + start,
        clock_callback.target_difficulty(start),
        config["vec"],
    )
    clock_callback.prime(env)  # random_d: each environment's first draw, before SB3's reset
    # A resumed run's events replace what the stopped one wrote after its checkpoint; those at
    # the checkpoint's own step were written before it, and stay.
    writer = RunWriter(run_dir, purge_step=start + 1 if checkpoint else None)
    try:
        lr = StepSchedule(checked.schedules["policy"], config["steps"])
        hyper = config.get(config["algo"], {})
        scheduled = checked.extras["scheduled"]
        model = build_model(config["algo"], env, hyper, lr, config["seed"], device, scheduled)
        model.set_logger(Logger(str(run_dir), [_TensorBoard(writer.writer)]))
        run = _Run(
            checked,
            run_dir,
            start,
            int(checkpoint["resumes"]) + 1 if checkpoint else 0,
            env,
            model,
            writer,
            clock_callback.snapshots,
            Evaluations(list(checkpoint["history"]) if checkpoint else []),
            {},
        )
        run.callbacks = _callbacks(run, clock_callback)
        if checkpoint:
            _restore(run, checkpoint)
    except BaseException:
        writer.close()
        env.close()
        raise
    return run


def _clock_callback(
    checked: CheckedConfig, run_dir: Path, checkpoint: Mapping[str, Any] | None
) -> ClockCallback:
    config = checked.config
    snapshots = None
    if config["snapshots"]["max"] > 0:
        snapshots = SnapshotEnsemble(config["snapshots"]["max"], run_dir / "snapshots")
    callback = ClockCallback(
        checked.schedules["policy"],
        checked.extras["curriculum"],
        success=ENVS[config["env"]["id"]].success,
        couplings=checked.couplings,
        reset=RESETS[config["reset"]["policy"]],
        snapshots=snapshots,
        lead=rollout_steps(config["algo"], config["n_envs"], config.get(config["algo"], {})),
    )
    if checkpoint:
        callback.load_state_dict(checkpoint["callbacks"]["clock"])
        if snapshots is not None:
            _restore_snapshots(snapshots, callback.driver.state_dict()["cycle"])
    return callback


class _TensorBoard(TensorBoardOutputFormat):
    """SB3's TensorBoard output on the run's own writer.

    SB3's builds a ``SummaryWriter`` of its own, without ``purge_step``: a resumed run's events
    would repeat the steps the stopped run logged after its checkpoint.
    """

    def __init__(self, writer: SummaryWriter) -> None:
        self.writer = writer
        self._is_closed = False


def _callbacks(run: _Run, clock: ClockCallback) -> dict[str, BaseCallback]:
    """The run's callbacks by name, in the order SB3 calls them."""
    config = run.config
    callbacks: dict[str, BaseCallback] = {"clock": clock}
    probe = config["probe"]
    if probe["every"]:
        callbacks["probe"] = ProbeCallback(
            clock.clock, probe["every"], probe["iters"], probe["batch"]
        )
    callbacks["evaluation"] = EvaluationCallback(
        _evaluator(config, run.snapshots), config["eval"]["every"], run.evaluations
    )
    callbacks["log"] = LogCallback(clock, config["log"]["every"])
    callbacks["checkpoint"] = CheckpointCallback(lambda: _save(run), config["checkpoint"]["every"])
    return callbacks


def _restore(run: _Run, checkpoint: Mapping[str, Any]) -> None:
    """Load a checkpoint's states into a freshly built run."""
    model = run.model
    load_model_state(model, checkpoint["model"])
    if getattr(model, "replay_buffer", None) is not None:
        load_replay(run.run_dir, checkpoint, model.replay_buffer)
    for name, state in checkpoint["callbacks"].items():
        if name != "clock" and hasattr(run.callbacks.get(name), "load_state_dict"):
            run.callbacks[name].load_state_dict(state)
    load_logger_state(model.logger, checkpoint["logger"])
    envs = checkpoint["envs"]
    if envs is not None and len(envs["states"]) == run.env.num_envs:
        load_env_states(run.env, envs["states"])
        model._last_obs = envs["last_obs"].numpy()
        model._last_episode_starts = envs["episode_starts"].numpy()
    else:  # fresh episodes: SB3 resets the environments when learning starts
        model._last_obs = None

    def restore_random_state() -> None:
        set_rng_state(checkpoint["rng"])
        load_noise_state(model, checkpoint["noise"])

    restore_random_state()  # and again once learning has begun (see ResumeCallback)
    run.callbacks = {"resume": ResumeCallback(restore_random_state), **run.callbacks}


def _restore_snapshots(snapshots: SnapshotEnsemble, cycle: int) -> None:
    """Keep the snapshots of cycles before ``cycle`` (the checkpoint's); later ones are redone,
    and removed only once the kept ones have loaded (a refused resume loses nothing)."""
    assert snapshots.directory is not None
    files = snapshot_files(snapshots.directory)
    if any(k < cycle for k in files):
        snapshots.load(snapshots.directory, before=cycle)
    for k, path in files.items():
        if k >= cycle:
            path.unlink()


# -- running ---------------------------------------------------------------------------------


def _save(run: _Run) -> None:
    """Checkpoint the run as it is now (at an update boundary, or at the end)."""
    model = run.model
    states = env_states(run.env)
    envs = None
    if states is not None:
        envs = {
            "states": states,
            "last_obs": torch.as_tensor(model._last_obs).clone(),
            "episode_starts": torch.as_tensor(model._last_episode_starts).clone(),
        }
    training = {
        "callbacks": {
            name: callback.state_dict()
            for name, callback in run.callbacks.items()
            if hasattr(callback, "state_dict")
        },
        "history": run.evaluations.history,
        "rng": rng_state(),
        "noise": noise_state(model),
        "envs": envs,
        "logger": logger_state(model.logger),
        "resumes": run.resumes,
    }
    save_checkpoint(run.run_dir, model, training)


def _learn(run: _Run, callbacks: list[BaseCallback]) -> float:
    """Train from the start step to ``steps``; returns the wall time of ``model.learn``."""
    steps = run.config["steps"]
    began = time.perf_counter()
    if run.start < steps:
        run.model.learn(
            total_timesteps=steps - run.start,
            callback=CallbackList([*run.callbacks.values(), *callbacks]),
            log_interval=None,  # LogCallback dumps at update boundaries
            reset_num_timesteps=run.resumes == 0,
            progress_bar=run.config["progress"],
        )
    return time.perf_counter() - began


def _evaluator(config: Mapping[str, Any], snapshots: SnapshotEnsemble | None):
    grid, episodes, seed = (
        config["eval"]["difficulties"],
        config["eval"]["episodes"],
        config["seed"],
    )
    env_id = config["env"]["id"]

    def evaluate_model(model: BaseAlgorithm) -> dict[str, float]:
        metrics = evaluate_grid(model, env_id, grid, episodes, seed)
        if config["eval"]["sampled"]:
            metrics.update(evaluate_grid(model, env_id, grid, episodes, seed, "sampled_", False))
        if snapshots is not None and len(snapshots) and config["eval"]["ensemble"]:
            ensemble = EnsemblePolicy(model.policy, snapshots.state_dicts)
            metrics.update(evaluate_grid(ensemble, env_id, grid, episodes, seed, "ensemble_"))
        return metrics

    return evaluate_model


def _finish(run: _Run, wall: float) -> dict[str, Any]:
    """The end: last snapshot, final model, held-out evaluation, checkpoint, metrics.json."""
    model, snapshots, clock = run.model, run.snapshots, run.checked.schedules["policy"]
    end = int(model.num_timesteps)
    if snapshots is not None and end < clock.end_step:  # a cycle ends with the run
        cycle = clock.phase(end).cycle
        if cycle not in snapshots.cycles:
            snapshots.take(model.policy, cycle)
    atomic_write(run.run_dir / "model.zip", model.save)
    final = _evaluator(run.config, snapshots)(model)
    for tag, value in final.items():
        model.logger.record(tag, value)
    model.logger.dump(end)
    run.evaluations.add(end, final)  # replaces an evaluation at `end` during training
    _save(run)
    metrics = {
        "final": {
            "steps": end,
            "wall_s": wall,
            "steps_per_s": (end - run.start) / wall if wall > 0 else 0.0,
            "eval": final,
            "snapshot_cycles": list(snapshots.cycles) if snapshots is not None else [],
            "resumes": run.resumes,
            "difficulty": run.callbacks["clock"].trained_difficulty,
        },
        "history": run.evaluations.history,
    }
    atomic_write_json(metrics, run.run_dir / "metrics.json")
    return metrics


# -- TensorBoard -----------------------------------------------------------------------------


def _charts(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Custom-scalar charts of the tags this run writes (regular expressions, see ``layout``).

    Difficulty shares its 0..1 axis with the schedule's level (the normalised learning rate);
    the raw rate, 1e-5 to 1e-3, has a chart of its own. The same charts for every run with the
    same features, whatever its difficulty grid, so TensorBoard shows each chart once.
    """
    charts = {
        "difficulty and lr level": ["curriculum/difficulty", "schedule/level$"],
        "learning rate": ["lr/policy"],
        "training return by difficulty": [bucket_tag((k + 0.5) / BUCKETS) for k in range(BUCKETS)],
        "eval return by difficulty": ["eval/return/d="],
    }
    if config["snapshots"]["max"] > 0 and config["eval"]["ensemble"]:
        charts["ensemble return by difficulty"] = ["eval/ensemble_return/d="]
    return charts


def _hparams(config: Mapping[str, Any]) -> dict[str, Any]:
    """The run's hyperparameters for the HPARAMS tab: the ones a study varies, flattened."""
    keys = ["algo", "seed", "steps", "n_envs", "env.id", "lr", "curriculum", "reset.policy"]
    return flatten(config, only=[*keys, config["algo"]])
