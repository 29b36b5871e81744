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

from common.benchmark import compare_in_chunks
from common.runs import torch_threads
from gancycle.population import Population
from gancycle.trainer import GanTrainer

__all__ = ["member_configs", "run_population_bench"]

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
    out = []
    for k in range(members):
        member = copy.deepcopy(base)
        member["seed"] = base["seed"] + k
        out.append(member)
    return out


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
