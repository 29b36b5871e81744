"""How much does a population buy? N members as one batched model against the same N runs
trained one after another by the single trainer, in one process on the same threads.

Both arms train the same N configs (the given config with seeds ``seed, seed + 1, ...``) and
only train: no scalars, no gradient-norm or kinetic-energy measurements, no checkpoints, no
snapshots, no evaluation (the population has none of these yet, so the single runs are
relieved of them too). The single runs are :class:`~gancycle.trainer.GanTrainer` objects
advanced by their own loop (:meth:`~gancycle.trainer.GanTrainer.advance`), one after another.

A shared machine's load drifts, so the arms alternate in chunks of ``chunk`` steps (the single
runs each advance ``chunk`` steps in their turn) and each arm's time is summed over its chunks.
``ratio`` = population member-steps/s over single-run member-steps/s.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import torch

from common.benchmark import compare_in_chunks, timed
from common.config import save_config
from common.runs import resolve_device, torch_threads
from common.study.backends import default_workers, run_local
from common.study.run import RunSpec
from gancycle.population import Population, seeded_members
from gancycle.population_runs import train_population
from gancycle.trainer import GanTrainer

__all__ = ["member_configs", "run_population_bench", "run_pool_bench"]

NEVER = 10**9
"""A ``log.every`` / ``dynamics.every`` no bench run reaches."""


def member_configs(config: dict[str, Any], members: int) -> list[dict[str, Any]]:
    """``members`` copies of ``config`` that only train, seeds ``seed, seed + 1, ...``."""
    base = copy.deepcopy(config)
    base["eval"].update(every=0, samples=100)  # samples: only for the trainer's constructor
    base["log"]["every"] = NEVER
    base["dynamics"]["every"] = NEVER
    base["checkpoint"]["every"] = 0
    base["snapshots"]["max"] = 0
    return seeded_members(base, members)


def run_population_bench(
    config: dict[str, Any], members: int = 50, steps: int = 200, chunk: int = 50, warmup: int = 5
) -> dict[str, Any]:
    """Time ``steps`` steps of every member in each arm, alternating in chunks of ``chunk``.

    Returns:
        ``population_member_steps_per_s`` and ``singles_member_steps_per_s`` (member-steps per
        second over all chunks), ``ratio`` (population over singles), ``chunk_ratio_median``
        (robust to load spikes), ``members``, ``steps``, ``threads`` and ``device``.
    """
    configs = member_configs(config, members)
    with torch_threads(config["threads"]), tempfile.TemporaryDirectory() as tmp:
        population = Population(configs)
        singles = [GanTrainer(c, Path(tmp) / f"run{k}") for k, c in enumerate(configs)]

        def advance_singles(n: int) -> None:
            for trainer in singles:
                trainer.advance(trainer.step + n)

        population.advance(warmup)
        advance_singles(warmup)
        turns = max(1, steps // chunk)
        times = compare_in_chunks(
            lambda: advance_singles(chunk),
            lambda: population.advance(population.step + chunk),
            turns,
            members * chunk,
            population.device,
        )
        threads = torch.get_num_threads()
    return {
        "population_member_steps_per_s": times["contender_per_s"],
        "singles_member_steps_per_s": times["baseline_per_s"],
        "ratio": times["ratio"],
        "chunk_ratio_median": times["chunk_ratio_median"],
        "members": members,
        "steps": chunk * turns,
        "threads": threads,
        "device": str(population.device),
    }


def run_pool_bench(
    config: dict[str, Any],
    members: int = 50,
    steps: int = 1000,
    workers: int | None = None,
    population_threads: int | None = None,
) -> dict[str, Any]:
    """The same ``members`` runs of ``steps`` steps through the study runner's local process
    pool (``gancycle-train`` processes, ``workers`` at a time: default one per core), then as
    one population (:func:`~gancycle.population_runs.train_population`), each arm timed from
    start to end.

    Every run only trains (:func:`member_configs`) and in both arms writes its run folder and
    evaluates once at the end (on 10 samples); a ``gancycle-train`` process also starts Python
    and torch: what a study pays per run. The population gets ``population_threads`` torch threads
    (default: the cores the pool uses, ``workers`` runs on one thread each).

    Returns:
        ``population_member_steps_per_s``, ``pool_member_steps_per_s``, ``ratio`` (population
        over pool), both wall times (``population_s``, ``pool_s``), ``members``, ``steps``,
        ``workers``, ``population_threads`` and ``device``.

    Raises:
        RuntimeError: a run of the pool failed (its error).
    """
    workers = default_workers() if workers is None else workers
    threads = population_threads or workers
    configs = member_configs({**config, "steps": steps}, members)
    for member in configs:
        member["eval"]["samples"] = 10
        member["progress"] = False
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for k, member in enumerate(configs):
            path = Path(tmp) / f"member{k}.toml"
            save_config(member, path)
            argv = ("gancycle-train", "--config", str(path), "--out", str(Path(tmp) / f"run{k}"))
            runs.append(RunSpec(str(path), "bench", "pool", k, f"run{k}", argv, ("final.steps",)))

        def pool() -> None:
            for result in run_local(runs, cwd=tmp, workers=workers):
                if not result.ok:
                    raise RuntimeError(f"{result.run.name}: {result.error}")

        def population() -> None:  # the same runs, the same run folders and final evaluation
            folders = [Path(tmp) / f"member{k}" for k in range(members)]
            with torch_threads(threads):
                train_population([{**c, "threads": threads} for c in configs], folders)

        pool_s = timed(pool)
        device = resolve_device(configs[0]["device"])
        population_s = timed(population, device)
    work = members * steps
    return {
        "population_member_steps_per_s": work / population_s,
        "pool_member_steps_per_s": work / pool_s,
        "ratio": pool_s / population_s,
        "population_s": population_s,
        "pool_s": pool_s,
        "members": members,
        "steps": steps,
        "workers": workers,
        "population_threads": threads,
        "device": str(device),
    }
