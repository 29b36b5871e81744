"""Run folders: one writer each, atomic writes, checkpoints, seeding and RNG state, devices.

A run folder (``runs/<experiment>/<run-name>/``) holds ``config.toml``, TensorBoard events,
``metrics.json``, ``checkpoints/last.pt`` and ``snapshots/``. A trainer holds the folder with
:func:`hold_run_folder` for its whole life, so two trainers never write one folder. Everything
here writes through a temporary file and :func:`os.replace`, so a run killed mid-write leaves the
previous file whole (and the next trainer in the folder removes the temporary file).

torch is imported where it is used, so that a console script's ``--help`` stays fast.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from common.config import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = [
    "hold_run_folder",
    "refuse_a_held_run",
    "remove_interrupted_writes",
    "atomic_write",
    "atomic_torch_save",
    "atomic_write_json",
    "load_json",
    "read_json",
    "load_checkpoint",
    "checkpoint_step",
    "checkpoint_misfit",
    "check_resume_steps",
    "seed_everything",
    "rng_state",
    "set_rng_state",
    "resolve_device",
    "torch_threads",
    "default_run_dir",
]


LOCK_FILE = ".lock"
"""The file in a run folder that its trainer holds an OS lock on (its pid written inside)."""

TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}$")
"""Temporary files of :func:`atomic_write` (``.<name>.XXXXXXXX``), also those of mkstemp."""


@contextmanager
def hold_run_folder(run_dir: str | Path, resume: bool) -> Iterator[Path]:
    """Hold ``run_dir`` for a run's whole life: one trainer per folder, fresh runs never overwrite.

    Creates the folder, takes an exclusive OS lock on ``run_dir/.lock`` (released when the
    block ends or the process dies, even by SIGKILL) and writes this process's pid in it. Under
    the lock, a fresh run (``resume`` false) checks that the folder holds no run yet, and the
    temporary files of writes that a killed run left behind are removed.

    Raises:
        ConfigError: ``run_dir`` is a file or cannot be created; another process holds the
            folder; or, without ``resume``, the folder already holds a run
            (``checkpoints/last.pt``).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir}: is a file, not a run folder; give a folder path")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise ConfigError(f"{run_dir}: cannot use as a run folder ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{run_dir}: in use by another trainer (pid {_holder(fd)}); "
                "wait for it to end or stop it, one trainer per run folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        if not resume:
            refuse_a_held_run(run_dir)
        remove_interrupted_writes(run_dir)
        yield run_dir
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race a waiting opener)


def refuse_a_held_run(run_dir: str | Path) -> None:
    """A fresh run never overwrites: raise :class:`ConfigError` if ``run_dir`` holds a run
    (``checkpoints/last.pt``)."""
    if (Path(run_dir) / "checkpoints" / "last.pt").exists():
        raise ConfigError(f"--out {run_dir}: already holds a run; continue it with --resume")


