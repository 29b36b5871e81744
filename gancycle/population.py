"""A population: N GAN runs of one architecture trained as one batched model on one device.

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

A member whose loss turns NaN or Inf is stopped alone (its update is not applied, as the single
trainer's ``on_nan = "stop"``); the others go on.

Not here yet: run folders (config, events, metrics, checkpoints per member), snapshots,
evaluation, NaN rollback, DCGAN pairs, averaging.
"""

from __future__ import annotations

import contextlib
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
from gancycle.batched_models import BatchedMLP
from gancycle.data import Mixture2D, load_data
from gancycle.models import build_models
from gancycle.settings import COUPLED, RESETS, check_config

__all__ = ["Population", "Member", "Event", "SHARED", "NETS"]

NETS = ("G", "D")

SHARED = (
    "data.name",
    "data.batch",
    "model",
    "loss.name",
    "loss.gp_weight",
    "loss.d_steps",
    "optim.name",
    "optim.beta2",
    "amp",
)
"""Config keys every member must share (they make the members one batched model)."""


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
        diverged: ``(step, net, loss)`` of the NaN/Inf loss that stopped it, or ``None``.
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
    diverged: tuple[int, str, float] | None = None


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
        if config["model"]["arch"] != "mlp" or config["data"]["name"] not in ("ring8", "grid25"):
            raise ConfigError(
                f"member {k}: a population trains model.arch = 'mlp' on ring8 or grid25 so far"
            )
        if config["on_nan"] != "stop":
            raise ConfigError(f"member {k}: on_nan = {config['on_nan']!r}: a population stops")
        for net in NETS:
            if config["thermostat"][net] > 0:
                raise ConfigError(f"member {k}: thermostat.{net}: not in a population yet")
    return checked


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


