"""The keys of a gancycle config, what each allows, and the check that builds it.

A config is the TOML table a run starts from: a shipped ``gancycle/configs/<name>.toml``, or a
user file holding only the keys it changes, on ``base = "<shipped name or path>"`` or on the
defaults below (which are the default config, ring8). :data:`SCHEMA` declares every key;
:func:`check_config` runs before anything is trained, so a wrong value stops the run at once
with one line naming the key and what is allowed, and hands back the schedules and couplings it
built for the trainer.
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
    boolean,
    choice,
    get,
    integer,
    number,
    shared_keys,
    string,
)
from common.coupling import coupled_from_spec
from common.schedule_forms import FOLLOW_MODES
from gancycle.data import DATASETS
from gancycle.losses import LOSSES
from gancycle.models import ARCHS

__all__ = [
    "NETS",
    "RESETS",
    "OPTIMIZERS",
    "ON_NAN",
    "COUPLED",
    "OFFSETS",
    "SCHEMA",
    "check_config",
    "check_single_run",
    "get",
]

NETS = ("G", "D")
OPTIMIZERS = ("adam", "sgd")
ON_NAN = ("stop", "rollback")
COUPLED = {"instance_noise": 0.02, "label_smoothing": 0.1}
"""D's regularisers that follow D's clock, with their default ``hi``."""
OFFSETS = ("none", "even")
"""``population.offsets`` by name (or a list: one fraction of a cycle per member)."""


def _is_fraction(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


def _population_keys() -> dict[str, Key]:
    """``[population]``: what a population of these runs does beyond training each member
    (:mod:`gancycle.averaging`); the defaults train independent members, as single runs."""
    return {
        "population.average_every": integer(0, 0, "0 = never"),
        "population.pull": Key(
            1.0,
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
            "a number in (0, 1] (1 = replace each member by the mean)",
        ),
        "population.average_optimizer": boolean(False),
        "population.offsets": Key(
            "none",
            lambda v: v in OFFSETS or (isinstance(v, list) and all(map(_is_fraction, v))),
            "none | even | a list of fractions of a cycle in [0, 1), one per member",
        ),
    }


def _coupling_keys(name: str, hi: float, top: float | None) -> dict[str, Any]:
    bound = (lambda d: number(d, 0, top, hi_open=True)) if top else (lambda d: number(d, 0))
    return {
        f"{name}.enabled": boolean(False),
        f"{name}.mode": choice("anti", FOLLOW_MODES),
        f"{name}.lo": bound(0.0),
        f"{name}.hi": bound(hi),
    }


SCHEMA = Schema(
    "gancycle",
    {
        **shared_keys(
            nets=NETS, steps=12000, log_every=50, checkpoint_every=1000, snapshots=5, threads=1
        ),
        "on_nan": choice("stop", ON_NAN),
        "amp": boolean(False),
        "data.name": choice("ring8", DATASETS),
        "data.root": string("data"),
        "data.download": boolean(False),
        "data.batch": integer(256, 1),
        "data.fake_size": integer(256, 10),
        "data.channels": integer(1, 1),
        "data.image_size": integer(8, 4),
        "model.arch": choice("mlp", ARCHS),
        "model.z_dim": integer(2, 1),
        "model.hidden": integer(128, 1),
        "model.layers": integer(3, 1),
        "model.width": integer(64, 1),
        "model.pack": integer(1, 1, "1 = no packing; m: D scores m samples at once"),
        "model.g_hidden": integer(0, 0, "0 = model.hidden"),
        "model.g_layers": integer(0, 0, "0 = model.layers"),
        "model.d_hidden": integer(0, 0, "0 = model.hidden"),
        "model.d_layers": integer(0, 0, "0 = model.layers"),
        "model.g_batchnorm": boolean(False),
        "model.d_maxout": integer(0, 0, "0 = LeakyReLU(0.2) layers; k >= 2 = maxout of k pieces"),
        "model.init_std": number(0.0, 0, 1),
        "loss.name": choice("ns", LOSSES),
        "loss.gp_weight": number(0.0, 0),
        "loss.d_steps": integer(1, 1),
        "loss.simultaneous": boolean(False),
        "optim.name": choice("adam", OPTIMIZERS),
        "optim.beta1": number(0.5, 0, 1, hi_open=True),
        "optim.beta2": number(0.999, 0, 1, hi_open=True),
        "lr.G": ScheduleTable({"kind": "cosine", "max": 1e-3, "min": 1e-5, "period": 12000}),
        "lr.D": ScheduleTable({"follow": "G", "mode": "in", "max": 1e-3, "min": 1e-5}),
        **_coupling_keys("instance_noise", COUPLED["instance_noise"], None),
        **_coupling_keys("label_smoothing", COUPLED["label_smoothing"], 1.0),
        "ema.decay": number(0.999, 0, 1, hi_open=True),
        "dynamics.every": integer(1, 1),
        "thermostat.G": number(0.0, 0),
        "thermostat.D": number(0.0, 0),
        "rollback.factor": number(0.5, 0, 1, hi_open=True),
        "rollback.max": integer(3, 0),
        "eval.every": integer(2000, 0, "0 = only at the end"),
        "eval.samples": integer(2500, 10),
        "eval.classifier_steps": integer(600, 1),
        "eval.inception_weights": string(""),
        "eval.prdc": boolean(True),
        **_population_keys(),
    },
)
"""Every key of a gancycle config, with its default (ring8's value) and what it allows."""


def _check_model(cfg: Mapping[str, Any]) -> None:
    """What the model's keys allow together with the batch, and the update order with D's
    steps."""
    model, batch = cfg["model"], cfg["data"]["batch"]
    if batch % model["pack"]:
        raise ConfigError(
            f"model.pack = {model['pack']}: data.batch = {batch} must be a multiple of it "
            "(D scores packs of model.pack samples)"
        )
    if cfg["loss"]["simultaneous"] and cfg["loss"]["d_steps"] != 1:
        raise ConfigError(
            f"loss.simultaneous = true: needs loss.d_steps = 1 (got {cfg['loss']['d_steps']})"
        )
    if model["d_maxout"] == 1:
        raise ConfigError("model.d_maxout = 1: 0 (LeakyReLU layers) or k >= 2 (maxout of k pieces)")


def check_config(config: Mapping[str, Any] | CheckedConfig) -> CheckedConfig:
    """Check a gancycle config (whole, or only the keys it changes) and build it.

    Returns:
        The full config with defaults filled in, the schedules ``G`` and ``D``, and the enabled
        couplings of D's clock (``instance_noise``, ``label_smoothing``). A
        :class:`CheckedConfig` is returned as it is.

    Raises:
        ConfigError: an unknown key, or a value that is not allowed; the message names the key
            and what it allows.
    """
    if isinstance(config, CheckedConfig):
        return config
    checked = SCHEMA.checked(config)
    cfg = checked.config
    _check_model(cfg)
    if cfg["label_smoothing"]["enabled"] and cfg["loss"]["name"] != "ns":
        raise ConfigError(
            f"label_smoothing.enabled = true: only with loss.name = 'ns' "
            f"(got {cfg['loss']['name']!r})"
        )
    for net in NETS:
        if cfg["thermostat"][net] > 0 and cfg["optim"]["name"] != "sgd":
            raise ConfigError(
                f"thermostat.{net} = {cfg['thermostat'][net]!r}: needs optim.name = 'sgd' "
                "(Adam rescales the noise; the thermostat's closed form is for SGD)"
            )
    clock = checked.schedules["D"]
    try:
        couplings = {
            name: coupled_from_spec(cfg[name], clock, name=name)
            for name in COUPLED
            if cfg[name]["enabled"]
        }
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return dataclasses.replace(checked, couplings=couplings)


def check_single_run(config: Mapping[str, Any]) -> None:
    """A lone run cannot average or take a member's offset: refuse rather than ignore.

    Raises:
        ConfigError: ``population.average_every`` > 0 or ``population.offsets`` other than
            ``"none"``, naming the key and where populations train.
    """
    table = config["population"]
    where = (
        "a population (a study's --backend population, python -m gancycle.distributed, or "
        "torchrun -m gancycle.distributed)"
    )
    if table["average_every"] > 0:
        raise ConfigError(
            f"population.average_every = {table['average_every']}: averaging needs {where}; "
            "a single run has no members to average (set it to 0)"
        )
    if table["offsets"] != "none":
        raise ConfigError(
            f"population.offsets = {table['offsets']!r}: member offsets need {where}; a single "
            "run shifts its schedule with lr.G.offset"
        )
