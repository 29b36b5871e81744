"""A population: N GAN runs of one architecture trained as one batched model on one device.

The MLP pair (on ring8, grid25) and the DCGAN pair (on the image sets) batch their layers by
hand (:mod:`gancycle.batched_models`: ``baddbmm`` for linear layers, grouped convolutions for
convolutions, per-member BatchNorm; why there, rather than ``vmap``).

Each member is a run of its own: its own config (seed, ``[lr.G]`` and ``[lr.D]`` schedules of any
kind, ``[reset]``, ``optim.beta1``, instance noise and label smoothing, ``ema.decay``), its own
data stream and its own restarts. What the members share is what makes them one batched model:
the data set, the batch size, the architecture, the loss and ``d_steps``, the optimizer's kind
and ``beta2``.

Member ``k`` follows the single run of its config (:class:`gancycle.trainer.GanTrainer`) step
for step: weights are initialised as a single run initialises them (``torch.manual_seed(seed)``,
then :func:`~gancycle.models.build_models`), every random draw of training comes from the
member's own ``torch.Generator`` seeded with its seed, in the single trainer's order (per D step:
real batch, instance noise on it, z, instance noise on the fakes, the gradient penalty's mixing
weights; then the instance noise of G's step), every schedule is the member's own schedule object
driven by its own :class:`~common.torch_driver.ScheduleDriver`, and the batched optimizers make
each member's update as ``torch.optim`` would (:mod:`common.batched_optim`). In float64 a member
stays within rounding of the single run (``tests/test_population.py``).

One step (:meth:`Population.train_step`), for all members at once::

    each member: lr of G and D, coupled values, restart resets (its own drivers)
    each member draws its batch, z and noise from its own generator
    D: minimise loss_D per member (d_steps times); G: minimise loss_G per member; EMA
    (with model.pack = m, D scores packs of m samples, grouped as the single trainer groups them)

A member whose loss (or, where :attr:`Population.measure` asks for them, gradient norm or update
energy) turns NaN or Inf is stopped alone (its update is not applied); the others go on. Each
member counts its own steps: members may stop, be rolled back or end at other steps than the
rest. Run folders, snapshots, evaluation, ``on_nan`` and resume per member are
:mod:`gancycle.population_runs`.

The shared ``[population]`` table adds what only a population can do (:mod:`gancycle.averaging`):
phase offsets between members (resolved into each member's schedules when the population is
built) and periodic averaging of G and D (optionally of the optimizer's moments) after every
``population.average_every``-th update, stopped members left out.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from common.batched_optim import BatchedAdam, BatchedOptimizer, BatchedSGD
from common.config import CheckedConfig, ConfigError, get
from common.coupling import CallableTarget
from common.runs import resolve_device
from common.schedules import Schedule
from common.torch_driver import ScheduleDriver, default_reset_keys
from gancycle.averaging import (
    Averaging,
    Gather,
    average_members,
    local_gather,
    resolve_offsets,
)
from gancycle.batched_models import BatchedNet, batched
from gancycle.data import MIXTURES, load_data
from gancycle.models import build_models, generate_in_packs, pack_samples
from gancycle.settings import COUPLED, RESETS, check_config
from gancycle.trainer import Divergence

__all__ = [
    "Population",
    "Member",
    "Event",
    "SHARED",
    "NETS",
    "check_members",
    "member_problem",
    "seeded_members",
]

NETS = ("G", "D")

SHARED = (
    "data.name",
    "data.root",
    "data.download",
    "data.batch",
    "data.fake_size",
    "data.channels",
    "data.image_size",
    "model",
    "loss.name",
    "loss.gp_weight",
    "loss.d_steps",
    "loss.simultaneous",
    "optim.name",
    "optim.beta2",
    "population",
    "amp",
)
"""Config keys every member must share (they make the members one batched model, trained on
one copy of the data)."""


@dataclass(frozen=True)
class Event:
    """A clock event of one member's network: ``kind`` is ``restart`` or ``end``."""

    step: int
    net: str
    kind: str
    cycle: int


