#!/usr/bin/env python
"""`make demo`: the schedule demo, then the RL and GAN demos on built-in defaults (CPU)."""

import sys
from pathlib import Path

from common.demo import schedule_demo

EXAMPLE = Path(__file__).parent / "examples" / "anti_phase.toml"


def main() -> None:
    runs = Path("runs")
    print("== 1/3 schedules ==")
    schedule_demo(EXAMPLE, runs)
    print("\n== 2/3 rlcycle: CartPole curriculum, difficulty in anti-phase with the lr ==")
    from rlcycle.demo import run_demo as rl_demo

    rl_demo(runs)
    print("\n== 3/3 gancycle: ring of 8 Gaussians, G and D out of phase ==")
    from gancycle.demo import run_demo as gan_demo

    gan_demo(runs)
    print(
        f"\nTensorBoard logs are under {runs}/. To look at them:\n"
        "  make tensorboard     (serves them at http://127.0.0.1:6006/)\n"
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
    main()
