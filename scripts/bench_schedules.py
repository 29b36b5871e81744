#!/usr/bin/env python
"""Time value(step) and the driver's per-step cost against torch's CosineAnnealingWarmRestarts.

Prints microseconds per call for each contender (best of --repeats, measured interleaved in one
process) and, as the last line, ratio=<driver step / torch step> (lower is faster; goal <= 1).
"""

from common.cli import CliParser, run_cli


def main() -> None:
    parser = CliParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50_000, help="calls per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per contender")
    args = parser.parse_args()
    parser.require_counts(args, "calls", "repeats")
    from common.benchmark import bench_schedules  # torch: after --help and usage

    results = bench_schedules(args.calls, args.repeats)
    ratio = results.pop("ratio")
    for name, us in results.items():
        print(f"{name:18s} {us:7.3f} us/call")
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    run_cli(main)
