#!/usr/bin/env python
"""Noisy gradient descent on a tilted double well: cyclical schedule vs monotone decay.

Both schedules start at the same peak learning rate; the cyclical one restarts every
--period steps, the monotone one decays exponentially. Writes a PNG of one trajectory each and
prints the fraction of seeds that end in the deep well.
"""

from pathlib import Path

from common.cli import CliParser, run_cli
from common.double_well import compared_schedules
from common.plots import plot_double_well


def main() -> None:
    parser = CliParser(description=__doc__)
    parser.add_argument("--peak", type=float, default=0.05, help="peak learning rate")
    parser.add_argument("--period", type=float, default=500, help="cycle length (steps)")
    parser.add_argument("--gamma", type=float, default=0.998, help="monotone decay per step")
    parser.add_argument("--steps", type=int, default=3000, help="steps per run")
    parser.add_argument("--noise", type=float, default=3.0, help="gradient noise std")
    parser.add_argument("--seeds", type=int, default=20, help="seeds for the fractions")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/plots/double_well.png"), help="PNG to write"
    )
    args = parser.parse_args()
    parser.require_counts(args, "steps", "seeds")
    if not args.noise >= 0 or args.noise == float("inf"):
        parser.error(f"--noise {args.noise}: must be a finite number >= 0")
    if args.out.suffix.lower() != ".png":
        parser.error(f"--out {args.out}: must name a .png file")
    cyclic, monotone = compared_schedules(args.peak, args.period, args.gamma)
    _, fractions = plot_double_well(
        cyclic, monotone, args.steps, args.noise, seeds=args.seeds, path=args.out
    )
    for name, fraction in fractions.items():
        print(f"{name:9s} ends in the deep well in {fraction:.0%} of {args.seeds} seeds")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
