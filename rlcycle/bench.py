"""Throughput of rlcycle's training against bare SB3: env steps per second, same everything.

Both sides run the same algorithm with the same hyperparameters, number of environments, seed,
torch thread count and number of env steps. Bare SB3 trains on the stock environment with a
constant learning rate and SB3's default logger (nothing written); rlcycle trains through
:func:`rlcycle.train.train`, with the curriculum environments, the callback, the scheduled
learning rate, TensorBoard logs, snapshots and checkpoints. Only ``model.learn`` is timed on
either side (not building, not the final evaluation). The two alternate ``repeats`` times and
the medians are compared, so a busy machine slows both alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from common.config import load_config
from common.runs import torch_threads
from rlcycle.algos import ALGOS
from rlcycle.envs import ENVS
from rlcycle.settings import check_config
from rlcycle.train import train

__all__ = ["bare_sb3", "bench"]


def bare_sb3(config: dict[str, Any]) -> float:
    """Env steps per second of plain SB3 on the stock environment, ``config``'s settings."""
    env = make_vec_env(
        ENVS[config["env"]["id"]].stock,
        n_envs=config["n_envs"],
        seed=config["seed"],
        vec_env_cls=SubprocVecEnv if config["vec"] == "subproc" else DummyVecEnv,
    )
    hyper = dict(config.get(config["algo"], {}))
    policy = hyper.pop("policy", "MlpPolicy")
    model = ALGOS[config["algo"]](
        policy,
        env,
        learning_rate=config["lr"]["max"],
        seed=config["seed"],
        device=config["device"],
        **hyper,
    )
    with torch_threads(config["threads"]):
        began = time.perf_counter()
        model.learn(total_timesteps=config["steps"])
        wall = time.perf_counter() - began
    env.close()
    return model.num_timesteps / wall


def bench(
    config_name: str = "cartpole",
    steps: int = 50_000,
    repeats: int = 3,
    device: str = "cpu",
    sets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Median env steps/s of bare SB3 and of rlcycle, and their ratio (rlcycle / bare).

    Args:
        config_name: a shipped config or a TOML path.
        steps: env steps per training run.
        repeats: alternating runs of each (>= 1).
        device: ``cpu`` or ``cuda``.
        sets: top-level keys to override (``n_envs``, ``algo``...).
    """
    if repeats < 1:
        raise ValueError(f"--repeats {repeats}: must be >= 1")
    config = load_config(config_name, "rlcycle")
    config.update(steps=steps, device=device, progress=False, **(sets or {}))
    config = check_config(config).config
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats):
            bare.append(bare_sb3(config))
            ours.append(train(config, Path(tmp) / f"run{k}")["final"]["steps_per_s"])
            print(
                f"repeat {k + 1}/{repeats}: bare SB3 {bare[-1]:.0f} steps/s, rlcycle {ours[-1]:.0f}"
            )
    result = {
        "config": config_name,
        "algo": config["algo"],
        "steps": steps,
        "n_envs": config["n_envs"],
        "bare_steps_per_s": statistics.median(bare),
        "rlcycle_steps_per_s": statistics.median(ours),
        "bare_all": bare,
        "rlcycle_all": ours,
    }
    result["ratio"] = result["rlcycle_steps_per_s"] / result["bare_steps_per_s"]
    return result
