"""The GAN part of ``make demo``: ring8 on the CPU in a minute or two, then its mode coverage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.config import load_config
from common.runs import default_run_dir
from gancycle.trainer import train

__all__ = ["run_demo"]


def run_demo(runs_root: Path = Path("runs"), progress: bool = True) -> dict[str, Any]:
    """Train the shipped ``ring8`` config on the CPU and print its PacGAN numbers.

    G and D run cosine cycles with warm restarts half a cycle apart. The run folder is
    ``<runs_root>/ring8/<timestamp>``.

    Returns:
        The final metrics of the run (see :meth:`gancycle.trainer.GanTrainer.train`).
    """
    config = load_config("ring8", "gancycle")
    config["device"] = "cpu"
    run_dir = default_run_dir("ring8", root=runs_root)
    print(
        f"training ring8 for {config['steps']} steps on the CPU: G and D learning rates on "
        f"cosine cycles of {config['lr']['G']['period']} steps, D half a cycle behind"
    )
    metrics = train(config, run_dir, progress=progress)
    print(f"ring8 after {metrics['steps']} steps ({metrics['wall_s']:.0f} s of training):")
    for which, label in (("G", "generator"), ("ema", "EMA of G"), ("ensemble", "snapshots")):
        if which in metrics:
            m = metrics[which]
            print(
                f"  {label:10s} modes {m['modes']:.0f}/8, high quality {m['high_quality']:.1f}%, "
                f"KL {m['kl']:.3f}, precision {m['precision']:.2f}, recall {m['recall']:.2f}"
            )
    print(f"run folder: {run_dir}   (tensorboard --logdir {run_dir})")
    return metrics
