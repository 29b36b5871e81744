"""Generators and discriminators: an MLP pair for 2D points, a DCGAN-style pair for images.

The discriminator returns one raw score (a logit) per sample, shape (batch,). It has no batch
normalisation, so the WGAN-GP penalty (which needs per-sample gradients) applies to it as is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = [
    "MLPGenerator",
    "MLPDiscriminator",
    "ConvGenerator",
    "ConvDiscriminator",
    "ARCHS",
    "build_models",
    "dcgan_init",
]

ARCHS = ("mlp", "dcgan")


class MLPGenerator(nn.Module):
    """z (batch, z_dim) -> points (batch, out_dim) through ``layers`` ReLU layers of ``hidden``."""

    def __init__(self, z_dim: int = 2, out_dim: int = 2, hidden: int = 256, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = []
        width = z_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        blocks.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """points (batch, in_dim) -> scores (batch,) through ``layers`` LeakyReLU(0.2) layers."""

    def __init__(self, in_dim: int = 2, hidden: int = 256, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        blocks.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class ConvGenerator(nn.Module):
    """DCGAN generator: z -> (channels, size, size) images in [-1, 1].

    A linear layer makes a ``2*width`` x ``size/4`` x ``size/4`` map; two stride-2 transposed
    convolutions (BatchNorm, ReLU) double it twice; ``tanh`` at the end. ``size`` must be a
    multiple of 4 (8 for digits, 28 for MNIST, 32 for CIFAR-10).
    """

    def __init__(self, z_dim: int = 64, channels: int = 1, size: int = 28, width: int = 64):
        super().__init__()
        if size % 4:
            raise ValueError(f"image size {size}: must be a multiple of 4")
        self.base = size // 4
        self.project = nn.Sequential(
            nn.Linear(z_dim, 2 * width * self.base**2, bias=False),
            nn.BatchNorm1d(2 * width * self.base**2),
            nn.ReLU(True),
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z)
        return self.net(x.view(len(z), -1, self.base, self.base))


class ConvDiscriminator(nn.Module):
    """DCGAN discriminator: (channels, size, size) -> scores (batch,).

    Two stride-2 convolutions with LeakyReLU(0.2), then a linear layer.
    """

    def __init__(self, channels: int = 1, size: int = 28, width: int = 64):
        super().__init__()
        if size % 4:
            raise ValueError(f"image size {size}: must be a multiple of 4")
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Flatten(),
            nn.Linear(2 * width * (size // 4) ** 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation (pytorch/examples dcgan): N(0, 0.02) weights, BN N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_models(cfg: dict[str, Any], data_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """The (generator, discriminator) pair of a config's ``[model]`` table.

    Keys: ``arch`` (``mlp`` | ``dcgan``), ``z_dim``, ``hidden`` and ``layers`` (mlp), ``width``
    (dcgan: channels of the first convolution). ``data_shape`` is one sample's shape: (2,) for
    points, (C, H, W) for images.
    """
    arch = cfg.get("arch")
    z_dim = int(cfg["z_dim"])
    if arch == "mlp":
        if len(data_shape) != 1:
            raise ValueError(f"model.arch = 'mlp': needs 2D points, the data is {data_shape}")
        hidden, layers = int(cfg["hidden"]), int(cfg["layers"])
        return (
            MLPGenerator(z_dim, data_shape[0], hidden, layers),
            MLPDiscriminator(data_shape[0], hidden, layers),
        )
    if arch == "dcgan":
        if len(data_shape) != 3 or data_shape[1] != data_shape[2]:
            raise ValueError(f"model.arch = 'dcgan': needs square images, the data is {data_shape}")
        channels, size, width = data_shape[0], data_shape[1], int(cfg["width"])
        G, D = ConvGenerator(z_dim, channels, size, width), ConvDiscriminator(channels, size, width)
        G.apply(dcgan_init)
        D.apply(dcgan_init)
        return G, D
    raise ValueError(f"model.arch = {arch!r}: must be one of {' | '.join(ARCHS)}")
