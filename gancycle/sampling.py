"""Drawing samples from a generator, or from the mixture of its cycle-end snapshots."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["generate", "generate_mixture", "evaluation_draws"]


def evaluation_draws(
    data: Any, n: int, z_dim: int, seed: int, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed noise and real samples a run with ``seed`` evaluates on: ``n`` rows of z
    (from ``seed + 1``) and ``n`` real samples (from ``seed + 2``, on the CPU), drawn apart from
    the training generator so that every evaluation of the run, and every generator scored as
    the run scores its own, sees the same draws."""
    draws = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(n, z_dim, generator=draws, dtype=dtype)
    real = data.sample(n, draws.manual_seed(seed + 2)).cpu()
    return z, real


@torch.no_grad()
def generate(G: nn.Module, z: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``G(z)`` in eval mode (BatchNorm uses its running statistics), ``chunk`` rows at a time.

    ``G``'s train/eval mode is restored afterwards.
    """
    was_training = G.training
    G.eval()
    try:
        return torch.cat([G(part) for part in z.split(chunk)])
    finally:
        G.train(was_training)


@torch.no_grad()
def generate_mixture(
    G: nn.Module,
    state_dicts: Sequence[dict[str, torch.Tensor]],
    z: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Samples from the uniform mixture of the generators whose weights are ``state_dicts``.

    Sample ``i`` comes from snapshot ``choice[i]``, drawn uniformly with ``generator``, applied
    to ``z[i]``. ``G`` only gives the architecture; its own weights are left untouched.
    """
    if not state_dicts:
        raise ValueError(
            "ensemble: no snapshots yet; a snapshot is taken at the end of each G cycle"
        )
    choice = torch.randint(
        len(state_dicts), (len(z),), generator=generator, device=generator.device
    )
    choice = choice.to(z.device)
    member = copy.deepcopy(G)
    out: torch.Tensor | None = None
    for k, state in enumerate(state_dicts):
        rows = (choice == k).nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        member.load_state_dict(state)
        part = generate(member, z[rows])
        if out is None:
            out = torch.empty((len(z), *part.shape[1:]), dtype=part.dtype, device=part.device)
        out[rows] = part
    assert out is not None
    return out
