#!/usr/bin/env python
"""What PacGAN's mode metrics give generators blind to the modes: the chance level.

A mode counts as captured with one high-quality sample (within 3 std of its centre), so points
spread evenly over the data's square already capture most of grid25's modes. This draws
--samples points --reps times from a uniform square (the centres' bounding box widened by
3 std) and from a Gaussian with the mixture's mean and covariance, and prints the mean and
standard deviation of each metric, ``modes_held`` (a tenth of an even share) included.

    python scripts/chance_modes.py --data grid25
"""

from common.cli import CliParser, run_cli


def main() -> None:
    parser = CliParser(description=__doc__)
    parser.add_argument("--data", choices=["grid25", "ring8"], default="grid25")
    parser.add_argument("--samples", type=int, default=2500, help="points per draw (PacGAN: 2500)")
    parser.add_argument("--reps", type=int, default=200, help="draws per kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.samples < 10:
        parser.error(f"--samples {args.samples}: must be >= 10")
    if args.reps < 2:
        parser.error(f"--reps {args.reps}: must be >= 2")
    from gancycle.data import load_data  # torch: after --help and usage
    from gancycle.metrics import chance_mode_metrics

    data = load_data({"name": args.data})
    levels = chance_mode_metrics(data.centers, data.std, args.samples, args.reps, args.seed)
    print(f"data={args.data} modes={len(data.centers)} samples={args.samples} reps={args.reps}")
    print("| kind | modes | modes_held | high_quality (%) | kl |")
    print("|---|---:|---:|---:|---:|")
    for kind, m in levels.items():
        cells = [
            f"{m[k]:.2f} ± {m[k + '_sd']:.2f}"
            for k in ("modes", "modes_held", "high_quality", "kl")
        ]
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    run_cli(main)
