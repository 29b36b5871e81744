"""Data-parallel training of one GAN under ``torchrun``: K processes, one batch split K ways.

::

    torchrun --nproc-per-node 2 -m gancycle.ddp --config digits --out runs/digits/ddp
    torchrun --nproc-per-node 2 -m gancycle.ddp --resume runs/digits/ddp

``python -m gancycle.ddp`` takes ``gancycle-train``'s options. Each rank trains the same G and D
(wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, gloo on the CPU, NCCL on GPUs:
one GPU per rank, ``cuda:LOCAL_RANK``) on its share of the batch: ``data.batch`` is the global
batch, each rank computes ``data.batch / K`` rows of it, and DDP averages the gradients, so a
step is the step of one process on the whole batch.

The data: gancycle draws batches with replacement from a seeded ``torch.Generator`` (no epochs;
see :mod:`gancycle.data`), so the equivalent of a ``DistributedSampler`` is that every rank
holds the same generator and draws the whole batch's random numbers (image indices, z, instance
noise, WGAN-GP's mixing weights), then keeps its own rows (``_shard``). Every rank then holds the
same state, generator included, and one rank's checkpoint is the whole run's: rank 0 writes
``checkpoints/last.pt`` in the single trainer's format, which ``gancycle-train --resume``,
``gancycle-sample`` and ``gancycle-eval`` read, and which this trainer resumes at any number of
ranks. Drawing K times the random numbers a rank uses costs little next to the networks.

The generator's BatchNorm layers normalise with the whole batch's statistics
(:class:`GlobalBatchNorm`, two all-reduces per layer; torch's ``SyncBatchNorm`` runs on GPUs
only), so the run matches one process on the whole batch to rounding (``tests/test_ddp.py``,
float64). The discriminator has no BatchNorm. Losses are averaged over the ranks before they
are logged and checked for NaN/Inf, so every rank takes the same divergence decision (``on_nan``
stop or rollback).

Rank 0 alone writes the run folder (``config.toml``, events, ``metrics.json``, checkpoints,
snapshots) and evaluates; the other ranks only train and keep their rollback checkpoint in
memory.

Why a module of its own rather than ``gancycle-train`` switching to data parallelism when it
finds torchrun's variables (``RANK``, ``WORLD_SIZE``): a study started inside a torchrun job
starts ``gancycle-train`` processes that inherit those variables, and each would then try to
join a process group. Here the command says what it does.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from common.config import CheckedConfig, ConfigError, check_run_package, save_config
from common.runs import hold_run_folder, resolve_device
from gancycle.settings import check_config
from gancycle.trainer import NETS, GanTrainer

__all__ = [
    "all_reduce",
    "GlobalBatchNorm",
    "use_global_batch_norm",
    "DataParallelTrainer",
    "world_from_env",
    "train_data_parallel",
    "main",
]


def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over the ranks, differentiable (its backward sums the gradients over the ranks).

    torch 2.14 marks ``torch.distributed.nn.functional.all_reduce`` deprecated in favour of a
    private module; it is still the public differentiable one, so its warning is silenced.
    """
    from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return differentiable_all_reduce(tensor)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (1d or 2d) whose training statistics are those of the whole batch across the
    ranks; in eval mode, plain BatchNorm on the running statistics.

    The sums are all-reduced with :func:`torch.distributed.nn.functional.all_reduce`, whose
    backward all-reduces the gradients, as ``SyncBatchNorm`` does; unlike it, this runs on the
    CPU (gloo). Mean and variance are computed in two passes, in the weights' dtype (under bf16
    autocast too). Every rank must hold the same number of rows.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm: expected at least 2D input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        dtype = self.weight.dtype if self.weight is not None else x.dtype
        x = x.to(torch.promote_types(x.dtype, dtype))
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.numel() // x.shape[1] * dist.get_world_size()
        mean = all_reduce(x.sum(dims)) / count
        centered = x - mean.view(shape)
        var = all_reduce(centered.square().sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean.detach(), var.detach(), count)
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        """As torch's BatchNorm: momentum (or the cumulative average), unbiased variance."""
        self.num_batches_tracked.add_(1)
        momentum = self.momentum
        factor = 1.0 / float(self.num_batches_tracked) if momentum is None else momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        unbiased = var * (count / max(count - 1, 1))
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def use_global_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d in ``module`` by a :class:`GlobalBatchNorm` holding the same
    parameter and buffer tensors (so flat parameter buffers, the EMA's references and the
    state-dict keys stay as they are)."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            synced = GlobalBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine,
                child.track_running_stats,
            )  # fmt: skip
            for key in ("weight", "bias"):
                setattr(synced, key, getattr(child, key))
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(synced, key, getattr(child, key))
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            use_global_batch_norm(child)
    return module


