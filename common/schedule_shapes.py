"""The schedule shapes: the :class:`Schedule` base class, monotone decays and cycles.

:mod:`common.schedules` describes every kind and key and builds these from plain data; this
module holds the closed forms. Composite forms (``follow``, ``sequence``) live in
:mod:`common.schedule_forms`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Phase",
    "Schedule",
    "Decay",
    "Cyclic",
    "cosine_wave",
    "triangular_wave",
    "one_cycle_wave",
]

BELOW_ONE = math.nextafter(1.0, 0.0)
"""The largest position a cycle can be at: positions live in [0, 1)."""


class Phase(NamedTuple):
    """Where the clock stands at one step.

    Attributes:
        cycle: index of the current cycle, 0 for the first (and during warmup). After the last
            cycle of a limited schedule it equals ``cycle_limit``.
        position: fraction of the current cycle already done, in [0, 1).
        level: where the value stands between the floor (0) and this cycle's peak (1). A cycle
            whose floor is its peak (``min = max``: a constant rate on a clock) keeps its wave's
            level, so couplings and curricula on its clock still move.
        restart: True when a new cycle (other than the first) began in the unit step
            ``(t-1, t]``; a driver that steps by 1 sees each restart exactly once.
    """

    cycle: int
    position: float
    level: float
    restart: bool


class Schedule(ABC):
    """Base class: subclasses implement :meth:`value`, :meth:`phase`, :meth:`spec` and
    :meth:`scaled`."""

    kind: str = ""

    @abstractmethod
    def value(self, step: float) -> float:
        """The scheduled value at ``step``."""

    @abstractmethod
    def phase(self, step: float) -> Phase:
        """Where the clock stands at ``step``."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """The plain data that :func:`common.schedules.from_spec` turns back into this
        schedule."""

    @abstractmethod
    def scaled(self, factor: float) -> Schedule:
        """The same schedule with every rate value (``max``, ``min``, ``start``) times
        ``factor`` (> 0); the clock (cycles, restarts, end) is unchanged."""

    @property
    def end_step(self) -> float:
        """The first step at which the schedule has run its course (its last cycle is over and
        the value holds for ever); ``math.inf`` for a schedule that never ends. A driver fires
        its end-of-schedule event here instead of a restart."""
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
        return hash(_frozen(self.spec()))


def _frozen(data: Any) -> Any:
    """Nested dicts and lists as tuples, so that a spec hashes."""
    if isinstance(data, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in data.items()))
    if isinstance(data, (list, tuple)):
        return tuple(_frozen(v) for v in data)
    return data


def check_factor(factor: float) -> float:
    """``factor`` as a float, if it is a finite number > 0 (what :meth:`Schedule.scaled`
    takes)."""
    if not (isinstance(factor, (int, float, np.number)) and math.isfinite(factor) and factor > 0):
        raise ValueError(f"factor = {factor!r}: must be a finite number > 0")
    return float(factor)


def first_step_where(candidate: float, ended: Callable[[float], bool]) -> float:
    """The first float near ``candidate`` at which ``ended`` holds (``ended`` monotone).

    An end step computed as a sum is off by an ulp now and then; a driver compares it with an
    exact integer step, so it is moved onto the first step where the schedule really has ended.
    """
    if not math.isfinite(candidate):
        return candidate
    while not ended(candidate):
        candidate = math.nextafter(candidate, math.inf)
    while ended(before := math.nextafter(candidate, -math.inf)):
        candidate = before
    return candidate


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
            return self.min + (self.max - self.min) * step / self.warmup
        v = self._decayed(step - self.warmup)
        return v if v > self.min else self.min

    def phase(self, step: float) -> Phase:
        span = self.max - self.min
        level = (self.value(step) - self.min) / span if span > 0 else 1.0
        position = 0.0 if step < self.warmup else min(1.0 - level, BELOW_ONE)
        return Phase(cycle=0, position=position, level=level, restart=False)

    def scaled(self, factor: float) -> Decay:
        factor = check_factor(factor)
        return Decay(
            self.kind,
            max=self.max * factor,
            min=self.min * factor,
            gamma=self.gamma,
            tau=self.tau,
            warmup=self.warmup,
        )

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


TRIANGLES = ("triangular", "triangular2", "exp_range")
"""The kinds drawn with :func:`triangular_wave`."""


class Cyclic(Schedule):
    """A schedule made of cycles, each a ``wave`` between ``min`` and that cycle's peak.

    Cycle ``k`` (from 0) lasts ``period * period_mult**k`` steps. With ``period_mult = 1`` the
    cycle and position of a step come from an exact remainder (``math.fmod``), so positions
    stay in [0, 1) at any step; otherwise cycle ``k`` starts at the geometric sum
    ``period * (period_mult**k - 1) / (period_mult - 1)`` and one logarithm finds it, with a
    boundary that the logarithm misplaces by rounding corrected against the exact starts.

    The amplitude of cycle ``k`` (how far above ``min`` its wave reaches) is
    ``max * peak_decay**k - min`` (never below 0) for most kinds, and like torch's CyclicLR,
    ``(max - min) / 2**k`` for ``triangular2`` and ``(max - min) * gamma**u`` for ``exp_range``
    (``u``: steps on the clock since the first cycle began).

    Args:
        kind: ``cosine``, ``triangular``, ``triangular2``, ``exp_range``, ``cosine_restarts``
            or ``one_cycle``.
        max: peak of the first cycle (> 0).
        min: floor (0 <= min <= max).
        period: steps in the first cycle (> 0, may be fractional).
        period_mult: cycle length multiplier (>= 1, any float; 2 = period doubling).
        peak_decay: peak multiplier per restart, in (0, 1].
        cycle_limit: number of cycles (0 = unlimited); afterwards the value holds ``min``.
        warmup: steps of linear rise from ``min`` at step 0 (>= 0).
        offset: phase shift as a fraction of the first cycle, in [0, 1): the schedule at step
            ``t`` is the unshifted one at ``t + offset * period``. A shift, not a mirror.
        pct_up: the triangles' rising fraction of each cycle, in (0, 1).
        pct_start: one_cycle only, the rising fraction, in (0, 1).
        start: one_cycle only, the value at step 0, in [min, max].
        gamma: exp_range only, the amplitude's factor per step, in (0, 1].
        warmup_prefix: True: warmup comes before the first cycle, whose clock starts at step
            ``warmup``, rising to the value the first cycle starts at. False (timm's default):
            the clock starts at step 0 and the warmup rises to ``max`` over its first steps.
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
        gamma: float = 1.0,
        warmup_prefix: bool = True,
    ) -> None:
        self.kind = kind
        self.max, self.min, self.period = max, min, period
        self.period_mult, self.peak_decay, self.cycle_limit = period_mult, peak_decay, cycle_limit
        self.warmup, self.offset, self.warmup_prefix = warmup, offset, warmup_prefix
        self.pct_up, self.pct_start, self.gamma = pct_up, pct_start, gamma
        self.start = max / 25.0 if start is None else start
        self._shift = offset * period
        # The clock's axis: u = step - lead + shift, u = 0 where the first cycle begins.
        self._lead = warmup if warmup_prefix else 0.0
        self._log_mult = math.log(period_mult)
        self._wave = self._make_wave()
        self._memo_step: float = -1.0
        self._memo: tuple[int, float, float] = (0, 0.0, 0.0)
        # A prefix warmup rises to where the (possibly shifted) first cycle begins; an overlaid
        # one (timm's) rises to max.
        k, position = self._locate(self._shift)
        self._start_level = self._wave(position)
        first = self.min + self._amplitude(k, self._shift) * self._start_level
        self._warmup_top = first if warmup_prefix else self.max

    def _make_wave(self) -> Callable[[float], float]:
        # partials, not lambdas, so that a schedule pickles (SB3 saves its lr_schedule).
        if self.kind in TRIANGLES:
            return partial(triangular_wave, pct_up=self.pct_up)
        if self.kind == "one_cycle":
            span = self.max - self.min
            start_level = (self.start - self.min) / span if span > 0 else 1.0
            return partial(one_cycle_wave, pct_start=self.pct_start, start_level=start_level)
        return cosine_wave

    # -- the clock ---------------------------------------------------------------------------

    def cycle_start(self, k: int) -> float:
        """First step of cycle ``k`` on the clock's axis (0 = where the first cycle begins,
        before any shift or warmup); ``math.inf`` past the largest float."""
        try:
            if self.period_mult == 1.0:
                return self.period * k
            # m**k is exact for an integer m, so integer boundaries land where torch has them.
            return self.period * (self.period_mult**k - 1.0) / (self.period_mult - 1.0)
        except OverflowError:
            return math.inf

    def cycle_length(self, k: int) -> float:
        return self.period * self.period_mult**k

    def cycle_peak(self, k: int) -> float:
        """The value at the top of cycle ``k``'s wave (for ``exp_range``, whose amplitude
        shrinks every step, the envelope at the cycle's start)."""
        return self.min + self._amplitude(k, self.cycle_start(k))

    def _amplitude(self, k: int, u: float) -> float:
        """How far above ``min`` the wave of cycle ``k`` reaches, at clock step ``u``."""
        span = self.max - self.min
        if self.kind == "triangular2":
            return span * 0.5**k
        if self.kind == "exp_range":
            return span * self.gamma**u
        peak = self.max * self.peak_decay**k
        return peak - self.min if peak > self.min else 0.0

    def _locate(self, u: float) -> tuple[int, float]:
        """Cycle index and position (in [0, 1)) of clock step ``u`` >= 0."""
        if self.period_mult == 1.0:
            rest = math.fmod(u, self.period)  # exact, so the position is exact at any step
            k = round((u - rest) / self.period)
            return k, min(rest / self.period, BELOW_ONE)
        k = int(math.log1p(u * (self.period_mult - 1.0) / self.period) / self._log_mult)
        if u < self.cycle_start(k):
            k -= 1
        elif u >= self.cycle_start(k + 1):
            k += 1
        return k, min((u - self.cycle_start(k)) / self.cycle_length(k), BELOW_ONE)

    def _clock(self, step: float) -> tuple[int, float, float]:
        """(cycle, position, u) of ``step`` on the clock (``step`` past a prefix warmup)."""
        if step != self._memo_step:  # value() and phase() at one step locate it once
            u = step - self._lead + self._shift
            self._memo_step, self._memo = step, (*self._locate(u), u)
        return self._memo

    def _cycle_at(self, step: float) -> int:
        """The clock's cycle index at ``step``, 0 before the clock starts."""
        if step < self._lead or step < 0:
            return 0
        return self._locate(step - self._lead + self._shift)[0]

    def _ended(self, k: int) -> bool:
        return bool(self.cycle_limit) and k >= self.cycle_limit

    def _has_ended(self, step: float) -> bool:
        return step >= self.warmup and self._ended(self._clock(step)[0])

    @property
    def end_step(self) -> float:
        if not self.cycle_limit:
            return math.inf
        last = self._lead + self.cycle_start(self.cycle_limit) - self._shift
        return first_step_where(last if last > self.warmup else self.warmup, self._has_ended)

    def cycle(self, step: float) -> int:
        if step < self.warmup and self.warmup_prefix:
            return 0
        k = self._clock(step)[0]
        return min(k, self.cycle_limit) if self.cycle_limit else k

    def _ramp(self, step: float) -> float:
        """The warmup's fraction of its rise at ``step`` (< warmup)."""
        return step / self.warmup

    def value(self, step: float) -> float:
        if step < self.warmup:
            return self.min + (self._warmup_top - self.min) * self._ramp(step)
        k, position, u = self._clock(step)
        if self._ended(k):
            return self.min
        return self.min + self._amplitude(k, u) * self._wave(position)

    def phase(self, step: float) -> Phase:
        if step < self.warmup and self.warmup_prefix:
            return Phase(0, 0.0, self._ramp(step) * self._start_level, False)
        k, position, u = self._clock(step)
        if self._ended(k):
            return Phase(self.cycle_limit, 0.0, 0.0, False)
        # A restart: cycle k began within the last unit step, (t-1, t], i.e. t-1 is in an
        # earlier cycle. Comparing cycle indices, not position * length < 1, flags it once;
        # the generous bound on position * length only spares the check later in a cycle.
        restart = k > 0 and position * self.cycle_length(k) < 2.0 and self._cycle_at(step - 1.0) < k
        if step < self.warmup:  # timm's overlaid warmup: the ramp, relative to max
            level = self._ramp(step)
        elif self._amplitude(k, u) <= 0.0 and self.max > self.min:  # decayed onto the floor
            level = 0.0
        else:
            level = self._wave(position)
        return Phase(k, position, level, restart)

    def scaled(self, factor: float) -> Cyclic:
        factor = check_factor(factor)
        return Cyclic(
            self.kind,
            max=self.max * factor,
            min=self.min * factor,
            period=self.period,
            period_mult=self.period_mult,
            peak_decay=self.peak_decay,
            cycle_limit=self.cycle_limit,
            warmup=self.warmup,
            offset=self.offset,
            pct_up=self.pct_up,
            pct_start=self.pct_start,
            start=self.start * factor,
            gamma=self.gamma,
            warmup_prefix=self.warmup_prefix,
        )

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "max": self.max, "min": self.min}
        out["period"] = self.period
        if self.kind in ("cosine_restarts", "triangular"):
            out.update(period_mult=self.period_mult, peak_decay=self.peak_decay)
        if self.kind == "exp_range":
            out["gamma"] = self.gamma
        if self.kind in ("cosine_restarts", *TRIANGLES):
            out["cycle_limit"] = self.cycle_limit
        if self.kind in TRIANGLES:
            out["pct_up"] = self.pct_up
        if self.kind == "one_cycle":
            out.update(pct_start=self.pct_start, start=self.start)
        out.update(warmup=self.warmup, offset=self.offset)
        if not self.warmup_prefix:
            out["warmup_prefix"] = False
        return out
