"""Drive torch optimizers and modules from the global step.

The driver owns no curve: every value comes from a pure schedule at the step it is given, so
``set(t)`` twice changes nothing and a run resumed at step ``t`` sees the same values as an
uninterrupted one. What the driver does keep is the last cycle it has seen, so that each event of
the clock fires its hooks once: a restart (reset optimizer state, take a snapshot, log a marker)
and, for a schedule that ends, its end (snapshot the last cycle; nothing to reset).

Values land on targets (:class:`~common.coupling.Target`): an optimizer param-group key
(:class:`OptimizerKey`), an attribute of submodules (:class:`ModuleAttr`) or any function
(:class:`~common.coupling.CallableTarget`).

Typical loop::

    driver = drive_optimizer(opt, from_spec(cfg["lr"]), reset="exp_avg")
    for t in range(start, steps):
        values = driver.set(t)        # before optimizer.step()
        loss.backward(); opt.step()
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from common.coupling import Coupled, Target
from common.schedules import Phase, Schedule

__all__ = [
    "ClockHook",
    "ScheduleDriver",
    "OptimizerKey",
    "ModuleAttr",
    "drive_optimizer",
    "default_reset_keys",
    "reset_optimizer_state",
    "ResetOptimizerState",
]

ClockHook = Callable[[float, Phase], None]
"""Called as ``hook(step, phase)`` once per event: a restart, or the end of the schedule."""


class ScheduleDriver:
    """Writes scheduled values to their targets and fires the clock's hooks.

    Two events, each firing its hooks once:

    - a restart, when the clock enters a new cycle: :meth:`on_restart` hooks;
    - the end of a schedule that has one (``clock.end_step`` finite: ``cosine``, ``one_cycle``,
      a ``cycle_limit``), when its last cycle is over: :meth:`on_end` hooks. The end is no
      restart: nothing starts again, so no optimizer state is reset.

    Hooks run at the first step set at or past the event, once per :meth:`set` however many
    cycles that step passed (a step past both the last restart and the end fires the end only).

    Args:
        clock: the schedule whose cycles are the restarts (usually the learning rate).
    """

    def __init__(self, clock: Schedule) -> None:
        self.clock = clock
        self.bindings: list[tuple[str, Schedule, Target]] = []
        self.restart_hooks: list[ClockHook] = []
        self.end_hooks: list[ClockHook] = []
        self.step_count = 0  # the step that step() sets next
        self._cycle = 0
        # The cycle index the clock holds for ever once it has ended. Reaching it is the end;
        # read well past end_step, it does not hang on rounding at the boundary.
        end = clock.end_step
        self._end_cycle = clock.cycle(2 * end + 1) if math.isfinite(end) else None

    def bind(self, name: str, schedule: Schedule, target: Target) -> ScheduleDriver:
        """Write ``schedule``'s value to ``target`` at every step; ``name`` labels it in logs."""
        self.bindings.append((name, schedule, target))
        return self

    def on_restart(self, hook: ClockHook) -> ScheduleDriver:
        """Call ``hook(step, phase)`` at each restart; ``phase.cycle`` is the cycle begun."""
        self.restart_hooks.append(hook)
        return self

    def on_end(self, hook: ClockHook) -> ScheduleDriver:
        """Call ``hook(step, phase)`` once when the schedule has ended; ``phase.cycle`` is then
        the number of cycles (``cycle_limit``). Never called for a schedule without an end."""
        self.end_hooks.append(hook)
        return self

    @property
    def ended(self) -> bool:
        """Whether the end hooks have fired (the clock is past its last cycle)."""
        return self._cycle == self._end_cycle

    def values(self, step: float) -> dict[str, float]:
        """The value of every binding at ``step``, without writing anything."""
        return {name: schedule.value(step) for name, schedule, _ in self.bindings}

    def set(self, step: float) -> dict[str, float]:
        """Write every value for ``step``; fire the restart or end hooks if the clock got there.

        Returns the written values by binding name, for logging.
        """
        out = {}
        for name, schedule, target in self.bindings:
            value = schedule.value(step)
            target.set(value)
            out[name] = value
        cycle = self.clock.cycle(step)
        if cycle > self._cycle:
            self._cycle = cycle
            phase = self.clock.phase(step)
            for hook in self.end_hooks if self.ended else self.restart_hooks:
                hook(step, phase)
        self.step_count = step + 1
        return out

    def step(self) -> dict[str, float]:
        """``set`` the step after the last one set (0 for a new driver)."""
        return self.set(self.step_count)

    def state_dict(self) -> dict[str, Any]:
        """The next step, the last cycle seen and whether the end fired (plain types)."""
        return {"step_count": self.step_count, "cycle": self._cycle, "ended": self.ended}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        # ``ended`` follows from ``cycle``; checkpoints written before it existed load the same.
        self.step_count = state["step_count"]
        self._cycle = int(state["cycle"])


