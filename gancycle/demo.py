"""The GAN part of ``make demo``: ring8 on the CPU in a minute or two, then its mode coverage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.config import load_config
from common.runs import default_run_dir
from common.schedules import describe
from gancycle.trainer import train

__all__ = ["run_demo"]


def run_demo(
    runs_root: Path = Path("runs"), progress: bool = True, steps: int | None = None
) -> dict[str, Any]:
    """Train the shipped ``ring8`` config on the CPU and print its PacGAN numbers.

    The schedules are the config's (printed at the start). The run folder is
    ``<runs_root>/ring8/<timestamp>``. For its seed the run is bitwise the same every time on
    one machine; a CPU with other vector instructions (AVX-512 rather than AVX2, say) rounds
    differently, and a GAN's dynamics can turn that into other final numbers.

    Args:
        runs_root: where the run folder goes.
        progress: a progress bar (on a terminal only).
        steps: fewer steps than the config's 12000 (for a quick check).

    Returns:
        The final metrics of the run (see :meth:`gancycle.trainer.GanTrainer.train`).
    """
    config = load_config("ring8", "gancycle")
    config["device"] = "cpu"
    if steps is not None:
        config["steps"] = steps
    run_dir = default_run_dir("ring8", root=runs_root)
    print(f"training ring8 for {config['steps']} steps on the CPU")
    for net in ("G", "D"):
        print(f"  lr.{net}: {describe(config['lr'][net])}")
    metrics = train(config, run_dir, progress=progress)
    kernels = torch.backends.cpu.get_cpu_capability()
    print(
        f"ring8 after {metrics['steps']} steps ({metrics['wall_s']:.0f} s of training; seed "
        f"{config['seed']}, {kernels} CPU kernels):"
    )
    for which, label in (("G", "generator"), ("ema", "EMA of G"), ("ensemble", "snapshots")):
        if which in metrics:
            m = metrics[which]
            print(
                f"  {label:10s} modes {m['modes']:.0f}/8, high quality {m['high_quality']:.1f}%, "
                f"KL {m['kl']:.3f}, precision {m['precision']:.2f}, recall {m['recall']:.2f}"
            )
    print(f"run folder: {run_dir}   (view: make tensorboard RUNS={run_dir})")
    return metrics
