"""GAN losses on the discriminator's raw scores (logits).

=========  ===========================================  =================================
name       discriminator                                generator
=========  ===========================================  =================================
``ns``     BCE(real, 1 - smoothing) + BCE(fake, 0)      BCE(fake, 1) (non-saturating)
``hinge``  mean relu(1 - real) + mean relu(1 + fake)    -mean fake
``wgan``   mean fake - mean real (+ gradient penalty)   -mean fake
=========  ===========================================  =================================

``wgan`` is WGAN-GP when ``loss.gp_weight`` > 0 (Gulrajani et al. use 10). One-sided label
smoothing (the real target ``1 - smoothing``) only exists for ``ns``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOSSES",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "mixing_weights",
    "d_output",
]

LOSSES = ("ns", "hinge", "wgan")


def discriminator_loss(
    name: str, real: torch.Tensor, fake: torch.Tensor, smoothing: float = 0.0
) -> torch.Tensor:
    """The discriminator's loss on real and fake scores (shape (batch,) each).

    Args:
        name: ``ns``, ``hinge`` or ``wgan``.
        smoothing: one-sided label smoothing in [0, 1): real samples target ``1 - smoothing``.
    """
    if name == "ns":
        # BCE(r, t) = softplus(r) - t*r; BCE(f, 0) = softplus(f).
        return (F.softplus(real) - (1.0 - smoothing) * real).mean() + F.softplus(fake).mean()
    if name == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if name == "wgan":
        return fake.mean() - real.mean()
    raise ValueError(f"loss.name = {name!r}: must be one of {' | '.join(LOSSES)}")


def generator_loss(name: str, fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss on the discriminator's scores of its samples."""
    if name == "ns":
        return F.softplus(-fake).mean()
    if name in ("hinge", "wgan"):
        return -fake.mean()
    raise ValueError(f"loss.name = {name!r}: must be one of {' | '.join(LOSSES)}")


def gradient_penalty(
    D: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """WGAN-GP: mean (|grad D(x)| - 1)^2 at random points x between real and fake samples.

    The mixing weights are ``alpha`` (shape (batch, 1, ...)) or drawn from ``generator``.
    """
    if alpha is None:
        assert generator is not None, "gradient_penalty: give a generator or alpha"
        alpha = mixing_weights(len(real), real.dim(), generator)
    alpha = alpha.to(real.device)
    mixed = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).square().mean()


def mixing_weights(batch: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """WGAN-GP's uniform weights between real and fake, shape (batch, 1, ...) for ``dim``-D
    samples."""
    shape = (batch,) + (1,) * (dim - 1)
    return torch.rand(shape, generator=generator, device=generator.device)


def d_output(name: str, scores: torch.Tensor) -> float:
    """What to log as ``D/real`` or ``D/fake``: mean D(x) = sigmoid(score) for ``ns``, else the
    mean raw score."""
    scores = scores.detach()
    return float(scores.sigmoid().mean()) if name == "ns" else float(scores.mean())
