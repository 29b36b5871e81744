"""Generators and discriminators: an MLP pair for 2D points, a DCGAN-style pair for images.

The discriminator returns one raw score (a logit) per input, shape (batch,). It has no batch
normalisation, so the WGAN-GP penalty (which needs per-input gradients) applies to it as is.

Packing (PacGAN, Lin et al. 2018; ``model.pack = m``): D scores ``m`` samples at once, their
features concatenated (points: ``m * 2`` inputs; images: ``m * C`` channels), so it can see
that a batch of fakes lacks diversity. :func:`pack_samples` groups a batch into packs;
:func:`generate_in_packs` makes fakes as PacGAN's code does, G once per position in the pack.
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
    "Maxout",
    "build_models",
    "dcgan_init",
    "normal_init",
    "pack_samples",
    "generate_in_packs",
]

ARCHS = ("mlp", "dcgan")


class MLPGenerator(nn.Module):
    """z (batch, z_dim) -> points (batch, out_dim) through ``layers`` ReLU layers of ``hidden``.

    With ``batchnorm`` each hidden layer is linear without bias, BatchNorm, ReLU (PacGAN's
    synthetic G; BatchNorm's epsilon 1e-4 and running-statistics momentum 0.05 as there).
    """

    def __init__(
        self,
        z_dim: int = 2,
        out_dim: int = 2,
        hidden: int = 256,
        layers: int = 3,
        batchnorm: bool = False,
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        width = z_dim
        for _ in range(layers):
            if batchnorm:
                blocks += [
                    nn.Linear(width, hidden, bias=False),
                    nn.BatchNorm1d(hidden, eps=1e-4, momentum=0.05),
                    nn.ReLU(),
                ]
            else:
                blocks += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        blocks.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Maxout(nn.Module):
    """The maximum over groups of ``pieces`` consecutive features: (..., k * pieces) -> (..., k).

    After a linear layer to ``k * pieces`` features it is a maxout layer (Goodfellow et al.
    2013), as the ``LinearMaxout`` brick of Blocks that PacGAN's synthetic D uses.
    """

    def __init__(self, pieces: int):
        super().__init__()
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (-1, self.pieces)).amax(-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


class MLPDiscriminator(nn.Module):
    """points (batch, in_dim) -> scores (batch,) through ``layers`` LeakyReLU(0.2) layers.

    ``maxout`` >= 2: maxout layers of ``maxout`` pieces instead (``hidden`` units each), as
    PacGAN's synthetic D. ``in_dim`` is the pack's width (``pack * 2`` for packed points).
    """

    def __init__(self, in_dim: int = 2, hidden: int = 256, layers: int = 3, maxout: int = 0):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(layers):
            if maxout >= 2:
                blocks += [nn.Linear(width, hidden * maxout), Maxout(maxout)]
            else:
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


def normal_init(module: nn.Module, std: float) -> None:
    """PacGAN's initialisation (Blocks' ``IsotropicGaussian``): linear weights N(0, ``std``),
    biases zero; BatchNorm keeps scale 1 and shift 0."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def pack_samples(x: torch.Tensor, pack: int, dim: int = 0) -> torch.Tensor:
    """Group the ``pack * n`` samples along ``dim`` into ``n`` packs of ``pack`` samples.

    Pack ``j`` holds samples ``j, n + j, ..., (pack - 1) * n + j`` (one from each group of
    :func:`generate_in_packs`, as PacGAN concatenates its G's outputs), their features
    concatenated: points (n, pack * d), images (n, pack * C, H, W). ``dim`` = 1 for a
    population's (N, batch, ...) tensors. ``pack`` = 1 returns ``x`` as it is.
    """
    if pack == 1:
        return x
    lead, total, rest = x.shape[:dim], x.shape[dim], x.shape[dim + 1 :]
    n = total // pack
    grouped = x.reshape(*lead, pack, n, *rest).transpose(dim, dim + 1)
    return grouped.reshape(*lead, n, pack * rest[0], *rest[1:])


def generate_in_packs(G: Any, z: torch.Tensor, pack: int, dim: int = 0) -> torch.Tensor:
    """``G(z)`` made in ``pack`` groups along ``dim``, one call each (PacGAN's code calls G once
    per position in the pack, so a BatchNorm G normalises each group on its own)."""
    if pack == 1:
        return G(z)
    return torch.cat([G(part) for part in z.chunk(pack, dim)], dim)


def _mlp_size(cfg: dict[str, Any], net: str) -> tuple[int, int]:
    """(hidden, layers) of ``net`` (``g`` or ``d``): its own keys, 0 meaning the shared ones."""
    hidden = int(cfg.get(f"{net}_hidden", 0)) or int(cfg["hidden"])
    layers = int(cfg.get(f"{net}_layers", 0)) or int(cfg["layers"])
    return hidden, layers


def build_models(cfg: dict[str, Any], data_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """The (generator, discriminator) pair of a config's ``[model]`` table.

    Keys: ``arch`` (``mlp`` | ``dcgan``), ``z_dim``, ``pack`` (D's input is ``pack`` samples);
    mlp: ``hidden`` and ``layers`` (``g_hidden``, ``g_layers``, ``d_hidden``, ``d_layers``: one
    network's own, 0 = the shared ones), ``g_batchnorm``, ``d_maxout``, ``init_std`` (0 = torch's
    default initialisation); dcgan: ``width`` (channels of the first convolution). ``data_shape``
    is one sample's shape: (2,) for points, (C, H, W) for images.
    """
    arch = cfg.get("arch")
    z_dim = int(cfg["z_dim"])
    pack = int(cfg.get("pack", 1))
    if arch == "mlp":
        if len(data_shape) != 1:
            raise ValueError(f"model.arch = 'mlp': needs 2D points, the data is {data_shape}")
        g_hidden, g_layers = _mlp_size(cfg, "g")
        d_hidden, d_layers = _mlp_size(cfg, "d")
        G = MLPGenerator(
            z_dim, data_shape[0], g_hidden, g_layers, bool(cfg.get("g_batchnorm", False))
        )
        D = MLPDiscriminator(pack * data_shape[0], d_hidden, d_layers, int(cfg.get("d_maxout", 0)))
        std = float(cfg.get("init_std", 0.0))
        if std > 0:
            G.apply(lambda m: normal_init(m, std))
            D.apply(lambda m: normal_init(m, std))
        return G, D
    if arch == "dcgan":
        if len(data_shape) != 3 or data_shape[1] != data_shape[2]:
            raise ValueError(f"model.arch = 'dcgan': needs square images, the data is {data_shape}")
        channels, size, width = data_shape[0], data_shape[1], int(cfg["width"])
        G = ConvGenerator(z_dim, channels, size, width)
        D = ConvDiscriminator(pack * channels, size, width)
        G.apply(dcgan_init)
        D.apply(dcgan_init)
        return G, D
    raise ValueError(f"model.arch = {arch!r}: must be one of {' | '.join(ARCHS)}")
