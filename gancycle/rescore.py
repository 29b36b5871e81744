"""Add to a finished run's ``metrics.json`` the final metrics its code did not compute yet.

A metric added to gancycle's evaluation (``modes_held``, say) is missing from the runs recorded
before it, and a study that reads it would train them again. Their last checkpoint gives it:
the run's generators are scored again on the run's own evaluation draws, and only when every
metric the record already holds comes out the same (so the checkpoint is the one the record was
scored on) are the missing ones added to ``final``, with a note of what was added, when and by
which code. The history of evaluations during training is left as it was.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from common.config import ConfigError
from common.runs import atomic_write_json, hold_run_folder, load_json
from common.study.run import code_version
from gancycle.trainer import GanTrainer

__all__ = ["record_missing_final_metrics"]

REL_TOLERANCE = 1e-6
"""How close a metric scored again must come to the recorded one (threads may reorder sums)."""


def record_missing_final_metrics(
    run_dir: str | Path, device: torch.device | str | None = None
) -> list[str]:
    """Score the run's final generators again and add the metrics its ``final`` lacks.

    Returns:
        The added metrics as ``<which>.<metric>`` (``G``, ``ema``, ``ensemble``); empty when
        nothing was missing (then nothing is written).

    Raises:
        ConfigError: the run has no final metrics (or a damaged metrics.json) or no
            checkpoint at its last step, or a recorded metric comes out different; nothing is
            written.
    """
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    with hold_run_folder(run_dir, resume=True):
        metrics = load_json(path) if path.is_file() else None
        final = metrics.get("final") if isinstance(metrics, dict) else None
        if not isinstance(final, dict):
            raise ConfigError(f"--run {run_dir}: no final metrics in {path}; finish the run first")
        readings = [which for which in ("G", "ema", "ensemble") if which in final]
        for which in readings:  # before the checkpoint is loaded and scored
            _check_table(path, which, final[which])
        trainer = GanTrainer.from_run(run_dir, device)
        if trainer.step != final.get("steps"):
            raise ConfigError(
                f"--run {run_dir}: its checkpoint is at step {trainer.step}, its final metrics "
                f"at step {final.get('steps')}"
            )
        added = {}
        for which in readings:
            fresh = trainer.evaluate(which)
            _check_same(run_dir, which, final[which], fresh)
            for metric, value in fresh.items():
                if metric not in final[which]:
                    added[f"{which}.{metric}"] = (which, metric, value)
        if not added:
            return []
        for which, metric, value in added.values():
            final[which][metric] = value
        final["rescored"] = {
            "added": list(added),
            "at": time.strftime("%FT%T%z"),
            "code": code_version(Path(__file__).parent),
        }
        atomic_write_json(metrics, path)
    return list(added)


def _check_table(path: Path, which: str, table: Any) -> None:
    """``final.<which>`` as this code writes it: metric names and numbers."""
    numbers = isinstance(table, dict) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in table.values()
    )
    if not numbers:
        raise ConfigError(
            f"{path}: final.{which} is {json.dumps(table)[:60]}, not a table of metric names "
            "and numbers; not a record gancycle wrote, nothing written"
        )


def _check_same(
    run_dir: Path, which: str, recorded: dict[str, Any], fresh: dict[str, float]
) -> None:
    for metric, value in recorded.items():
        again = fresh.get(metric)
        same = again is not None and math.isclose(
            again, value, rel_tol=REL_TOLERANCE, abs_tol=1e-12
        )
        if not same:
            raise ConfigError(
                f"--run {run_dir}: {which}.{metric} = {value} recorded, {again} scored again "
                "from the last checkpoint; not the checkpoint the record was scored on, "
                "nothing written"
            )
