"""Periodic averaging and phase offsets in a population; the averaged generator, scored.

The ``[population]`` table of a gancycle config (shared by every member of a population)::

    average_every = 0        # H: after every H-th update, members move toward their mean (0: never)
    pull = 1.0               # 1: each member becomes the mean; 0 < pull < 1: moves that fraction
    average_optimizer = false  # also the optimizer's moments (Adam's exp_avg and exp_avg_sq,
                               # SGD's momentum buffer); step counts stay each member's own
    offsets = "none"         # "even": member k's schedules start k/N of a cycle later in their
                             # wave; or a list of fractions, one per member

Averaging (:func:`average_members`) comes after the optimizer step of every H-th update, for G
and D alike. Members that stopped on a NaN/Inf loss are left out of the mean and left as they
are. The EMA stays each member's own: it smooths that member's trajectory (the averaged points
included), as a single run's EMA does, so a member's ``ema`` means what it means in a run
folder; the population's averaged model is :func:`mean_generator` (of the weights or of the
EMAs), a plain :mod:`gancycle.models` generator scored by :func:`evaluate_generator` as a run
scores its own.

Offsets are resolved into each member's config (:func:`resolve_offsets`): member ``k``'s
``lr.G.offset`` (and ``lr.D.offset``, when D has a cycle of its own) becomes
``(offset + extra_k) mod 1``, and its ``population.offsets`` becomes ``"none"``. A schedule in
the follow form has no offset of its own and follows its clock's shifted phase (D in anti-phase
to a shifted G stays in anti-phase); the couplings on D's clock follow it too. So a member's
config says exactly what it ran, and resolving twice changes nothing.

Across processes (:mod:`gancycle.distributed`) the mean is over every member of every rank:
each rank's :class:`Population` holds a block of members, and its ``gather`` (here the identity)
becomes an ``all_reduce`` that hands every rank the whole population's rows. The mean is then
computed from the same rows in the same order as in one process, so both give the same bits.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from common.config import CheckedConfig, ConfigError
from common.schedules import KINDS
from gancycle.metrics import evaluate
from gancycle.sampling import evaluation_draws, generate
from gancycle.settings import NETS, check_config

if TYPE_CHECKING:
    from gancycle.population import Population

__all__ = [
    "Averaging",
    "Gather",
    "local_gather",
    "member_offsets",
    "resolve_offsets",
    "pull_toward_mean",
    "average_members",
    "mean_generator",
    "evaluate_generator",
]

Gather = Callable[[torch.Tensor], torch.Tensor]
"""Rows of this process's members, shape (n, ...), to the whole population's, (N, ...)."""


def local_gather(rows: torch.Tensor) -> torch.Tensor:
    """One process holds the whole population."""
    return rows


@dataclasses.dataclass(frozen=True)
class Averaging:
    """``[population]``'s averaging keys (see the module docstring)."""

    every: int = 0
    pull: float = 1.0
    optimizer: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Averaging:
        table = config["population"]
        return cls(table["average_every"], float(table["pull"]), table["average_optimizer"])

    def due(self, done: int) -> bool:
        """Whether to average after update number ``done`` (1-based)."""
        return self.every > 0 and done % self.every == 0


# -- phase offsets ---------------------------------------------------------------------------


def member_offsets(offsets: str | Sequence[float], members: int) -> list[float]:
    """The extra phase offset of each of ``members`` members (fractions of a cycle)."""
    if offsets == "none":
        return [0.0] * members
    if offsets == "even":
        return [k / members for k in range(members)]
    if len(offsets) != members:
        raise ConfigError(
            f"population.offsets: {len(offsets)} offsets for {members} members; give one per "
            "member, or 'even' or 'none'"
        )
    return [float(x) for x in offsets]


def resolve_offsets(checked: Sequence[CheckedConfig]) -> list[CheckedConfig]:
    """Each member's config with its extra phase offset written into its schedules.

    ``checked``: the whole population's members, in order, sharing ``[population]``. Members
    whose extra offset is zero come back as they were, and so do members whose offsets are
    already ``"none"``: a resumed member's config holds the offsets it was resolved to.

    Raises:
        ConfigError: offsets that do not fit the members, members asking for different
            offsets, or a member whose schedules have no cycle to shift (``constant``,
            ``sequence``, ...).
    """
    asked = {repr(m.config["population"]["offsets"]) for m in checked} - {repr("none")}
    if not asked:
        return list(checked)
    if len(asked) > 1:
        raise ConfigError(f"population.offsets: members ask for {', '.join(sorted(asked))}")
    offsets = next(
        m.config["population"]["offsets"]
        for m in checked
        if m.config["population"]["offsets"] != "none"
    )
    out = []
    for k, (member, extra) in enumerate(
        zip(checked, member_offsets(offsets, len(checked)), strict=True)
    ):
        if member.config["population"]["offsets"] == "none":
            out.append(member)
            continue
        config = copy.deepcopy(member.config)
        config["population"]["offsets"] = "none"
        if extra != 0.0:
            for net in NETS:
                _shift(config["lr"][net], extra, f"member {k}: lr.{net}")
        out.append(check_config(config))
    return out


