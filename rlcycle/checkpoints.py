"""Checkpoints of an rlcycle run: files that ``torch.load(weights_only=True)`` reads, nothing else.

``checkpoints/last.pt`` holds what a resumed run needs to go on as if never stopped: the
algorithm's networks and optimizer states (SB3's ``get_parameters``), its counters and random
generator, the observations and episode states of the training environments
(:mod:`rlcycle.vecenv`), the logger's pending values, the callbacks' states, the evaluation
history and the global random generators. DQN's and SAC's replay buffer goes beside it, as
arrays, in ``checkpoints/replay_<step>.pt``.

Nothing here unpickles objects, and no path is read from a checkpoint: the names are fixed (the
replay file is named after the checkpoint's step, an integer). The algorithm itself is rebuilt
from the run's ``config.toml`` and only tensors are loaded into it. SB3's ``model.zip`` (written
at the end of a run for ``PPO.load`` users) is pickle-based and never read here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.distributions import StateDependentNoiseDistribution
from stable_baselines3.common.logger import Logger

from common.config import ConfigError
from common.runs import atomic_torch_save, checkpoint_step, load_checkpoint

__all__ = [
    "FORMAT",
    "model_state",
    "load_model_state",
    "policy_weights",
    "noise_state",
    "load_noise_state",
    "logger_state",
    "load_logger_state",
    "save_checkpoint",
    "read_checkpoint",
    "load_replay",
]

FORMAT = 2
"""Bumped whenever ``last.pt`` changes shape; older checkpoints are refused, not misread."""

_COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_n_calls")
_FLOATS = ("_current_progress_remaining", "exploration_rate")
_CHECKPOINT_KEYS = (
    "step", "model", "callbacks", "history", "rng", "noise", "envs", "logger", "resumes"
)  # fmt: skip
_REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python number it holds (``weights_only`` refuses NumPy objects)."""
    return value.item() if isinstance(value, np.generic) else value


def _attr(model: BaseAlgorithm, dotted: str) -> Any:
    node: Any = model
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def model_state(model: BaseAlgorithm) -> dict[str, Any]:
    """The algorithm's weights, optimizer states, counters and own random generator."""
    _, variables = model._get_torch_save_params()
    return {
        "params": model.get_parameters(),
        "variables": {name: _attr(model, name).detach().clone() for name in variables},
        "counters": {k: int(getattr(model, k)) for k in _COUNTERS if hasattr(model, k)},
        "floats": {k: float(getattr(model, k)) for k in _FLOATS if hasattr(model, k)},
        "episodes": [{k: _plain(v) for k, v in info.items()} for info in model.ep_info_buffer],
        "successes": [bool(s) for s in model.ep_success_buffer],
        "action_rng": model.action_space.np_random.bit_generator.state,
    }


def load_model_state(model: BaseAlgorithm, state: Mapping[str, Any]) -> None:
    """Load what :func:`model_state` captured into a model built from the same config."""
    model.set_parameters(dict(state["params"]), exact_match=True, device=model.device)
    with torch.no_grad():
        for name, value in state["variables"].items():
            _attr(model, name).copy_(value)
    for key, value in state["counters"].items():
        setattr(model, key, int(value))
    for key, value in state["floats"].items():
        setattr(model, key, float(value))
    window = model._stats_window_size  # learn() keeps these deques when it continues
    model.ep_info_buffer = deque((dict(info) for info in state["episodes"]), maxlen=window)
    model.ep_success_buffer = deque(state["successes"], maxlen=window)
    model.action_space.np_random.bit_generator.state = state["action_rng"]