def _holder(fd: int) -> str:
    """The pid written in a lock file, or ``unknown`` (the holder has not written it yet)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"


def remove_interrupted_writes(run_dir: str | Path) -> list[Path]:
    """Remove the temp files (``.<name>.XXXXXXXX``) that writes killed midway left in a run folder.

    Looks in the folder itself, ``checkpoints/`` and ``snapshots/``; returns what it removed. Only
    call it while holding the folder (:func:`hold_run_folder`): a live writer's temp file looks
    the same.
    """
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints", Path(run_dir) / "snapshots"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if TEMP_NAME.match(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(file)`` on a temp file beside ``path``, then rename it onto ``path``.

    The file gets the mode any new file gets (``0666`` less the umask), so collaborators on a
    shared file system can read it, as they read the event files.

    Raises:
        ConfigError: the write failed for want of space or permission (or another OS error);
            the previous file at ``path`` is intact.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        os_error = _os_error_in(e)
        if os_error is not None:
            raise _write_error(path, os_error) from None
        raise
    return path


def _os_error_in(e: BaseException) -> OSError | None:
    """The OSError behind ``e`` (torch.save turns a failed write into a RuntimeError)."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new file ``.<name>.XXXXXXXX`` beside ``path``, open for writing, mode 0666 & ~umask."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_"
    while True:
        suffix = "".join(secrets.choice(alphabet) for _ in range(8))
        tmp = path.with_name(f".{path.name}.{suffix}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _write_error(path: Path, e: OSError) -> ConfigError:
    reason = e.strerror or str(e) or type(e).__name__
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some space, then run again (a trainer: --resume its run folder)"
    else:
        advice = "check the folder (permissions, mount), then run again"
    return ConfigError(f"{path}: not written ({reason}); the previous file is intact; {advice}")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a half-written file at ``path``."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    data = json.dumps(obj, indent=2, sort_keys=True, default=float).encode()
    return atomic_write(path, lambda f: f.write(data))


def read_json(path: str | Path) -> Any:
    """The JSON in ``path``, or ``None`` if it is missing or malformed (a run still writing);
    :func:`load_json` is the strict reader."""
    try:
        return load_json(path)
    except (OSError, ConfigError):
        return None


def load_json(path: str | Path) -> Any:
    """The JSON in ``path``, read strictly: for a file that must be whole (a finished run's).

    Raises:
        FileNotFoundError: no file at ``path``.
        ConfigError: the file is not UTF-8 text or not valid JSON, named with the reason.
    """
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: damaged (not UTF-8 text: {e.reason})") from None
    except ValueError as e:
        raise ConfigError(f"{path}: damaged (not valid JSON: {e})") from None


def final_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``final`` table of ``run_dir/metrics.json``; ``None`` while the run has none (not
    finished, or the file missing or malformed)."""
    metrics = read_json(Path(run_dir) / "metrics.json")
    final = metrics.get("final") if isinstance(metrics, dict) else None
    return final if isinstance(final, dict) else None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint (a dict) with ``weights_only=True``: reading it never runs code.

    Raises:
        FileNotFoundError: no file at ``path``.
        ConfigError: the file is truncated, damaged, not a torch file, holds objects that a
            weights-only load refuses, or is not a dict.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint here (was the run started?)")
    if not zipfile.is_zipfile(path):  # what torch.save writes; a truncated one is not
        raise _damaged(path, "truncated, or not a file that torch.save wrote")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's text suggests weights_only=False: not for us
        raise _damaged(path, "it holds objects other than tensors and plain data") from None
    except (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile, OSError) as e:
        raise _damaged(path, _first_sentence(e)) from None
    if not isinstance(state, dict):
        raise _damaged(path, f"it holds a {type(state).__name__}, not a dict")
    return state


def checkpoint_step(state: dict[str, Any], path: str | Path) -> int:
    """The ``step`` a loaded checkpoint holds: a count of steps done (an int, 0 or more).

    Raises:
        ConfigError: anything else (absent, negative, a float, a string, a bool), named.
    """
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise _damaged(Path(path), f"step = {step!r}, not a count of steps")
    return step


def check_resume_steps(run_dir: str | Path, start: int, steps: int) -> None:
    """Refuse to resume the run in ``run_dir`` from step ``start`` to ``steps`` when that would
    train nothing: past ``steps`` already, or at ``steps`` with its final metrics written. (A
    run killed in its final evaluation has its last checkpoint at ``steps`` and no final
    metrics: resuming it only finishes the evaluation.)

    Raises:
        ConfigError: the run has its steps; the message says to raise ``--steps``.
    """
    if start > steps or (start == steps and final_metrics(run_dir) is not None):
        raise ConfigError(f"steps = {steps}: the run already has {start} steps; raise --steps")


def checkpoint_misfit(path: str | Path, error: BaseException) -> ConfigError:
    """The error for a checkpoint that loaded but whose states do not fit the run built from
    its ``config.toml`` (other network sizes, another algorithm, entries of the wrong kind)."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ConfigError(
        f"{path}: does not fit the run's config.toml ({reason}); was config.toml edited?"
    )


MISFITS = (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError)
"""What loading a state that does not fit its object raises (torch, SB3, numpy)."""


def _first_sentence(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0].split(". ")[0].rstrip(".")


def _damaged(path: Path, why: str) -> ConfigError:
    if "weights_only" in why:
        why = "not loadable as tensors and plain data"
    return ConfigError(
        f"{path}: damaged or not a cyclelab checkpoint ({why}); "
        "restore a good copy or start a new run"
    )


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global generator's state, in types that ``weights_only=True`` loads."""
    import torch

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
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU; asking for CUDA without one is an error."""
    import torch

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
    import torch

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
