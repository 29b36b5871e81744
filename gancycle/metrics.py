"""How good and how diverse are the samples: mode coverage, precision/recall, Fréchet distance.

2D mixtures follow the PacGAN protocol (Lin et al. 2018, after VEEGAN): draw 2500 samples,
assign each to its nearest mode centre, call it *high quality* when it lies within 3 standard
deviations of that centre, and call a mode *captured* when it has at least one high-quality
sample. The reported KL is that of the histogram of high-quality samples over the modes from the
uniform distribution (PacGAN's ``detail_of_coverage``); 0 is a perfectly even spread.

One sample is a low bar: 2500 points spread evenly over grid25's square capture about 23 of
its 25 modes by chance (with 2.6% high quality), and a Gaussian with the data's mean and
covariance about 18 (``scripts/chance_modes.py``). So a mode is also counted as *held* when
its high-quality samples reach a tenth of an even share (``min_share * n / K``; 10 of 2500 on
grid25), the rule ``classes`` uses for images; chance holds none.

Images use a small classifier trained by the project on the real data
(:mod:`gancycle.classifier`): class coverage, the KL of the predicted class histogram from
uniform, the Fréchet distance between real and generated features of that classifier
(``fd_classifier``; it is *not* FID, whose features come from Inception v3: see
:mod:`gancycle.inception`) and precision/recall/density/coverage in the same feature space.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = [
    "mode_metrics",
    "chance_mode_metrics",
    "prdc",
    "frechet_distance",
    "class_metrics",
    "kl_from_uniform",
    "evaluate",
]


def kl_from_uniform(counts: torch.Tensor) -> float:
    """KL(p || uniform) of the histogram ``counts`` (K bins), in nats, in [0, log K].

    An empty histogram (no counts at all) is given the worst value, ``log K``.
    """
    k = len(counts)
    total = float(counts.sum())
    if total == 0:
        return math.log(k)
    p = counts.double() / total
    p = p[p > 0]
    return float((p * (p * k).log()).sum())


def mode_metrics(
    samples: torch.Tensor,
    centers: torch.Tensor,
    std: float,
    threshold: float = 3.0,
    min_share: float = 0.1,
) -> dict[str, float]:
    """PacGAN's mode metrics of 2D ``samples`` (n, 2) against mode ``centers`` (K, 2).

    Returns:
        ``modes``: modes captured (0..K: one high-quality sample each); ``high_quality``:
        percent of samples within ``threshold`` stds of their nearest centre (0..100); ``kl``:
        KL of the high-quality samples' mode histogram from uniform (nats); ``modes_held``:
        modes with at least ``min_share`` of an even share of high-quality samples.
    """
    samples, centers = samples.double().cpu(), centers.double().cpu()
    dist, nearest = torch.cdist(samples, centers).min(dim=1)
    good = dist < threshold * std
    counts = torch.bincount(nearest[good], minlength=len(centers))
    return {
        "modes": float((counts > 0).sum()),
        "high_quality": 100.0 * float(good.double().mean()),
        "kl": kl_from_uniform(counts),
        "modes_held": _held(counts, len(samples), min_share),
    }


def _held(counts: torch.Tensor, n: int, min_share: float) -> float:
    """How many of the histogram's bins hold at least ``min_share`` of an even share of ``n``."""
    return float((counts >= min_share * n / len(counts)).sum())


def chance_mode_metrics(
    centers: torch.Tensor, std: float, n: int = 2500, reps: int = 200, seed: int = 0
) -> dict[str, dict[str, float]]:
    """What :func:`mode_metrics` gives generators blind to the modes: the chance level.

    ``box``: ``n`` points uniform over the centres' bounding square widened by 3 std;
    ``gauss``: ``n`` points from a Gaussian with the mixture's mean and covariance. Each is
    drawn ``reps`` times; per kind and metric the mean and the standard deviation over draws
    (``<metric>`` and ``<metric>_sd``).
    """
    centers = centers.double().cpu()
    gen = torch.Generator().manual_seed(seed)
    low, high = centers.min(0).values - 3 * std, centers.max(0).values + 3 * std
    mean = centers.mean(0)
    cov = torch.cov(centers.T, correction=0) + std**2 * torch.eye(2, dtype=torch.float64)
    root = torch.linalg.cholesky(cov)
    draws = {
        "box": lambda: low + (high - low) * torch.rand(n, 2, generator=gen, dtype=torch.float64),
        "gauss": lambda: mean + torch.randn(n, 2, generator=gen, dtype=torch.float64) @ root.T,
    }
    out = {}
    for kind, draw in draws.items():
        scores = [mode_metrics(draw(), centers, std) for _ in range(reps)]
        out[kind] = {}
        for metric in scores[0]:
            values = np.array([score[metric] for score in scores])
            out[kind][metric] = float(values.mean())
            out[kind][f"{metric}_sd"] = float(values.std(ddof=1)) if reps > 1 else 0.0
    return out


BLOCK = 2**24
"""Distances computed at once (128 MB in float64): PRDC's memory grows with the samples, not
with their square."""


