"""A small image classifier trained on the real data, the feature space of image metrics.

It is trained once per run on the training images (a tenth held out to report its accuracy)
and cached as ``<run>/data/classifier.pt``; later evaluations load it. Its penultimate layer
gives the features of ``fd_classifier`` (:mod:`gancycle.metrics`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.runs import MISFITS, atomic_torch_save, checkpoint_misfit, load_checkpoint
from gancycle.data import ImageData

__all__ = ["Classifier", "load_or_train_classifier"]


class Classifier(nn.Module):
    """Two 3x3 convolutions with max-pooling, a 128-unit feature layer, a linear read-out."""

    def __init__(self, channels: int, num_classes: int, features: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4, features),
            nn.ReLU(),
        )
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def logits_and_features(
        self, x: torch.Tensor, chunk: int = 1024
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (n, classes) and features (n, 128) of images in [-1, 1], on the CPU."""
        self.eval()
        weight = next(self.parameters())
        logits, features = [], []
        for part in x.split(chunk):
            h = self.body(part.to(weight.device, weight.dtype))
            features.append(h.cpu())
            logits.append(self.head(h).cpu())
        return torch.cat(logits), torch.cat(features)


def _train(
    data: ImageData, steps: int, device: torch.device, seed: int
) -> tuple[Classifier, float]:
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.images), generator=generator)
    held = max(1, len(order) // 10)
    test, train = order[:held], order[held:]
    with torch.random.fork_rng(devices=[]):  # leave the training run's global RNG untouched
        torch.manual_seed(seed)
        model = Classifier(data.shape[0], data.num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        index = train[torch.randint(len(train), (128,), generator=generator)]
        x, y = data.batch(index)
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    x, y = data.batch(test)
    logits, _ = model.logits_and_features(x)
    accuracy = float((logits.argmax(dim=1) == y.cpu()).float().mean())
    return model, accuracy


def load_or_train_classifier(
    data: ImageData, path: str | Path, steps: int, device: torch.device, seed: int = 0
) -> tuple[Classifier, float]:
    """The classifier cached at ``path``, trained for ``steps`` Adam steps if not there yet.

    Returns the classifier (in eval mode) and its accuracy on the held-out tenth, in [0, 1].
    """
    path = Path(path)
    if path.is_file():
        saved = load_checkpoint(path)
        model = Classifier(data.shape[0], data.num_classes).to(device)
        try:
            model.load_state_dict(saved["model"])
            return model.eval(), float(saved["accuracy"])
        except MISFITS as e:
            raise checkpoint_misfit(path, e) from None
    model, accuracy = _train(data, steps, device, seed)
    atomic_torch_save(
        {"model": model.state_dict(), "accuracy": accuracy, "dataset": data.name}, path
    )
    return model.eval(), accuracy
