"""TensorBoard: one writer for every run, the tag names, custom-scalar charts, hparams.

Tags (see DESIGN.md): ``lr/<name>``, ``schedule/level``, ``schedule/cycle``, ``hparam/<name>``,
``curriculum/difficulty``, ``loss/<name>``, ``dynamics/kinetic_energy/<net>``,
``dynamics/grad_norm/<net>``, ``dynamics/stability_margin``, ``eval/<metric>``,
``eval/<metric>/d=<difficulty>``. View with ``tensorboard --logdir runs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

__all__ = ["RunWriter", "read_scalars", "lr_tag", "eval_tag"]


def lr_tag(name: str) -> str:
    return f"lr/{name}"


def eval_tag(metric: str, difficulty: float | None = None) -> str:
    return f"eval/{metric}" if difficulty is None else f"eval/{metric}/d={difficulty:g}"


class RunWriter:
    """A thin wrapper over torch's ``SummaryWriter`` with cyclelab's conventions.

    Args:
        logdir: the run folder (events are written straight into it).
    """

    def __init__(self, logdir: str | Path) -> None:
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(log_dir=str(self.logdir))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, float(value), step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Write each ``tag: value`` at ``step``."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def layout(self, charts: Mapping[str, list[str]], category: str = "cyclelab") -> None:
        """Custom-scalar charts: each title shows its tags on one multiline chart."""
        self.writer.add_custom_scalars(
            {category: {title: ["Multiline", list(tags)] for title, tags in charts.items()}}
        )

    def figure(self, tag: str, fig: Any, step: int) -> None:
        """A matplotlib figure as an image (the figure is closed)."""
        self.writer.add_figure(tag, fig, step, close=True)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """A CHW image tensor with values in [0, 1]."""
        self.writer.add_image(tag, image, step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """An hparams entry (shown in the HPARAMS tab) for this run."""
        flat = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()
        }
        self.writer.add_hparams(
            flat, {f"hparam_metric/{k}": float(v) for k, v in metrics.items()}, run_name="."
        )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_scalars(logdir: str | Path, tag: str) -> list[tuple[int, float]]:
    """Read one scalar series back from the event files in ``logdir`` (sorted by step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        raise KeyError(f"{tag}: not in {logdir}; scalars there: {', '.join(acc.Tags()['scalars'])}")
    return sorted((e.step, e.value) for e in acc.Scalars(tag))