def _row_blocks(x: torch.Tensor, other: int, block: int) -> tuple[torch.Tensor, ...]:
    """``x`` in blocks of rows whose distances to ``other`` points hold ``block`` values."""
    return x.split(max(1, block // max(other, 1)))


def _kth_neighbour(x: torch.Tensor, k: int, block: int = BLOCK) -> torch.Tensor:
    """Distance from each row of ``x`` to its ``k``-th nearest other row."""
    return torch.cat(
        [  # [:, 0] is the row itself
            torch.cdist(rows, x).topk(k + 1, dim=1, largest=False).values[:, k]
            for rows in _row_blocks(x, len(x), block)
        ]
    )


def prdc(
    real: torch.Tensor, fake: torch.Tensor, k: int = 5, block: int = BLOCK
) -> dict[str, float]:
    """Precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020).

    Each real (fake) point gets a ball reaching its ``k``-th nearest real (fake) neighbour.
    Precision: share of fake points inside some real ball; recall: share of real points inside
    some fake ball; density: mean number of real balls holding a fake point, over ``k``
    (about 1 when the two sets match); coverage: share of real balls holding a fake point.
    All in [0, 1] except density (>= 0). The distances are taken ``block`` at a time.
    """
    real, fake = real.flatten(1).double().cpu(), fake.flatten(1).double().cpu()
    real_radius = _kth_neighbour(real, k, block)
    fake_radius = _kth_neighbour(fake, k, block)
    in_some_real_ball = torch.zeros(len(fake), dtype=torch.bool)
    real_balls_holding = torch.zeros(len(fake), dtype=torch.float64)
    in_some_fake_ball, covered = [], []
    start = 0
    for rows in _row_blocks(real, len(fake), block):
        radius = real_radius[start : start + len(rows), None]
        start += len(rows)
        cross = torch.cdist(rows, fake)  # (rows, n_fake)
        inside_real = cross <= radius  # fake j inside real ball i
        in_some_real_ball |= inside_real.any(dim=0)
        real_balls_holding += inside_real.double().sum(dim=0)
        in_some_fake_ball.append((cross <= fake_radius[None, :]).any(dim=1))
        covered.append(cross.min(dim=1).values <= radius[:, 0])
    return {
        "precision": float(in_some_real_ball.double().mean()),
        "recall": float(torch.cat(in_some_fake_ball).double().mean()),
        "density": float(real_balls_holding.mean()) / k,
        "coverage": float(torch.cat(covered).double().mean()),
    }


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (n, d) and ``b`` (m, d).

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)``, computed with
    symmetric eigendecompositions in float64 (no complex parts to discard).
    """
    a, b = a.double().cpu().numpy(), b.double().cpu().numpy()
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(cross, 0, None)).sum()
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root
    return float(max(value, 0.0))


def class_metrics(
    probs: torch.Tensor, num_classes: int, min_share: float = 0.1
) -> dict[str, float]:
    """Class coverage of generated images from a classifier's probabilities (n, classes).

    Returns:
        ``classes``: classes predicted for at least ``min_share`` of their uniform share
        (``min_share * n / classes`` samples); ``class_kl``: KL of the predicted class histogram
        from uniform (nats).
    """
    counts = torch.bincount(probs.argmax(dim=1).cpu(), minlength=num_classes)
    return {"classes": _held(counts, len(probs), min_share), "class_kl": kl_from_uniform(counts)}


def evaluate(
    sample: Callable[[int], torch.Tensor],
    real: torch.Tensor,
    data: Any,
    classifier: Any = None,
    inception: Any = None,
    with_prdc: bool = True,
) -> dict[str, float]:
    """Every metric that applies to ``data``, on ``len(real)`` generated samples.

    Args:
        sample: ``sample(n)`` returns ``n`` generated samples (on any device).
        real: as many real samples, drawn once with a fixed seed so evaluations compare.
        data: the :class:`~gancycle.data.Mixture2D` or :class:`~gancycle.data.ImageData`.
        classifier: images only, a :class:`~gancycle.classifier.Classifier`.
        inception: images only, optional, an :class:`~gancycle.inception.InceptionFeatures`.
        with_prdc: also :func:`prdc` (``len(real)`` squared distances three times, taken in
            blocks: most of a 2D evaluation's time).
    """
    fake = sample(len(real)).detach().float().cpu()
    if hasattr(data, "centers"):
        modes = mode_metrics(fake, data.centers, data.std)
        return {**modes, **prdc(real, fake)} if with_prdc else modes
    out: dict[str, float] = {}
    if classifier is not None:
        fake_logits, fake_features = classifier.logits_and_features(fake)
        _, real_features = classifier.logits_and_features(real)
        out.update(class_metrics(fake_logits.softmax(dim=1), data.num_classes))
        out["fd_classifier"] = frechet_distance(real_features, fake_features)
        if with_prdc:
            out.update(prdc(real_features, fake_features))
    if inception is not None:
        out["fid"] = frechet_distance(inception(real), inception(fake))
    return out
