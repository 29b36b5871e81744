#!/usr/bin/env python
"""Env steps per second of rlcycle-train against bare SB3 (same algorithm, hyperparameters,
environments and steps); the last line is ``ratio=<rlcycle / bare>`` (goal: >= 0.95)."""

from common.cli import CliParser, run_cli


def main() -> int:
    parser = CliParser(description=__doc__)
    parser.add_argument("--config", default="cartpole", help="shipped config or TOML file")
    parser.add_argument("--steps", type=int, default=50_000, help="env steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--algo", choices=["ppo", "a2c", "dqn", "sac"], default=None)
    parser.add_argument("--n-envs", type=int, default=None)
    args = parser.parse_args()

    from rlcycle.bench import bench

    sets = {k: v for k, v in (("algo", args.algo), ("n_envs", args.n_envs)) if v is not None}
    result = bench(args.config, args.steps, args.repeats, args.device, sets)
    print(
        f"{result['config']} {result['algo']} n_envs={result['n_envs']} steps={result['steps']}: "
        f"bare SB3 {result['bare_steps_per_s']:.0f} env steps/s, "
        f"rlcycle {result['rlcycle_steps_per_s']:.0f} env steps/s (medians)"
    )
    print(f"ratio={result['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    run_cli(main)
