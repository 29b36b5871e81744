"""The tilted double well: why a cyclical schedule can leave a shallow minimum.

The often-quoted double well ``θ⁴ - 2θ²`` is symmetric: both minima (θ = ±1) are equally deep,
so there is nothing to escape *to*. We add a tilt ``c·θ``::

    f(θ) = θ⁴ - 2θ² + c·θ        (c = 0.5: shallow well at θ ≈ +0.93, deep well at θ ≈ -1.06)

and run noisy gradient descent ``θ ← θ - η_t (f'(θ) + σ ξ_t)`` (ξ standard normal: the gradient
noise of a minibatch) from the bottom of the shallow well. Noise scaled by a large step lets the
iterate hop the barrier; as the step shrinks it settles, and the deep well, having the higher
barrier, keeps it more often than the shallow one. A cyclical schedule (cosine with warm
restarts) gets several such anneals; a monotone exponential decay from the same peak gets one
short one and mostly stays trapped where it started. (A single slow cosine anneal over the whole
run escapes too: what matters is time spent at a large step, then a slow descent.)

``scripts/double_well.py`` plots one trajectory of each and the fraction of seeds that end in the
deep well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.schedules import Schedule, from_spec

__all__ = ["DoubleWell", "descend", "deep_fraction", "compared_schedules"]


def compared_schedules(
    peak: float = 0.05, period: float = 500, gamma: float = 0.998, floor: float = 1e-4
) -> tuple[Schedule, Schedule]:
    """The two schedules the double well compares, from the same ``peak`` down to ``floor``:
    cosine with warm restarts every ``period`` steps, and exponential decay by ``gamma`` a
    step."""
    cyclic = {"kind": "cosine_restarts", "max": peak, "min": floor, "period": period}
    monotone = {"kind": "exponential", "max": peak, "min": floor, "gamma": gamma}
    return from_spec(cyclic, name="cyclic"), from_spec(monotone, name="monotone")


@dataclass(frozen=True)
class DoubleWell:
    """``f(θ) = θ⁴ - 2θ² + tilt·θ``; ``tilt > 0`` makes the negative well the deep one."""

    tilt: float = 0.5

    def f(self, theta: np.ndarray | float) -> np.ndarray | float:
        return theta**4 - 2 * theta**2 + self.tilt * theta

    def grad(self, theta: float) -> float:
        return 4 * theta**3 - 4 * theta + self.tilt

    def minima(self) -> tuple[float, float]:
        """(shallow, deep) minima: the outer real roots of f'."""
        roots = np.sort(np.roots([4.0, 0.0, -4.0, self.tilt]).real)
        deep, shallow = (roots[0], roots[2]) if self.tilt > 0 else (roots[2], roots[0])
        return float(shallow), float(deep)

    def in_deep_well(self, theta: float) -> bool:
        barrier = float(np.sort(np.roots([4.0, 0.0, -4.0, self.tilt]).real)[1])
        return theta < barrier if self.tilt > 0 else theta > barrier


def descend(
    schedule: Schedule,
    steps: int = 3000,
    noise: float = 3.0,
    seed: int = 0,
    well: DoubleWell | None = None,
) -> np.ndarray:
    """Noisy gradient descent from the shallow minimum; returns θ at every step (steps + 1).

    A trajectory that leaves |θ| <= 5 (divergence) is cut there and padded with NaN.
    """
    well = well or DoubleWell()
    rng = np.random.default_rng(seed)
    lrs = schedule.values(np.arange(steps))
    xi = rng.standard_normal(steps)
    theta = np.full(steps + 1, np.nan)
    theta[0] = well.minima()[0]
    for t in range(steps):
        nxt = theta[t] - lrs[t] * (well.grad(theta[t]) + noise * xi[t])
        if not abs(nxt) <= 5.0:
            break
        theta[t + 1] = nxt
    return theta


def deep_fraction(
    schedule: Schedule,
    seeds: int = 20,
    steps: int = 3000,
    noise: float = 3.0,
    well: DoubleWell | None = None,
) -> float:
    """Fraction of seeds whose final θ lies in the deep well (diverged runs count as not)."""
    well = well or DoubleWell()
    ends = [descend(schedule, steps, noise, s, well)[-1] for s in range(seeds)]
    return float(np.mean([np.isfinite(e) and well.in_deep_well(e) for e in ends]))
