"""Schedules: pure, closed-form functions of the global step.

A schedule answers two questions about any step ``t`` (an int or a float, 0 <= t, as large as
10**12 or beyond) in O(1) time and with no hidden state:

- ``value(t)``: the scheduled quantity (usually a learning rate);
- ``phase(t)``: where the clock stands: cycle index, position in the cycle (in [0, 1)), level
  between floor and peak, and whether a restart happened in the last unit step (each restart
  is flagged exactly once by a driver stepping by 1).

Because nothing depends on the steps that came before, resuming at step ``t`` gives exactly the
value an uninterrupted run would have had. Every schedule is built from plain data with
:func:`from_spec` (a table of named ones with :func:`build_schedules`), and
:meth:`Schedule.spec` gives that data back. ``schedule.scaled(f)`` is the same schedule with
every rate (``max``, ``min``, ``start``) times ``f``; ``schedule.end_step`` is the step where a
limited schedule has run its course (``math.inf`` if never).

Shapes (``kind``), with ``t`` counted from the end of warmup:

=================  ==========================================================================
constant           ``max`` for ever
exponential        ``max * gamma**t``, never below ``min``                     (``gamma``)
inverse_time       ``max / (1 + t/tau)``, never below ``min``                    (``tau``)
cosine             one half-cosine from ``max`` to ``min`` over ``period`` steps, then ``min``
triangular         linear ``min -> max -> min`` every ``period`` steps, rising for ``pct_up``
                   of it; peaks ``max * peak_decay**k`` (``period_mult``, ``cycle_limit``)
triangular2        CyclicLR's ``triangular2``: a triangle whose amplitude ``max - min`` halves
                   every cycle: cycle ``k`` peaks at ``min + (max - min) / 2**k``
exp_range          CyclicLR's ``exp_range``: a triangle whose amplitude is
                   ``(max - min) * gamma**t`` (it shrinks every step, not every cycle)
cosine_restarts    SGDR: half-cosines of length ``period * period_mult**k``, peak
                   ``max * peak_decay**k``, at most ``cycle_limit`` cycles (0 = unlimited)
one_cycle          half-cosine up from ``start`` to ``max`` over ``pct_start * period``, then
                   down to ``min``; ``min`` after ``period`` steps
sequence           ``parts`` back to back, part ``i`` starting at ``milestones[i-1]``
=================  ==========================================================================

Keys (numbers may be ints, floats or numpy scalars; an unknown key is refused, naming the
allowed ones):

- every shape: ``max`` (peak, > 0; default 1e-3), ``min`` (floor, in [0, max]; default 0),
  ``warmup`` (steps of linear rise from ``min``, >= 0; default 0).
- every cyclic shape (cosine to one_cycle above): ``period`` (steps in the first cycle, > 0,
  may be fractional; default 1000), ``offset`` (a shift by a fraction of the first cycle, in
  [0, 1): the value at ``t`` is the unshifted one at ``t + offset * period``),
  ``warmup_prefix`` (true, the default: the warmup comes first and the first cycle's clock
  starts when it ends; false, timm's default: the clock starts at step 0 and the warmup's
  ramp from ``min`` to ``max`` overlays the first ``warmup`` steps).
- ``period_mult`` (triangular, cosine_restarts): cycle length multiplier, >= 1, any float;
  default 1. ``peak_decay`` (triangular, cosine_restarts): in (0, 1], default 1.
- ``cycle_limit`` (triangular, triangular2, exp_range, cosine_restarts): cycles to run, an
  integer, 0 = unlimited (the default); afterwards the value holds ``min``. cosine and
  one_cycle run one cycle.
- ``pct_up`` (the triangles): the rising fraction of each cycle, in (0, 1); default 0.5.
- ``pct_start`` (one_cycle): the rising fraction, in (0, 1), default 0.3; ``start``
  (one_cycle): the value at step 0, in [min, max], default ``max / 25``.
- ``gamma`` (exponential, exp_range): in (0, 1], default 1. ``tau`` (inverse_time): > 0.

Peak or amplitude: ``peak_decay`` scales ``max`` (peaks ``max * peak_decay**k``, held at
``min`` once they reach it; timm's ``cycle_decay``), while ``triangular2`` and ``exp_range``
scale the amplitude ``max - min`` (peaks ``min + (max - min) * scale``, as torch's CyclicLR
does). With ``min = 0`` the two agree.

Coming from torch or timm (step-based schedulers, ``lr`` the optimizer's initial rate):

==============================================  ===============================================
``CyclicLR(base_lr, max_lr, step_size_up=a,     ``kind = "triangular" | "triangular2" |
step_size_down=b, mode, gamma)``                "exp_range"``, ``min = base_lr``,
                                                ``max = max_lr``, ``period = a + b``,
                                                ``pct_up = a / (a + b)``, ``gamma``
``CosineAnnealingWarmRestarts(T_0, T_mult,      ``kind = "cosine_restarts"``, ``max = lr``,
eta_min)``                                      ``period = T_0``, ``period_mult = T_mult``,
                                                ``min = eta_min``
``CosineAnnealingLR(T_max, eta_min)``           ``kind = "cosine"``, ``period = T_max`` (then
                                                holds ``min``; torch's climbs back up)
``SequentialLR(schedulers, milestones)``        ``kind = "sequence"``, ``parts``, ``milestones``
timm ``CosineLRScheduler(t_initial, lr_min,     ``kind = "cosine_restarts"``, ``period``,
cycle_mul, cycle_decay, cycle_limit, warmup_t,  ``min``, ``period_mult``, ``peak_decay``,
warmup_prefix)``                                ``cycle_limit``, ``warmup``, ``warmup_prefix``
                                                (timm's warmup starts at ``warmup_lr_init``,
                                                ours at ``min``)
==============================================  ===============================================

Sequence: ``{kind = "sequence", parts = [spec, ...], milestones = [t1, ...]}`` runs part ``i``
from ``milestones[i-1]`` (part 0 from 0) on its own clock, which starts at 0 there: for
example long exploratory cycles, then short cautious ones. ``len(milestones) = len(parts) - 1``,
strictly increasing. The phase goes on across parts: cycle indices count on (a part that has
run its course before its milestone holds its last value and cycle index until then), and each
new part is a restart. A sequence ends when its last part does. A part cannot be a follow
(it runs on its own clock), but a whole sequence can be followed.

Follow: ``{follow = "G", mode = "anti" | "in", max = ..., min = ...}`` (no ``kind``; ``mode``
defaults to anti, ``max`` to 1e-3, ``min`` to 0) runs on schedule G's clock with its own
range: ``min + (max - min) * (1 - level_G)`` in anti-phase or ``min + (max - min) * level_G``
in phase, where ``level_G`` is G's level (1 at G's peak, 0 at its floor). Its phase is G's
(same cycles, same restarts) with its own level. An anti-phase follower rises exactly as G
falls and drops at G's restarts; while G's peaks do not decay, its values correlate -1 with
G's. G must be built first: :func:`build_schedules` builds a table such as ``[lr]`` in
dependency order (a follower may follow a follower; a cycle of follows is refused).

Shift or mirror: ``offset = 0.5`` on a sawtooth like ``cosine_restarts`` is a shift, not
anti-phase: the shifted schedule starts mid-descent and restarts half a cycle after G (on
cosine_restarts the two correlate -2/pi, about -0.64, not -1). For a partner that is high
while G is low, use ``follow = "G", mode = "anti"`` (``docs/shift_vs_mirror.png``).

Example (TOML)::

    [lr.G]
    kind = "cosine_restarts"
    max = 1e-3
    min = 1e-5
    period = 2000

    [lr.D]              # the mirror of G: high while G is low, restarts with G
    follow = "G"
    mode = "anti"
    max = 1e-3
    min = 1e-5

    [lr.policy]         # explore with long cycles, then fine-tune with short, low ones
    kind = "sequence"
    milestones = [40000]
    parts = [
        {kind = "cosine_restarts", max = 3e-4, min = 1e-5, period = 10000},
        {kind = "cosine_restarts", max = 5e-5, min = 1e-6, period = 2000},
    ]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.schedule_forms import FOLLOW_MODES, Follow, Sequence
from common.schedule_shapes import (
    Cyclic,
    Decay,
    Phase,
    Schedule,
    cosine_wave,
    one_cycle_wave,
    triangular_wave,
)

__all__ = [
    "Phase",
    "Schedule",
    "Decay",
    "Cyclic",
    "Follow",
    "Sequence",
    "KINDS",
    "FOLLOW_KEYS",
    "from_spec",
    "form",
    "describe",
    "build_schedules",
    "with_offset",
    "cosine_wave",
    "triangular_wave",
    "one_cycle_wave",
]

_COMMON = {"kind", "max", "min", "warmup"}
_CYCLIC = _COMMON | {"period", "offset", "warmup_prefix"}
KINDS: dict[str, frozenset[str]] = {
    "constant": frozenset(_COMMON),
    "exponential": frozenset(_COMMON | {"gamma"}),
    "inverse_time": frozenset(_COMMON | {"tau"}),
    "cosine": frozenset(_CYCLIC),
    "triangular": frozenset(_CYCLIC | {"period_mult", "peak_decay", "cycle_limit", "pct_up"}),
    "triangular2": frozenset(_CYCLIC | {"cycle_limit", "pct_up"}),
    "exp_range": frozenset(_CYCLIC | {"gamma", "cycle_limit", "pct_up"}),
    "cosine_restarts": frozenset(_CYCLIC | {"period_mult", "peak_decay", "cycle_limit"}),
    "one_cycle": frozenset(_CYCLIC | {"pct_start", "start"}),
    "sequence": frozenset({"kind", "parts", "milestones"}),
}
"""Each kind and the keys its spec accepts."""

FOLLOW_KEYS = frozenset({"follow", "mode", "max", "min"})
"""The keys of the follow form (which has no ``kind``)."""

_FOREIGN_KEYS = {
    "base_lr": "min",
    "max_lr": "max",
    "eta_min": "min",
    "lr_min": "min",
    "step_size_up": "period and pct_up",
    "step_size_down": "period and pct_up",
    "T_0": "period",
    "T_max": "period",
    "t_initial": "period",
    "T_mult": "period_mult",
    "cycle_mul": "period_mult",
    "cycle_decay": "peak_decay",
    "warmup_t": "warmup",
}
"""torch and timm names a user may bring, and the key that says it here."""


# -- checking plain data ---------------------------------------------------------------------


def _show(raw: Any) -> str:
    """``repr(raw)``, except for an integer too long to print in one line."""
    if isinstance(raw, numbers.Integral) and abs(int(raw)).bit_length() > 64:
        return f"<an integer of {abs(int(raw)).bit_length()} bits>"
    return repr(raw)


def _fail(where: str, key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{where}{key} = {_show(value)}: must be {allowed}")


def _check(ok: bool, where: str, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise _fail(where, key, value, allowed)


def _is_number(raw: Any) -> bool:
    return isinstance(raw, numbers.Real) and not isinstance(raw, (bool, np.bool_))


def _number(spec: Mapping[str, Any], key: str, default: float, where: str) -> float:
    raw = spec.get(key, default)
    if not _is_number(raw):
        raise _fail(where, key, raw, "a number")
    try:
        value = float(raw)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise _fail(where, key, raw, "a finite number")
    return value


def _unknown_keys(spec: Mapping[str, Any], allowed: frozenset[str], what: str, where: str) -> None:
    unknown = sorted(map(str, set(spec) - allowed))
    if unknown:
        key = unknown[0]
        hint = f" (torch/timm's {key} is {_FOREIGN_KEYS[key]} here)" if key in _FOREIGN_KEYS else ""
        raise ValueError(
            f"{where}{key}: unknown key for {what}{hint}; allowed: " + ", ".join(sorted(allowed))
        )


def _range(spec: Mapping[str, Any], where: str) -> tuple[float, float]:
    """``max`` and ``min``, checked."""
    hi = _number(spec, "max", 1e-3, where)
    lo = _number(spec, "min", 0.0, where)
    _check(hi > 0, where, "max", spec.get("max"), "> 0")
    _check(lo >= 0, where, "min", spec.get("min"), ">= 0")
    _check(lo <= hi, where, "min", spec.get("min"), f"<= max ({hi:g})")
    return hi, lo


# -- spec -> schedule ------------------------------------------------------------------------


def from_spec(
    spec: Mapping[str, Any] | Schedule,
    name: str = "",
    schedules: Mapping[str, Schedule] | None = None,
) -> Schedule:
    """Build a schedule from plain data (a dict or a TOML table).

    Args:
        spec: ``{"kind": ..., "max": ..., ...}`` or a follow table ``{"follow": ..., ...}``; see
            the module docstring for kinds and keys. A :class:`Schedule` is returned as it is.
        name: where the spec came from (e.g. ``"lr.G"``), used to prefix error messages.
        schedules: the schedules a follow table may name as its clock (already built).

    Raises:
        ValueError: an unknown kind or key, an impossible value, or a follow table whose clock
            is not in ``schedules``; one line naming the key, the value and what is allowed.
    """
    if isinstance(spec, Schedule):
        return spec
    where = f"{name}." if name else ""
    if not isinstance(spec, Mapping):
        raise ValueError(f"{name or 'schedule'} = {spec!r}: must be a table with a 'kind' key")
    if "follow" in spec:
        return _follow(spec, where, schedules or {})
    kind = spec.get("kind", "constant")
    _check(
        isinstance(kind, str) and kind in KINDS,
        where,
        "kind",
        kind,
        "one of " + " | ".join(KINDS) + ' (or a table with follow = "<name>")',
    )
    _unknown_keys(spec, KINDS[kind], f"kind {kind!r}", where)
    if kind == "sequence":
        return _sequence(spec, where)

    hi, lo = _range(spec, where)
    warmup = _number(spec, "warmup", 0.0, where)
    _check(warmup >= 0, where, "warmup", spec.get("warmup"), ">= 0")
    if kind in ("constant", "exponential", "inverse_time"):
        gamma = _number(spec, "gamma", 1.0, where)
        tau = _number(spec, "tau", 1.0, where)
        _check(0 < gamma <= 1, where, "gamma", spec.get("gamma"), "in (0, 1]")
        _check(tau > 0, where, "tau", spec.get("tau"), "> 0")
        return Decay(kind, max=hi, min=lo, gamma=gamma, tau=tau, warmup=warmup)
    return Cyclic(kind, max=hi, min=lo, warmup=warmup, **_cyclic_keys(spec, kind, hi, lo, where))


def _cyclic_keys(
    spec: Mapping[str, Any], kind: str, hi: float, lo: float, where: str
) -> dict[str, Any]:
    """The checked keys of a cyclic kind, beyond ``max``, ``min`` and ``warmup``."""
    period = _number(spec, "period", 1000.0, where)
    offset = _number(spec, "offset", 0.0, where)
    mult = _number(spec, "period_mult", 1.0, where)
    decay = _number(spec, "peak_decay", 1.0, where)
    gamma = _number(spec, "gamma", 1.0, where)
    limit = spec.get("cycle_limit", 1 if kind in ("cosine", "one_cycle") else 0)
    pct_up = _number(spec, "pct_up", 0.5, where)
    pct_start = _number(spec, "pct_start", 0.3, where)
    start = _number(spec, "start", max(hi / 25.0, lo), where)
    prefix = spec.get("warmup_prefix", True)
    _check(period > 0, where, "period", spec.get("period"), "> 0")
    _check(0 <= offset < 1, where, "offset", spec.get("offset"), "in [0, 1) (fraction of a cycle)")
    _check(mult >= 1, where, "period_mult", spec.get("period_mult"), ">= 1")
    _check(0 < decay <= 1, where, "peak_decay", spec.get("peak_decay"), "in (0, 1]")
    _check(0 < gamma <= 1, where, "gamma", spec.get("gamma"), "in (0, 1]")
    _check(
        isinstance(limit, numbers.Integral)
        and not isinstance(limit, (bool, np.bool_))
        and limit >= 0,
        where,
        "cycle_limit",
        limit,
        "an integer >= 0 (0 = unlimited)",
    )
    _check(0 < pct_up < 1, where, "pct_up", spec.get("pct_up"), "in (0, 1)")
    _check(0 < pct_start < 1, where, "pct_start", spec.get("pct_start"), "in (0, 1)")
    _check(
        lo <= start <= hi, where, "start", spec.get("start"), f"in [min, max] = [{lo:g}, {hi:g}]"
    )
    _check(isinstance(prefix, (bool, np.bool_)), where, "warmup_prefix", prefix, "true or false")
    return dict(
        period=period,
        period_mult=mult,
        peak_decay=decay,
        cycle_limit=int(limit),
        offset=offset,
        pct_up=pct_up,
        pct_start=pct_start,
        start=start,
        gamma=gamma,
        warmup_prefix=bool(prefix),
    )


def _follow(spec: Mapping[str, Any], where: str, schedules: Mapping[str, Schedule]) -> Follow:
    _unknown_keys(spec, FOLLOW_KEYS, 'a follow table (it has no kind: it runs on "follow")', where)
    clock = spec["follow"]
    if not isinstance(clock, str) or clock not in schedules:
        available = ", ".join(map(str, schedules)) or "none built yet (use build_schedules)"
        raise ValueError(
            f"{where}follow = {_show(clock)}: must name a schedule of the same table; "
            f"available: {available}"
        )
    mode = spec.get("mode", "anti")
    _check(mode in FOLLOW_MODES, where, "mode", mode, " | ".join(map(repr, FOLLOW_MODES)))
    hi, lo = _range(spec, where)
    return Follow(schedules[clock], clock, mode=mode, max=hi, min=lo)


def _sequence(spec: Mapping[str, Any], where: str) -> Sequence:
    parts, milestones = spec.get("parts"), spec.get("milestones", [])
    _check(
        isinstance(parts, (list, tuple)) and len(parts) > 0,
        where,
        "parts",
        parts,
        "a list of schedule tables (at least one)",
    )
    _check(
        isinstance(milestones, (list, tuple)) and len(milestones) == len(parts) - 1,
        where,
        "milestones",
        milestones,
        f"a list of {len(parts) - 1} steps, one where each part after the first begins",
    )
    steps = [
        _number({f"milestones[{i}]": m}, f"milestones[{i}]", 0, where)
        for i, m in enumerate(milestones)
    ]
    _check(
        all(s > 0 for s in steps) and all(a < b for a, b in zip(steps, steps[1:], strict=False)),
        where,
        "milestones",
        milestones,
        "strictly increasing steps > 0",
    )
    for i, part in enumerate(parts):
        if isinstance(part, Follow) or (isinstance(part, Mapping) and "follow" in part):
            raise ValueError(
                f"{where}parts[{i}].follow: a part runs on its own clock from its milestone, "
                "so it cannot follow another schedule's; let the whole sequence be followed"
            )
    return Sequence(
        [from_spec(part, name=f"{where}parts[{i}]") for i, part in enumerate(parts)], steps
    )


def form(spec: Mapping[str, Any]) -> str:
    """A schedule spec's form: its ``kind``, or ``follow <clock>``."""
    return f"follow {spec['follow']}" if "follow" in spec else str(spec.get("kind", "?"))


