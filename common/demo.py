"""The schedule demo: the example schedules to TensorBoard and PNG, and the double well."""

from __future__ import annotations

import time
from pathlib import Path

from common.config import read_config
from common.coupling import coupled_from_spec
from common.double_well import compared_schedules
from common.plots import plot_config, plot_double_well
from common.schedules import build_schedules
from common.tb import RunWriter

__all__ = ["schedule_demo"]


def schedule_demo(example: Path, runs_root: Path = Path("runs"), steps: int = 8000) -> Path:
    """Log the example's schedules and couplings to ``runs/schedules/<time>/`` and plot them.

    Returns the run folder. ``example`` is a TOML file with ``[lr.<name>]`` schedule tables and
    ``[couplings.<name>]`` tables (``clock``, ``mode``, ``lo``, ``hi``).
    """
    config = read_config(example)
    run = runs_root / "schedules" / time.strftime("%Y%m%d-%H%M%S")
    schedules = build_schedules(config["lr"])  # a follow (D mirroring G) needs the whole table
    first = next(iter(schedules))
    couplings = {
        name: coupled_from_spec(spec, schedules[spec.get("clock", first)], f"couplings.{name}")
        for name, spec in config.get("couplings", {}).items()
    }
    with RunWriter(run) as writer:
        writer.layout(
            {
                "learning rates": [f"lr/{name}" for name in schedules],
                "learning rate and coupled values": [f"lr/{first}"]
                + [f"hparam/{name}" for name in couplings],
            },
            "schedules",
        )
        for t in range(0, steps, 10):
            values = {f"lr/{name}": s.value(t) for name, s in schedules.items()}
            values |= {f"hparam/{name}": c.value(t) for name, c in couplings.items()}
            phase = schedules[first].phase(t)
            values |= {"schedule/level": phase.level, "schedule/cycle": phase.cycle}
            writer.scalars(values, t)
    plot_config(config, steps=steps, path=run / "schedules.png", title=example.name)
    _, fractions = plot_double_well(*compared_schedules(), path=run / "double_well.png")
    print(f"schedules: {', '.join(schedules)}; couplings: {', '.join(couplings) or 'none'}")
    print(
        f"double well: cyclical ends deep in {fractions['cyclical']:.0%} of 20 seeds, "
        f"monotone decay in {fractions['monotone']:.0%}"
    )
    print(f"figures: {run / 'schedules.png'}, {run / 'double_well.png'}")
    return run
