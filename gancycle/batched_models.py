"""N generators (or discriminators) of one architecture as one batched network: a population's.

Member ``k`` of a batched network computes exactly what its own module of
:mod:`gancycle.models` computes (the same layers, activations, maxout and training-mode
BatchNorm), on inputs of shape (N, batch, ...). The parameters are the rows of one (N, P)
buffer (:class:`common.stacked_params.StackedParameters`), so a batched optimizer steps every
member with a few kernels on that buffer; BatchNorm's running statistics are (N, features)
tensors of :class:`BatchedBatchNorm`.

- :class:`BatchedMLP` (the MLP pair): each linear layer is one ``torch.baddbmm`` over the
  member dimension.
- :class:`BatchedConvGenerator`, :class:`BatchedConvDiscriminator` (the DCGAN pair): each
  convolution (``Conv2d`` and ``ConvTranspose2d``) is one grouped convolution, the members
  stacked on the channel axis (``groups = N``), the linear layers ``bmm``/``baddbmm``.

Why hand-batched layers rather than ``torch.func.functional_call`` under ``vmap``: both give the
same numbers, but on the CPU the hand-batched step was faster. One forward and backward of G and
D (non-saturating losses, the ring8 sizes: hidden 128, 3 layers, batch 256) for 50 members on
one thread, the arms interleaved round by round on a 2-core machine shared with other jobs (load
4 to 5), medians (minima) over 12 and then 20 rounds: hand-batched 462 (362) and 512 (428) ms,
``vmap`` over ``stack_module_state`` 524 (482) and 609 (521) ms, the 50 single modules one after
another 483 (401) and 617 (545) ms. Hand-batched layers also keep our own parameter layout (one
buffer, leaf views) with no functorch wrapper between autograd and the optimizer. The price is
generality: a new architecture needs its batched layers written out, where ``vmap`` would take
any module.

For the DCGAN pair the same choice holds, for these reasons. ``vmap`` of a convolution with a
batched weight is itself a grouped convolution (functorch's batching rule), so it buys little
speed: one forward and backward of G and D for 8 digits members (width 32, batch 64, float32,
one thread, 2-core machine shared with other jobs, medians (minima) of 15 rounds) took 67 (52)
ms grouped, 69 (54) ms under ``vmap`` and 66 (56) ms for the 8 modules one after another. A
grouped convolution in float64 on the CPU gives each member's output to the bit (0.0 from the
member's own ``Conv2d`` on a digits batch; ``vmap`` over the whole D: ~2e-16), and the members
stay on the channel axis from one convolution to the next, so G's ``BatchNorm2d`` is one
``F.batch_norm`` over N * C channels, the single run's own kernel. Under ``vmap`` BatchNorm
moves stacked running statistics in place with no way to leave a stopped member's as they
are; :class:`BatchedBatchNorm` freezes them per member.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.stacked_params import StackedParameters
from gancycle.models import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator

__all__ = [
    "BatchedNet",
    "BatchedMLP",
    "BatchedConvGenerator",
    "BatchedConvDiscriminator",
    "BatchedBatchNorm",
    "batched",
]

MLP = (MLPGenerator, MLPDiscriminator)


def _check_kind(
    members: Sequence[nn.Module], kinds: tuple[type, ...], name: str, kind: str
) -> None:
    """Refuse ``members`` unless all are of one class among ``kinds`` (``kind`` names them)."""
    template = members[0]
    if not isinstance(template, kinds) or any(type(m) is not type(template) for m in members):
        found = sorted({type(m).__name__ for m in members})
        raise ValueError(f"{name}: needs members of one {kind} class, got {', '.join(found)}")


class BatchedNet:
    """What every batched network has: the members' parameters stacked
    (:attr:`stack`), their BatchNorm layers batched (:attr:`batchnorms`, by module name), and
    each member's ``state_dict`` out and in.

    Args:
        members: the N modules of one class and size; their weights are copied, in order:
            member ``k`` is ``members[k]``.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        self.template = copy.deepcopy(members[0])
        self.stack = StackedParameters(members, own_buffers=True)
        self.batchnorms: dict[str, BatchedBatchNorm] = {}

    def _batchnorm(self, name: str, members: Sequence[nn.Module]) -> BatchedBatchNorm:
        """The members' BatchNorm layers called ``name``, batched and registered."""
        params = self.stack.params
        norms = [member.get_submodule(name) for member in members]
        batched = BatchedBatchNorm(norms, params[f"{name}.weight"], params[f"{name}.bias"])
        self.batchnorms[name] = batched
        return batched

    @property
    def members(self) -> int:
        return self.stack.members

    @property
    def data(self) -> torch.Tensor:
        """All members' parameters, shape (N, P) (see :class:`StackedParameters`)."""
        return self.stack.data

    def member_state_dict(
        self, k: int, source: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Member ``k``'s ``state_dict`` (copies): its parameters (from ``source``: e.g. an EMA
        buffer of the same layout as :attr:`data`) and its BatchNorm statistics."""
        state = self.stack.member_state_dict(k, source)
        for prefix, norm in self.batchnorms.items():
            for name, value in norm.member_buffers(k).items():
                state[f"{prefix}.{name}"] = value
        return state

    def load_member_state_dict(self, k: int, state: Mapping[str, torch.Tensor]) -> None:
        """Member ``k`` from one module's ``state_dict``: its parameters and its BatchNorm
        statistics (a resumed or rolled-back member's, as its checkpoint holds them)."""
        self.stack.load_member(k, state)
        for prefix, norm in self.batchnorms.items():
            norm.load_member_buffers(
                k, {name: state[f"{prefix}.{name}"] for name in BatchedBatchNorm.BUFFERS}
            )

    def member_module(self, k: int, source: torch.Tensor | None = None) -> nn.Module:
        """A standalone module holding member ``k``'s weights (see :meth:`member_state_dict`)."""
        module = copy.deepcopy(self.template)
        module.load_state_dict(self.member_state_dict(k, source))
        return module


class BatchedMLP(BatchedNet):
    """N MLP generators or N MLP discriminators of one shape, as one network.

    Args:
        members: the N modules (all ``MLPGenerator`` or all ``MLPDiscriminator``, same sizes);
            their weights are copied, in order: member ``k`` is ``members[k]``.

    Calling it maps (N, batch, in) to (N, batch, out) for generators and (N, batch) scores for
    discriminators.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        _check_kind(members, MLP, "BatchedMLP", "MLP")
        super().__init__(members)
        self.layers: list[tuple[torch.Tensor, torch.Tensor | None] | nn.Module] = []
        params = self.stack.params
        for i, layer in enumerate(self.template.net):
            if isinstance(layer, nn.Linear):
                self.layers.append((params[f"net.{i}.weight"], params.get(f"net.{i}.bias")))
            elif isinstance(layer, nn.BatchNorm1d):
                self.layers.append(self._batchnorm(f"net.{i}", members))
            else:
                # an activation on the last dimension (elementwise, or Maxout's groups)
                self.layers.append(copy.deepcopy(layer))
        self.squeeze = isinstance(self.template, MLPDiscriminator)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            if isinstance(layer, tuple):
                x = _linear(x, *layer)
            else:
                x = layer(x)
        return x.squeeze(-1) if self.squeeze else x


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Each member's linear layer: (N, batch, in) -> (N, batch, out)."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _to_channels(x: torch.Tensor) -> torch.Tensor:
    """(N, batch, C, H, W) -> (batch, N * C, H, W): the members on the channel axis."""
    return x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])


def _from_channels(x: torch.Tensor, n: int) -> torch.Tensor:
    """(batch, N * C, H, W) -> (N, batch, C, H, W)."""
    return x.view(x.shape[0], n, -1, *x.shape[2:]).transpose(0, 1)


def _grouped(
    x: torch.Tensor,
    layer: nn.Conv2d | nn.ConvTranspose2d,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """Each member's ``layer`` (with its own ``weight`` and ``bias``, stacked on dim 0) on its
    images, as one grouped convolution on (batch, N * C, H, W): group ``k`` is member ``k``.

    ``Conv2d``'s weight (N, C', C, kh, kw) and ``ConvTranspose2d``'s (N, C, C', kh, kw) both
    become their grouped forms by merging the first two dimensions.
    """
    n = weight.shape[0]
    w = weight.reshape(n * weight.shape[1], *weight.shape[2:])
    flat_bias = None if bias is None else bias.reshape(-1)
    if isinstance(layer, nn.ConvTranspose2d):
        return F.conv_transpose2d(
            x, w, flat_bias, layer.stride, layer.padding, layer.output_padding, n, layer.dilation
        )
    return F.conv2d(x, w, flat_bias, layer.stride, layer.padding, layer.dilation, n)


class BatchedConvGenerator(BatchedNet):
    """N :class:`~gancycle.models.ConvGenerator` of one size: z (N, batch, z_dim) -> images
    (N, batch, C, H, W), each member as its own module in training mode."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        _check_kind(members, (ConvGenerator,), "BatchedConvGenerator", "ConvGenerator")
        super().__init__(members)
        params, template = self.stack.params, self.template
        self.base = template.base
        self.project = params["project.0.weight"]
        self.project_norm = self._batchnorm("project.1", members)
        self.up = template.net[0], params["net.0.weight"]
        self.up_norm = self._batchnorm("net.1", members)
        self.out = template.net[3], params["net.3.weight"], params["net.3.bias"]

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        n, b = z.shape[:2]
        x = F.relu(self.project_norm(torch.bmm(z, self.project.transpose(1, 2))))
        x = _to_channels(x.view(n, b, -1, self.base, self.base))
        x = F.relu(self.up_norm.on_channels(_grouped(x, *self.up, None)))
        return _from_channels(torch.tanh(_grouped(x, *self.out)), n)