def describe(spec: Mapping[str, Any]) -> str:
    """A schedule's spec in one line: its form, then its keys as written, e.g.
    ``cosine_restarts (max 0.001, min 1e-05, period 2000)`` or ``follow G (mode anti, ...)``."""
    head = form(spec)
    keys = ", ".join(
        f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in spec.items()
        if key not in ("kind", "follow")
    )
    return f"{head} ({keys})" if keys else head


def with_offset(schedule: Schedule, offset: float) -> Schedule:
    """The same cyclic schedule shifted by ``offset`` (a fraction of its first cycle)."""
    spec = schedule.spec()
    if "offset" not in spec:
        raise ValueError(f"offset: {schedule!r} has no cycle of its own to shift")
    spec["offset"] = offset
    return from_spec(spec)


# -- a table of named schedules --------------------------------------------------------------


def build_schedules(
    specs: Mapping[str, Mapping[str, Any] | Schedule], where: str = "lr"
) -> dict[str, Schedule]:
    """Build a table of named schedules (e.g. ``[lr.G]``, ``[lr.D]``), follows included.

    A follow table names another schedule of the same table as its clock; schedules are built
    in dependency order (follows of follows are fine), so the order of the table does not
    matter. The result keeps the table's order.

    Args:
        specs: name -> spec (or schedule).
        where: the table's dotted path, to prefix error messages (``"lr"`` -> ``lr.D.follow``).

    Raises:
        ValueError: a bad spec, a follow naming no schedule of the table, or a cycle of
            follows; one line naming the key.
    """
    prefix = f"{where}." if where else ""
    built: dict[str, Schedule] = {}

    def build(name: str, path: tuple[str, ...]) -> None:
        if name in built:
            return
        spec = specs[name]
        if isinstance(spec, Mapping) and "follow" in spec:
            key, clock = f"{prefix}{name}.follow", spec["follow"]
            if not isinstance(clock, str) or clock not in specs:
                others = ", ".join(str(n) for n in specs if n != name) or "none"
                raise ValueError(
                    f"{key} = {_show(clock)}: must name another schedule of "
                    f"[{where or 'the table'}]; available: {others}"
                )
            chain = (*path, name)
            if clock in chain:
                loop = " -> ".join((*chain[chain.index(clock) :], clock))
                raise ValueError(
                    f"{key} = {clock!r}: a cycle of follows ({loop}); one of them needs a "
                    "kind of its own"
                )
            build(clock, chain)
        built[name] = from_spec(specs[name], name=f"{prefix}{name}", schedules=built)

    for name in specs:
        build(name, ())
    return {name: built[name] for name in specs}
