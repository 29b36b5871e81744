#!/usr/bin/env python
"""Render the schedules of a TOML file (and their couplings) to a PNG.

Examples:
  python scripts/plot_schedules.py                                  # the shipped example
  python scripts/plot_schedules.py runs/ring8/<run>/config.toml --out lr.png
  python scripts/plot_schedules.py --set lr.G.period_mult=1.5 --steps 20000
  python scripts/plot_schedules.py gancycle/configs/ring8.toml --shift-vs-mirror G \\
      --out docs/shift_vs_mirror.png            # G beside its half-cycle shift and its mirror
"""

from pathlib import Path

from common.cli import CliParser, add_set_argument, run_cli
from common.config import apply_overrides, read_config
from common.plots import config_table, plot_config, plot_shift_vs_mirror

EXAMPLE = Path(__file__).parent / "examples" / "anti_phase.toml"


def main() -> None:
    parser = CliParser(description=__doc__)
    parser.add_argument(
        "file",
        nargs="?",
        type=Path,
        default=EXAMPLE,
        help="a TOML file with schedule tables (a run's config.toml works)",
    )
    parser.add_argument("--table", default="lr", help="dotted path of the schedule table(s)")
    parser.add_argument("--couplings", default="couplings", help="table of couplings, if any")
    add_set_argument(parser, "override a key of the file, e.g. lr.G.max=1e-3")
    parser.add_argument("--steps", type=int, default=8000, help="steps to draw")
    parser.add_argument(
        "--shift-vs-mirror",
        metavar="NAME",
        help="instead: schedule NAME of the table beside its half-cycle shift (offset) and its "
        "mirror (follow, mode anti), over --cycles cycles",
    )
    parser.add_argument("--cycles", type=int, default=3, help="cycles for --shift-vs-mirror")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/plots/schedules.png"), help="PNG to write"
    )
    args = parser.parse_args()
    parser.require_counts(args, "steps", "cycles")
    if args.out.suffix.lower() != ".png":
        parser.error(f"--out {args.out}: must name a .png file")
    config = apply_overrides(read_config(args.file), args.sets)
    if args.shift_vs_mirror:
        clock = config_table(config, f"{args.table}.{args.shift_vs_mirror}")
        _, correlations = plot_shift_vs_mirror(
            clock, args.cycles, args.out, name=args.shift_vs_mirror
        )
        print(
            f"wrote {args.out}: correlation shift {correlations['shift']:+.3f}, "
            f"mirror {correlations['mirror']:+.3f}"
        )
        return
    plot_config(
        config, args.table, args.couplings, steps=args.steps, path=args.out, title=args.file.name
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
