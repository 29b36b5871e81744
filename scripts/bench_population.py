#!/usr/bin/env python
"""Member-steps per second of a GAN population against the same runs through the local
process pool of the study runner.

--members runs of one config (seeds seed, seed+1, ...) train --steps steps each, twice, one arm
after the other: as one population (gancycle/population.py: one batched model, each member with
its own seed, data stream, schedules and restarts; --population-threads torch threads, default
the pool's cores) and as gancycle-train processes started by the study runner's local backend,
--workers at a time (default: one per core), each on one thread. Every run only trains (no
logs, dynamics measurements, checkpoints or snapshots); a process still pays Python's and
torch's start, its run folder and one small evaluation at the end, as a run of a study does.
Each arm is timed from its start to its end (see gancycle/population_bench.py).

With --in-process-steps N (default 100; 0 skips it) an extra line first compares the population
with the single runs advanced one after another in this process, the arms alternating in chunks.

The last line is ratio=<population member-steps/s / process-pool member-steps/s>.
Quick check of the output: --members 2 --steps 5 --in-process-steps 0.
"""

from common.cli import CliParser, add_config_argument, add_set_argument, run_cli
from common.config import shipped_configs


def main() -> None:
    parser = CliParser(description=__doc__)
    add_config_argument(parser, "ring8", shipped_configs("gancycle"))
    parser.add_argument("--members", type=int, default=50, help="runs in the population")
    parser.add_argument("--steps", type=int, default=1000, help="steps of every run")
    parser.add_argument("--workers", type=int, default=None, help="pool size (default: cores)")
    parser.add_argument(
        "--population-threads", type=int, default=None, help="default: the pool's workers"
    )
    parser.add_argument(
        "--in-process-steps", type=int, default=100, help="in-process comparison (0: skip)"
    )
    parser.add_argument("--chunk", type=int, default=50, help="in-process steps per turn")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    add_set_argument(parser, "override a config key, e.g. --set data.batch=512")
    args = parser.parse_args()
    parser.require_counts(args, "members", "steps", "chunk", "workers", "population_threads")
    if args.in_process_steps < 0:
        parser.error(f"--in-process-steps {args.in_process_steps}: must be 0 or more")
    from gancycle.population_bench import run_pool_bench, run_population_bench  # torch: late
    from gancycle.settings import SCHEMA

    config = SCHEMA.load(args.config, [*args.sets, f"device={args.device}"])
    if args.in_process_steps:
        chunk = min(args.chunk, args.in_process_steps)
        inner = run_population_bench(config, args.members, args.in_process_steps, chunk)
        print(
            f"in-process: population {inner['population_member_steps_per_s']:.1f}, single runs "
            f"one after another {inner['singles_member_steps_per_s']:.1f} member-steps/s on "
            f"{inner['threads']} thread(s), {inner['steps']} steps, ratio {inner['ratio']:.3f}"
        )
    result = run_pool_bench(config, args.members, args.steps, args.workers, args.population_threads)
    print(
        f"config={args.config} device={result['device']} members={result['members']} "
        f"batch={config['data']['batch']} steps={result['steps']} workers={result['workers']} "
        f"population_threads={result['population_threads']}"
    )
    print(
        f"population   {result['population_member_steps_per_s']:.1f} member-steps/s "
        f"({result['population_s']:.1f} s)"
    )
    print(
        f"process pool {result['pool_member_steps_per_s']:.1f} member-steps/s "
        f"({result['pool_s']:.1f} s)"
    )
    print(f"ratio={result['ratio']:.3f}")


if __name__ == "__main__":
    run_cli(main)
