"""TensorBoard: one writer for every run, the tag names, custom-scalar charts, hparams.

Tags: ``lr/<name>``, ``schedule/level`` (a GAN's ``schedule/level/<net>``), ``schedule/cycle``,
``hparam/<name>``, ``dynamics/<quantity>/<net>``, ``eval/...`` and each package's own; the full
list is in docs/DESIGN.md. View with ``make tensorboard`` (``tensorboard --logdir runs``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

__all__ = ["RunWriter", "read_scalars", "eval_tag"]


def eval_tag(metric: str, difficulty: float | None = None) -> str:
    return f"eval/{metric}" if difficulty is None else f"eval/{metric}/d={difficulty:g}"


class RunWriter:
    """A thin wrapper over torch's ``SummaryWriter`` with cyclelab's conventions.

    Args:
        logdir: the run folder (events are written straight into it).
        purge_step: a resumed run's first step: TensorBoard drops the events at this step and
            after that earlier sessions wrote (those after the last checkpoint), so the run's
            curves read as one, with no step twice.
    """

    def __init__(self, logdir: str | Path, purge_step: int | None = None) -> None:
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(log_dir=str(self.logdir), purge_step=purge_step)
        self._written: set[str] = set()
        self._layout: tuple[str, dict[str, list[str]], bool] | None = None
        self._shown: list[str] = []

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars({tag: value}, step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Write each ``tag: value`` at ``step``."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)
        if not self._written.issuperset(values):
            self._written.update(values)
            self._write_layout()

    def layout(
        self, charts: Mapping[str, Sequence[str]], category: str, only_written: bool = True
    ) -> None:
        """Custom-scalar charts in their own ``category`` (one per package, e.g. ``gancycle``).

        Each title shows its tags on one multiline chart. A tag is a regular expression matched
        at the start of tag names, as TensorBoard does (``eval/return/d=`` is every difficulty;
        ``schedule/level$`` is that tag alone). With ``only_written`` a chart appears once this
        writer has written one of its tags, so a run shows only the charts it fills (no
        "D regularisers" without a regulariser); pass ``False`` when another writer fills the
        tags (SB3's logger), and leave out the charts the run will not fill. A chart's tags stay
        as given, so that runs of one package share their charts instead of repeating them.
        """
        self._layout = (
            category,
            {title: list(tags) for title, tags in charts.items()},
            only_written,
        )
        self._write_layout()

    def _write_layout(self) -> None:
        """(Re)write the layout when more of its charts have data; TensorBoard reads the last."""
        if self._layout is None:
            return
        category, charts, only_written = self._layout
        shown = [
            title
            for title, tags in charts.items()
            if tags and (not only_written or any(self._fills(tag) for tag in tags))
        ]
        if shown and shown != self._shown:
            self._shown = shown
            self.writer.add_custom_scalars(
                {category: {title: ["Multiline", charts[title]] for title in shown}}
            )

    def _fills(self, pattern: str) -> bool:
        regex = re.compile(pattern)
        return any(regex.match(tag) for tag in self._written)

    def figure(self, tag: str, fig: Any, step: int) -> None:
        """A matplotlib figure as an image (the figure is closed)."""
        self.writer.add_figure(tag, fig, step, close=True)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """A CHW image tensor with values in [0, 1]."""
        self.writer.add_image(tag, image, step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """This run's row in the HPARAMS tab: its hyperparameters, and ``metrics`` as scalars.

        Writes the session's start and end but no experiment summary: TensorBoard shows the
        summary of one run only (so a GAN's columns hid an RL run's metrics); without one it
        builds the table from every run's hyperparameters and every scalar tag, so GAN and RL
        runs share one table. ``metrics`` are written as ``hparam_metric/<name>``.
        """
        flat = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()
        }
        metric_tags = {f"hparam_metric/{k}": float(v) for k, v in metrics.items()}
        _, start, end = hparams_summaries(flat, metric_tags)
        file_writer = self.writer._get_file_writer()
        file_writer.add_summary(start)
        file_writer.add_summary(end)
        for tag, value in metric_tags.items():
            self.writer.add_scalar(tag, value)

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