@dataclass
class Member:
    """The per-member, plain-Python side of a population: config, clock, draws, record.

    Attributes:
        index: the member's row in every stacked tensor.
        config: its checked config.
        generator: its ``torch.Generator``, seeded with ``config["seed"]``: every draw of
            training, in the single trainer's order.
        schedules: ``{"G": Schedule, "D": Schedule}`` (learning rates).
        drivers: one :class:`ScheduleDriver` per network; D's also drives the couplings.
        lr: the learning rates its drivers wrote last, by network.
        coupled: instance noise std and label smoothing its D driver wrote last.
        events: restarts and ends, in order.
        restarted: the networks whose cycle restarted at the step set last (their resets due).
        step: updates it has made.
        diverged: the NaN/Inf that stopped it (a loss; a gradient norm or update energy where
            measured), or ``None``.
    """

    index: int
    config: dict[str, Any]
    generator: torch.Generator
    schedules: dict[str, Schedule]
    drivers: dict[str, ScheduleDriver] = field(default_factory=dict)
    lr: dict[str, float] = field(default_factory=dict)
    coupled: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUPLED, 0.0))
    events: list[Event] = field(default_factory=list)
    restarted: set[str] = field(default_factory=set)
    step: int = 0
    diverged: Divergence | None = None


def _check_members(
    configs: Sequence[Mapping[str, Any] | CheckedConfig],
) -> list[CheckedConfig]:
    """Each member's config checked alone, then what they must share and what is not here yet."""
    if not configs:
        raise ConfigError("population: no members")
    checked = []
    for k, config in enumerate(configs):
        try:
            checked.append(check_config(config))
        except ConfigError as e:
            raise ConfigError(f"member {k}: {e}") from None
    first = checked[0].config
    for k, config in enumerate((c.config for c in checked[1:]), start=1):
        for key in SHARED:
            if get(config, key) != get(first, key):
                raise ConfigError(
                    f"member {k}: {key} = {get(config, key)!r} differs from member 0's "
                    f"{get(first, key)!r}; the members of a population share {', '.join(SHARED)}"
                )
    for k, config in enumerate(c.config for c in checked):
        problem = member_problem(config)
        if problem is not None:
            raise ConfigError(f"member {k}: {problem}")
    return checked


def seeded_members(config: Mapping[str, Any], members: int) -> list[dict[str, Any]]:
    """``members`` copies of ``config`` with seeds ``seed, seed + 1, ...``."""
    out = []
    for k in range(members):
        member = copy.deepcopy(dict(config))
        member["seed"] = config["seed"] + k
        out.append(member)
    return out


def member_problem(config: Mapping[str, Any]) -> str | None:
    """Why a (full, checked) config cannot be a population's member yet, or ``None``."""
    if (config["model"]["arch"] == "mlp") != (config["data"]["name"] in MIXTURES):
        return (
            "a population trains model.arch = 'mlp' on ring8 or grid25, or model.arch = 'dcgan' "
            "on images"
        )
    for net in NETS:
        if config["thermostat"][net] > 0:
            return f"thermostat.{net}: not in a population yet"
    if config["population"]["average_every"] > 0:
        batchnorm = (
            "model.arch = 'dcgan'"  # its G always has BatchNorm
            if config["model"]["arch"] == "dcgan"
            else "model.g_batchnorm = true"
            if config["model"]["g_batchnorm"]
            else None
        )
        if batchnorm is not None:
            return (
                f"population.average_every = {config['population']['average_every']}: not "
                f"with {batchnorm} (BatchNorm's running statistics have no mean here yet)"
            )
    return None


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Draws and modules in ``dtype``, as a single run under that default dtype makes them."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _backward(loss: torch.Tensor) -> None:
    with warnings.catch_warnings():
        # Member-major views into one buffer are not dense tensors; autograd says so once.
        warnings.filterwarnings("ignore", message="grad and param do not obey")
        loss.backward()


def check_members(
    configs: Sequence[Mapping[str, Any] | CheckedConfig],
) -> list[CheckedConfig]:
    """The members of a whole population checked (alone, then what they share), and each
    one's phase offset resolved into its schedules (:func:`gancycle.averaging.resolve_offsets`).
    """
    return resolve_offsets(_check_members(configs))


