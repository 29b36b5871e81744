"""Composite schedules: one running on another's clock (``follow``), several back to back
(``sequence``). :mod:`common.schedules` describes both and builds them from plain data.
"""

from __future__ import annotations

import copy
import math
from bisect import bisect_right
from collections.abc import Sequence as Seq
from typing import Any

from common.schedule_shapes import Phase, Schedule, check_factor, first_step_where

__all__ = ["FOLLOW_MODES", "Follow", "Sequence"]

FOLLOW_MODES = ("anti", "in")


class Follow(Schedule):
    """A schedule on another schedule's clock, with its own range.

    Its value is ``min + (max - min) * level`` in phase (``mode="in"``) and
    ``min + (max - min) * (1 - level)`` in anti-phase (``mode="anti"``), where ``level`` is the
    clock's level (1 at the clock's peak, 0 at its floor): an anti-phase follower rises exactly
    as its clock falls and drops at the clock's restarts. Its phase is the clock's (same cycle,
    position and restarts) with its own level, so a follower of a follower works as expected.

    Args:
        clock: the schedule whose clock this one runs on.
        clock_name: the clock's name in its table (what :meth:`spec` gives back).
        mode: ``"anti"`` or ``"in"``.
        max: the value at the clock's floor (anti) or peak (in).
        min: the value at the clock's peak (anti) or floor (in).
    """

    kind = "follow"

    def __init__(
        self,
        clock: Schedule,
        clock_name: str,
        mode: str = "anti",
        max: float = 1e-3,
        min: float = 0.0,
    ) -> None:
        if mode not in FOLLOW_MODES:
            raise ValueError(f"mode = {mode!r}: must be one of {' | '.join(FOLLOW_MODES)}")
        self.clock, self.clock_name, self.mode, self.max, self.min = (
            clock,
            clock_name,
            mode,
            max,
            min,
        )

    def _level(self, clock_level: float) -> float:
        return 1.0 - clock_level if self.mode == "anti" else clock_level

    def value(self, step: float) -> float:
        return self.min + (self.max - self.min) * self._level(self.clock.phase(step).level)

    def phase(self, step: float) -> Phase:
        clock = self.clock.phase(step)
        return clock._replace(level=self._level(clock.level))

    @property
    def end_step(self) -> float:
        return self.clock.end_step

    def scaled(self, factor: float) -> Follow:
        factor = check_factor(factor)
        out = copy.copy(self)  # a subclass (a coupling) stays what it is
        out.max, out.min = self.max * factor, self.min * factor
        return out

    def spec(self) -> dict[str, Any]:
        return {"follow": self.clock_name, "mode": self.mode, "max": self.max, "min": self.min}

    def __repr__(self) -> str:
        return f"Follow({self.mode} of {self.clock_name}: max={self.max!r}, min={self.min!r})"


def cycles_run(schedule: Schedule, duration: float) -> int:
    """How many cycles ``schedule`` began in its first ``duration`` (> 0) steps."""
    before = math.nextafter(duration, -math.inf)
    cycle = schedule.phase(before).cycle
    # After its last cycle a limited schedule reports cycle == cycle_limit: no new cycle.
    return cycle if before >= schedule.end_step else cycle + 1


class Sequence(Schedule):
    """Schedules back to back: part ``i`` runs from ``milestones[i-1]`` (0 for the first) on
    its own clock, which starts at 0 there (torch's SequentialLR, ignite's ConcatScheduler).

    O(1) at any step (a bisection over the milestones). The phase continues across parts: the
    cycle index counts on (the cycles all earlier parts began, plus the part's own cycle), and
    a new part starting is a restart. The sequence ends when its last part does.

    Args:
        parts: the schedules, in order.
        milestones: the steps where parts 1, 2, ... begin (``len(parts) - 1`` of them, strictly
            increasing, > 0).
    """

    kind = "sequence"

    def __init__(self, parts: Seq[Schedule], milestones: Seq[float]) -> None:
        if len(milestones) != len(parts) - 1 or not parts:
            raise ValueError("milestones: must be one fewer than parts (at least one part)")
        self.parts = tuple(parts)
        self.milestones = tuple(float(m) for m in milestones)
        self._starts = (0.0, *self.milestones)
        first = [0]
        for part, begin, end in zip(self.parts, self._starts, self.milestones, strict=False):
            first.append(first[-1] + cycles_run(part, end - begin))
        self._first_cycle = tuple(first)

    def _part(self, step: float) -> tuple[int, float]:
        """Which part runs at ``step``, and the step on that part's clock."""
        i = bisect_right(self.milestones, step)
        return i, step - self._starts[i]

    def value(self, step: float) -> float:
        i, local = self._part(step)
        return self.parts[i].value(local)

    def phase(self, step: float) -> Phase:
        i, local = self._part(step)
        phase = self.parts[i].phase(local)
        cycle = phase.cycle
        if i < len(self.milestones):
            # A part that ended before its milestone stays on its last cycle until the next
            # part begins: the next cycle (and the restart a driver sees) is the next part.
            cycle = min(cycle, self._first_cycle[i + 1] - self._first_cycle[i] - 1)
        began = i > 0 and step - 1.0 < self._starts[i]
        return phase._replace(cycle=self._first_cycle[i] + cycle, restart=phase.restart or began)

    @property
    def end_step(self) -> float:
        last, begin = self.parts[-1], self._starts[-1]
        local_end = last.end_step
        if not math.isfinite(local_end):
            return math.inf
        return first_step_where(begin + local_end, lambda t: t - begin >= local_end)

    def scaled(self, factor: float) -> Sequence:
        check_factor(factor)
        return Sequence([part.scaled(factor) for part in self.parts], self.milestones)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "sequence",
            "parts": [part.spec() for part in self.parts],
            "milestones": list(self.milestones),
        }