def policy_weights(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The policy's state dict in a checkpoint read by :func:`read_checkpoint`."""
    return checkpoint["model"]["params"]["policy"]


def _noise_distributions(model: BaseAlgorithm) -> list[StateDependentNoiseDistribution]:
    holders = (model.policy, getattr(model.policy, "actor", None))  # PPO/A2C, SAC
    dists = [getattr(holder, "action_dist", None) for holder in holders]
    return [d for d in dists if isinstance(d, StateDependentNoiseDistribution)]


def noise_state(model: BaseAlgorithm) -> list[dict[str, torch.Tensor] | None]:
    """gSDE's exploration matrices as drawn for the rollout under way (empty without gSDE)."""
    return [
        {
            "mat": d.exploration_mat.detach().clone(),
            "matrices": d.exploration_matrices.detach().clone(),
        }
        if hasattr(d, "exploration_mat")
        else None
        for d in _noise_distributions(model)
    ]


def load_noise_state(model: BaseAlgorithm, state: list[Mapping[str, torch.Tensor] | None]) -> None:
    for dist, saved in zip(_noise_distributions(model), state, strict=True):
        if saved is not None:
            dist.exploration_mat = saved["mat"].to(model.device)
            dist.exploration_matrices = saved["matrices"].to(model.device)


def logger_state(logger: Logger) -> dict[str, Any]:
    """The values recorded since the last dump (they are written at the next one)."""
    values = {k: _plain(v) for k, v in logger.name_to_value.items()}
    numbers = {k: v for k, v in values.items() if isinstance(v, (int, float))}
    return {
        "values": numbers,
        "counts": {k: int(logger.name_to_count[k]) for k in numbers if k in logger.name_to_count},
        "excluded": {k: list(logger.name_to_excluded.get(k) or ()) for k in numbers},
    }


def load_logger_state(logger: Logger, state: Mapping[str, Any]) -> None:
    logger.name_to_value.update(state["values"])
    logger.name_to_count.update(state["counts"])
    logger.name_to_excluded.update({k: tuple(v) for k, v in state["excluded"].items()})


def _replay_state(buffer: ReplayBuffer) -> dict[str, Any]:
    filled = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {}
    for name in _REPLAY_ARRAYS:
        array = getattr(buffer, name, None)
        if isinstance(array, np.ndarray):
            arrays[name] = torch.from_numpy(np.ascontiguousarray(array[:filled]))
    return {"pos": int(buffer.pos), "full": bool(buffer.full), "arrays": arrays}


def _load_replay_state(buffer: ReplayBuffer, state: Mapping[str, Any]) -> None:
    for name, values in state["arrays"].items():
        if name not in _REPLAY_ARRAYS:
            raise ValueError(f"replay buffer: unknown array {name!r}")
        target = getattr(buffer, name)
        target[: len(values)] = values.numpy()
    buffer.pos, buffer.full = int(state["pos"]), bool(state["full"])


def _replay_path(folder: Path, step: int) -> Path:
    return folder / f"replay_{int(step)}.pt"


def save_checkpoint(run_dir: Path, model: BaseAlgorithm, training: Mapping[str, Any]) -> Path:
    """Write the replay buffer (if any), then ``last.pt``; drop older replay files.

    Args:
        run_dir: the run folder.
        model: the algorithm, at an update boundary.
        training: the rest of the state (callbacks, history, RNG, envs, logger...), in types
            that ``weights_only`` loads.
    """
    folder = run_dir / "checkpoints"
    step = int(model.num_timesteps)
    keep = None
    buffer = getattr(model, "replay_buffer", None)
    if isinstance(buffer, ReplayBuffer):
        keep = atomic_torch_save(_replay_state(buffer), _replay_path(folder, step))
    state = {"format": FORMAT, "step": step, "model": model_state(model), **training}
    path = atomic_torch_save(state, folder / "last.pt")
    for old in folder.glob("replay_*.pt"):
        if old != keep:
            old.unlink(missing_ok=True)
    return path


def read_checkpoint(run_dir: Path) -> dict[str, Any]:
    """``run_dir/checkpoints/last.pt``, checked to be one this version wrote.

    Raises:
        ConfigError: a checkpoint of another version or kind (named, with what to do).
    """
    path = run_dir / "checkpoints" / "last.pt"
    checkpoint = load_checkpoint(path)
    if checkpoint.get("format") != FORMAT:
        raise ConfigError(
            f"{path}: not an rlcycle checkpoint of this version (format {FORMAT}); "
            "start a new run, or evaluate its model.zip with the rlcycle that wrote it"
        )
    missing = [key for key in _CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ConfigError(f"{path}: damaged (no {missing[0]})")
    checkpoint_step(checkpoint, path)
    return checkpoint


def load_replay(run_dir: Path, checkpoint: Mapping[str, Any], buffer: ReplayBuffer) -> None:
    """Fill ``buffer`` from the replay file of ``checkpoint`` (same folder, named by its step)."""
    path = _replay_path(run_dir / "checkpoints", checkpoint["step"])
    state = load_checkpoint(path)
    try:
        _load_replay_state(buffer, state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{path}: not a replay buffer this run can load ({e})") from None