class Population:
    """N GAN runs of one architecture on one device (see the module docstring).

    Args:
        configs: one gancycle config per member (each as ``gancycle-train`` would take it:
            whole, only the keys it changes, or checked).
        device: where to train (default: member 0's ``device``, ``auto`` picking CUDA if any).
        dtype: parameters' dtype (default: torch's default dtype, as a single run uses).

    Attributes:
        G, D: the batched generator and discriminator
            (:class:`~gancycle.batched_models.BatchedNet`).
        opts: their batched optimizers, by network.
        ema: the EMA of every member's G, same layout as ``G.data``.
        members: the per-member side (:class:`Member`).
        stopped: members that sit the next steps out (bool, (N,)): diverged, or (set by a
            caller such as :mod:`gancycle.population_runs`) ended or waiting.
        measure: members whose gradient norm and update energy the next step measures (bool,
            (N,)), or ``None`` (none: the default).
        records: ``(tag, values per member)`` of the last step, as the single trainer logs them
            (``loss/<net>``, ``D/real``, ``D/fake``, measured ``dynamics/...``).
        step: updates done by :meth:`advance`.
        averaging: ``[population]``'s averaging settings (:class:`~gancycle.averaging.Averaging`).
        gather: this process's members' rows -> the whole population's (the identity in one
            process; :mod:`gancycle.distributed` sets an ``all_reduce``).
    """

    def __init__(
        self,
        configs: Sequence[Mapping[str, Any] | CheckedConfig],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.checked = check_members(configs)
        self.configs = [checked.config for checked in self.checked]
        first = self.configs[0]
        self.device = torch.device(device) if device else resolve_device(first["device"])
        self.dtype = dtype or torch.get_default_dtype()
        self.size = len(self.configs)
        if first["threads"] > 0:
            torch.set_num_threads(first["threads"])  # as the single trainer does
        self.data = load_data(first["data"]).to(self.device)
        self.batch, self.z_dim = int(first["data"]["batch"]), int(first["model"]["z_dim"])
        self.pack = int(first["model"]["pack"])
        self.simultaneous = bool(first["loss"]["simultaneous"])
        self.loss_name = first["loss"]["name"]
        self.gp_weight, self.d_steps = float(first["loss"]["gp_weight"]), first["loss"]["d_steps"]

        self.G, self.D = self._build_models()
        self.nets = {"G": self.G, "D": self.D}
        self.opts = {net: self._optimizer(net) for net in NETS}
        self.ema = self.G.data.detach().clone()
        decay = torch.tensor([c["ema"]["decay"] for c in self.configs], dtype=torch.float64)
        self._ema_weight = (1.0 - decay).to(self.device, self.dtype).unsqueeze(1)
        self._smoothing = torch.zeros(self.size, 1, dtype=self.dtype, device=self.device)
        self.members = [self._member(k, c) for k, c in enumerate(self.checked)]
        self._reset_keys = {net: [self._keys(k, net) for k in range(self.size)] for net in NETS}
        self.stopped = torch.zeros(self.size, dtype=torch.bool, device=self.device)
        for norm in self.G.batchnorms.values():
            norm.frozen = self.stopped  # updated in place when a member stops
        self.measure: torch.Tensor | None = None
        self.records: list[tuple[str, torch.Tensor]] = []
        self.step = 0
        self.last_losses: dict[str, torch.Tensor] = {}
        self.averaging = Averaging.from_config(first)
        self.gather: Gather = local_gather

    # -- building ---------------------------------------------------------------------------

    def _build_models(self) -> tuple[BatchedNet, BatchedNet]:
        """Each member's G and D initialised exactly as its single run initialises them."""
        pairs = []
        with torch.random.fork_rng(devices=[]), _default_dtype(self.dtype):
            for config in self.configs:
                torch.manual_seed(config["seed"])  # what seed_everything does for torch
                G, D = build_models(config["model"], self.data.shape)
                pairs.append((G.to(self.device), D.to(self.device)))
        return batched([G for G, _ in pairs]), batched([D for _, D in pairs])

    def _optimizer(self, net: str) -> BatchedOptimizer:
        params, cfg = [self.nets[net].data], self.configs[0]["optim"]
        if cfg["name"] == "sgd":
            opt: BatchedOptimizer = BatchedSGD(params, self.size, lr=0.0)
        else:
            opt = BatchedAdam(params, self.size, lr=0.0, betas=(0.9, cfg["beta2"]))
        opt.set(beta1=[c["optim"]["beta1"] for c in self.configs])
        return opt

    def _member(self, k: int, checked: CheckedConfig) -> Member:
        """Member ``k``'s generator, and drivers of the schedules and couplings its check built."""
        config = checked.config
        generator = torch.Generator(self.device).manual_seed(config["seed"])
        schedules = {net: checked.schedules[net] for net in NETS}
        member = Member(k, config, generator, schedules)
        self._drive(member, schedules)
        return member

    def _drive(self, member: Member, schedules: Mapping[str, Schedule]) -> None:
        """New drivers of ``schedules`` (and D's couplings) for ``member``, at step 0."""
        member.schedules = dict(schedules)
        for net in NETS:
            driver = ScheduleDriver(schedules[net])
            driver.bind(net, schedules[net], CallableTarget(_setter(member.lr, net), net))
            driver.on_restart(_recorder(member, net, "restart"))
            driver.on_end(_recorder(member, net, "end"))
            member.drivers[net] = driver
        for name, coupling in self.checked[member.index].couplings.items():
            target = CallableTarget(_setter(member.coupled, name), name)
            member.drivers["D"].bind(name, coupling, target)

    def set_member_schedules(self, k: int, schedules: Mapping[str, Schedule]) -> None:
        """Member ``k`` follows ``schedules`` from now on (a rollback's lowered rates): new
        drivers at step 0 (load their state to go on from a step; hooks must be added again)."""
        self._drive(self.members[k], schedules)

    def _keys(self, k: int, net: str) -> tuple[str, ...]:
        """The optimizer state member ``k`` zeroes at ``net``'s restarts (``reset.<net>``)."""
        config = self.configs[k]
        reset = RESETS[config["reset"][net]]
        if reset is None:
            return ()
        if reset is not True:
            return tuple(reset)
        cfg = config["optim"]
        probe = [torch.zeros(1, requires_grad=True)]
        lone = (
            torch.optim.SGD(probe, lr=0.0, momentum=cfg["beta1"])
            if cfg["name"] == "sgd"
            else torch.optim.Adam(probe, lr=0.0)
        )
        try:
            return default_reset_keys(lone)
        except ValueError as e:
            raise ConfigError(f"member {k}: reset.{net} = {config['reset'][net]!r}: {e}") from None

    # -- the clock --------------------------------------------------------------------------

    def set_schedules(self, t: int) -> None:
        """Every running member's learning rates and coupled values at step ``t``; the
        restart resets of members whose cycle restarted."""
        for member in self.members:
            if member.diverged is None:
                self.set_member_clock(member.index, t)
        self.apply_clock()

    def set_member_clock(self, k: int, t: int) -> None:
        """Member ``k``'s learning rates and coupled values at step ``t`` (its hooks fire);
        :meth:`apply_clock` then hands them, and its restart resets, to the optimizers."""
        member = self.members[k]
        member.restarted.clear()
        member.drivers["G"].set(t)
        member.drivers["D"].set(t)

    def apply_clock(self) -> None:
        """The learning rates the members' drivers wrote last, and the restart resets of the
        running members whose cycle restarted."""
        for net in NETS:
            opt = self.opts[net]
            opt.set(lr=[m.lr.get(net, 0.0) for m in self.members])  # 0: not set yet, stopped
            self._reset(net)
        self._smoothing.copy_(torch.tensor([[m.coupled["label_smoothing"]] for m in self.members]))

    def _reset(self, net: str) -> None:
        chosen: dict[tuple[str, ...], list[int]] = {}
        for member in self.members:
            keys = self._reset_keys[net][member.index]
            if net in member.restarted and keys and not self.stopped[member.index]:
                chosen.setdefault(keys, []).append(member.index)
        for keys, indices in chosen.items():
            mask = torch.zeros(self.size, dtype=torch.bool, device=self.device)
            mask[indices] = True
            self.opts[net].reset(mask, keys)

    # -- one step ---------------------------------------------------------------------------

    def _draws(self) -> list[dict[str, torch.Tensor]]:
        """Every random draw of one step, per D step (and ``G`` for G's instance noise), each
        member from its own generator in the single trainer's order; stacked over members."""
        batch, shape = self.batch, (self.batch, *self.data.shape)
        steps: list[dict[str, list[torch.Tensor]]] = [
            {"real": [], "real_noise": [], "z": [], "fake_noise": [], "alpha": []}
            for _ in range(self.d_steps)
        ]
        g_noise: list[torch.Tensor] = []
        with _default_dtype(self.dtype):
            zeros = torch.zeros(shape, device=self.device)
            for member in self.members:
                gen, noisy = member.generator, member.coupled["instance_noise"] != 0.0
                for draws in steps:
                    draws["real"].append(self.data.sample(batch, gen))
                    draws["real_noise"].append(self._randn(shape, gen) if noisy else zeros)
                    draws["z"].append(self._randn((batch, self.z_dim), gen))
                    draws["fake_noise"].append(self._randn(shape, gen) if noisy else zeros)
                    if self.gp_weight > 0:  # one mixing weight per pack D scores
                        packs = (batch // self.pack, 1)
                        alpha = torch.rand(packs, generator=gen, device=self.device)
                        draws["alpha"].append(alpha)
                g_noise.append(self._randn(shape, gen) if noisy else zeros)
        out = [{key: torch.stack(v) for key, v in draws.items() if v} for draws in steps]
        return [*out, {"g_noise": torch.stack(g_noise)}]

    def _randn(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=self.device)

    def _noise_std(self) -> torch.Tensor:
        """Each member's instance noise std, shaped to scale its (N, batch, *sample) draws."""
        std = torch.tensor([m.coupled["instance_noise"] for m in self.members], dtype=torch.float64)
        std = std.view(self.size, 1, *(1 for _ in self.data.shape))
        return std.to(self.device, self.dtype)

    def train_step(self) -> None:
        """One generator update after ``loss.d_steps`` discriminator updates, every member."""
        update = self._update_number()
        *d_draws, g_draws = self._draws()
        std = self._noise_std()
        with self._autocast():
            self._forward_backward(d_draws, g_draws, std)
        self._update_ema()
        if self.averaging.due(update):
            self.average()

    def _update_number(self) -> int:
        """The (1-based) number of the coming update, counted by the running members' own
        steps, whichever loop drives them; one that is behind (rolled back) keeps no rhythm."""
        stopped = self.stopped.tolist()
        steps = [m.step for m, out in zip(self.members, stopped, strict=True) if not out]
        return max(steps, default=0) + 1

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the population's device (``amp = true``), as the single trainer."""
        if self.configs[0]["amp"]:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward_backward(
        self,
        d_draws: list[dict[str, torch.Tensor]],
        g_draws: dict[str, torch.Tensor],
        std: torch.Tensor,
    ) -> None:
        pack = self.pack
        for draws in d_draws:
            real = pack_samples(draws["real"] + std * draws["real_noise"], pack, dim=1)
            fake = generate_in_packs(self.G, draws["z"], pack, dim=1)  # graph kept for G
            fake_in = pack_samples(fake.detach() + std * draws["fake_noise"], pack, dim=1)
            real_score, fake_score = self.D(real), self.D(fake_in)
            loss_D = self._d_loss(real_score, fake_score)
            if self.gp_weight > 0:
                loss_D = loss_D + self.gp_weight * self._gradient_penalty(
                    real, fake_in, draws["alpha"]
                )
            if self.simultaneous:  # G's gradient at the D that scored this batch
                self._update_g(fake, std * g_draws["g_noise"])
            self._update("D", loss_D)
            self._record_outputs(real_score, fake_score)
        if not self.simultaneous:
            self._update_g(fake, std * g_draws["g_noise"])

    def _update_g(self, fake: torch.Tensor, noise: torch.Tensor) -> None:
        fake_score = self.D(pack_samples(fake + noise, self.pack, dim=1))
        self._update("G", self._g_loss(fake_score))

    def _d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """:func:`gancycle.losses.discriminator_loss` per member: scores (N, batch) -> (N,)."""
        if self.loss_name == "ns":
            target = 1.0 - self._smoothing
            return (F.softplus(real) - target * real).mean(1) + F.softplus(fake).mean(1)
        if self.loss_name == "hinge":
            return F.relu(1.0 - real).mean(1) + F.relu(1.0 + fake).mean(1)
        return fake.mean(1) - real.mean(1)

    def _g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """:func:`gancycle.losses.generator_loss` per member."""
        if self.loss_name == "ns":
            return F.softplus(-fake).mean(1)
        return -fake.mean(1)

    def _gradient_penalty(
        self, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor
    ) -> torch.Tensor:
        """:func:`gancycle.losses.gradient_penalty` per member, ``alpha`` drawn beforehand."""
        alpha = alpha.view(
            *alpha.shape[:2], *(1 for _ in real.shape[2:])
        )  # images: (N, n, 1, 1, 1)
        mixed = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.D(mixed).sum(), mixed, create_graph=True)
        return (grad.flatten(2).norm(dim=2) - 1.0).square().mean(1)

    def _record_outputs(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        """:func:`gancycle.losses.d_output` per member, as ``D/real`` and ``D/fake`` records."""
        for tag, scores in (("D/real", real.detach()), ("D/fake", fake.detach())):
            scores = scores.sigmoid() if self.loss_name == "ns" else scores
            self.records.append((tag, scores.mean(1)))

    def _update(self, net: str, losses: torch.Tensor) -> None:
        """Backward and step for every running member; a member with a NaN/Inf loss stops.

        Records ``loss/<net>`` and, where :attr:`measure` is set, the gradient norm and update
        energy of each member (a NaN/Inf there stops the member after its update, as the single
        trainer's check after the step does).
        """
        values = losses.detach()
        self.last_losses[net] = values
        self.records.append((f"loss/{net}", values))
        self._diverge(values, f"loss/{net}")
        stack = self.nets[net].stack
        stack.zero_grad()
        _backward(losses.sum())
        running = ~self.stopped
        measure = self.measure is not None and bool((self.measure & running).any())
        before = stack.data.detach().clone() if measure else None
        self.opts[net].step(None if bool(running.all()) else running)
        if before is not None:
            assert self.measure is not None
            norm = stack.grad.norm(dim=1)
            energy = (stack.data.detach() - before).square().sum(1)
            for tag, measured in (("grad_norm", norm), ("kinetic_energy", energy)):
                self.records.append((f"dynamics/{tag}/{net}", measured))
                self._diverge(measured, f"dynamics/{tag}/{net}", self.measure)

    def _diverge(self, values: torch.Tensor, tag: str, where: torch.Tensor | None = None) -> None:
        """Stop the running members (of ``where``) whose ``values`` are NaN/Inf."""
        bad = ~torch.isfinite(values) & ~self.stopped
        if where is not None:
            bad &= where
        if bool(bad.any()):
            for k in bad.nonzero().flatten().tolist():
                member = self.members[k]
                member.diverged = Divergence(member.step, tag, float(values[k]))
            self.stopped |= bad

    @torch.no_grad()
    def _update_ema(self) -> None:
        if not bool(self.stopped.any()):
            self.ema.lerp_(self.G.data, self._ema_weight)
            return
        running = ~self.stopped
        self.ema[running] = self.ema[running].lerp(self.G.data[running], self._ema_weight[running])

    def average(self) -> None:
        """Pull the running members toward their mean now (``[population]``; see
        :func:`gancycle.averaging.average_members`). :meth:`train_step` calls it after every
        ``average_every``-th update."""
        average_members(self)

    # -- the loop ---------------------------------------------------------------------------

    def advance(self, until: int) -> None:
        """Run steps until ``until`` updates are done (members that stopped sit them out)."""
        while self.step < until:
            t = self.step
            self.set_schedules(t)
            self.records.clear()
            self.train_step()
            for member in self.members:
                if member.diverged is None:
                    member.step = t + 1
            self.step = t + 1

    def member_steps(self, k: int) -> int:
        """Updates member ``k`` has made (fewer than the population's if it stopped)."""
        return self.members[k].step

    def member_state(self, k: int) -> dict[str, dict[str, torch.Tensor]]:
        """Member ``k``'s weights as its single run names them: ``G``, ``D`` and ``ema``
        state dicts (copies)."""
        return {
            "G": self.G.member_state_dict(k),
            "D": self.D.member_state_dict(k),
            # the single trainer's EMA copies G's BatchNorm statistics at each update
            "ema": self.G.member_state_dict(k, self.ema),
        }


def _setter(values: dict[str, float], key: str):
    def set_value(value: float) -> None:
        values[key] = value

    return set_value


def _recorder(member: Member, net: str, kind: str):
    def record(step: float, phase: Any) -> None:
        member.events.append(Event(int(step), net, kind, int(phase.cycle)))
        if kind == "restart":
            member.restarted.add(net)

    return record
