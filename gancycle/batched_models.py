"""N MLP generators (or discriminators) as one batched network: the models of a population.

Member ``k`` of a :class:`BatchedMLP` computes exactly what its own
:class:`~gancycle.models.MLPGenerator` / :class:`~gancycle.models.MLPDiscriminator` computes
(the same linear layers and activations), on inputs of shape (N, batch, features): each linear
layer is one ``torch.baddbmm`` over the member dimension. The parameters are the rows of one
(N, P) buffer (:class:`common.stacked_params.StackedParameters`), so a batched optimizer steps
every member with a few kernels on that buffer.

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
        self.stack = StackedParameters(members)
        self.layers: list[tuple[torch.Tensor, torch.Tensor | None] | nn.Module] = []
        for i, layer in enumerate(template.net):
            if isinstance(layer, nn.Linear):
                params = self.stack.params
                self.layers.append((params[f"net.{i}.weight"], params.get(f"net.{i}.bias")))
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

    def member_module(self, k: int, source: torch.Tensor | None = None) -> nn.Module:
        """A standalone module holding member ``k``'s weights (from ``source``: e.g. an EMA
        buffer of the same layout as :attr:`data`)."""
        module = copy.deepcopy(self.template)
        module.load_state_dict(self.stack.member_state_dict(k, source))
        return module
