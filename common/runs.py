"""Run folders: atomic writes, seeding and RNG state, device choice.

A run folder (``runs/<experiment>/<run-name>/``) holds ``config.toml``, TensorBoard events,
``metrics.json``, ``checkpoints/last.pt`` and ``snapshots/``. Everything here writes through a
temporary file and :func:`os.replace`, so a run killed mid-write leaves the previous file whole.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "atomic_write",
    "atomic_torch_save",
    "atomic_write_json",
    "load_checkpoint",
    "seed_everything",
    "rng_state",
    "set_rng_state",
    "resolve_device",
    "torch_threads",
    "default_run_dir",
]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(file)`` on a temp file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a half-written file at ``path``."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    data = json.dumps(obj, indent=2, sort_keys=True, default=float).encode()
    return atomic_write(path, lambda f: f.write(data))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``; a missing file names the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint here (was the run started?)")
    return torch.load(path, map_location=map_location, weights_only=True)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global generator's state, in types that ``weights_only=True`` loads."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device = {name!r}: must be auto | cpu | cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device = {name!r}: no CUDA device on this machine; use auto or cpu")
    return torch.device(name)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (0: leave as is), then restore.

    Small MLPs train fastest on one thread; on a busy machine two threads can be many times
    slower than one.
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_run_dir(config_name: str, root: str | Path = "runs") -> Path:
    """``runs/<config>/<YYYYmmdd-HHMMSS>`` (a suffix keeps two runs in one second apart)."""
    stem = Path(config_name).stem
    base = Path(root) / stem / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path
