"""Command lines: ``rlcycle-train`` and ``rlcycle-eval``.

A bad key, value or path ends the program with one line ``error: ...`` and exit code 2. torch,
SB3 and TensorBoard are imported only once a run starts, so ``--help`` and argument errors are
quick.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from common.cli import (
    CliParser,
    add_run_arguments,
    answer_without_training,
    resolve_run,
    run_cli,
    seed,
)
from common.config import ConfigError, read_run_config, shipped_configs

__all__ = ["train_main", "eval_main", "train_parser", "eval_parser"]

TRAIN_HELP = """\
Train an SB3 agent on a curriculum whose difficulty runs in anti-phase with the learning rate:
within each cycle the learning rate anneals while the difficulty rises; at each restart the
learning rate jumps up and the agent revisits easier settings; the ceiling rises per cycle.

examples:
  rlcycle-train                                          # CartPole, PPO, anti-phase
  rlcycle-train --config lunarlander --vec subproc
  rlcycle-train --set curriculum.mode=in                 # the in-phase control
  rlcycle-train --config pendulum --algo ppo --n-envs 4
  rlcycle-train --config mine.toml --check               # check a config, train nothing
  rlcycle-train --resume runs/cartpole/20250101-120000   # continue a killed run

A --config file may hold only the keys it changes: on base = "lunarlander" (a shipped config,
or a path relative to the file), or without base on the defaults.
"""


def train_parser() -> argparse.ArgumentParser:
    """The ``rlcycle-train`` options: the shared run options plus algorithm and envs."""
    parser = CliParser(prog="rlcycle-train", description=TRAIN_HELP)
    add_run_arguments(parser, "cartpole", shipped_configs("rlcycle"), set_example="lr.max=3e-4")
    parser.add_argument(
        "--algo",
        choices=["ppo", "a2c", "dqn", "sac"],
        default=None,
        help="SB3 algorithm; its hyperparameters come from the config's table of that name "
        "(default: config's algo)",
    )
    parser.add_argument(
        "--n-envs", type=int, default=None, help="parallel environments (default: config's)"
    )
    parser.add_argument(
        "--vec",
        choices=["dummy", "subproc"],
        default=None,
        help="dummy: all environments in this process; subproc: one process each "
        "(default: config's)",
    )
    return parser


def _train(argv: Sequence[str] | None) -> int:
    args = train_parser().parse_args(argv)  # --help stops here, before torch is imported
    from rlcycle.settings import SCHEMA, check_config

    if args.resume is not None:
        read_run_config(args.resume, "rlcycle", "--resume")  # names another package's run
    config, run_dir, resume = resolve_run(args, SCHEMA)
    if resume and args.algo is not None and args.algo != config.get("algo"):
        raise ConfigError(f"--algo {args.algo}: a resumed run keeps its algo ({config['algo']})")
    for key, value in (("algo", args.algo), ("n_envs", args.n_envs), ("vec", args.vec)):
        if value is not None:
            config[key] = value
    checked = check_config(config)
    if answer_without_training(args, checked):
        return 0
    from rlcycle.train import train

    metrics = train(checked, run_dir, resume=resume)
    print(_summary(metrics))
    return 0


def _summary(metrics: dict[str, Any]) -> str:
    final = metrics["final"]
    lines = [f"run: {metrics['run_dir']}  ({final['steps']} env steps)"]
    for tag, value in final["eval"].items():
        if tag.startswith(("eval/return/d=", "eval/sampled_return/d=", "eval/ensemble_return/d=")):
            lines.append(f"  {tag:<30} {value:9.1f}")
    lines.append(f"view: make tensorboard RUNS={metrics['run_dir']}")
    return "\n".join(lines)


def train_main(argv: Sequence[str] | None = None) -> NoReturn:
    """``rlcycle-train``: train (or ``--resume``) one run."""
    run_cli(lambda: _train(argv))


# -- rlcycle-eval ----------------------------------------------------------------------------

EVAL_HELP = """\
Re-evaluate a saved run on held-out environments: the policy's mode (and with --sampled, actions
drawn from it), mean return and success rate at each difficulty.

examples:
  rlcycle-eval --run runs/cartpole/20250101-120000 --difficulty 1.0 --episodes 20
  rlcycle-eval --run runs/cartpole/20250101-120000 --ensemble     # the snapshot ensemble too
"""


def eval_parser() -> argparse.ArgumentParser:
    """The ``rlcycle-eval`` options."""
    parser = CliParser(prog="rlcycle-eval", description=EVAL_HELP)
    parser.add_argument("--run", type=Path, required=True, metavar="DIR", help="a run folder")
    parser.add_argument(
        "--difficulty",
        type=float,
        action="append",
        default=None,
        metavar="D",
        help="difficulty in [0, 1], repeatable (default: the run's eval.difficulties)",
    )
    parser.add_argument(
        "--episodes", type=int, default=None, help="episodes per difficulty (default: the run's)"
    )
    parser.add_argument("--ensemble", action="store_true", help="also the snapshot ensemble")
    parser.add_argument(
        "--sampled",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also score actions drawn from the policy (default: the run's eval.sampled)",
    )
    parser.add_argument("--seed", type=seed, default=None, help="seed (default: the run's)")
    return parser


def _eval(argv: Sequence[str] | None) -> int:
    args = eval_parser().parse_args(argv)
    from rlcycle.evaluate import evaluate_run

    metrics = evaluate_run(
        args.run, args.difficulty, args.episodes, args.ensemble, args.seed, args.sampled
    )
    for tag, value in metrics.items():
        print(f"{tag:<32} {value:9.3f}")
    return 0


def eval_main(argv: Sequence[str] | None = None) -> NoReturn:
    """``rlcycle-eval``: evaluate a saved run."""
    run_cli(lambda: _eval(argv))
