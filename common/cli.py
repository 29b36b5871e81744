"""The one CLI convention shared by ``rlcycle-train`` and ``gancycle-train``.

``--config NAME|PATH`` (a shipped config, or a file holding only the keys it changes),
``--out DIR``, ``--seed``, ``--steps``, ``--device auto|cpu|cuda``, ``--resume DIR``,
``--set key=value`` (repeatable, dotted keys), ``--no-progress`` (``progress = false``) and
``--check`` (check the resolved config, print one line, train nothing) and ``--print-config``
(print the resolved config as TOML: what the run's ``config.toml`` will hold; a study started
again compares it with its runs' folders). A bad key or value ends
the program with one line on stderr naming it and what is allowed, and exit code 2.

Nothing here imports torch: ``--help`` and the study's dry run stay fast.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from common.config import (
    MAX_SEED,
    CheckedConfig,
    ConfigError,
    Schema,
    apply_overrides,
    config_toml,
    load_config,
    read_run_config,
)
from common.schedules import Schedule, form

__all__ = [
    "add_run_arguments",
    "add_config_argument",
    "resolve_run",
    "run_cli",
    "HelpFormatter",
    "CliParser",
    "add_set_argument",
    "check_line",
    "answer_without_training",
]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (except ``None``, ``False`` and ``[]``, whose help says
    what happens without it) and keeps the description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


class CliParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit code 2, like every other error here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def require_counts(self, args: argparse.Namespace, *names: str) -> None:
        """A usage error for each option in ``names`` given below 1 (``None``: not given)."""
        for name in names:
            value = getattr(args, name)
            if value is not None and value < 1:
                self.error(f"--{name.replace('_', '-')} {value}: must be at least 1")


def seed(text: str) -> int:
    """An argparse type: a seed in ``[0, MAX_SEED]`` (a usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text}: must be an integer in [0, {MAX_SEED}]")
    return value


def add_config_argument(
    parser: argparse.ArgumentParser, default_config: str, choices: list[str]
) -> None:
    """``--config NAME|PATH``: a shipped config (one of ``choices``) or a TOML file."""
    parser.add_argument(
        "--config",
        default=default_config,
        metavar="NAME|PATH",
        help=f"a shipped config ({', '.join(choices)}) or a TOML file",
    )


def add_run_arguments(
    parser: argparse.ArgumentParser,
    default_config: str,
    choices: list[str],
    set_example: str = "seed=1",
) -> None:
    """Add the shared run options to ``parser``; ``set_example`` is a ``--set`` item that
    this trainer accepts, shown in the help."""
    add_config_argument(parser, default_config, choices)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="run folder (default: runs/<config>/<timestamp>)",
    )
    parser.add_argument("--seed", type=seed, default=None, help="random seed (default: config's)")
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default: config's)"
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=None,
        help="where to train; auto = CUDA when present (default: config's)",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue the run in DIR from its last checkpoint",
    )
    add_set_argument(parser, f"override any config key, e.g. --set {set_example}")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (sets progress = false)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the resolved config, print one line and exit; trains nothing",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as TOML (what the run's config.toml will hold) and "
        "exit; trains nothing",
    )


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.sets``, for :func:`apply_overrides`."""
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{help} (repeatable)",
    )


def resolve_run(
    args: argparse.Namespace, schema: Schema | str
) -> tuple[dict[str, Any], Path, bool]:
    """The resolved config, the run folder and whether this run resumes.

    With ``--resume DIR`` the config is ``DIR/config.toml`` (the run's own, so it continues as
    it began) and the run folder is ``DIR``; otherwise it is ``--config`` in its layers (see
    :mod:`common.config`). Then ``--set`` overrides apply, then ``--seed``, ``--steps`` and
    ``--device``. With a :class:`Schema` the result is checked and full (defaults filled in);
    with a package name it is the config as its file gives it.
    """
    # torch: only when a run starts
    from common.runs import default_run_dir, refuse_a_held_run, resolve_device

    layered = isinstance(schema, Schema)
    if args.resume is not None:
        package = schema.package if isinstance(schema, Schema) else schema
        config = read_run_config(args.resume, package, "--resume")
        if layered:
            config = schema.check(config, f"{args.resume / 'config.toml'}: ")
        run_dir, resuming = args.resume, True
    else:
        if layered:
            config = schema.defaults()
            for source, table in schema.read_layers(args.config):
                schema.merge(config, table, f"{source}: ")
        else:
            config = load_config(args.config, schema)
        run_dir, resuming = args.out or default_run_dir(args.config), False
    apply_overrides(config, args.sets, schema if layered else None)
    for key in ("seed", "steps", "device"):
        value = getattr(args, key)
        if value is not None:
            if key not in config:
                raise ConfigError(f"--{key}: the config has no top-level {key!r} key")
            config[key] = value
    if isinstance(config.get("steps"), int) and config["steps"] <= 0:
        raise ConfigError(f"steps = {config['steps']}: must be > 0")
    if not layered:
        return config, Path(run_dir), resuming
    if getattr(args, "no_progress", False):
        config["progress"] = False
    config = schema.check(config)
    if "device" in config and not getattr(args, "print_config", False):  # prints anywhere
        resolve_device(config["device"])  # a device this machine lacks: refused before a folder
    checking = getattr(args, "check", False) or getattr(args, "print_config", False)
    if not resuming and not checking:
        refuse_a_held_run(run_dir)  # before a model is built; hold_run_folder checks again
    return config, Path(run_dir), resuming


def check_line(checked: CheckedConfig, source: str) -> str:
    """The one line ``--check`` prints for a config that passed every check: the steps, each
    schedule's form (and the step it goes flat at, when that comes before the run ends: a
    ``cosine`` shorter than the run holds its last value for the rest), the couplings."""
    steps = checked.config.get("steps")
    schedules = ", ".join(
        f"{name} ({_form_over(s, steps)})" for name, s in checked.schedules.items()
    )
    couplings = ", ".join(checked.couplings) or "none"
    return f"ok: {source}: {steps} steps; schedules {schedules}; couplings {couplings}"


def answer_without_training(args: argparse.Namespace, checked: CheckedConfig) -> bool:
    """Print what ``--check`` (one line: what would train) or ``--print-config`` (the resolved
    config as TOML) asks for; ``True`` when one did, so nothing trains."""
    if args.check:
        print(check_line(checked, str(args.resume or args.config)))
        return True
    if args.print_config:
        print(config_toml(checked.config), end="")
        return True
    return False


def _form_over(schedule: Schedule, steps: Any) -> str:
    if isinstance(steps, int) and schedule.end_step < steps:
        return f"{form(schedule.spec())}, flat from step {math.ceil(schedule.end_step)}"
    return form(schedule.spec())


def run_cli(main: Callable[[], int | None]) -> NoReturn:
    """Run ``main``; a bad config, value or path becomes ``error: ...`` and exit code 2.

    A bad path is any ``OSError`` naming a file (a folder where a file belongs, a file it may
    not read); one naming none is not bad input and propagates.
    """
    try:
        code = main()
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; resume with --resume <run folder>", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