def _shift(spec: dict[str, Any], extra: float, where: str) -> None:
    if "follow" in spec:
        return  # follows its clock, whose phase is shifted
    kind = spec.get("kind")
    if "offset" not in KINDS.get(kind, ()):
        raise ConfigError(
            f"population.offsets: {where} (kind {kind!r}) has no cycle to shift; give it a "
            "cyclic kind, or population.offsets = 'none'"
        )
    spec["offset"] = (float(spec.get("offset", 0.0)) + extra) % 1.0


# -- averaging -------------------------------------------------------------------------------


def _rows_where(mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``rows`` where ``mask`` (n,) holds, zero elsewhere (a stopped member's NaN included)."""
    mask = mask.view(mask.shape + (1,) * (rows.dim() - 1))
    return torch.where(mask, rows, torch.zeros((), dtype=rows.dtype, device=rows.device))


def _mean(rows: torch.Tensor, running: torch.Tensor, gather: Gather) -> torch.Tensor | None:
    """The mean over the running members of the whole population, or None if none runs."""
    every = gather(_rows_where(running, rows))
    count = gather(running.to(rows.dtype)).sum()
    if float(count) == 0:
        return None
    return every.sum(0) / count


@torch.no_grad()
def pull_toward_mean(
    rows: torch.Tensor, running: torch.Tensor, pull: float, gather: Gather = local_gather
) -> None:
    """Move each running member's row of ``rows`` (n, ...) the fraction ``pull`` toward the
    running members' mean, in place (``pull = 1``: every running row becomes the mean exactly).
    """
    mean = _mean(rows, running, gather)
    if mean is None:
        return
    if bool(running.all()):
        rows.lerp_(mean.expand_as(rows), pull)
    else:
        rows[running] = rows[running].lerp(mean.expand_as(rows[running]), pull)


def average_members(population: Population) -> None:
    """Average the running members' G and D (and with ``average_optimizer`` their optimizer
    moments), as ``population.averaging`` says; the EMA stays each member's own."""
    averaging, running = population.averaging, ~population.stopped
    for net in NETS:
        tensors = [population.nets[net].data]
        if averaging.optimizer:
            opt = population.opts[net]
            tensors += [t for key in opt.state_keys if key != "step" for t in opt.state[key]]
        for tensor in tensors:
            pull_toward_mean(tensor, running, averaging.pull, population.gather)


# -- the averaged model ----------------------------------------------------------------------


@torch.no_grad()
def mean_generator(population: Population, which: str = "G") -> nn.Module:
    """The mean of the running members' generators (``which = "G"``) or of their EMAs
    (``"ema"``), as one :mod:`gancycle.models` generator on the population's device.

    Across processes every rank must call it (the mean needs every rank's rows).
    """
    if which not in ("G", "ema"):
        raise ValueError(f"which = {which!r}: must be G | ema")
    if population.G.batchnorms:
        raise ValueError("mean_generator: a BatchNorm G's running statistics have no mean yet")
    rows = population.G.data if which == "G" else population.ema
    mean = _mean(rows, ~population.stopped, population.gather)
    if mean is None:
        raise ValueError("mean_generator: every member has stopped")
    return population.G.member_module(0, mean.unsqueeze(0).expand_as(rows).contiguous())


def evaluate_generator(generator: nn.Module, config: Mapping[str, Any]) -> dict[str, float]:
    """Score one 2D generator as a single run with ``config`` scores its own G at the end
    (:meth:`gancycle.trainer.GanTrainer.evaluate`: the same fixed noise and real draw, from the
    config's seed), with :func:`gancycle.metrics.evaluate`."""
    from gancycle.data import load_data

    data = load_data(config["data"])
    weight = next(generator.parameters())
    z, real = evaluation_draws(  # a run draws in its dtype
        data, config["eval"]["samples"], int(config["model"]["z_dim"]), config["seed"], weight.dtype
    )

    def sample(n: int) -> torch.Tensor:
        return generate(generator, z[:n].to(weight.device))

    with torch.no_grad():
        return evaluate(sample, real, data, with_prdc=config["eval"]["prdc"])