class Population:
    """N GAN runs of one architecture on one device (see the module docstring).

    Args:
        configs: one gancycle config per member (each as ``gancycle-train`` would take it:
            whole, only the keys it changes, or checked).
        device: where to train (default: member 0's ``device``, ``auto`` picking CUDA if any).
        dtype: parameters' dtype (default: torch's default dtype, as a single run uses).

    Attributes:
        G, D: the batched generator and discriminator (:class:`BatchedMLP`).
        opts: their batched optimizers, by network.
        ema: the EMA of every member's G, same layout as ``G.data``.
        members: the per-member side (:class:`Member`).
        step: updates done (by every member not stopped).
    """

    def __init__(
        self,
        configs: Sequence[Mapping[str, Any] | CheckedConfig],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.checked = _check_members(configs)
        self.configs = [checked.config for checked in self.checked]
        first = self.configs[0]
        self.device = torch.device(device) if device else resolve_device(first["device"])
        self.dtype = dtype or torch.get_default_dtype()
        self.size = len(self.configs)
        if first["threads"] > 0:
            torch.set_num_threads(first["threads"])  # as the single trainer does
        data = load_data(first["data"])
        assert isinstance(data, Mixture2D)
        self.data = data.to(self.device)
        self.batch, self.z_dim = int(first["data"]["batch"]), int(first["model"]["z_dim"])
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
        self.step = 0
        self.last_losses: dict[str, torch.Tensor] = {}

    # -- building ---------------------------------------------------------------------------

    def _build_models(self) -> tuple[BatchedMLP, BatchedMLP]:
        """Each member's G and D initialised exactly as its single run initialises them."""
        pairs = []
        with torch.random.fork_rng(devices=[]), _default_dtype(self.dtype):
            for config in self.configs:
                torch.manual_seed(config["seed"])  # what seed_everything does for torch
                G, D = build_models(config["model"], self.data.shape)
                pairs.append((G.to(self.device), D.to(self.device)))
        return BatchedMLP([G for G, _ in pairs]), BatchedMLP([D for _, D in pairs])

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
        for net in NETS:
            driver = ScheduleDriver(schedules[net])
            driver.bind(net, schedules[net], CallableTarget(_setter(member.lr, net), net))
            driver.on_restart(_recorder(member, net, "restart"))
            driver.on_end(_recorder(member, net, "end"))
            member.drivers[net] = driver
        for name, coupling in checked.couplings.items():
            target = CallableTarget(_setter(member.coupled, name), name)
            member.drivers["D"].bind(name, coupling, target)
        return member

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
                member.restarted.clear()
                member.drivers["G"].set(t)
                member.drivers["D"].set(t)
        for net in NETS:
            opt = self.opts[net]
            opt.set(lr=[m.lr[net] for m in self.members])
            self._reset(net)
        self._smoothing.copy_(torch.tensor([[m.coupled["label_smoothing"]] for m in self.members]))

    def _reset(self, net: str) -> None:
        chosen: dict[tuple[str, ...], list[int]] = {}
        for member in self.members:
            keys = self._reset_keys[net][member.index]
            if net in member.restarted and keys:
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
                    if self.gp_weight > 0:
                        alpha = torch.rand((batch, 1), generator=gen, device=self.device)
                        draws["alpha"].append(alpha)
                g_noise.append(self._randn(shape, gen) if noisy else zeros)
        out = [{key: torch.stack(v) for key, v in draws.items() if v} for draws in steps]
        return [*out, {"g_noise": torch.stack(g_noise)}]

    def _randn(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=self.device)

    def _noise_std(self) -> torch.Tensor:
        std = [[[m.coupled["instance_noise"]]] for m in self.members]
        return torch.tensor(std, dtype=torch.float64).to(self.device, self.dtype)

    def train_step(self) -> None:
        """One generator update after ``loss.d_steps`` discriminator updates, every member."""
        *d_draws, g_draws = self._draws()
        std = self._noise_std()
        with self._autocast():
            self._forward_backward(d_draws, g_draws, std)
        self._update_ema()

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
        for draws in d_draws:
            real = draws["real"] + std * draws["real_noise"]
            fake = self.G(draws["z"])  # keeps its graph for the G update below
            fake_in = fake.detach() + std * draws["fake_noise"]
            real_score, fake_score = self.D(real), self.D(fake_in)
            loss_D = self._d_loss(real_score, fake_score)
            if self.gp_weight > 0:
                loss_D = loss_D + self.gp_weight * self._gradient_penalty(
                    real, fake_in, draws["alpha"]
                )
            self._update("D", loss_D)
        fake_score = self.D(fake + std * g_draws["g_noise"])
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
        mixed = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.D(mixed).sum(), mixed, create_graph=True)
        return (grad.norm(dim=2) - 1.0).square().mean(1)

    def _update(self, net: str, losses: torch.Tensor) -> None:
        """Backward and step for every running member; a member with a NaN/Inf loss stops."""
        values = losses.detach()
        self.last_losses[net] = values
        bad = ~torch.isfinite(values) & ~self.stopped
        if bool(bad.any()):
            for k in bad.nonzero().flatten().tolist():
                self.members[k].diverged = (self.step, net, float(values[k]))
            self.stopped |= bad
        self.nets[net].stack.zero_grad()
        _backward(losses.sum())
        self.opts[net].step(None if not bool(self.stopped.any()) else ~self.stopped)

    @torch.no_grad()
    def _update_ema(self) -> None:
        if not bool(self.stopped.any()):
            self.ema.lerp_(self.G.data, self._ema_weight)
            return
        running = ~self.stopped
        self.ema[running] = self.ema[running].lerp(self.G.data[running], self._ema_weight[running])

    # -- the loop ---------------------------------------------------------------------------

    def advance(self, until: int) -> None:
        """Run steps until ``until`` updates are done (members that stopped sit them out)."""
        while self.step < until:
            t = self.step
            self.set_schedules(t)
            self.train_step()
            self.step = t + 1

    def member_steps(self, k: int) -> int:
        """Updates member ``k`` has made: the population's, or where its loss went NaN/Inf."""
        diverged = self.members[k].diverged
        return self.step if diverged is None else diverged[0]

    def member_state(self, k: int) -> dict[str, dict[str, torch.Tensor]]:
        """Member ``k``'s weights as its single run names them: ``G``, ``D`` and ``ema``
        state dicts (copies)."""
        return {
            "G": self.G.stack.member_state_dict(k),
            "D": self.D.stack.member_state_dict(k),
            "ema": self.G.stack.member_state_dict(k, self.ema),
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
