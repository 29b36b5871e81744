"""Command lines: ``gancycle-train``, ``gancycle-sample`` and ``gancycle-eval``.

A bad key, value or path ends the program with one line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from common.cli import (
    CliParser,
    add_run_arguments,
    answer_without_training,
    resolve_run,
    run_cli,
    seed,
)
from common.config import ConfigError, read_run_config, shipped_configs

__all__ = ["train_main", "sample_main", "eval_main", "train_command", "resolve_train_command"]

TRAIN_HELP = """\
Train a GAN whose generator and discriminator learning rates follow the schedule core:
cosine cycles in or out of phase, a phase offset, or one annealing cosine (which serves
which benchmark: the README's gan_rhythm section).

examples:
  gancycle-train                                   # ring8: G and D on one annealing cosine
  gancycle-train --config grid25                   # cycles, D's a quarter cycle ahead of G's
  gancycle-train --config grid25 --set lr.D.offset=0         # in phase
  gancycle-train --config grid25 --set lr.D.follow=G --set lr.D.mode=anti   # D mirrors G
  gancycle-train --config digits --set reset.G=all --set reset.D=all
  gancycle-train --config mine.toml --check        # check a config, train nothing
  gancycle-train --resume runs/ring8/20250101-120000         # continue a killed run

A --config file may hold only the keys it changes: on base = "grid25" (a shipped config, or a
path relative to the file), or without base on the defaults (ring8's values).
"""


def _train_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="gancycle-train", description=TRAIN_HELP)
    add_run_arguments(parser, "ring8", shipped_configs("gancycle"), set_example="lr.G.max=3e-4")
    parser.add_argument(
        "--on-nan",
        choices=["stop", "rollback"],
        default=None,
        help="on a NaN/Inf loss: stop, or restore the last checkpoint and lower both lr "
        "schedules (default: config's on_nan)",
    )
    parser.add_argument(
        "--data-root", default=None, metavar="DIR", help="folder of torchvision sets (data.root)"
    )
    parser.add_argument(
        "--download", action="store_true", help="download a missing torchvision set"
    )
    parser.add_argument(
        "--inception-weights",
        default=None,
        metavar="FILE",
        help="local torchvision inception_v3 state dict: adds FID to image metrics",
    )
    return parser


def train_command(argv: Sequence[str] | None, data_parallel: bool = False) -> int:
    """``gancycle-train``, or with ``data_parallel`` one rank of ``python -m gancycle.ddp``
    (only rank 0 prints)."""
    args = _train_parser().parse_args(argv)  # --help stops here, before torch is imported
    from gancycle.settings import check_single_run

    checked, run_dir, resume = _resolve_train(args)
    check_single_run(checked.config)
    if answer_without_training(args, checked):
        return 0
    if data_parallel:
        from gancycle.ddp import train_data_parallel as train
    else:
        from gancycle.trainer import train

    metrics = train(checked, run_dir, resume=resume)
    if metrics is None:  # a rank other than 0: rank 0 reports
        return 0
    print(_summary(metrics, run_dir))
    if "diverged" in metrics:
        d = metrics["diverged"]
        print(
            f"stopped: {d['tag']} = {d['value']} at step {d['step']} (see --on-nan)",
            file=sys.stderr,
        )
        return 1
    return 0


def resolve_train_command(argv: Sequence[str], check: bool = False) -> tuple[Any, Path, bool]:
    """What ``gancycle-train <argv>`` would train: the checked config, the run folder and
    whether it resumes (a bad argument is a :class:`ConfigError`). With ``check`` (as with
    ``--check``) a folder that already holds a run is not refused: nothing will train."""
    try:
        args = _train_parser().parse_args([*argv, "--check"] if check else list(argv))
    except SystemExit:  # the parser printed why
        raise ConfigError(f"gancycle-train {' '.join(argv)}: bad arguments") from None
    return _resolve_train(args)


def _resolve_train(args: argparse.Namespace) -> tuple[Any, Path, bool]:
    from gancycle.settings import SCHEMA, check_config

    config, run_dir, resume = resolve_run(args, SCHEMA)
    if args.on_nan is not None:
        config["on_nan"] = args.on_nan
    if args.data_root is not None:
        config["data"]["root"] = args.data_root
    if args.download:
        config["data"]["download"] = True
    if args.inception_weights is not None:
        config["eval"]["inception_weights"] = args.inception_weights
    checked = check_config(config)
    if not args.print_config:  # prints on any machine, as resolve_run's device check allows
        _check_this_machine(checked.config, args)
    return checked, run_dir, resume


def _check_this_machine(config: dict[str, Any], args: argparse.Namespace) -> None:
    """What the run asks of this machine, now rather than at its first evaluation: memory for
    ``eval.samples`` draws, and a loadable inception file when FID is asked for."""
    evaluation = config["eval"]
    _refuse_draws_beyond_memory(
        f"eval.samples = {evaluation['samples']}", evaluation["samples"], config["model"]["z_dim"]
    )
    if evaluation["inception_weights"]:
        from gancycle.inception import InceptionFeatures

        named_by = "--inception-weights" if args.inception_weights else "eval.inception_weights"
        InceptionFeatures(evaluation["inception_weights"], name=named_by)


def _summary(metrics: dict[str, Any], run_dir: Path) -> str:
    lines = [f"run: {run_dir}  ({metrics['steps']} steps, {metrics['steps_per_s']:.1f} steps/s)"]
    for which in ("G", "ema", "ensemble"):
        if which in metrics:
            values = ", ".join(f"{k}={v:.4g}" for k, v in metrics[which].items())
            lines.append(f"  {which:8s} {values}")
    if "diverged" in metrics:
        d = metrics["diverged"]
        lines.append(
            f"  diverged at step {d['step']} ({d['tag']} = {d['value']}): the metrics above are "
            f"of the last checkpoint, step {metrics['steps']}"
        )
    lines.append(f"  view: make tensorboard RUNS={run_dir}")
    return "\n".join(lines)


def _check_file(path: str, flag: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file")


def _run_dir(path: Path) -> dict[str, Any]:
    """The config of the gancycle run folder ``path`` (``--run``), which has a checkpoint."""
    config = read_run_config(path, "gancycle", "--run")
    if not (path / "checkpoints" / "last.pt").is_file():
        raise FileNotFoundError(f"--run {path}: no checkpoints/last.pt; was the run started?")
    return config


def _which_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--ensemble", action="store_true", help="the mixture of the G snapshots (cycle ends)"
    )
    group.add_argument("--ema", action="store_true", help="the EMA of the generator")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")


def _which(args: argparse.Namespace) -> str:
    return "ensemble" if args.ensemble else "ema" if args.ema else "G"


def _sample(argv: Sequence[str] | None) -> int:
    parser = CliParser(
        prog="gancycle-sample",
        description="Write samples of a run's generator (final by default) to a .npy file: "
        "points (n, 2), or images (n, C, H, W) in [0, 1].",
    )
    parser.add_argument("--run", type=Path, required=True, metavar="DIR", help="the run folder")
    parser.add_argument("--n", type=int, default=2500, help="number of samples")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.npy", help="output")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the latent draws")
    _which_arguments(parser)
    args = parser.parse_args(argv)
    if args.n <= 0:
        raise ValueError(f"--n {args.n}: must be > 0")
    if args.out.suffix != ".npy":
        raise ValueError(f"--out {args.out}: must end in .npy")
    if not args.out.parent.is_dir():
        raise ConfigError(f"--out {args.out}: no folder {args.out.parent}; create it first")
    if args.out.is_dir():
        raise ConfigError(f"--out {args.out}: a folder; name a .npy file")
    from common.runs import resolve_device
    from gancycle.trainer import GanTrainer

    config = _run_dir(args.run)
    trainer = GanTrainer.from_run(args.run, resolve_device(args.device), config)
    floats = trainer.sample(1, _which(args), seed=args.seed)[0].numel()
    _check_room(args.n, floats, trainer.z_dim, args.out)
    samples = trainer.sample(args.n, _which(args), seed=args.seed)
    if samples.dim() == 4:
        samples = (samples.clamp(-1, 1) + 1) / 2
    np.save(args.out, samples.numpy().astype(np.float32))
    print(f"{args.out}: {tuple(samples.shape)} samples from {_which(args)}")
    return 0


def _check_room(n: int, floats: int, z_dim: int, out: Path) -> None:
    """Refuse ``--n`` samples of ``floats`` float32 values each that this machine's memory (the
    latents, the samples and their copy for saving) or the disk under ``out`` cannot hold."""
    import shutil

    size = n * floats * 4
    what = f"--n {n}: {_bytes(size)} of samples ({floats} float32 values each)"
    _refuse_beyond_memory(what, n * (z_dim + 2 * floats) * 4)
    free = shutil.disk_usage(out.parent).free
    if size > free:
        raise ConfigError(f"{what}; {out.parent} has {_bytes(free)} free: ask for fewer")


def _refuse_draws_beyond_memory(name: str, n: int, z_dim: int) -> None:
    """Refuse an evaluation on ``n`` samples whose draws alone (latents, and real and fake
    samples of 2 floats or more) this machine's memory cannot hold."""
    need = n * (z_dim + 4) * 4
    _refuse_beyond_memory(f"{name}: at least {_bytes(need)} of draws", need)


def _refuse_beyond_memory(what: str, need: int) -> None:
    import os

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > memory:
        raise ConfigError(f"{what}; this machine has {_bytes(memory)} of memory: ask for fewer")


def _bytes(size: float) -> str:
    units = ["B", "kB", "MB", "GB", "TB"]
    while size >= 1000 and len(units) > 1:
        size, units = size / 1000, units[1:]
    return f"{size:.3g} {units[0]}"


def _eval(argv: Sequence[str] | None) -> int:
    parser = CliParser(
        prog="gancycle-eval",
        description="Recompute a run's metrics from its last checkpoint and print them as JSON.",
    )
    parser.add_argument("--run", type=Path, required=True, metavar="DIR", help="the run folder")
    parser.add_argument(
        "--samples", type=int, default=None, help="samples per metric (default: eval.samples)"
    )
    parser.add_argument(
        "--inception-weights", default=None, metavar="FILE", help="adds FID (images)"
    )
    parser.add_argument("--all", action="store_true", help="G, its EMA and the ensemble")
    parser.add_argument(
        "--record",
        action="store_true",
        help="add to the run's metrics.json the final metrics it lacks (a metric newer than "
        "the run), once the metrics it holds come out the same again",
    )
    _which_arguments(parser)
    args = parser.parse_args(argv)
    from common.runs import resolve_device  # torch: only once the arguments are good
    from gancycle.trainer import WHICH, GanTrainer

    run_dir, config = args.run, _run_dir(args.run)
    if args.record:
        if args.samples is not None or args.inception_weights is not None:
            raise ConfigError(
                "--record: scores with the run's own settings; drop --samples "
                "and --inception-weights"
            )
        from gancycle.rescore import record_missing_final_metrics

        added = record_missing_final_metrics(run_dir, resolve_device(args.device))
        print(f"{run_dir}: " + (f"added {', '.join(added)}" if added else "nothing to add"))
        return 0
    if args.samples is not None:
        if args.samples < 10:
            raise ValueError(f"--samples {args.samples}: must be >= 10")
        _refuse_draws_beyond_memory(
            f"--samples {args.samples}", args.samples, config["model"]["z_dim"]
        )
        config["eval"]["samples"] = args.samples
    if args.inception_weights is not None:
        _check_file(args.inception_weights, "--inception-weights")
        config["eval"]["inception_weights"] = args.inception_weights
    trainer = GanTrainer.from_run(run_dir, resolve_device(args.device), config)
    which = (
        [w for w in WHICH if w != "ensemble" or len(trainer.snapshots)]
        if args.all
        else [_which(args)]
    )
    result = {"step": trainer.step, **{w: trainer.evaluate(w) for w in which}}
    print(json.dumps(result, indent=2))
    return 0


def train_main(argv: Sequence[str] | None = None) -> NoReturn:
    """``gancycle-train``: see ``gancycle-train --help``."""
    run_cli(lambda: train_command(argv))


def sample_main(argv: Sequence[str] | None = None) -> NoReturn:
    """``gancycle-sample --run DIR --n N --out FILE.npy [--ensemble | --ema]``."""
    run_cli(lambda: _sample(argv))


def eval_main(argv: Sequence[str] | None = None) -> NoReturn:
    """``gancycle-eval --run DIR [--ensemble | --ema | --all]``."""
    run_cli(lambda: _eval(argv))
