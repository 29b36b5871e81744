"""The parameters of N networks of one architecture as the rows of one (N, P) buffer.

A population's optimizer then updates every parameter of every member in a handful of kernels on
one tensor, with per-member hyperparameters broadcast as (N, 1) columns
(:mod:`common.batched_optim`). Each named parameter is a view of shape ``(N, *shape)`` into the
buffer (row ``k``: member ``k``), a leaf whose gradient accumulates into a second buffer of the
same layout, as :class:`common.flat_params.FlatParameters` does for one network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from common.flat_params import ALIGN_BYTES

__all__ = ["StackedParameters"]


class StackedParameters:
    """The parameters of ``modules`` (same names and shapes) stacked along a leading dimension.

    Args:
        modules: N modules of one architecture, all of one dtype and on one device, without
            buffers (BatchNorm statistics are not stacked here) unless ``own_buffers``: the
            caller keeps them. Their values are copied; the modules themselves are left as
            they were.

    Attributes:
        data: shape (N, P): row ``k`` holds member ``k``'s parameters (padding stays zero); its
            ``.grad`` is :attr:`grad`, so a batched optimizer can step the whole buffer.
        grad: the gradients, same layout; clear with :meth:`zero_grad`.
        params: name -> leaf tensor of shape (N, *shape), a view of :attr:`data`, whose
            ``.grad`` is the matching view of :attr:`grad`.
    """

    def __init__(self, modules: Sequence[nn.Module], own_buffers: bool = False) -> None:
        if not modules:
            raise ValueError("StackedParameters: no modules")
        template = modules[0]
        named = [(n, p) for n, p in template.named_parameters() if p.requires_grad]
        if not named or (not own_buffers and any(True for _ in template.buffers())):
            raise ValueError(
                f"StackedParameters: {type(template).__name__} must have parameters and no buffers"
            )
        self.shapes = {name: tuple(p.shape) for name, p in named}
        dtype, device = named[0][1].dtype, named[0][1].device
        align = max(1, ALIGN_BYTES // named[0][1].element_size())
        self.offsets: dict[str, int] = {}
        end = 0
        for name, p in named:
            self.offsets[name] = end
            end = -(-(end + p.numel()) // align) * align
        self.members = len(modules)
        self.data = torch.zeros(self.members, end, dtype=dtype, device=device)
        self.grad = torch.zeros_like(self.data)
        self.data.grad = self.grad  # what an optimizer of the whole buffer reads
        for k, module in enumerate(modules):
            self.load_member(k, dict(module.named_parameters()))
        self.params: dict[str, torch.Tensor] = {}
        for name in self.shapes:
            param = self._view(self.data, name).detach().requires_grad_(True)
            param.grad = self._view(self.grad, name)
            self.params[name] = param

    def _view(self, buffer: torch.Tensor, name: str) -> torch.Tensor:
        start, shape = self.offsets[name], self.shapes[name]
        size = 1
        for n in shape:
            size *= n
        return buffer[:, start : start + size].view(self.members, *shape)

    def zero_grad(self) -> None:
        """Zero every gradient in one kernel (they stay views of :attr:`grad`)."""
        self.grad.zero_()

    def member_state_dict(
        self, k: int, source: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Member ``k``'s parameters by name (copies), as its module's ``state_dict`` names them.

        ``source``: another buffer of the same layout (an EMA copy of :attr:`data`).
        """
        buffer = self.data if source is None else source
        return {name: self._view(buffer, name)[k].detach().clone() for name in self.shapes}

    @torch.no_grad()
    def load_member(
        self, k: int, state: Mapping[str, torch.Tensor], target: torch.Tensor | None = None
    ) -> None:
        """Write member ``k``'s parameters from a ``state_dict`` of one module.

        ``target``: another buffer of the same layout (an EMA copy, an optimizer's state).
        """
        missing = set(self.shapes) - set(state)
        if missing:
            raise ValueError(f"member {k}: no values for {', '.join(sorted(missing))}")
        for name, shape in self.shapes.items():
            value = state[name]
            if tuple(value.shape) != shape:
                raise ValueError(f"member {k}: {name} has shape {tuple(value.shape)}, not {shape}")
            self._view(self.data if target is None else target, name)[k].copy_(value)
