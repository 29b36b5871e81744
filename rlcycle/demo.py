"""The RL part of ``make demo``: the CartPole curriculum on CPU, about a minute or two.

PPO with rl-baselines3-zoo's CartPole hyperparameters trains 100k env steps while the
difficulty (pole mass and length up, push down) runs in anti-phase with four cosine cycles of
the learning rate, its ceiling rising 0.5, 0.75, 1, 1. Then the final policy and the snapshot
ensemble are evaluated on held-out environments at d = 0, 0.5 and 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.config import load_config
from common.runs import default_run_dir
from rlcycle.train import train

__all__ = ["run_demo"]


def run_demo(runs_root: Path = Path("runs"), steps: int | None = None) -> dict[str, Any]:
    """Train the ``cartpole`` config on CPU into ``runs_root/cartpole/<timestamp>``.

    Args:
        runs_root: where run folders go.
        steps: env steps (default: the config's 100k).

    Returns:
        what :func:`rlcycle.train.train` returns (``final.eval`` holds the returns per
        difficulty).
    """
    config = load_config("cartpole", "rlcycle")
    config["device"] = "cpu"
    if steps is not None:
        config["steps"] = steps
    run_dir = default_run_dir("cartpole", runs_root)
    print(
        f"PPO on rlcycle/CartPole-v1, {config['steps']} env steps: difficulty in anti-phase "
        "with cosine learning-rate cycles, ceiling rising per cycle"
    )
    metrics = train(config, run_dir)
    final = metrics["final"]
    print(f"trained in {final['wall_s']:.0f} s ({final['steps_per_s']:.0f} env steps/s)")
    print("held-out return (mean of 10 episodes; 500 is the maximum):")
    print(f"  {'difficulty':>10}  {'final policy':>12}  {'snapshot ensemble':>17}")
    for d in config["eval"]["difficulties"]:
        policy = final["eval"][f"eval/return/d={d:g}"]
        ensemble = final["eval"].get(f"eval/ensemble_return/d={d:g}", float("nan"))
        print(f"  {d:>10g}  {policy:>12.1f}  {ensemble:>17.1f}")
    print(f"logs: {run_dir}  (view: make tensorboard RUNS={run_dir})")
    return metrics
