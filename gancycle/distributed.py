"""One population across processes with torch.distributed: members split over ranks.

Under ``torchrun --nproc-per-node K`` each of the K ranks trains a contiguous block of the
population's members (:func:`member_block`: sizes differ by at most one) as one
:class:`~gancycle.population.Population`; averaging (``[population] average_every``) reaches
every rank's members through ``torch.distributed.all_reduce``: gloo on the CPU, NCCL on CUDA.
Each rank puts its rows at their global places in a zero tensor of the whole population, and
the sum hands every rank all rows (adding zeros is exact), so every rank computes the mean from
the same rows in the same order as one process does: K ranks give the one-process population's
weights to the bit, at the cost of sending N rows rather than one (small for the MLP members a
population holds). Phase offsets are resolved over the whole population before it is split.

Without torchrun (no ``RANK`` in the environment) it is one process, no torch.distributed::

    python -m gancycle.distributed --config ring8 --members 8 --steps 2000 \\
        --set population.average_every=100 --set population.offsets=even --out runs/avg8
    torchrun --nproc-per-node 2 -m gancycle.distributed --config ring8 --members 8 ...

At the end rank 0 writes into ``--out`` (when given) ``population.pt`` (every member's ``G``,
``D`` and ``ema`` rows, the step, which members stopped; weights only), ``mean_G.pt`` (the
averaged generator's state dict, for :class:`gancycle.models.MLPGenerator`) and
``metrics.json`` (the averaged G's and averaged EMA's metrics, as a run scores its G), and
prints the metrics as one JSON line. Per-member run folders are not written here.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from common.cli import CliParser, add_config_argument, add_set_argument, run_cli

__all__ = ["member_block", "RankGather", "train_population_ranks", "main"]


def member_block(members: int, rank: int, world: int) -> range:
    """The contiguous members of ``rank`` among ``world`` ranks (the first ``members % world``
    ranks hold one more)."""
    size, extra = divmod(members, world)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


class RankGather:
    """This rank's rows (its block) -> the whole population's rows, on every rank, with one
    ``all_reduce`` of a zero-padded tensor (exact: each place has one nonzero contributor)."""

    def __init__(self, block: range, members: int) -> None:
        self.block, self.members = block, members

    def __call__(self, rows: Any) -> Any:
        import torch
        import torch.distributed as dist

        every = torch.zeros((self.members, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        every[self.block.start : self.block.stop] = rows
        dist.all_reduce(every, op=dist.ReduceOp.SUM)
        return every


def _backend(device: Any) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def train_population_ranks(
    configs: Sequence[Mapping[str, Any]], steps: int, dtype: Any = None, device: Any = None
) -> Any:
    """Train the population of ``configs`` for ``steps`` updates, this rank's block of it.

    In one process (torch.distributed not initialised and no ``RANK`` set) that is the whole
    population. Under torchrun the process group is initialised here if it is not yet (gloo
    on the CPU, NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``).

    Returns:
        This rank's :class:`~gancycle.population.Population`; its ``gather`` reaches the others.
    """
    import torch
    import torch.distributed as dist

    from common.runs import resolve_device
    from gancycle.population import Population, check_members

    checked = check_members(configs)  # the whole population: shared keys, offsets
    device = torch.device(device) if device else resolve_device(checked[0].config["device"])
    distributed = dist.is_available() and (dist.is_initialized() or "RANK" in os.environ)
    if not distributed:
        population = Population(checked, device=device, dtype=dtype)
        population.advance(steps)
        return population
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(_backend(device), timeout=timedelta(minutes=5))
    rank, world = dist.get_rank(), dist.get_world_size()
    if world > len(checked):
        raise ValueError(f"--members {len(checked)}: fewer members than the {world} ranks")
    block = member_block(len(checked), rank, world)
    population = Population(checked[block.start : block.stop], device=device, dtype=dtype)
    population.gather = RankGather(block, len(checked))
    population.advance(steps)
    return population


def _parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="python -m gancycle.distributed",
        description=__doc__.split("\n\n")[0]
        + "\n\nRun it as one process, or under torchrun (each rank trains a contiguous block of "
        "members; [population] averaging uses all_reduce across ranks: gloo on the CPU, NCCL on "
        "GPUs). Members: the config with seeds seed, seed+1, ...; every member shares the "
        "[population] table:\n  population.average_every=H (0 = never)\n  population.pull=P "
        "(1 = replace by the mean; 0 < P < 1 = move that fraction toward it)\n  "
        "population.average_optimizer=true (also Adam's moments / SGD's momentum)\n  "
        "population.offsets=even | [0, 0.5, ...] (member k's schedules k/N of a cycle on)\n\n"
        "Examples:\n  python -m gancycle.distributed --config ring8 --members 8 --steps 2000 "
        "--set population.average_every=100 --set population.offsets=even --out runs/avg8\n"
        "  torchrun --nproc-per-node 2 -m gancycle.distributed --config ring8 --members 8 "
        "--steps 2000 --set population.average_every=100",
    )
    add_config_argument(parser, "ring8", _shipped())
    parser.add_argument("--members", type=int, default=8, help="members of the population")
    parser.add_argument("--steps", type=int, default=None, help="updates (default: config's)")
    parser.add_argument(
        "--seed", type=int, default=None, help="member 0's seed (default: config's)"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    parser.add_argument(
        "--dtype", choices=["float32", "float64"], default="float32", help="parameters' dtype"
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="where rank 0 writes its files"
    )
    add_set_argument(
        parser, "override a key of every member, e.g. --set population.average_every=100"
    )
    return parser


def _shipped() -> list[str]:
    from common.config import shipped_configs

    return shipped_configs("gancycle")


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)  # --help stops here, before torch is imported
    from gancycle.settings import SCHEMA

    config = SCHEMA.load(args.config, args.sets)
    for key in ("seed", "steps", "device"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    config = SCHEMA.check(config)
    if args.members < 1:
        raise ValueError(f"--members {args.members}: must be >= 1")
    import torch

    from gancycle.averaging import evaluate_generator, mean_generator
    from gancycle.population import seeded_members

    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    population = train_population_ranks(
        seeded_members(config, args.members), config["steps"], dtype
    )
    wall = time.perf_counter() - start
    gather = population.gather
    rows = {"G": population.G.data, "D": population.D.data, "ema": population.ema}
    every = {name: gather(tensor.detach()).cpu() for name, tensor in rows.items()}
    stopped = gather(population.stopped.to(population.dtype)).cpu() > 0
    means = {which: mean_generator(population, which) for which in ("G", "ema")}
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_rank() != 0:
        dist.destroy_process_group()
        return 0
    metrics = {
        "members": args.members,
        "ranks": dist.get_world_size() if dist.is_initialized() else 1,
        "steps": population.step,
        "wall_s": wall,
        "stopped": stopped.nonzero().flatten().tolist(),
        "population": dict(config["population"]),
        **{f"mean_{which}": evaluate_generator(G, config) for which, G in means.items()},
    }
    if args.out is not None:
        _write(args.out, every, stopped, population.step, means["G"], metrics)
    print(json.dumps(metrics))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def _write(out: Path, every: dict, stopped: Any, step: int, mean_G: Any, metrics: dict) -> None:
    import torch

    from common.runs import atomic_write, atomic_write_json

    state = {**every, "stopped": stopped, "step": step}
    atomic_write(out / "population.pt", lambda f: torch.save(state, f))
    mean_state = {k: v.cpu() for k, v in mean_G.state_dict().items()}
    atomic_write(out / "mean_G.pt", lambda f: torch.save(mean_state, f))
    atomic_write_json(metrics, out / "metrics.json")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m gancycle.distributed`` (alone or under torchrun)."""
    run_cli(lambda: _main(argv))


if __name__ == "__main__":
    main()
