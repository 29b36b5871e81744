"""Runs whose folder holds a config that their command no longer builds.

A study started again keeps its finished runs when their command line is the same
(:func:`~common.study.run.is_done`). The same command line trains something else once a base
config it names was edited (a shipped ``configs/*.toml``, a file the study points to), and a
cut-off run would resume with the config it began with. So each (config, arm) asks its program
once what it would train now, ``<argv> --print-config`` (the project's CLI convention: print
the resolved config as TOML, train nothing), and compares that with the ``config.toml`` of each
of its runs, the seed aside. A program that cannot print a config (it exits non-zero) is not
second-guessed.
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

__all__ = ["current_config", "stale_runs"]


def current_config(run: RunSpec, cwd: str | Path = ".") -> dict[str, Any] | None:
    """The config ``run``'s command line builds now, or None if its program cannot say."""
    argv = resolve_command([*run.argv, "--print-config"])
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


def _seed_aside(config: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if config is None else {k: v for k, v in config.items() if k != "seed"}


def stale_runs(runs: Sequence[RunSpec], cwd: str | Path = ".") -> list[RunSpec]:
    """The runs whose folder's ``config.toml`` differs from what their command builds now.

    Runs without a ``config.toml`` (never started) are not stale; an unreadable one is.
    """
    groups: dict[tuple[str, str], list[RunSpec]] = {}
    for run in runs:
        if (Path(cwd) / run.dir / "config.toml").is_file():
            groups.setdefault((run.label, run.arm), []).append(run)
    if not groups:
        return []
    with ThreadPoolExecutor(max_workers=min(len(groups), os.cpu_count() or 1)) as pool:
        now = list(pool.map(lambda group: current_config(group[0], cwd), groups.values()))
    stale = []
    for group, config in zip(groups.values(), now, strict=True):
        if config is None:
            continue
        expected = _seed_aside(config)
        stale += [
            run for run in group if _seed_aside(_recorded_config(Path(cwd) / run.dir)) != expected
        ]
    return stale