class _NoEvents:
    """The event writer of ranks other than 0: they write nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class DataParallelTrainer(GanTrainer):
    """:class:`~gancycle.trainer.GanTrainer` on rank ``rank`` of ``world`` (see the module
    docstring); the process group must be initialised.

    Raises:
        ConfigError: ``data.batch`` is not a multiple of ``world``.
    """

    def __init__(
        self,
        config: dict[str, Any] | CheckedConfig,
        run_dir: str | Path,
        rank: int,
        world: int,
        device: torch.device | str | None = None,
    ) -> None:
        checked = check_config(config)
        batch = checked.config["data"]["batch"]
        if batch % world:
            raise ConfigError(
                f"data.batch = {batch}: must be a multiple of the {world} ranks "
                f"(each rank computes data.batch / {world} rows)"
            )
        self.rank, self.world = rank, world
        self._rows = slice(rank * batch // world, (rank + 1) * batch // world)
        self._memory_checkpoint: dict[str, Any] | None = None
        super().__init__(checked, run_dir, device)
        if rank != 0:
            self.snapshots.directory = None  # kept in memory only
        ids = [self.device.index] if self.device.type == "cuda" else None
        for net in NETS:
            use_global_batch_norm(self.nets[net])
            self.train_nets[net] = DistributedDataParallel(self.nets[net], device_ids=ids)

    def _shard(self, draw: torch.Tensor) -> torch.Tensor:
        return draw[self._rows]

    def _loss_value(self, loss: torch.Tensor) -> float:
        total = loss.detach().to(torch.float64).reshape(1).clone()
        dist.all_reduce(total)
        return float(total) / self.world

    # -- rank 0 writes; the others only train -----------------------------------------------

    @property
    def writer(self) -> Any:
        return super().writer if self.rank == 0 else _NoEvents()

    def evaluate_and_log(self, final: bool = False) -> dict[str, Any]:
        if self.rank == 0:
            return super().evaluate_and_log(final)
        return {"G": {}, "ema": {}}

    def _write_metrics(self, final: dict[str, Any] | None) -> None:
        if self.rank == 0:
            super()._write_metrics(final)

    def save_checkpoint(self) -> Path:
        if self.rank == 0:
            return super().save_checkpoint()
        self._checkpoint_due = False
        self._memory_checkpoint = copy.deepcopy(self.state_dict())
        return self.checkpoint_path

    def load_checkpoint(self) -> None:
        if self.rank == 0 or self._memory_checkpoint is None:
            super().load_checkpoint()  # on resume every rank reads rank 0's file
        else:
            self.load_state_dict(copy.deepcopy(self._memory_checkpoint))


def world_from_env() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` from torchrun's variables.

    Raises:
        ConfigError: not started by torchrun (or another launcher setting them).
    """
    try:
        return (
            int(os.environ["RANK"]),
            int(os.environ["WORLD_SIZE"]),
            int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
        )
    except (KeyError, ValueError):
        raise ConfigError(
            "gancycle.ddp: RANK and WORLD_SIZE are not set; start it with "
            "torchrun --nproc-per-node K -m gancycle.ddp ... (gancycle-train for one process)"
        ) from None


def _rank_device(config: dict[str, Any], local_rank: int) -> torch.device:
    device = resolve_device(config["device"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def train_data_parallel(
    config: dict[str, Any] | CheckedConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool | None = None,
) -> dict[str, Any] | None:
    """Train one GAN run data-parallel on the ranks of torchrun's environment (see the module
    docstring); every rank calls it with the same config.

    Rank 0's ``run_dir`` is the run folder (held by rank 0 for the run's life, as
    :func:`gancycle.trainer.train` holds it).

    Returns:
        On rank 0 the final metrics (as :func:`gancycle.trainer.train`), elsewhere ``None``.

    Raises:
        ConfigError: a bad config, a batch that does not split, not under torchrun, or a run
            folder rank 0 cannot hold (every rank raises it).
    """
    if resume and not isinstance(config, CheckedConfig):
        check_run_package(config, "gancycle", run_dir, "--resume")
    checked = check_config(config)
    rank, world, local_rank = world_from_env()
    batch = checked.config["data"]["batch"]
    if batch % world:
        raise ConfigError(f"data.batch = {batch}: must be a multiple of the {world} ranks")
    device = _rank_device(checked.config, local_rank)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world
    )
    try:
        with contextlib.ExitStack() as stack:
            error = None
            if rank == 0:
                try:
                    stack.enter_context(hold_run_folder(run_dir, resume))
                except ConfigError as e:
                    error = str(e)
            error, run_dir = _from_rank0((error, str(run_dir)))
            if error is not None:
                raise ConfigError(error)
            trainer = DataParallelTrainer(checked, run_dir, rank, world, device)
            if resume:
                trainer.load_checkpoint()
                trainer.restart_events()
                trainer.resumes += 1
            if rank == 0:
                save_config(trainer.config, Path(run_dir) / "config.toml")
            show = trainer.config["progress"] if progress is None else progress
            final = trainer.train(progress=show and rank == 0)
            return final if rank == 0 else None
    finally:
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """``torchrun --nproc-per-node K -m gancycle.ddp`` with ``gancycle-train``'s options."""
    from common.cli import run_cli
    from gancycle.cli import train_command

    run_cli(lambda: train_command(argv, data_parallel=True))


if __name__ == "__main__":
    main()
