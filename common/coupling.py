"""Couplings: any hyperparameter follows a schedule's clock, in phase or in anti-phase.

A :class:`Coupled` value reads the ``level`` of a clock schedule (1 at a peak, 0 at the floor)
and maps it onto ``[lo, hi]``:

- ``mode="in"``:   ``lo + (hi - lo) * level``        (high while the learning rate is high)
- ``mode="anti"``: ``lo + (hi - lo) * (1 - level)``  (high while the learning rate is low)

It is the follow form of :mod:`common.schedules` (``{follow = "G", mode, max, min}``) in a
coupling's words, so it plots, logs and composes like any schedule; its phase is the clock's,
with its own level.
Where the value lands is a *target*: anything with ``set(value)``, such as a function
(:class:`CallableTarget`) or, in :mod:`common.torch_driver`, an optimizer param-group key or an
attribute of submodules. This module needs no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from common.schedule_forms import FOLLOW_MODES, Follow
from common.schedules import Schedule

__all__ = [
    "Coupled",
    "coupled_from_spec",
    "Target",
    "CallableTarget",
]


class Coupled(Follow):
    """A hyperparameter on ``clock``'s clock between ``lo`` and ``hi``: the follow form
    (:class:`~common.schedules.Follow`) in a coupling's words, ``lo``/``hi`` for ``min``/``max``.

    Args:
        clock: the schedule whose phase this value follows.
        lo: value at the clock's floor (``in``) or peak (``anti``).
        hi: value at the clock's peak (``in``) or floor (``anti``).
        mode: ``"in"`` (in phase) or ``"anti"`` (anti-phase).
    """

    kind = "coupled"

    def __init__(self, clock: Schedule, lo: float, hi: float, mode: str = "anti") -> None:
        super().__init__(clock, clock.kind, mode=mode, max=float(hi), min=float(lo))

    @property
    def lo(self) -> float:
        return self.min

    @property
    def hi(self) -> float:
        return self.max

    def spec(self) -> dict[str, Any]:
        return {"mode": self.mode, "lo": self.lo, "hi": self.hi}


def coupled_from_spec(spec: Mapping[str, Any], clock: Schedule, name: str = "") -> Coupled:
    """Build a coupling from ``{"mode": "anti", "lo": ..., "hi": ...}`` and its clock.

    Extra keys the caller understands (``target``, ``enabled``...) are ignored here.
    """
    where = f"{name}." if name else ""
    mode = spec.get("mode", "anti")
    if mode not in FOLLOW_MODES:
        raise ValueError(f"{where}mode = {mode!r}: must be one of {' | '.join(FOLLOW_MODES)}")
    bounds = []
    for key in ("lo", "hi"):
        raw = spec.get(key)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise ValueError(f"{where}{key} = {raw!r}: must be a finite number")
        bounds.append(float(raw))
    return Coupled(clock, bounds[0], bounds[1], mode)


# -- targets ---------------------------------------------------------------------------------


class Target(Protocol):
    """Something a scheduled value is written to."""

    name: str

    def set(self, value: float) -> None: ...


class CallableTarget:
    """Any function of the value, e.g. ``lambda v: env.env_method("set_difficulty", v)``."""

    def __init__(self, fn: Callable[[float], Any], name: str = "custom") -> None:
        self.fn, self.name = fn, name

    def set(self, value: float) -> None:
        self.fn(value)
