#!/usr/bin/env python
"""`make demo`: three short demos on the CPU, about two minutes in all.

1. schedules: the example's learning rates and the hyperparameters coupled to them, logged to
   TensorBoard and plotted, and the tilted double well (cyclical against monotone decay);
2. rlcycle: PPO on CartPole with the difficulty in anti-phase with the learning rate;
3. gancycle: a GAN on a ring of 8 Gaussians (the shipped ring8 config).

Each writes a run folder under --runs and prints what it reached and where its logs are.
"""

import sys
from pathlib import Path

from common.cli import CliParser, run_cli

EXAMPLE = Path(__file__).parent / "examples" / "anti_phase.toml"


def main() -> None:
    parser = CliParser(description=__doc__)
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the run folders go")
    runs = parser.parse_args().runs
    from common.demo import schedule_demo  # torch and matplotlib: after --help

    print("== 1/3 schedules ==")
    schedule_demo(EXAMPLE, runs)
    print("\n== 2/3 rlcycle: CartPole curriculum, difficulty in anti-phase with the lr ==")
    from rlcycle.demo import run_demo as rl_demo

    rl_demo(runs)
    print("\n== 3/3 gancycle: ring of 8 Gaussians, the shipped ring8 config ==")
    from gancycle.demo import run_demo as gan_demo

    gan_demo(runs)
    print(
        f"\nTensorBoard logs are under {runs}/. To look at them:\n"
        f"  make tensorboard{'' if runs == Path('runs') else f' RUNS={runs}'}"
        "     (serves them at http://127.0.0.1:6006/)\n"
        f"The console scripts (gancycle-train, rlcycle-train, ...) are in {_bin()}/:\n"
        f"  {_bin()}/gancycle-train --help    (or first: source {_bin()}/activate)"
    )


def _bin() -> str:
    """This environment's scripts folder, relative to here when inside (``.venv/bin``)."""
    folder = Path(sys.executable).parent
    try:
        return folder.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return folder.as_posix()


if __name__ == "__main__":
    run_cli(main)
