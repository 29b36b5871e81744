"""Runs whose folder holds a config that their command no longer builds.

A study started again keeps its finished runs when their command line is the same
(:func:`~common.study.run.is_done`). The same command line trains something else once a base
config it names was edited (a shipped ``configs/*.toml``, a file the study points to), and a
cut-off run would resume with the config it began with. So each (config, arm) asks its program
once what it would train now, ``<argv> --print-config`` (the project's CLI convention: print
the resolved config as TOML, train nothing), and compares that with the ``config.toml`` of each
of its runs, with the run's own seed put in. A program that cannot print a config (it exits
non-zero) is not second-guessed.

A trainer gains keys while a long study's records accumulate, and a key added since a run was
recorded is missing from its ``config.toml``. Such a run is kept when the config it would
resume with now, ``<program> --resume <run folder> --print-config`` (its ``config.toml`` with
every key added since at its default), is what the command builds: a new key's default keeps
the behaviour the trainer had before it (the project's rule for adding keys). A run whose
command now sets a new key to another value is stale, like any run whose values differ.

The same comparison keeps a run whose command line changed but still builds its config (a
study file reworded, say a base config's default written out as an override before the
default changes): the study adopts it (:func:`~common.study.run.adopt_run`) instead of
training it again.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tomllib

from common.study.run import RunSpec, resolve_command

__all__ = ["compare_configs", "current_config", "resumed_config", "stale_runs"]


def current_config(run: RunSpec, cwd: str | Path = ".") -> dict[str, Any] | None:
    """The config ``run``'s command line builds now, or None if its program cannot say."""
    return _printed_config([*run.argv, "--print-config"], cwd)


def resumed_config(run: RunSpec, cwd: str | Path = ".") -> dict[str, Any] | None:
    """The config ``run``'s folder would resume with now (its ``config.toml`` on today's keys),
    or None if its program cannot say."""
    program = list(run.argv[: run.argv.index("--config")]) if "--config" in run.argv else []
    if not program:
        return None
    return _printed_config([*program, "--resume", run.dir, "--print-config"], cwd)


def _printed_config(argv: list[str], cwd: str | Path) -> dict[str, Any] | None:
    argv = resolve_command(argv)
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    except OSError:
        return None
    if done.returncode != 0:
        return None
    try:
        return tomllib.loads(done.stdout)
    except tomllib.TOMLDecodeError:
        return None


def _recorded_config(folder: Path) -> dict[str, Any] | None:
    try:
        return tomllib.loads((folder / "config.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def _with_seed(config: dict[str, Any], seed: int) -> dict[str, Any]:
    """``config`` as the run with ``seed`` builds it (one config is printed per arm)."""
    return {**config, "seed": seed} if "seed" in config else config


def compare_configs(runs: Sequence[RunSpec], cwd: str | Path = ".") -> dict[RunSpec, bool]:
    """Whether each run's folder holds the config its command builds now.

    A run is the same when its ``config.toml`` is what the command builds, its own seed
    included, or differs from it only by keys added since it was recorded, at their defaults
    (:func:`resumed_config`). Runs without a ``config.toml`` (never started) and runs whose
    program cannot print a config are left out; an unreadable ``config.toml`` differs.
    """
    groups: dict[tuple[str, str], list[RunSpec]] = {}
    for run in runs:
        if (Path(cwd) / run.dir / "config.toml").is_file():
            groups.setdefault((run.label, run.arm), []).append(run)
    if not groups:
        return {}
    workers = min(len(groups), os.cpu_count() or 1)
    same: dict[RunSpec, bool] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        now = list(pool.map(lambda group: current_config(group[0], cwd), groups.values()))
        expected = {}
        for group, config in zip(groups.values(), now, strict=True):
            if config is None:
                continue
            for run in group:
                expected[run] = _with_seed(config, run.seed)
                same[run] = _recorded_config(Path(cwd) / run.dir) == expected[run]
        differing = [run for run, equal in same.items() if not equal]
        resumed = list(pool.map(lambda run: resumed_config(run, cwd), differing))
    for run, config in zip(differing, resumed, strict=True):
        same[run] = config == expected[run]
    return same


def stale_runs(runs: Sequence[RunSpec], cwd: str | Path = ".") -> list[RunSpec]:
    """The runs whose folder's ``config.toml`` differs from what their command builds now
    (:func:`compare_configs`)."""
    return [run for run, same in compare_configs(runs, cwd).items() if not same]
