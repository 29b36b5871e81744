"""Pictures of samples for TensorBoard: 2D scatters over the modes, image grids."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

__all__ = ["scatter_over_modes", "image_grid"]


def scatter_over_modes(
    samples: torch.Tensor, centers: torch.Tensor, std: float, title: str = ""
) -> Figure:
    """Samples (n, 2) as dots, mode centres as crosses, each with its 3-std circle."""
    samples, centers = samples.detach().float().cpu(), centers.float().cpu()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.3, color="tab:blue", label="samples")
    ax.scatter(centers[:, 0], centers[:, 1], marker="x", color="tab:red", label="modes")
    for x, y in centers.tolist():
        ax.add_patch(plt.Circle((x, y), 3 * std, fill=False, color="tab:red", linewidth=0.8))
    reach = float(centers.abs().max()) * 1.5 + 6 * std
    ax.set(xlim=(-reach, reach), ylim=(-reach, reach), aspect="equal", title=title)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """A CHW grid in [0, 1] of images in [-1, 1] (n, C, H, W)."""
    return make_grid(images.detach().float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1))
