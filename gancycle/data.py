"""Training data: 2D Gaussian mixtures and small image sets, sampled from a seeded generator.

Every data source draws its batches with ``torch.randint`` / ``torch.randn`` from a
``torch.Generator`` the trainer owns (and saves in its checkpoint), so a resumed run sees exactly
the batches an uninterrupted one would have seen. Batches are drawn with replacement; there are
no epochs to keep track of.

Sets (``data.name``):

================  ==============================================================================
``ring8``         8 Gaussians on a circle of radius 1, std 0.01 (VEEGAN, PacGAN)
``grid25``        25 Gaussians at {-4,-2,0,2,4}^2, std 0.05 (VEEGAN, PacGAN)
``digits``        scikit-learn's 1797 handwritten digits, 1x8x8, shipped offline
``mnist``         torchvision MNIST, 1x28x28, from ``data.root`` (``--download`` to fetch)
``fashion_mnist`` torchvision FashionMNIST, 1x28x28, idem
``cifar10``       torchvision CIFAR-10, 3x32x32, idem
``fake``          torchvision ``FakeData`` (random images), for tests: ``data.fake_size`` images
                  of ``data.channels`` x ``data.image_size`` x ``data.image_size``
================  ==============================================================================

Images are scaled to [-1, 1] (the generator ends in ``tanh``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "RING8_RADIUS",
    "RING8_STD",
    "GRID25_SPACING",
    "GRID25_STD",
    "DATASETS",
    "ring8_centers",
    "grid25_centers",
    "Mixture2D",
    "ImageData",
    "load_data",
]

RING8_RADIUS = 1.0
RING8_STD = 0.01
GRID25_SPACING = 2.0
GRID25_STD = 0.05

MIXTURES = ("ring8", "grid25")
TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
DATASETS = (*MIXTURES, "digits", *TORCHVISION, "fake")


def ring8_centers() -> torch.Tensor:
    """The 8 mode centres on the unit circle, shape (8, 2), angles 0, 45, ..., 315 degrees."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return (RING8_RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def grid25_centers() -> torch.Tensor:
    """The 25 mode centres of the 5x5 grid {-4, -2, 0, 2, 4}^2, shape (25, 2)."""
    axis = torch.arange(-2, 3, dtype=torch.float32) * GRID25_SPACING
    xs, ys = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs.ravel(), ys.ravel()], dim=1)


@dataclass
class Mixture2D:
    """An equal-weight mixture of isotropic 2D Gaussians.

    Attributes:
        name: ``ring8`` or ``grid25``.
        centers: mode centres, shape (K, 2).
        std: the standard deviation of every mode (same unit as the coordinates).
    """

    name: str
    centers: torch.Tensor
    std: float

    @property
    def shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def num_modes(self) -> int:
        return len(self.centers)

    def to(self, device: torch.device) -> Mixture2D:
        return Mixture2D(self.name, self.centers.to(device), self.std)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` points, shape (n, 2), on the generator's device."""
        device = generator.device
        modes = torch.randint(self.num_modes, (n,), generator=generator, device=device)
        noise = torch.randn(n, 2, generator=generator, device=device)
        return self.centers.to(device)[modes] + self.std * noise


@dataclass
class ImageData:
    """A labelled image set held in memory.

    Attributes:
        name: the set's name.
        images: shape (N, C, H, W), ``uint8`` in [0, 255].
        labels: class indices, shape (N,).
        num_classes: number of classes.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def to(self, device: torch.device) -> ImageData:
        return ImageData(
            self.name, self.images.to(device), self.labels.to(device), self.num_classes
        )

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images at ``index`` scaled to [-1, 1] (in torch's default dtype), and their labels."""
        images = self.images[index.to(self.images.device)].to(torch.get_default_dtype())
        images = images / 127.5 - 1.0
        return images, self.labels[index.to(self.labels.device)]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` images drawn with replacement, shape (n, C, H, W), in [-1, 1]."""
        index = torch.randint(len(self.images), (n,), generator=generator, device=generator.device)
        return self.batch(index)[0].to(generator.device)


def _digits() -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return ImageData("digits", torch.from_numpy(images), torch.from_numpy(digits.target), 10)


def _torchvision(name: str, root: Path, download: bool) -> ImageData:
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[name])
    try:
        dataset = cls(str(root), train=True, download=download)
    except RuntimeError:
        raise FileNotFoundError(
            f"data.root = {str(root)!r}: no {TORCHVISION[name]} there; pass --download to fetch "
            "it, or --data-root DIR to point at a copy"
        ) from None
    data = torch.as_tensor(np.asarray(dataset.data))
    images = data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.long)
    return ImageData(name, images.contiguous(), labels, len(dataset.classes))


def _fake(size: int, channels: int, image_size: int) -> ImageData:
    import torchvision

    dataset = torchvision.datasets.FakeData(
        size=size, image_size=(channels, image_size, image_size), num_classes=10
    )
    images, labels = zip(*(dataset[i] for i in range(size)), strict=True)
    array = np.stack([np.asarray(img, dtype=np.uint8) for img in images])
    array = array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2)
    return ImageData("fake", torch.from_numpy(array.copy()), torch.tensor(labels), 10)


def load_data(cfg: dict[str, Any]) -> Mixture2D | ImageData:
    """The data source named by a config's ``[data]`` table (on the CPU).

    Keys: ``name`` (see the module docstring), ``root`` (folder of torchvision sets),
    ``download`` (bool), and for ``fake``: ``fake_size``, ``channels``, ``image_size``.

    Raises:
        ValueError: an unknown ``data.name``.
        FileNotFoundError: a torchvision set missing under ``data.root`` without ``download``.
    """
    name = cfg.get("name")
    if name == "ring8":
        return Mixture2D("ring8", ring8_centers(), RING8_STD)
    if name == "grid25":
        return Mixture2D("grid25", grid25_centers(), GRID25_STD)
    if name == "digits":
        return _digits()
    if name in TORCHVISION:
        return _torchvision(name, Path(cfg.get("root", "data")), bool(cfg.get("download", False)))
    if name == "fake":
        return _fake(
            int(cfg.get("fake_size", 256)),
            int(cfg.get("channels", 1)),
            int(cfg.get("image_size", 8)),
        )
    raise ValueError(f"data.name = {name!r}: must be one of {' | '.join(DATASETS)}")