# -- targets ---------------------------------------------------------------------------------

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


# -- optimizer state at restarts -------------------------------------------------------------


_FIRST_MOMENT = {
    torch.optim.SGD: "momentum_buffer",
    torch.optim.RMSprop: "momentum_buffer",
    torch.optim.Adam: "exp_avg",
    torch.optim.AdamW: "exp_avg",
    torch.optim.NAdam: "exp_avg",
    torch.optim.RAdam: "exp_avg",
    torch.optim.Adamax: "exp_avg",
}


def default_reset_keys(optimizer: torch.optim.Optimizer) -> tuple[str, ...]:
    """The state worth forgetting at a restart: the momentum / first moment.

    SGD and RMSprop: ``momentum_buffer`` (present only with ``momentum > 0``); the Adam family:
    ``exp_avg``. Other optimizers: name the keys yourself.
    """
    for kind, key in _FIRST_MOMENT.items():
        if type(optimizer) is kind:
            if key == "momentum_buffer" and not optimizer.defaults.get("momentum"):
                raise ValueError(
                    f"reset: {kind.__name__} without momentum keeps no first moment to reset"
                )
            return (key,)
    raise ValueError(
        f"reset: no default state to reset for {type(optimizer).__name__}; "
        "name the keys (e.g. reset = ['exp_avg'])"
    )


def reset_optimizer_state(optimizer: torch.optim.Optimizer, keys: Iterable[str]) -> int:
    """Zero the named per-parameter state tensors; ``"step"`` resets Adam's step count.

    Keys: ``momentum_buffer`` (SGD), ``exp_avg``, ``exp_avg_sq``, ``step`` (Adam/AdamW). Reset
    ``exp_avg_sq`` together with ``step``: a zeroed second moment with a large step count skips
    Adam's bias correction and makes the next updates explode. Returns the tensors reset.
    """
    keys = tuple(keys)
    count = 0
    for state in optimizer.state.values():
        for key in keys:
            if key not in state:
                continue
            value = state[key]
            if isinstance(value, torch.Tensor):
                value.zero_()
            else:
                state[key] = type(value)(0)
            count += 1
    return count


class ResetOptimizerState:
    """A restart hook that calls :func:`reset_optimizer_state`.

    Args:
        optimizer: whose state to reset.
        keys: state names to zero (default: :func:`default_reset_keys`).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, keys: Iterable[str] | None = None):
        self.optimizer = optimizer
        self.keys = tuple(keys) if keys is not None else default_reset_keys(optimizer)
        self.resets = 0

    def __call__(self, step: float, phase: Phase) -> None:
        reset_optimizer_state(self.optimizer, self.keys)
        self.resets += 1


def _reset_keys(reset: str | Sequence[str] | bool | None, optimizer) -> tuple[str, ...] | None:
    if reset is None or reset is False:
        return None
    if reset is True:
        return default_reset_keys(optimizer)
    return (reset,) if isinstance(reset, str) else tuple(reset)


def drive_optimizer(
    optimizer: torch.optim.Optimizer,
    lr: Schedule | Sequence[Schedule],
    couplings: Mapping[str, Coupled] | None = None,
    reset: str | Sequence[str] | bool | None = None,
    name: str = "lr",
) -> ScheduleDriver:
    """A driver for one optimizer: learning rate per param group, couplings, restart resets.

    Args:
        optimizer: any torch optimizer.
        lr: one schedule for every param group, or one per group (the first is the clock).
        couplings: param-group key (``momentum``, ``weight_decay``, ``betas[0]``) -> coupling.
        reset: optimizer state to zero at each restart: ``True`` for the default
            (:func:`default_reset_keys`), a key or keys, or ``None`` for none.
        name: label of the learning rate in logs (``lr/<name>``).
    """
    groups = len(optimizer.param_groups)
    schedules = [lr] * groups if isinstance(lr, Schedule) else list(lr)
    if len(schedules) != groups:
        raise ValueError(f"lr: {len(schedules)} schedules for {groups} param groups")
    driver = ScheduleDriver(schedules[0])
    for g, schedule in enumerate(schedules):
        label = name if groups == 1 or isinstance(lr, Schedule) else f"{name}/{g}"
        if isinstance(lr, Schedule):
            driver.bind(label, schedule, OptimizerKey(optimizer, "lr"))
            break
        driver.bind(label, schedule, OptimizerKey(optimizer, "lr", groups=[g]))
    for key, coupled in (couplings or {}).items():
        driver.bind(key, coupled, OptimizerKey(optimizer, key))
    keys = _reset_keys(reset, optimizer)
    if keys:
        driver.on_restart(ResetOptimizerState(optimizer, keys))
    return driver
