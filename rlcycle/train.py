"""Train an SB3 agent on a curriculum whose difficulty follows the learning-rate clock.

One call, :func:`train`, does a whole run, top to bottom:

1. check the config and write it to ``<run>/config.toml``;
2. build the clock (the ``[lr]`` schedule), the curriculum and the callback; on resume, load
   their state from ``<run>/checkpoints/last.pt``;
3. build the training environments at the difficulty of the start step, and the model (fresh,
   or loaded from the checkpoint) with its learning rate on SB3's ``lr_schedule``;
4. ``model.learn``; the callback drives difficulty, restarts, snapshots, logs, checkpoints;
5. save the final model (``<run>/model.zip``), evaluate it (and the snapshot ensemble) on
   held-out environments at the evaluation grid, write ``metrics.json`` and an hparams entry.

A run folder holds ``config.toml``, TensorBoard events, ``metrics.json``, ``model.zip``,
``checkpoints/{last.pt, model_<step>.zip[, replay_<step>.pkl]}`` and ``snapshots/cycle_<k>.pt``.
Every file is written atomically; ``last.pt`` is written last and names the model it goes
with, so a run killed at any moment resumes from a consistent checkpoint.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from common.config import ConfigError, save_config
from common.coupling import Coupled, coupled_from_spec
from common.runs import (
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    load_checkpoint,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    torch_threads,
)
from common.schedules import from_spec
from common.snapshots import SnapshotEnsemble
from common.tb import RunWriter
from rlcycle.algos import ALGOS, ON_POLICY, build_model, check_algo, load_model
from rlcycle.callbacks import BUCKETS, CurriculumCallback, bucket_tag
from rlcycle.curriculum import curriculum_from_spec
from rlcycle.envs import ENVS, check_difficulty, make_env
from rlcycle.evaluate import EnsemblePolicy, evaluate_grid
from rlcycle.lr import StepSchedule

__all__ = [
    "DEFAULTS",
    "resolve_config",
    "make_training_env",
    "train",
    "save_checkpoint",
]

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "steps": 100_000,
    "device": "auto",
    "threads": 1,
    "algo": "ppo",
    "n_envs": 1,
    "vec": "dummy",
    "progress_bar": True,
    "log_every": 1_000,
    "checkpoint_every": 0,
    "env": {"id": "rlcycle/CartPole-v1"},
    "lr": {"kind": "cosine_restarts", "max": 3e-4, "min": 1e-5, "period": 25_000},
    "curriculum": {"mode": "anti"},
    "restart": {"reset_optimizer": False, "reset_keys": [], "snapshots": True, "max_snapshots": 5},
    "couplings": {},
    "probe": {"every": 0, "iters": 20, "batch": 512},
    "eval": {"difficulties": [0.0, 0.5, 1.0], "episodes": 10, "every": 0, "ensemble": True},
}
"""Every key :func:`train` reads, with its default; a config file may leave any out."""

COUPLINGS = {"ent_coef": ON_POLICY}
"""Model attributes that may follow the clock, and the algorithms that have them."""

_COUPLING_KEYS = ("enabled", "mode", "lo", "hi")
_TYPES = {
    "seed": int,
    "steps": int,
    "n_envs": int,
    "threads": int,
    "log_every": int,
    "checkpoint_every": int,
    "progress_bar": bool,
}


_OWN_CHECKS = ("lr", "curriculum", "couplings")
"""Tables taken as given: their builders check their keys (``from_spec``...)."""


def _fill(defaults: Mapping[str, Any], given: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``given`` over ``defaults``; a key ``defaults`` lacks is an error."""
    out = copy.deepcopy(dict(defaults))
    for key, value in given.items():
        if key not in defaults:
            raise ConfigError(f"{where}{key}: unknown key; allowed: {', '.join(defaults)}")
        if isinstance(defaults[key], dict) and key not in _OWN_CHECKS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}{key} = {value!r}: must be a table")
            out[key] = _fill(defaults[key], value, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with defaults filled in, checked; every error names its key.

    Tables named after an algorithm (``[ppo]``, ``[a2c]``, ``[dqn]``, ``[sac]``) hold SB3
    constructor arguments; only the one for ``algo`` is used.

    Raises:
        ConfigError: an unknown key, a wrong type or an impossible value.
    """
    algo_tables = {k: v for k, v in config.items() if k in ALGOS}
    out = _fill(DEFAULTS, {k: v for k, v in config.items() if k not in ALGOS}, "")
    for key, kind in _TYPES.items():
        value = out[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(
                f"{key} = {value!r}: must be {'an integer' if kind is int else 'true or false'}"
            )
    for key in ("steps", "n_envs"):
        if out[key] < 1:
            raise ConfigError(f"{key} = {out[key]}: must be >= 1")
    for key in ("threads", "log_every", "checkpoint_every"):
        if out[key] < 0:
            what = "torch's default" if key == "threads" else "never"
            raise ConfigError(f"{key} = {out[key]}: must be >= 0 (0 = {what})")
    if out["vec"] not in ("dummy", "subproc"):
        raise ConfigError(f"vec = {out['vec']!r}: must be dummy | subproc")
    resolve_device(out["device"])
    env_id = out["env"]["id"]
    if env_id not in ENVS:
        raise ConfigError(f"env.id = {env_id!r}: must be one of {' | '.join(ENVS)}")
    algo = out["algo"]
    for name, table in algo_tables.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{name}: must be a table of {ALGOS[name].__name__} arguments")
        out[name] = dict(table)
    check_algo(algo, env_id, out.get(algo, {}) if algo in ALGOS else {})

    clock = from_spec(out["lr"], "lr")
    curriculum_from_spec(out["curriculum"], clock, out["steps"])
    for name, spec in out["couplings"].items():
        if name not in COUPLINGS:
            raise ConfigError(
                f"couplings.{name}: no such coupling; allowed: {', '.join(COUPLINGS)}"
            )
        unknown = sorted(set(spec) - set(_COUPLING_KEYS))
        if unknown:
            raise ConfigError(
                f"couplings.{name}.{unknown[0]}: unknown key; allowed: {', '.join(_COUPLING_KEYS)}"
            )
        if spec.get("enabled", True) and algo not in COUPLINGS[name]:
            raise ConfigError(
                f"couplings.{name}: algo {algo!r} has no {name} to couple; "
                f"only {', '.join(COUPLINGS[name])}"
            )
        coupled_from_spec(spec, clock, f"couplings.{name}")
    if out["probe"]["every"] and algo not in ON_POLICY:
        raise ConfigError(
            f"probe.every = {out['probe']['every']}: the curvature probe needs an on-policy "
            f"algorithm ({', '.join(ON_POLICY)}), not {algo!r}; set it to 0"
        )
    for i, d in enumerate(out["eval"]["difficulties"]):
        check_difficulty(d, f"eval.difficulties[{i}]")
    if out["eval"]["episodes"] < 1:
        raise ConfigError(f"eval.episodes = {out['eval']['episodes']}: must be >= 1")
    restart = out["restart"]
    rms_prop = algo == "a2c" and out.get("a2c", {}).get("use_rms_prop", True)
    if restart["reset_optimizer"] and not restart["reset_keys"] and rms_prop:
        raise ConfigError(
            "restart.reset_optimizer = true: A2C's RMSprop has no Adam moments (exp_avg) to "
            "reset; set a2c.use_rms_prop = false, or name restart.reset_keys"
        )
    if out["restart"]["max_snapshots"] < 1:
        raise ConfigError(
            f"restart.max_snapshots = {out['restart']['max_snapshots']}: must be >= 1"
        )
    return out


def make_training_env(
    env_id: str, n_envs: int, seed: int, difficulty: float, vec: str = "dummy"
) -> VecEnv:
    """``n_envs`` monitored copies of ``env_id`` at ``difficulty``, in one process or many."""
    return make_vec_env(
        make_env,
        n_envs=n_envs,
        seed=seed,
        env_kwargs={"id": env_id, "difficulty": difficulty},
        vec_env_cls=SubprocVecEnv if vec == "subproc" else DummyVecEnv,
    )


def _couplings(config: Mapping[str, Any], clock) -> dict[str, Coupled]:
    return {
        name: coupled_from_spec(spec, clock, f"couplings.{name}")
        for name, spec in config["couplings"].items()
        if spec.get("enabled", True)
    }


# -- checkpoints -----------------------------------------------------------------------------


def save_checkpoint(run_dir: Path, model: BaseAlgorithm, callback: CurriculumCallback) -> Path:
    """Write the model (and replay buffer), then ``last.pt`` naming them; drop older ones.

    ``last.pt`` holds the step, the callback's state (clock cycle, curriculum), the evaluation
    history and the global RNG states, in types that ``torch.load(weights_only=True)`` reads.
    """
    folder = run_dir / "checkpoints"
    step = int(model.num_timesteps)
    files = {"model": f"model_{step}.zip"}
    atomic_write(folder / files["model"], model.save)
    if hasattr(model, "replay_buffer") and model.replay_buffer is not None:
        files["replay"] = f"replay_{step}.pkl"
        atomic_write(folder / files["replay"], model.save_replay_buffer)
    state = {
        "step": step,
        "files": files,
        "callback": callback.state_dict(),
        "history": callback.history,
        "rng": rng_state(),
    }
    path = atomic_torch_save(state, folder / "last.pt")
    for old in [*folder.glob("model_*.zip"), *folder.glob("replay_*.pkl")]:
        if old.name not in files.values():
            old.unlink(missing_ok=True)
    return path


# -- the run ---------------------------------------------------------------------------------


def _evaluator(config: Mapping[str, Any], snapshots: SnapshotEnsemble | None):
    grid, episodes, seed = (
        config["eval"]["difficulties"],
        config["eval"]["episodes"],
        config["seed"],
    )
    env_id = config["env"]["id"]

    def evaluate_model(model: BaseAlgorithm) -> dict[str, float]:
        metrics = evaluate_grid(model, env_id, grid, episodes, seed)
        if snapshots is not None and len(snapshots) and config["eval"]["ensemble"]:
            ensemble = EnsemblePolicy(model.policy, snapshots.state_dicts)
            metrics.update(evaluate_grid(ensemble, env_id, grid, episodes, seed, "ensemble_"))
        return metrics

    return evaluate_model


def train(
    config: Mapping[str, Any],
    run_dir: str | Path,
    resume: bool = False,
    callbacks: list[BaseCallback] | None = None,
) -> dict[str, Any]:
    """Run (or continue) one training run in ``run_dir``; returns the final metrics.

    Args:
        config: a config as :func:`resolve_config` accepts (defaults are filled in).
        run_dir: the run folder (created if needed).
        resume: continue from ``run_dir/checkpoints/last.pt`` up to ``config["steps"]``.
        callbacks: your own SB3 callbacks, called after the curriculum's at every event.

    Returns:
        ``{"steps", "wall_s", "env_steps_per_s", "eval": {tag: value}, "history",
        "snapshot_cycles", "run_dir"}``; ``wall_s`` times ``model.learn`` alone.
    """
    config = resolve_config(config)
    with torch_threads(config["threads"]):
        return _train(config, Path(run_dir), resume, callbacks or [])


def _train(
    config: dict[str, Any], run_dir: Path, resume: bool, callbacks: list[BaseCallback]
) -> dict[str, Any]:
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt") if resume else None
    start = checkpoint["step"] if checkpoint else 0
    steps = config["steps"]
    # A run killed during its final evaluation has its last checkpoint at `steps` but no
    # metrics.json: resuming it only finishes the evaluation.
    if start > steps or (start == steps and (run_dir / "metrics.json").is_file()):
        raise ConfigError(f"steps = {steps}: the run already has {start} steps; raise --steps")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.toml")
    seed_everything(config["seed"])
    algo, env_id = config["algo"], config["env"]["id"]
    device = resolve_device(config["device"])

    # The clock, the curriculum and what hangs on the restarts.
    clock = from_spec(config["lr"], "lr")
    curriculum = curriculum_from_spec(config["curriculum"], clock, steps)
    restart = config["restart"]
    snapshots = None
    if restart["snapshots"]:
        snapshots = SnapshotEnsemble(restart["max_snapshots"], run_dir / "snapshots")
    callback = CurriculumCallback(
        clock,
        curriculum,
        success=ENVS[env_id].success,
        couplings=_couplings(config, clock),
        reset_optimizer=(restart["reset_keys"] or True) if restart["reset_optimizer"] else False,
        snapshots=snapshots,
        log_every=config["log_every"],
        probe_every=config["probe"]["every"],
        probe_iters=config["probe"]["iters"],
        probe_batch=config["probe"]["batch"],
        evaluate=_evaluator(config, snapshots),
        eval_every=config["eval"]["every"],
        checkpoint=lambda cb: save_checkpoint(run_dir, cb.model, cb),
        checkpoint_every=config["checkpoint_every"],
    )
    if checkpoint:
        callback.load_state_dict(checkpoint["callback"])
        callback.history = list(checkpoint["history"])
        if snapshots is not None:
            _restore_snapshots(snapshots, callback.driver.state_dict()["cycle"])

    # Environments at the start step's difficulty, and the model.
    env = make_training_env(
        env_id,
        config["n_envs"],
        config["seed"] + start,
        callback.target_difficulty(start),
        config["vec"],
    )
    lr = StepSchedule(config["lr"], steps)
    if checkpoint:
        folder = run_dir / "checkpoints"
        model = load_model(algo, folder / checkpoint["files"]["model"], env, device, lr)
        if "replay" in checkpoint["files"]:
            model.load_replay_buffer(folder / checkpoint["files"]["replay"])
        set_rng_state(checkpoint["rng"])
    else:
        model = build_model(algo, env, config.get(algo, {}), lr, config["seed"], device)
    model.set_logger(configure(str(run_dir), ["tensorboard"]))
    writer = RunWriter(run_dir)
    if not checkpoint:
        writer.layout(_charts(config), "rlcycle", only_written=False)

    began = time.perf_counter()
    try:
        if start < steps:
            model.learn(
                total_timesteps=steps - start,
                callback=[callback, *callbacks],
                log_interval=None,  # the callback dumps at update boundaries
                reset_num_timesteps=not checkpoint,
                progress_bar=config["progress_bar"],
            )
        wall = time.perf_counter() - began

        # The end: last snapshot, final model, held-out evaluation, metrics.
        if snapshots is not None:
            cycle = clock.phase(model.num_timesteps).cycle
            if cycle not in snapshots.cycles:
                snapshots.take(model.policy, cycle)
        atomic_write(run_dir / "model.zip", model.save)
        final = callback.evaluate_fn(model)
        for tag, value in final.items():
            model.logger.record(tag, value)
        model.logger.dump(model.num_timesteps)
        end = int(model.num_timesteps)  # the final evaluation replaces any earlier one at `end`
        callback.history = [h for h in callback.history if h["step"] != end]
        callback.history.append({"step": end, "metrics": final})
        save_checkpoint(run_dir, model, callback)
        metrics = {
            "steps": int(model.num_timesteps),
            "wall_s": wall,
            "env_steps_per_s": (model.num_timesteps - start) / wall if wall > 0 else 0.0,
            "eval": final,
            "history": callback.history,
            "snapshot_cycles": list(snapshots.cycles) if snapshots is not None else [],
        }
        atomic_write_json(metrics, run_dir / "metrics.json")
        writer.hparams(_hparams(config), {k: v for k, v in final.items() if "/d=" not in k})
    finally:
        writer.close()
        model.logger.close()
        env.close()
    return {**metrics, "run_dir": str(run_dir)}


def _restore_snapshots(snapshots: SnapshotEnsemble, cycle: int) -> None:
    """Keep the snapshots of cycles before ``cycle`` (the checkpoint's); later ones are redone."""
    assert snapshots.directory is not None
    for path in snapshots.directory.glob("cycle_*.pt"):
        if int(path.stem.split("_")[1]) >= cycle:
            path.unlink()
    if any(snapshots.directory.glob("cycle_*.pt")):
        snapshots.load(snapshots.directory)


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
    if config["restart"]["snapshots"] and config["eval"]["ensemble"]:
        charts["ensemble return by difficulty"] = ["eval/ensemble_return/d="]
    return charts


def _hparams(config: Mapping[str, Any]) -> dict[str, Any]:
    flat = {k: config[k] for k in ("algo", "seed", "steps", "n_envs")}
    flat["env"] = config["env"]["id"]
    flat.update({f"lr.{k}": v for k, v in config["lr"].items()})
    flat.update({f"curriculum.{k}": v for k, v in config["curriculum"].items()})
    flat["reset_optimizer"] = config["restart"]["reset_optimizer"]
    return flat