class BatchedConvDiscriminator(BatchedNet):
    """N :class:`~gancycle.models.ConvDiscriminator` of one size: images (N, batch, C, H, W)
    -> scores (N, batch)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        _check_kind(members, (ConvDiscriminator,), "BatchedConvDiscriminator", "ConvDiscriminator")
        super().__init__(members)
        params, net = self.stack.params, self.template.net
        self.convs = [(net[i], params[f"net.{i}.weight"], params[f"net.{i}.bias"]) for i in (0, 2)]
        self.head = params["net.5.weight"], params["net.5.bias"]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, x = x.shape[0], _to_channels(x)
        for conv in self.convs:
            x = F.leaky_relu(_grouped(x, *conv), 0.2)
        return _linear(_from_channels(x, n).flatten(2), *self.head).squeeze(-1)


BATCHED: dict[type, type[BatchedNet]] = {
    MLPGenerator: BatchedMLP,
    MLPDiscriminator: BatchedMLP,
    ConvGenerator: BatchedConvGenerator,
    ConvDiscriminator: BatchedConvDiscriminator,
}
"""The batched network of each :mod:`gancycle.models` class."""


def batched(members: Sequence[nn.Module]) -> BatchedNet:
    """``members`` (N modules of one :mod:`gancycle.models` class and size) as one batched
    network: member ``k`` is ``members[k]``."""
    kind = BATCHED.get(type(members[0]))
    if kind is None:
        raise ValueError(f"batched: no batched form of {type(members[0]).__name__}")
    return kind(members)


class BatchedBatchNorm:
    """N ``BatchNorm1d`` or N ``BatchNorm2d`` layers of one size on (N, batch, C, ...), as each
    computes it in training mode: normalise with the batch's mean and biased variance (over the
    batch and, for images, every position), scale and shift by the member's parameters, and
    move the member's running statistics (unbiased variance) by its momentum. The running
    statistics are (N, C) tensors held here.

    Args:
        members: the N modules (their eps, momentum and statistics; all of one size).
        weight, bias: the members' scale and shift, (N, C) leaves of the stacked buffer.
    """

    BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(
        self,
        members: Sequence[nn.modules.batchnorm._BatchNorm],
        weight: torch.Tensor,
        bias: torch.Tensor,
    ) -> None:
        template = members[0]
        if not (template.affine and template.track_running_stats):
            raise ValueError("BatchedBatchNorm: needs affine BatchNorm with running statistics")
        self.eps, self.momentum = float(template.eps), float(template.momentum)
        self.weight, self.bias = weight, bias
        self.running_mean = torch.stack([m.running_mean for m in members]).clone()
        self.running_var = torch.stack([m.running_var for m in members]).clone()
        self.num_batches_tracked = torch.stack([m.num_batches_tracked for m in members]).clone()
        self.frozen: torch.Tensor | None = None
        """(N,) booleans: members whose statistics stay as they are (a population's stopped)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dims = (1, *range(3, x.dim()))  # all but the members and the channels
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, unbiased=False, keepdim=True)
        with torch.no_grad():
            n, m = x.numel() // (x.shape[0] * x.shape[2]), self.momentum
            old = [t.clone() for t in self._statistics()] if self._any_frozen() else None
            self.running_mean.mul_(1 - m).add_(mean.flatten(1), alpha=m)
            self.running_var.mul_(1 - m).add_(var.flatten(1) * (n / (n - 1)), alpha=m)
            self.num_batches_tracked += 1
            if old is not None:
                self._keep_frozen(old)
        shape = mean.shape  # (N, 1, C, 1, ...)
        scale = self.weight.view(shape) * torch.rsqrt(var + self.eps)
        return (x - mean) * scale + self.bias.view(shape)

    def on_channels(self, x: torch.Tensor) -> torch.Tensor:
        """The same on images with the members on the channel axis, (batch, N * C, H, W): one
        ``F.batch_norm`` over N * C channels, which is each member's ``BatchNorm2d`` (the same
        kernel on the same channels; its running statistics move in place)."""
        old = [t.clone() for t in self._statistics()] if self._any_frozen() else None
        y = F.batch_norm(
            x,
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.weight.reshape(-1),
            self.bias.reshape(-1),
            True,
            self.momentum,
            self.eps,
        )
        with torch.no_grad():
            self.num_batches_tracked += 1
            if old is not None:
                self._keep_frozen(old)
        return y

    def _keep_frozen(self, old: Sequence[torch.Tensor]) -> None:
        """Stopped members keep the statistics they stopped with."""
        assert self.frozen is not None
        for now, before in zip(self._statistics(), old, strict=True):
            frozen = self.frozen.view(-1, *([1] * (now.dim() - 1)))
            now.copy_(torch.where(frozen, before, now))

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.running_mean, self.running_var, self.num_batches_tracked

    def _any_frozen(self) -> bool:
        return self.frozen is not None and bool(self.frozen.any())

    def member_buffers(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s running statistics, as ``BatchNorm1d.state_dict`` names them."""
        return {name: getattr(self, name)[k].clone() for name in self.BUFFERS}

    @torch.no_grad()
    def load_member_buffers(self, k: int, buffers: Mapping[str, torch.Tensor]) -> None:
        """Member ``k``'s running statistics from :meth:`member_buffers`' names."""
        for name in self.BUFFERS:
            getattr(self, name)[k].copy_(buffers[name])
