"""Schedules: pure, closed-form functions of the global step.

A schedule answers two questions about any step ``t`` (an int or a float, 0 <= t, as large as
10**9 or beyond) in O(1) time and with no hidden state:

- ``value(t)``: the scheduled quantity (usually a learning rate);
- ``phase(t)``: where the clock stands: cycle index, position in the cycle, level between floor
  and peak, and whether a restart happened in the last unit step.

Because nothing depends on the steps that came before, resuming at step ``t`` gives exactly the
value an uninterrupted run would have had. Every schedule is built from plain data with
:func:`from_spec`, and :meth:`Schedule.spec` gives that data back.

Shapes (``kind``):

=================  ==========================================================================
constant           ``max`` for ever
exponential        ``max * gamma**t``, never below ``min``
inverse_time       ``max / (1 + t/tau)``, never below ``min``
cosine             one half-cosine from ``max`` to ``min`` over ``period`` steps, then ``min``
triangular         linear ``min -> max -> min`` every ``period`` steps (``pct_up`` rising)
cosine_restarts    SGDR: half-cosines of length ``period * period_mult**k``, peak
                   ``max * peak_decay**k``, at most ``cycle_limit`` cycles (0 = unlimited)
one_cycle          half-cosine up from ``start`` to ``max`` over ``pct_start * period``, then
                   down to ``min``; ``min`` after ``period`` steps
=================  ==========================================================================

Every shape accepts ``warmup`` (steps of linear rise from ``min`` to ``max`` before the shape
starts) and the cyclic ones accept ``offset`` (a phase shift, as a fraction of the first cycle).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Phase",
    "Schedule",
    "Decay",
    "Cyclic",
    "KINDS",
    "from_spec",
]


class Phase(NamedTuple):
    """Where the clock stands at one step.

    Attributes:
        cycle: index of the current cycle, 0 for the first (and during warmup). After the last
            cycle of a limited schedule it equals ``cycle_limit``.
        position: fraction of the current cycle already done, in [0, 1).
        level: where the value stands between the floor (0) and this cycle's peak (1).
        restart: True when a new cycle (other than the first) began in the unit step
            ``(t-1, t]``; a driver that steps by 1 sees each restart exactly once.
    """

    cycle: int
    position: float
    level: float
    restart: bool


class Schedule(ABC):
    """Base class: subclasses implement :meth:`value`, :meth:`phase` and :meth:`spec`."""

    kind: str = ""

    @abstractmethod
    def value(self, step: float) -> float:
        """The scheduled value at ``step``."""

    @abstractmethod
    def phase(self, step: float) -> Phase:
        """Where the clock stands at ``step``."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """The plain data that :func:`from_spec` turns back into this schedule."""

    @property
    def end_step(self) -> float:
        """The step at which the schedule has run its course (its last cycle is over and the
        value holds for ever); ``math.inf`` for a schedule that never ends. A driver fires its
        end-of-schedule event here instead of a restart."""
        return math.inf

    def level(self, step: float) -> float:
        return self.phase(step).level

    def cycle(self, step: float) -> int:
        """The cycle index at ``step`` (what a driver checks every step for restarts)."""
        return self.phase(step).cycle

    def values(self, steps: Any) -> np.ndarray:
        """``value`` over an array of steps (same shape), for plots and tests."""
        steps = np.asarray(steps, dtype=float)
        return np.fromiter(map(self.value, steps.ravel()), float, steps.size).reshape(steps.shape)

    def levels(self, steps: Any) -> np.ndarray:
        """``phase(t).level`` over an array of steps."""
        steps = np.asarray(steps, dtype=float)
        return np.fromiter(map(self.level, steps.ravel()), float, steps.size).reshape(steps.shape)

    def __call__(self, step: float) -> float:
        return self.value(step)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "kind")
        return f"{type(self).__name__}({self.kind}: {args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.spec().items())))


def _warmup_level(step: float, warmup: float) -> float:
    return step / warmup


class Decay(Schedule):
    """A monotone schedule with no cycles: ``constant``, ``exponential`` or ``inverse_time``.

    The whole run is cycle 0; ``level`` falls from 1 towards 0 as the value decays from ``max``
    to ``min`` and ``position`` is ``1 - level`` (how much of the decay is done).
    """

    def __init__(
        self,
        kind: str = "constant",
        max: float = 1e-3,
        min: float = 0.0,
        gamma: float = 1.0,
        tau: float = 1.0,
        warmup: float = 0.0,
    ) -> None:
        self.kind = kind
        self.max, self.min, self.gamma, self.tau, self.warmup = max, min, gamma, tau, warmup
        self._log_gamma = math.log(gamma)

    def _decayed(self, t: float) -> float:
        if self.kind == "exponential":
            # exp(t * log(gamma)) underflows cleanly to 0 at huge t instead of raising.
            return self.max * math.exp(t * self._log_gamma)
        if self.kind == "inverse_time":
            return self.max / (1.0 + t / self.tau)
        return self.max

    def value(self, step: float) -> float:
        if step < self.warmup:
            return self.min + (self.max - self.min) * _warmup_level(step, self.warmup)
        v = self._decayed(step - self.warmup)
        return v if v > self.min else self.min

    def phase(self, step: float) -> Phase:
        span = self.max - self.min
        level = (self.value(step) - self.min) / span if span > 0 else 1.0
        position = 0.0 if step < self.warmup else min(1.0 - level, math.nextafter(1.0, 0.0))
        return Phase(cycle=0, position=position, level=level, restart=False)

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "max": self.max, "min": self.min}
        if self.kind == "exponential":
            out["gamma"] = self.gamma
        if self.kind == "inverse_time":
            out["tau"] = self.tau
        out["warmup"] = self.warmup
        return out


def cosine_wave(position: float) -> float:
    """Half a cosine from 1 at position 0 down to 0 at position 1 (SGDR's shape)."""
    return 0.5 * (1.0 + math.cos(math.pi * position))


def triangular_wave(position: float, pct_up: float = 0.5) -> float:
    """0 -> 1 linearly over ``pct_up`` of the cycle, then 1 -> 0 (CyclicLR's triangle)."""
    if position <= pct_up:
        return position / pct_up
    return (1.0 - position) / (1.0 - pct_up)


def one_cycle_wave(position: float, pct_start: float, start_level: float) -> float:
    """Cosine from ``start_level`` up to 1 over ``pct_start``, then cosine from 1 down to 0."""
    if position < pct_start:
        return 1.0 - (1.0 - start_level) * cosine_wave(position / pct_start)
    return cosine_wave((position - pct_start) / (1.0 - pct_start))


class Cyclic(Schedule):
    """A schedule made of cycles, each a ``wave`` between ``min`` and that cycle's peak.

    Cycle ``k`` (from 0) lasts ``period * period_mult**k`` steps and peaks at
    ``max * peak_decay**k`` (never below ``min``). Its start is the geometric sum
    ``period * (period_mult**k - 1) / (period_mult - 1)``, so the cycle of any step is found with
    one logarithm, O(1) at any step; a boundary that the logarithm misplaces by rounding is
    corrected by comparing with the exact start of the neighbouring cycles.

    Args:
        kind: ``cosine``, ``triangular``, ``cosine_restarts`` or ``one_cycle``.
        max: peak of the first cycle (> 0).
        min: floor (0 <= min <= max).
        period: steps in the first cycle (> 0, may be fractional).
        period_mult: cycle length multiplier (>= 1, any float; 2 = period doubling).
        peak_decay: peak multiplier per restart, in (0, 1].
        cycle_limit: number of cycles (0 = unlimited); afterwards the value holds ``min``.
        warmup: steps of linear rise from ``min`` before the first cycle (>= 0), up to the value
            the first cycle starts at (``max`` unless ``offset`` shifts it).
        offset: phase shift as a fraction of the first cycle, in [0, 1): the schedule at step
            ``t`` is the unshifted one at ``t + offset * period``. 0.5 = anti-phase.
        pct_up: triangular only, the rising fraction of each cycle, in (0, 1).
        pct_start: one_cycle only, the rising fraction, in (0, 1).
        start: one_cycle only, the value at step 0, in [min, max].
    """

    def __init__(
        self,
        kind: str = "cosine_restarts",
        max: float = 1e-3,
        min: float = 0.0,
        period: float = 1000.0,
        period_mult: float = 1.0,
        peak_decay: float = 1.0,
        cycle_limit: int = 0,
        warmup: float = 0.0,
        offset: float = 0.0,
        pct_up: float = 0.5,
        pct_start: float = 0.3,
        start: float | None = None,
    ) -> None:
        self.kind = kind
        self.max, self.min, self.period = max, min, period
        self.period_mult, self.peak_decay, self.cycle_limit = period_mult, peak_decay, cycle_limit
        self.warmup, self.offset = warmup, offset
        self.pct_up, self.pct_start = pct_up, pct_start
        self.start = max / 25.0 if start is None else start
        self._shift = offset * period
        self._log_mult = math.log(period_mult)
        self._wave = self._make_wave()
        self._memo_step: float = -1.0
        self._memo: tuple[int, float] = (0, 0.0)
        # Warmup rises from min to where the (possibly shifted) first cycle begins.
        self._warmup_top = self.min + (self.max - self.min) * self._wave(
            self._locate(self._shift)[1]
        )

    def _make_wave(self) -> Callable[[float], float]:
        # partials, not lambdas, so that a schedule pickles (SB3 saves its lr_schedule).
        if self.kind == "triangular":
            return partial(triangular_wave, pct_up=self.pct_up)
        if self.kind == "one_cycle":
            span = self.max - self.min
            start_level = (self.start - self.min) / span if span > 0 else 1.0
            return partial(one_cycle_wave, pct_start=self.pct_start, start_level=start_level)
        return cosine_wave

    # -- the clock ---------------------------------------------------------------------------

    def cycle_start(self, k: int) -> float:
        """First step of cycle ``k`` on the unshifted, post-warmup axis."""
        if self.period_mult == 1.0:
            return self.period * k
        # m**k is exact for an integer m, so integer boundaries land exactly where torch has them.
        return self.period * (self.period_mult**k - 1.0) / (self.period_mult - 1.0)

    def cycle_length(self, k: int) -> float:
        return self.period * self.period_mult**k

    def cycle_peak(self, k: int) -> float:
        peak = self.max * self.peak_decay**k
        return peak if peak > self.min else self.min

    def _locate(self, u: float) -> tuple[int, float]:
        """Cycle index and position of ``u`` steps after the first cycle's start."""
        if self.period_mult == 1.0:
            k = int(u // self.period)
            return k, (u - k * self.period) / self.period
        k = int(math.log1p(u * (self.period_mult - 1.0) / self.period) / self._log_mult)
        if u < self.cycle_start(k):
            k -= 1
        elif u >= self.cycle_start(k + 1):
            k += 1
        return k, (u - self.cycle_start(k)) / self.cycle_length(k)

    @property
    def end_step(self) -> float:
        if not self.cycle_limit:
            return math.inf
        return self.warmup + self.cycle_start(self.cycle_limit) - self._shift

    def cycle(self, step: float) -> int:
        where = self._where(step)
        if where is None:
            return 0
        return min(where[0], self.cycle_limit) if self.cycle_limit else where[0]

    def _where(self, step: float) -> tuple[int, float] | None:
        """(cycle, position) of ``step``, or None during warmup."""
        if step < self.warmup:
            return None
        if step != self._memo_step:  # value() and phase() at one step locate it once
            self._memo_step, self._memo = step, self._locate(step - self.warmup + self._shift)
        return self._memo

    def value(self, step: float) -> float:
        where = self._where(step)
        if where is None:
            return self.min + (self._warmup_top - self.min) * _warmup_level(step, self.warmup)
        k, position = where
        if self.cycle_limit and k >= self.cycle_limit:
            return self.min
        return self.min + (self.cycle_peak(k) - self.min) * self._wave(position)

    def phase(self, step: float) -> Phase:
        where = self._where(step)
        if where is None:
            level = _warmup_level(step, self.warmup) * self._wave(self._locate(self._shift)[1])
            return Phase(0, 0.0, level, False)
        k, position = where
        if self.cycle_limit and k >= self.cycle_limit:
            return Phase(self.cycle_limit, 0.0, 0.0, False)
        if self.cycle_peak(k) <= self.min:  # the peak has decayed onto the floor
            level = 0.0
        else:
            level = self._wave(position)
        # A restart: cycle k began within the last unit step, (t-1, t].
        restart = k > 0 and position * self.cycle_length(k) < 1.0
        return Phase(k, position, level, restart)

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "max": self.max, "min": self.min}
        out["period"] = self.period
        if self.kind in ("cosine_restarts", "triangular"):
            out.update(
                period_mult=self.period_mult,
                peak_decay=self.peak_decay,
                cycle_limit=self.cycle_limit,
            )
        if self.kind == "triangular":
            out["pct_up"] = self.pct_up
        if self.kind == "one_cycle":
            out.update(pct_start=self.pct_start, start=self.start)
        out.update(warmup=self.warmup, offset=self.offset)
        return out


# -- spec -> schedule ------------------------------------------------------------------------

_COMMON = {"kind", "max", "min", "warmup"}
_CYCLIC = _COMMON | {"period", "offset"}
KINDS: dict[str, frozenset[str]] = {
    "constant": frozenset(_COMMON),
    "exponential": frozenset(_COMMON | {"gamma"}),
    "inverse_time": frozenset(_COMMON | {"tau"}),
    "cosine": frozenset(_CYCLIC),
    "triangular": frozenset(_CYCLIC | {"period_mult", "peak_decay", "cycle_limit", "pct_up"}),
    "cosine_restarts": frozenset(_CYCLIC | {"period_mult", "peak_decay", "cycle_limit"}),
    "one_cycle": frozenset(_CYCLIC | {"pct_start", "start"}),
}
"""Each kind and the keys its spec accepts."""


def _number(spec: Mapping[str, Any], key: str, default: float, where: str) -> float:
    raw = spec.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ValueError(f"{where}{key} = {raw!r}: must be a number")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"{where}{key} = {raw!r}: must be a finite number")
    return value


