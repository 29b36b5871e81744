#!/usr/bin/env python
"""`make demo`: the schedule demo, then the RL and GAN demos on built-in defaults (CPU)."""

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
    print(f"\nTensorBoard logs are under {runs}/. View them with:\n  tensorboard --logdir {runs}")


if __name__ == "__main__":
    main()
