"""The keys of an rlcycle config, what each allows, and the check that builds what they name.

A config is the TOML table a run starts from (``rlcycle/configs/<name>.toml``, or any file with
the same keys; a key left out takes its default from :data:`DEFAULTS`). :func:`check_config`
runs before anything else: a wrong value stops the run at once with one line naming the key and
what is allowed. Checking also builds: the learning-rate clock, the curriculum on it and the
enabled couplings come back in a :class:`CheckedConfig`, and the trainer uses those objects.

Tables named after an algorithm (``[ppo]``, ``[a2c]``, ``[dqn]``, ``[sac]``) hold SB3
constructor arguments; only the one for ``algo`` is used.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import ConfigError, read_config
from common.coupling import Coupled, coupled_from_spec
from common.runs import resolve_device
from common.schedules import Schedule, from_spec
from rlcycle.algos import ALGOS, ON_POLICY, check_algo
from rlcycle.curriculum import curriculum_from_spec
from rlcycle.envs import ENVS, check_difficulty

__all__ = [
    "DEFAULTS",
    "RENAMED",
    "RESETS",
    "COUPLINGS",
    "CheckedConfig",
    "check_config",
    "read_run_config",
]


@dataclass(frozen=True)
class CheckedConfig:
    """A checked config and what checking it built.

    Attributes:
        config: the full config with defaults filled in (what ``config.toml`` holds).
        schedules: the built learning-rate schedules by net (``"policy"``: the clock).
        couplings: the enabled couplings, built on the clock, by model attribute.
        extras: ``{"curriculum": Curriculum}``.
    """

    config: dict[str, Any]
    schedules: dict[str, Schedule] = field(default_factory=dict)
    couplings: dict[str, Coupled] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "steps": 100_000,
    "device": "auto",
    "threads": 1,
    "progress": True,
    "algo": "ppo",
    "n_envs": 1,
    "vec": "dummy",
    "log": {"every": 1_000},
    "checkpoint": {"every": 0},
    "snapshots": {"max": 5},
    "reset": {"policy": "none"},
    "env": {"id": "rlcycle/CartPole-v1"},
    "lr": {"kind": "cosine_restarts", "max": 3e-4, "min": 1e-5, "period": 25_000},
    "curriculum": {"mode": "anti"},
    "couplings": {},
    "probe": {"every": 0, "iters": 20, "batch": 512},
    "eval": {"difficulties": [0.0, 0.5, 1.0], "episodes": 10, "every": 0, "ensemble": True},
}
"""Every key :func:`check_config` accepts, with its default."""

RENAMED = {
    "log_every": "log.every",
    "checkpoint_every": "checkpoint.every",
    "progress_bar": "progress",
    "restart.max_snapshots": "snapshots.max",
    "restart.snapshots": "snapshots.max (0 = none)",
    "restart.reset_optimizer": 'reset.policy = "none" | "momentum" | "all"',
    "restart.reset_keys": 'reset.policy = "none" | "momentum" | "all"',
}
"""Keys of earlier versions and what replaced them."""

RESETS: dict[str, tuple[str, ...] | bool | None] = {
    "none": None,
    "momentum": True,
    "all": ("exp_avg", "exp_avg_sq", "step", "momentum_buffer"),
}
"""``reset.policy``: optimizer state zeroed at each restart. ``momentum`` forgets the first moment
(Adam's ``exp_avg``; :func:`common.torch_driver.default_reset_keys`), ``all`` also Adam's second
moment and step count, so the next update is a fresh Adam start (SAC: all three optimizers)."""

COUPLINGS = {"ent_coef": ON_POLICY}
"""Model attributes that may follow the clock, and the algorithms that have them."""

_COUPLING_KEYS = ("enabled", "mode", "lo", "hi")
_BUILT = ("lr", "curriculum", "couplings")
"""Tables whose keys their builders check (``from_spec``, ``curriculum_from_spec``...)."""

Check = tuple[Callable[[Any], bool], str]


def _int(lo: int) -> Check:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo), (
        f"an integer >= {lo}"
    )


def _choice(options: Mapping[str, Any] | tuple[str, ...]) -> Check:
    return (lambda v: v in options), "one of " + " | ".join(options)


_BOOL: Check = (lambda v: isinstance(v, bool), "true or false")

SCHEMA: dict[str, Check] = {
    "seed": _int(0),
    "steps": _int(1),
    "threads": _int(0),
    "progress": _BOOL,
    "n_envs": _int(1),
    "vec": _choice(("dummy", "subproc")),
    "log.every": _int(1),
    "checkpoint.every": _int(0),
    "snapshots.max": _int(0),
    "reset.policy": _choice(RESETS),
    "env.id": _choice(tuple(ENVS)),
    "probe.every": _int(0),
    "probe.iters": _int(1),
    "probe.batch": _int(1),
    "eval.episodes": _int(1),
    "eval.every": _int(0),
    "eval.ensemble": _BOOL,
}
"""Keys with a plain check, and what each allows."""


def _reject_renamed(config: Mapping[str, Any]) -> None:
    for old, new in RENAMED.items():
        table, _, key = old.rpartition(".")
        node = config.get(table) if table else config
        if isinstance(node, Mapping) and key in node:
            raise ConfigError(f"{old}: renamed; use {new}")
    if "restart" in config:
        raise ConfigError("restart: renamed; use [snapshots] max and [reset] policy")


def _fill(defaults: Mapping[str, Any], given: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``given`` over ``defaults``; a key ``defaults`` lacks is an error."""
    out = copy.deepcopy(dict(defaults))
    for key, value in given.items():
        if key not in defaults:
            raise ConfigError(f"{where}{key}: unknown key; allowed: {', '.join(defaults)}")
        if isinstance(defaults[key], dict) and key not in _BUILT:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}{key} = {value!r}: must be a table")
            out[key] = _fill(defaults[key], value, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _check_plain(config: dict[str, Any]) -> None:
    for key, (ok, allowed) in SCHEMA.items():
        value = _get(config, key)
        if not ok(value):
            raise ConfigError(f"{key} = {value!r}: must be {allowed}")
    resolve_device(config["device"])
    difficulties = config["eval"]["difficulties"]
    if not isinstance(difficulties, list) or not difficulties:
        raise ConfigError(f"eval.difficulties = {difficulties!r}: must be a list of numbers")
    for i, d in enumerate(difficulties):
        check_difficulty(d, f"eval.difficulties[{i}]")


def _check_algo(config: dict[str, Any], algo_tables: Mapping[str, Any]) -> None:
    for name, table in algo_tables.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{name}: must be a table of {ALGOS[name].__name__} arguments")
        config[name] = dict(table)
    algo = config["algo"]
    check_algo(algo, config["env"]["id"], config.get(algo, {}) if algo in ALGOS else {})
    if config["probe"]["every"] and algo not in ON_POLICY:
        raise ConfigError(
            f"probe.every = {config['probe']['every']}: the curvature probe needs an on-policy "
            f"algorithm ({', '.join(ON_POLICY)}), not {algo!r}; set it to 0"
        )
    reset = config["reset"]["policy"]
    if reset != "none" and algo == "a2c" and config.get("a2c", {}).get("use_rms_prop", True):
        raise ConfigError(
            f"reset.policy = {reset!r}: A2C's RMSprop keeps no Adam moments to reset; "
            "set a2c.use_rms_prop = false"
        )


def _couplings(config: dict[str, Any], clock: Schedule) -> dict[str, Coupled]:
    built = {}
    for name, spec in config["couplings"].items():
        if name not in COUPLINGS:
            raise ConfigError(
                f"couplings.{name}: no such coupling; allowed: {', '.join(COUPLINGS)}"
            )
        if not isinstance(spec, Mapping):
            raise ConfigError(f"couplings.{name} = {spec!r}: must be a table")
        unknown = sorted(set(spec) - set(_COUPLING_KEYS))
        if unknown:
            raise ConfigError(
                f"couplings.{name}.{unknown[0]}: unknown key; allowed: {', '.join(_COUPLING_KEYS)}"
            )
        enabled = spec.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"couplings.{name}.enabled = {enabled!r}: must be true or false")
        coupled = coupled_from_spec(spec, clock, f"couplings.{name}")
        if not enabled:
            continue
        if config["algo"] not in COUPLINGS[name]:
            raise ConfigError(
                f"couplings.{name}: algo {config['algo']!r} has no {name} to couple; "
                f"only {', '.join(COUPLINGS[name])}"
            )
        built[name] = coupled
    return built


