"""The keys of a gancycle config, what each allows, and the check that names a bad one.

A config is the TOML table a run starts from (``gancycle/configs/<name>.toml``, or any file with
the same keys). :func:`check_config` runs before anything is built, so a wrong value stops the
run at once with one line naming the key and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from common.config import ConfigError
from common.coupling import coupled_from_spec
from common.schedules import from_spec
from gancycle.data import DATASETS
from gancycle.losses import LOSSES
from gancycle.models import ARCHS

__all__ = ["RESETS", "OPTIMIZERS", "ON_NAN", "check_config", "get"]

RESETS: dict[str, Any] = {
    "none": None,
    "momentum": True,
    "all": ("exp_avg", "exp_avg_sq", "step", "momentum_buffer"),
}
"""``reset.G`` / ``reset.D``: optimizer state zeroed at each of that network's restarts, as
:func:`common.torch_driver.drive_optimizer`'s ``reset``. ``momentum`` forgets the first moment
(Adam's ``exp_avg``, SGD's momentum buffer); ``all`` also Adam's second moment and step count,
so the next update is a fresh Adam start."""
OPTIMIZERS = ("adam", "sgd")
ON_NAN = ("stop", "rollback")
DEVICES = ("auto", "cpu", "cuda")

Check = Callable[[Any], bool]


def _int(lo: int) -> tuple[Check, str]:
    return (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo,
        f"an integer >= {lo}",
    )


def _float(lo: float, hi: float, hi_open: bool = False) -> tuple[Check, str]:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return lo <= v < hi if hi_open else lo <= v <= hi

    return ok, f"a number in [{lo:g}, {hi:g}{')' if hi_open else ']'}"


def _choice(options: tuple[str, ...] | dict) -> tuple[Check, str]:
    return lambda v: v in options, "one of " + " | ".join(options)


_BOOL: tuple[Check, str] = (lambda v: isinstance(v, bool), "true or false")
_STR: tuple[Check, str] = (lambda v: isinstance(v, str), "a string")
_INF = math.inf

SCHEMA: dict[str, tuple[Check, str]] = {
    "seed": _int(0),
    "steps": _int(1),
    "device": _choice(DEVICES),
    "on_nan": _choice(ON_NAN),
    "amp": _BOOL,
    "threads": _int(0),
    "data.name": _choice(DATASETS),
    "data.root": _STR,
    "data.download": _BOOL,
    "data.batch": _int(1),
    "model.arch": _choice(ARCHS),
    "model.z_dim": _int(1),
    "loss.name": _choice(LOSSES),
    "loss.gp_weight": _float(0, _INF),
    "loss.d_steps": _int(1),
    "optim.name": _choice(OPTIMIZERS),
    "optim.beta1": _float(0, 1, hi_open=True),
    "optim.beta2": _float(0, 1, hi_open=True),
    "reset.G": _choice(RESETS),
    "reset.D": _choice(RESETS),
    "instance_noise.enabled": _BOOL,
    "label_smoothing.enabled": _BOOL,
    "ema.decay": _float(0, 1, hi_open=True),
    "snapshots.max": _int(1),
    "dynamics.every": _int(1),
    "thermostat.G": _float(0, _INF),
    "thermostat.D": _float(0, _INF),
    "rollback.factor": _float(0, 1, hi_open=True),
    "rollback.max": _int(0),
    "log.every": _int(1),
    "eval.every": _int(0),
    "eval.samples": _int(10),
    "eval.classifier_steps": _int(1),
    "eval.inception_weights": _STR,
    "checkpoint.every": _int(1),
}
"""Every key a config must have, with its check and what it allows."""

BY_ARCH = {
    "mlp": {"model.hidden": _int(1), "model.layers": _int(1)},
    "dcgan": {"model.width": _int(1)},
}
FAKE = {"data.fake_size": _int(10), "data.channels": _int(1), "data.image_size": _int(4)}


def get(config: dict[str, Any], dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; a missing key is a :class:`ConfigError`."""
    node: Any = config
    for depth, part in enumerate(dotted.split(".")):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(dotted.split(".")[:depth]) or "the top level"
            raise ConfigError(f"{dotted}: missing from the config (no {part!r} in {where})")
        node = node[part]
    return node


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check every key of a gancycle config; return it unchanged.

    Raises:
        ConfigError: a missing key or a value that is not allowed; the message names the key
            and what it allows.
    """
    schema = dict(SCHEMA)
    schema.update(BY_ARCH.get(get(config, "model.arch"), {}))
    if get(config, "data.name") == "fake":
        schema.update(FAKE)
    for key, (ok, allowed) in schema.items():
        value = get(config, key)
        if not ok(value):
            raise ConfigError(f"{key} = {value!r}: must be {allowed}")
    try:
        for net in ("G", "D"):
            clock = from_spec(get(config, f"lr.{net}"), name=f"lr.{net}")
        for name, top in (("instance_noise", _INF), ("label_smoothing", 1.0)):
            coupled = coupled_from_spec(config[name], clock, name=name)
            for bound in ("lo", "hi"):
                value = getattr(coupled, bound)
                if not 0 <= value < top:
                    raise ConfigError(f"{name}.{bound} = {value!r}: must be in [0, {top:g})")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config["label_smoothing"]["enabled"] and config["loss"]["name"] != "ns":
        raise ConfigError(
            f"label_smoothing.enabled = true: only with loss.name = 'ns' "
            f"(got {config['loss']['name']!r})"
        )
    for net in ("G", "D"):
        if config["thermostat"][net] > 0 and config["optim"]["name"] != "sgd":
            raise ConfigError(
                f"thermostat.{net} = {config['thermostat'][net]!r}: needs optim.name = 'sgd' "
                "(Adam rescales the noise; the thermostat's closed form is for SGD)"
            )
    return config
