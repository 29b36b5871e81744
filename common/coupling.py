"""Couplings: any hyperparameter follows a schedule's clock, in phase or in anti-phase.

A :class:`Coupled` value reads the ``level`` of a clock schedule (1 at a peak, 0 at the floor)
and maps it onto ``[lo, hi]``:

- ``mode="in"``:   ``lo + (hi - lo) * level``        (high while the learning rate is high)
- ``mode="anti"``: ``lo + (hi - lo) * (1 - level)``  (high while the learning rate is low)

It is itself a :class:`~common.schedules.Schedule`, so it plots, logs and composes like one.
Where the value lands is a *target*: an optimizer param-group key (``lr``, ``momentum``,
``weight_decay``, ``betas[0]``), an attribute of every matching submodule (dropout ``p``,
BatchNorm ``momentum``), or any callable. :func:`make_target` builds one from a short string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import torch
from torch import nn

from common.schedules import Phase, Schedule, from_spec

__all__ = [
    "Coupled",
    "coupled_from_spec",
    "Target",
    "OptimizerKey",
    "ModuleAttr",
    "CallableTarget",
    "make_target",
]

MODES = ("in", "anti")


class Coupled(Schedule):
    """A value that follows ``clock``'s level between ``lo`` and ``hi``.

    Args:
        clock: the schedule whose phase this value follows.
        lo: value at the clock's floor (``in``) or peak (``anti``).
        hi: value at the clock's peak (``in``) or floor (``anti``).
        mode: ``"in"`` (in phase) or ``"anti"`` (anti-phase).
    """

    kind = "coupled"

    def __init__(self, clock: Schedule, lo: float, hi: float, mode: str = "anti") -> None:
        if mode not in MODES:
            raise ValueError(f"mode = {mode!r}: must be one of {' | '.join(MODES)}")
        self.clock, self.lo, self.hi, self.mode = clock, float(lo), float(hi), mode

    def value(self, step: float) -> float:
        level = self.clock.phase(step).level
        if self.mode == "anti":
            level = 1.0 - level
        return self.lo + (self.hi - self.lo) * level

    def phase(self, step: float) -> Phase:
        return self.clock.phase(step)

    def spec(self) -> dict[str, Any]:
        return {"mode": self.mode, "lo": self.lo, "hi": self.hi}


def coupled_from_spec(spec: Mapping[str, Any], clock: Schedule, name: str = "") -> Coupled:
    """Build a coupling from ``{"mode": "anti", "lo": ..., "hi": ...}`` and its clock.

    Extra keys the caller understands (``target``, ``enabled``...) are ignored here.
    """
    where = f"{name}." if name else ""
    mode = spec.get("mode", "anti")
    if mode not in MODES:
        raise ValueError(f"{where}mode = {mode!r}: must be one of {' | '.join(MODES)}")
    bounds = []
    for key in ("lo", "hi"):
        raw = spec.get(key)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise ValueError(f"{where}{key} = {raw!r}: must be a finite number")
        bounds.append(float(raw))
    return Coupled(from_spec(clock), bounds[0], bounds[1], mode)


# -- targets ---------------------------------------------------------------------------------


class Target(Protocol):
    """Something a scheduled value is written to."""

    name: str

    def set(self, value: float) -> None: ...


_INDEXED = re.compile(r"^(\w+)\[(\d+)\]$")


class OptimizerKey:
    """A param-group key of a torch optimizer, e.g. ``lr``, ``weight_decay``, ``betas[0]``.

    Args:
        optimizer: the optimizer whose param groups receive the value.
        key: the param-group key; ``name[i]`` sets element ``i`` of a tuple (Adam's betas).
        groups: indices of the param groups to set (default: all).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, key: str, groups: Iterable[int] | None = None
    ) -> None:
        self.optimizer, self.key = optimizer, key
        self.groups = list(range(len(optimizer.param_groups))) if groups is None else list(groups)
        match = _INDEXED.match(key)
        self._field, self._index = (match[1], int(match[2])) if match else (key, None)
        for g in self.groups:
            if g >= len(optimizer.param_groups):
                raise ValueError(
                    f"groups = {self.groups}: optimizer has {len(optimizer.param_groups)} groups"
                )
            group = optimizer.param_groups[g]
            if self._field not in group:
                raise ValueError(
                    f"{key}: {type(optimizer).__name__} param groups have no {self._field!r}; "
                    "allowed: " + ", ".join(k for k in group if k != "params")
                )
        self.name = key

    def set(self, value: float) -> None:
        for g in self.groups:
            group = self.optimizer.param_groups[g]
            if self._index is None and type(group[self._field]) is float:
                group[self._field] = value  # the common case, kept cheap: it runs every step
            elif self._index is None:
                current = group[self._field]
                if isinstance(current, torch.Tensor):  # tensor lr (capturable optimizers)
                    current.fill_(value)
                else:
                    group[self._field] = value
            else:
                items = list(group[self._field])
                items[self._index] = value
                group[self._field] = tuple(items)


class ModuleAttr:
    """An attribute set on every submodule of the given types, e.g. dropout ``p``.

    Args:
        module: the root module to search.
        attr: the attribute name (``p`` for dropout, ``momentum`` for BatchNorm).
        types: submodule classes that receive it.
    """

    def __init__(self, module: nn.Module, attr: str, types: tuple[type, ...]) -> None:
        self.attr = attr
        self.modules = [m for m in module.modules() if isinstance(m, types)]
        if not self.modules:
            names = ", ".join(t.__name__ for t in types)
            raise ValueError(f"{attr}: the model has no {names} submodule to set it on")
        self.name = f"{types[0].__name__.lower()}.{attr}"

    def set(self, value: float) -> None:
        for m in self.modules:
            setattr(m, self.attr, value)


class CallableTarget:
    """Any function of the value, e.g. ``lambda v: env.env_method("set_difficulty", v)``."""

    def __init__(self, fn: Callable[[float], Any], name: str = "custom") -> None:
        self.fn, self.name = fn, name

    def set(self, value: float) -> None:
        self.fn(value)


_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_BATCHNORM = (nn.modules.batchnorm._BatchNorm,)


def make_target(
    where: str,
    optimizer: torch.optim.Optimizer | None = None,
    module: nn.Module | None = None,
) -> Target:
    """A target from a short string.

    ``"dropout"`` (every dropout's ``p``), ``"bn_momentum"`` (every BatchNorm's ``momentum``),
    anything else is an optimizer param-group key (``"lr"``, ``"momentum"``, ``"weight_decay"``,
    ``"betas[0]"``).
    """
    if where in ("dropout", "bn_momentum"):
        if module is None:
            raise ValueError(f"target = {where!r}: needs a model")
        if where == "dropout":
            return ModuleAttr(module, "p", _DROPOUT)
        return ModuleAttr(module, "momentum", _BATCHNORM)
    if optimizer is None:
        raise ValueError(f"target = {where!r}: needs an optimizer")
    return OptimizerKey(optimizer, where)