def check_config(config: Mapping[str, Any]) -> CheckedConfig:
    """The config with defaults filled in, checked, and what it names built.

    Raises:
        ConfigError: an unknown or renamed key, a wrong type or an impossible value; the
            message names the key and what it allows.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"config = {config!r}: must be a table")
    _reject_renamed(config)
    algo_tables = {k: v for k, v in config.items() if k in ALGOS}
    out = _fill(DEFAULTS, {k: v for k, v in config.items() if k not in ALGOS}, "")
    try:
        _check_plain(out)
        _check_algo(out, algo_tables)
        clock = from_spec(out["lr"], "lr")
        curriculum = curriculum_from_spec(out["curriculum"], clock, out["steps"])
        couplings = _couplings(out, clock)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return CheckedConfig(out, {"policy": clock}, couplings, {"curriculum": curriculum})


def _kind_of_run(config: Mapping[str, Any]) -> str:
    if "env" not in config and {"model", "data"} <= set(config):
        return "gancycle"
    return "rlcycle"


def read_run_config(run_dir: str | Path, option: str) -> dict[str, Any]:
    """The ``config.toml`` of the run in ``run_dir``; ``option`` names it in errors.

    Raises:
        ConfigError: no config there, or the folder holds another package's run.
    """
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise ConfigError(f"{option} {run_dir}: no config.toml there; not a run folder")
    config = read_config(path)
    if _kind_of_run(config) == "gancycle":
        raise ConfigError(
            f"{option} {run_dir}: a gancycle run (its config has [model] and [data]); "
            "use gancycle-eval or gancycle-train --resume"
        )
    return config
