#!/usr/bin/env python
"""Member-steps per second of a GAN population against the same runs trained one by one.

--members runs of one config (seeds seed, seed+1, ...) train --steps steps each, twice: as one
population (gancycle/population.py: one batched model, each member with its own seed, data
stream, schedules and restarts) and as single runs of the GAN trainer advanced one after
another in this process. Both arms only train (no logs, dynamics measurements, checkpoints,
snapshots or evaluations) on the config's threads (ring8: 1), and alternate in chunks of
--chunk steps so that both see the same machine load (see gancycle/population_bench.py).

The last line is ratio=<population member-steps/s / single-run member-steps/s>.
"""

from common.cli import CliParser, add_config_argument, add_set_argument, run_cli
from common.config import shipped_configs
from gancycle.population_bench import run_population_bench
from gancycle.settings import SCHEMA


def main() -> None:
    parser = CliParser(description=__doc__)
    add_config_argument(parser, "ring8", shipped_configs("gancycle"))
    parser.add_argument("--members", type=int, default=50, help="runs in the population")
    parser.add_argument("--steps", type=int, default=200, help="timed steps of every run")
    parser.add_argument("--chunk", type=int, default=50, help="steps per turn of an arm")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    add_set_argument(parser, "override a config key, e.g. --set data.batch=512")
    args = parser.parse_args()
    for name in ("members", "steps", "chunk"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: must be at least 1")
    config = SCHEMA.load(args.config, [*args.sets, f"device={args.device}"])
    result = run_population_bench(config, args.members, args.steps, min(args.chunk, args.steps))
    print(
        f"config={args.config} device={result['device']} threads={result['threads']} "
        f"members={result['members']} batch={config['data']['batch']} steps={result['steps']} "
        f"chunk={min(args.chunk, args.steps)}"
    )
    print(f"population  {result['population_member_steps_per_s']:.1f} member-steps/s")
    print(f"single runs {result['singles_member_steps_per_s']:.1f} member-steps/s")
    print(f"median of per-chunk ratios {result['chunk_ratio_median']:.3f}")
    print(f"ratio={result['ratio']:.3f}")


if __name__ == "__main__":
    run_cli(main)
