"""Snapshot ensembles (Huang et al., 2017): keep the weights at each cycle's end, average them.

Each cosine cycle ends at a low learning rate, near a minimum; a restart kicks the weights away to
another. Keeping the weights at every cycle end gives an ensemble for the price of one training
run. :meth:`SnapshotEnsemble.hook` plugs into both events of a driver that end a cycle: its
restarts and, for a schedule with a last cycle, its end (``driver.on_restart(h).on_end(h)``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from common.runs import atomic_torch_save, load_checkpoint
from common.schedules import Phase

__all__ = ["SnapshotEnsemble", "snapshot_files"]

StateDict = dict[str, torch.Tensor]


def snapshot_files(directory: str | Path) -> dict[int, Path]:
    """The snapshots in ``directory`` by cycle: files named ``cycle_<k>.pt``, nothing else."""
    found = {}
    for path in Path(directory).glob("cycle_*.pt"):
        match = re.fullmatch(r"cycle_(\d+)\.pt", path.name)
        if match and path.is_file():
            found[int(match[1])] = path
    return found


class SnapshotEnsemble:
    """A bounded list of weight snapshots, with ensemble prediction.

    Args:
        max_snapshots: how many to keep (the oldest is dropped past this), >= 1.
        directory: if given, each snapshot is also written to ``directory/cycle_<k>.pt``
            (atomically) and dropped ones are deleted there.
    """

    def __init__(self, max_snapshots: int = 5, directory: str | Path | None = None) -> None:
        if max_snapshots < 1:
            raise ValueError(f"max_snapshots = {max_snapshots}: must be >= 1")
        self.max_snapshots = max_snapshots
        self.directory = Path(directory) if directory is not None else None
        self.state_dicts: list[StateDict] = []
        self.cycles: list[int] = []

    def __len__(self) -> int:
        return len(self.state_dicts)

    def _path(self, cycle: int) -> Path:
        assert self.directory is not None
        return self.directory / f"cycle_{cycle}.pt"

    def take(self, model: nn.Module, cycle: int) -> None:
        """Keep a CPU copy of ``model``'s weights as the snapshot of ``cycle``."""
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.state_dicts.append(state)
        self.cycles.append(cycle)
        if self.directory is not None:
            atomic_torch_save(state, self._path(cycle))
        while len(self.state_dicts) > self.max_snapshots:
            self.state_dicts.pop(0)
            dropped = self.cycles.pop(0)
            if self.directory is not None:
                self._path(dropped).unlink(missing_ok=True)

    def hook(self, model: nn.Module) -> Callable[[float, Phase], None]:
        """A driver hook that snapshots ``model`` as the cycle just ended, ``cycle_<k>.pt``.

        For both events: at a restart into cycle k, k is ``k - 1``; at the end of a schedule of
        L cycles (``phase.cycle`` is then L), ``L - 1``.
        """

        def take_snapshot(step: float, phase: Phase) -> None:
            self.take(model, phase.cycle - 1)

        return take_snapshot

    def load(self, directory: str | Path, before: float = math.inf) -> SnapshotEnsemble:
        """Read the ``cycle_<k>.pt`` snapshots in ``directory`` (the newest ``max_snapshots``
        of the cycles ``k < before``).

        Raises:
            FileNotFoundError: no such snapshot in ``directory``.
            ConfigError: a snapshot is damaged or holds more than tensors and plain data.
        """
        directory = Path(directory)
        files = {k: path for k, path in snapshot_files(directory).items() if k < before}
        if not files:
            raise FileNotFoundError(f"{directory}: no cycle_<k>.pt snapshots")
        cycles = sorted(files)[-self.max_snapshots :]
        state_dicts = [load_checkpoint(files[k]) for k in cycles]  # all read, or none kept
        self.state_dicts, self.cycles = state_dicts, cycles
        return self

    def state_dict(self) -> dict:
        return {"cycles": list(self.cycles), "state_dicts": list(self.state_dicts)}

    def load_state_dict(self, state: dict) -> None:
        self.cycles = list(state["cycles"])
        self.state_dicts = list(state["state_dicts"])

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, probs: bool = True) -> torch.Tensor:
        """The snapshots' average output on ``x``: softmax probabilities, or raw outputs.

        Each snapshot is loaded into ``model`` in turn; ``model``'s own weights and train/eval
        mode are restored afterwards.
        """
        if not self.state_dicts:
            raise ValueError("snapshot ensemble is empty: no cycle has ended yet")
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        was_training = model.training
        model.eval()
        total = None
        try:
            for state in self.state_dicts:
                model.load_state_dict(state)
                out = model(x)
                out = out.softmax(dim=-1) if probs else out
                total = out if total is None else total + out
        finally:
            model.load_state_dict(own)
            model.train(was_training)
        return total / len(self.state_dicts)
