"""N MLP generators (or discriminators) as one batched network: the models of a population.

Member ``k`` of a :class:`BatchedMLP` computes exactly what its own
:class:`~gancycle.models.MLPGenerator` / :class:`~gancycle.models.MLPDiscriminator` computes
(the same linear layers, activations, maxout and training-mode BatchNorm), on inputs of shape
(N, batch, features): each linear layer is one ``torch.baddbmm`` over the member dimension.
The parameters are the rows of one (N, P) buffer (:class:`common.stacked_params.StackedParameters`),
so a batched optimizer steps every member with a few kernels on that buffer; BatchNorm's running
statistics are (N, features) tensors of :class:`BatchedBatchNorm`.

Why hand-batched layers rather than ``torch.func.functional_call`` under ``vmap``: both give the
same numbers, but on the CPU the hand-batched step was faster. One forward and backward of G and
D (non-saturating losses, the ring8 sizes: hidden 128, 3 layers, batch 256) for 50 members on
one thread, the arms interleaved round by round on a 2-core machine shared with other jobs (load
4 to 5), medians (minima) over 12 and then 20 rounds: hand-batched 462 (362) and 512 (428) ms,
``vmap`` over ``stack_module_state`` 524 (482) and 609 (521) ms, the 50 single modules one after
another 483 (401) and 617 (545) ms. Hand-batched layers also keep our own parameter layout (one
buffer, leaf views) with no functorch wrapper between autograd and the optimizer. The price is
generality: a new architecture needs its batched layers written out (the DCGAN pair: grouped
convolutions and per-member BatchNorm), where ``vmap`` would take any module.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from common.stacked_params import StackedParameters
from gancycle.models import MLPDiscriminator, MLPGenerator

__all__ = ["BatchedMLP"]

MLP = (MLPGenerator, MLPDiscriminator)


class BatchedMLP:
    """N MLP generators or N MLP discriminators of one shape, as one network.

    Args:
        members: the N modules (all ``MLPGenerator`` or all ``MLPDiscriminator``, same sizes);
            their weights are copied, in order: member ``k`` is ``members[k]``.

    Calling it maps (N, batch, in) to (N, batch, out) for generators and (N, batch) scores for
    discriminators.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        template = members[0]
        if not isinstance(template, MLP) or any(type(m) is not type(template) for m in members):
            kinds = sorted({type(m).__name__ for m in members})
            raise ValueError(f"BatchedMLP: needs members of one MLP class, got {', '.join(kinds)}")
        self.template = copy.deepcopy(template)
        self.stack = StackedParameters(members, own_buffers=True)
        self.layers: list[tuple[torch.Tensor, torch.Tensor | None] | nn.Module] = []
        self.batchnorms: dict[str, BatchedBatchNorm] = {}
        params = self.stack.params
        for i, layer in enumerate(template.net):
            if isinstance(layer, nn.Linear):
                self.layers.append((params[f"net.{i}.weight"], params.get(f"net.{i}.bias")))
            elif isinstance(layer, nn.BatchNorm1d):
                norms = [member.net[i] for member in members]
                batched = BatchedBatchNorm(
                    norms, params[f"net.{i}.weight"], params[f"net.{i}.bias"]
                )
                self.batchnorms[f"net.{i}"] = batched
                self.layers.append(batched)
            else:
                # an activation on the last dimension (elementwise, or Maxout's groups)
                self.layers.append(copy.deepcopy(layer))
        self.squeeze = isinstance(template, MLPDiscriminator)

    @property
    def members(self) -> int:
        return self.stack.members

    @property
    def data(self) -> torch.Tensor:
        """All members' parameters, shape (N, P) (see :class:`StackedParameters`)."""
        return self.stack.data

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            if isinstance(layer, tuple):
                weight, bias = layer
                if bias is None:
                    x = torch.bmm(x, weight.transpose(1, 2))
                else:
                    x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
            else:
                x = layer(x)
        return x.squeeze(-1) if self.squeeze else x

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

    def member_module(self, k: int, source: torch.Tensor | None = None) -> nn.Module:
        """A standalone module holding member ``k``'s weights (see :meth:`member_state_dict`)."""
        module = copy.deepcopy(self.template)
        module.load_state_dict(self.member_state_dict(k, source))
        return module


class BatchedBatchNorm:
    """N ``BatchNorm1d`` layers of one size on (N, batch, features), as each computes it in
    training mode: normalise with the batch's mean and biased variance, scale and shift by the
    member's parameters, and move the member's running statistics (unbiased variance) by its
    momentum. The running statistics are (N, features) tensors held here.

    Args:
        members: the N modules (their eps, momentum and statistics; all of one size).
        weight, bias: the members' scale and shift, (N, features) leaves of the stacked buffer.
    """

    def __init__(
        self, members: Sequence[nn.BatchNorm1d], weight: torch.Tensor, bias: torch.Tensor
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
        mean = x.mean(1, keepdim=True)
        var = x.var(1, unbiased=False, keepdim=True)
        with torch.no_grad():
            n, m = x.shape[1], self.momentum
            old = [t.clone() for t in self._statistics()] if self._any_frozen() else None
            self.running_mean.mul_(1 - m).add_(mean.squeeze(1), alpha=m)
            self.running_var.mul_(1 - m).add_(var.squeeze(1) * (n / (n - 1)), alpha=m)
            self.num_batches_tracked += 1
            if old is not None:  # stopped members keep the statistics they stopped with
                for now, before in zip(self._statistics(), old, strict=True):
                    frozen = self.frozen.view(-1, *([1] * (now.dim() - 1)))
                    now.copy_(torch.where(frozen, before, now))
        scale = self.weight.unsqueeze(1) * torch.rsqrt(var + self.eps)
        return (x - mean) * scale + self.bias.unsqueeze(1)

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.running_mean, self.running_var, self.num_batches_tracked

    def _any_frozen(self) -> bool:
        return self.frozen is not None and bool(self.frozen.any())

    def member_buffers(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s running statistics, as ``BatchNorm1d.state_dict`` names them."""
        return {
            "running_mean": self.running_mean[k].clone(),
            "running_var": self.running_var[k].clone(),
            "num_batches_tracked": self.num_batches_tracked[k].clone(),
        }
