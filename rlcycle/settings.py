"""The keys of an rlcycle config, what each allows, and the check that builds what they name.

A config is the TOML table a run starts from: a shipped ``rlcycle/configs/<name>.toml``, or a
user file holding only the keys it changes, on ``base = "<shipped name or path>"`` or on the
defaults of :data:`SCHEMA`. :func:`check_config` runs before anything is built, so a wrong value
stops the run at once with one line naming the key and what is allowed; checking also builds:
the learning-rate clock (``schedules["policy"]``), the enabled couplings on it and the
curriculum (``extras["curriculum"]``) come back in a :class:`~common.config.CheckedConfig`, and
the trainer uses those objects.

Tables named after an algorithm (``[ppo]``, ``[a2c]``, ``[dqn]``, ``[sac]``) hold SB3
constructor arguments; only the one for ``algo`` is used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from common.config import (
    RESETS,
    CheckedConfig,
    ConfigError,
    Key,
    ScheduleTable,
    Schema,
    Table,
    boolean,
    choice,
    integer,
    shared_keys,
)
from common.coupling import Coupled, coupled_from_spec
from common.schedules import Schedule
from rlcycle.algos import ALGOS, ON_POLICY, check_algo
from rlcycle.curriculum import curriculum_from_spec
from rlcycle.envs import ENVS, check_difficulty

__all__ = ["RENAMED", "RESETS", "COUPLINGS", "SCHEMA", "check_config"]

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

COUPLINGS = {"ent_coef": ON_POLICY}
"""Model attributes that may follow the clock, and the algorithms that have them."""

_COUPLING_KEYS = ("enabled", "mode", "lo", "hi")

SCHEMA = Schema(
    "rlcycle",
    {
        **shared_keys(
            nets=("policy",), steps=100_000, log_every=1_000, checkpoint_every=0, snapshots=5
        ),
        "algo": choice("ppo", ALGOS),
        "n_envs": integer(1, 1),
        "vec": choice("dummy", ("dummy", "subproc")),
        "env.id": choice("rlcycle/CartPole-v1", ENVS),
        "lr": ScheduleTable(
            {"kind": "cosine_restarts", "max": 3e-4, "min": 1e-5, "period": 25_000},
            name="policy",
        ),
        "curriculum": Table({"mode": "anti"}, "mode, lo, hi, ceiling, rise, ..."),
        "couplings": Table({}, "one table per coupled model attribute: ent_coef"),
        "probe.every": integer(0, 0, "0 = off"),
        "probe.iters": integer(20, 1),
        "probe.batch": integer(512, 1),
        "eval.difficulties": Key(
            [0.0, 0.5, 1.0],
            lambda v: isinstance(v, list) and len(v) > 0,
            "a non-empty list of difficulties in [0, 1]",
        ),
        "eval.episodes": integer(10, 1),
        "eval.every": integer(0, 0, "0 = only at the end"),
        "eval.ensemble": boolean(True),
        "eval.sampled": boolean(False),  # also score the policy with actions drawn, not its mode
        **{name: Table({}, f"{algo.__name__} arguments") for name, algo in ALGOS.items()},
    },
    renames=RENAMED,
)
"""Every key of an rlcycle config, with its default and what it allows. ``reset.policy``: the
optimizer state zeroed at each restart (see :data:`common.config.RESETS`; SAC: all three of its
optimizers)."""


def _check_algo(config: dict[str, Any]) -> dict[str, Schedule]:
    algo = config["algo"]
    scheduled = check_algo(algo, config["env"]["id"], config[algo])
    if config["probe"]["every"] and algo not in ON_POLICY:
        raise ConfigError(
            f"probe.every = {config['probe']['every']}: the curvature probe needs an on-policy "
            f"algorithm ({', '.join(ON_POLICY)}), not {algo!r}; set it to 0"
        )
    reset = config["reset"]["policy"]
    if reset != "none" and algo == "a2c" and config["a2c"].get("use_rms_prop", True):
        raise ConfigError(
            f"reset.policy = {reset!r}: A2C's RMSprop keeps no Adam moments to reset; "
            "set a2c.use_rms_prop = false"
        )
    return scheduled


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


def check_config(config: Mapping[str, Any] | CheckedConfig) -> CheckedConfig:
    """Check an rlcycle config (whole, or only the keys it changes) and build it.

    Returns:
        The full config with defaults filled in, the clock (``schedules["policy"]``), the
        enabled couplings, ``extras["curriculum"]`` and ``extras["scheduled"]`` (the
        algorithm's arguments given as schedule tables, such as PPO's ``clip_range``, built).
        A :class:`CheckedConfig` is returned as it is.

    Raises:
        ConfigError: an unknown or renamed key, a wrong type or an impossible value; the
            message names the key and what it allows.
    """
    if isinstance(config, CheckedConfig):
        return config
    checked = SCHEMA.checked(config)
    out = checked.config
    clock = checked.schedules["policy"]
    try:
        for i, d in enumerate(out["eval"]["difficulties"]):
            check_difficulty(d, f"eval.difficulties[{i}]")
        scheduled = _check_algo(out)
        curriculum = curriculum_from_spec(out["curriculum"], clock, out["steps"], out["seed"])
        couplings = _couplings(out, clock)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None
    extras = {"curriculum": curriculum, "scheduled": scheduled}
    return dataclasses.replace(checked, couplings=couplings, extras=extras)
