"""Inception v3 pool features for FID, only from a weights file the user already has.

Nothing is downloaded: ``--inception-weights FILE`` must point at a state dict of torchvision's
``inception_v3`` (e.g. ``inception_v3_google-0cc3c7bd.pth``, the ``IMAGENET1K_V1`` weights).
Images in [-1, 1] are resized to 299x299 (bilinear), grey images repeated over three channels,
and the 2048-dimensional average-pool output is the feature. These are torchvision's weights,
not the TensorFlow graph of the original FID code, so values are close to but not identical
with published FIDs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.config import ConfigError
from common.runs import load_checkpoint

__all__ = ["InceptionFeatures"]


class InceptionFeatures:
    """Callable: images (n, C, H, W) in [-1, 1] -> features (n, 2048) on the CPU.

    Args:
        weights: path of the torchvision ``inception_v3`` state dict.
        device: where to run the network.
        name: how the user named the file (the flag, or the config key), for messages.

    Raises:
        FileNotFoundError: ``weights`` does not exist (the message names the path and flag).
        ValueError: the file is not an ``inception_v3`` state dict.
    """

    def __init__(
        self,
        weights: str | Path,
        device: torch.device | str = "cpu",
        name: str = "--inception-weights",
    ) -> None:
        from torchvision.models import inception_v3

        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"{name} {path}: no such file; FID needs a local torchvision "
                "inception_v3 state dict (nothing is downloaded)"
            )
        try:
            state = load_checkpoint(path)  # weights only: the file runs no code
        except ConfigError:
            raise ValueError(
                f"{name} {path}: not an inception_v3 state dict (damaged, or not "
                "tensors saved with torch.save)"
            ) from None
        with torch.random.fork_rng(devices=[]):
            model = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as e:
            first = str(e).splitlines()[0]
            raise ValueError(f"{name} {path}: not an inception_v3 state dict ({first})") from None
        model.fc = nn.Identity()
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, chunk: int = 100) -> torch.Tensor:
        out = []
        for part in images.split(chunk):
            x = part.to(self.device).float()
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(self.model(x).cpu())
        return torch.cat(out)
