"""Compare two arms of a study: how often a run of one beats a run of the other, per metric.

    python scripts/compare_arms.py results/rl_rhythm_cartpole/summary.json anti_phase flat_cosine
    python scripts/compare_arms.py runs/gan_rhythm/summary.json anti_mirror in_phase

The study's report gives every arm's probability of improvement over its baseline; this gives
it for any pair, from the per-seed scores in the study's summary.json (ties count half, a
stratified-bootstrap CI with the study's settings; lower-is-better metrics compared as such).
"""

from __future__ import annotations

from pathlib import Path

from common.cli import CliParser, run_cli
from common.study.report import comparison_markdown, read_summary


def main() -> int:
    parser = CliParser(description=__doc__)
    parser.add_argument("summary", type=Path, help="a study's summary.json")
    parser.add_argument("arm", help="the arm asked about")
    parser.add_argument("other", help="the arm it is compared with")
    args = parser.parse_args()
    print(comparison_markdown(read_summary(args.summary), args.arm, args.other))
    return 0


if __name__ == "__main__":
    run_cli(main)
