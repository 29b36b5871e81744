"""An exponential moving average of a generator's weights (the usual GAN evaluation copy)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """An exponential moving average of a model's weights: ``ema = decay*ema + (1-decay)*model``.

    Buffers (BatchNorm statistics) are copied as they are. ``decay`` in [0, 1); 0.999 averages
    over about the last 1000 steps.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        for p in self.model.parameters():
            p.grad = None  # deepcopy copies gradients too; the average has none
        self._src = [p for p in model.parameters()]
        self._dst = [p for p in self.model.parameters()]
        self._src_buffers = [b for b in model.buffers()]
        self._dst_buffers = [b for b in self.model.buffers()]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self._dst, self._src, 1.0 - self.decay)
        for dst, src in zip(self._dst_buffers, self._src_buffers, strict=True):
            dst.copy_(src)