def _check(ok: bool, where: str, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{where}{key} = {value!r}: must be {allowed}")


def from_spec(spec: Mapping[str, Any] | Schedule, name: str = "") -> Schedule:
    """Build a schedule from plain data (a dict or a TOML table).

    Args:
        spec: ``{"kind": ..., "max": ..., ...}``; see the module docstring for kinds and keys.
            A :class:`Schedule` is returned as it is.
        name: where the spec came from (e.g. ``"lr.G"``), used to prefix error messages.

    Raises:
        ValueError: an unknown kind or key, or an impossible value; the message names the key,
            the value and what is allowed.
    """
    if isinstance(spec, Schedule):
        return spec
    where = f"{name}." if name else ""
    if not isinstance(spec, Mapping):
        raise ValueError(f"{name or 'schedule'} = {spec!r}: must be a table with a 'kind' key")
    kind = spec.get("kind", "constant")
    _check(kind in KINDS, where, "kind", kind, "one of " + " | ".join(KINDS))
    unknown = sorted(set(spec) - KINDS[kind])
    if unknown:
        raise ValueError(
            f"{where}{unknown[0]}: unknown key for kind {kind!r}; allowed: "
            + ", ".join(sorted(KINDS[kind]))
        )

    hi = _number(spec, "max", 1e-3, where)
    lo = _number(spec, "min", 0.0, where)
    warmup = _number(spec, "warmup", 0.0, where)
    _check(hi > 0, where, "max", spec.get("max"), "> 0")
    _check(lo >= 0, where, "min", spec.get("min"), ">= 0")
    _check(lo <= hi, where, "min", spec.get("min"), f"<= max ({hi:g})")
    _check(warmup >= 0, where, "warmup", spec.get("warmup"), ">= 0")

    if kind in ("constant", "exponential", "inverse_time"):
        gamma = _number(spec, "gamma", 1.0, where)
        tau = _number(spec, "tau", 1.0, where)
        _check(0 < gamma <= 1, where, "gamma", spec.get("gamma"), "in (0, 1]")
        _check(tau > 0, where, "tau", spec.get("tau"), "> 0")
        return Decay(kind, max=hi, min=lo, gamma=gamma, tau=tau, warmup=warmup)

    period = _number(spec, "period", 1000.0, where)
    offset = _number(spec, "offset", 0.0, where)
    mult = _number(spec, "period_mult", 1.0, where)
    decay = _number(spec, "peak_decay", 1.0, where)
    limit_raw = spec.get("cycle_limit", 1 if kind in ("cosine", "one_cycle") else 0)
    pct_up = _number(spec, "pct_up", 0.5, where)
    pct_start = _number(spec, "pct_start", 0.3, where)
    start = _number(spec, "start", max(hi / 25.0, lo), where)
    _check(period > 0, where, "period", spec.get("period"), "> 0")
    _check(0 <= offset < 1, where, "offset", spec.get("offset"), "in [0, 1) (fraction of a cycle)")
    _check(mult >= 1, where, "period_mult", spec.get("period_mult"), ">= 1")
    _check(0 < decay <= 1, where, "peak_decay", spec.get("peak_decay"), "in (0, 1]")
    _check(
        isinstance(limit_raw, int) and not isinstance(limit_raw, bool) and limit_raw >= 0,
        where,
        "cycle_limit",
        limit_raw,
        "an integer >= 0 (0 = unlimited)",
    )
    _check(0 < pct_up < 1, where, "pct_up", spec.get("pct_up"), "in (0, 1)")
    _check(0 < pct_start < 1, where, "pct_start", spec.get("pct_start"), "in (0, 1)")
    _check(
        lo <= start <= hi, where, "start", spec.get("start"), f"in [min, max] = [{lo:g}, {hi:g}]"
    )
    return Cyclic(
        kind,
        max=hi,
        min=lo,
        period=period,
        period_mult=mult,
        peak_decay=decay,
        cycle_limit=limit_raw,
        warmup=warmup,
        offset=offset,
        pct_up=pct_up,
        pct_start=pct_start,
        start=start,
    )


def with_offset(schedule: Schedule, offset: float) -> Schedule:
    """The same cyclic schedule shifted by ``offset`` (a fraction of its first cycle)."""
    spec = schedule.spec()
    if "offset" not in spec:
        raise ValueError(f"offset: kind {spec['kind']!r} has no cycle to shift")
    spec["offset"] = offset
    return from_spec(spec)
