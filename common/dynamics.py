"""Training dynamics: kinetic energy, a thermostat, curvature and the stability of a schedule.

- :class:`KineticEnergy` measures ``|Δθ|²``, the squared length of one optimizer update.
- :class:`Thermostat` adds gradient noise so that the expected kinetic energy holds a target.
- :func:`hessian_top_eigenvalue` estimates the sharpness L by power iteration on Hessian-vector
  products.
- :func:`max_stable_peak` answers: for gradient descent on a quadratic of curvature L, how large
  may the peak learning rate of a schedule shape be? 2/L for a constant rate, 4/L for a full
  cosine cycle.
- :func:`linear_scaling` scales a learning rate with the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch

from common.flat_params import FlatParameters
from common.schedules import Cyclic, Decay, Schedule, one_cycle_wave

__all__ = [
    "KineticEnergy",
    "grad_norm",
    "grad_norm_tensor",
    "Thermostat",
    "hessian_top_eigenvalue",
    "cycle_growth_factor",
    "max_stable_peak",
    "suggest_max",
    "stability_margin",
    "linear_scaling",
]


def _params(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    return [p for p in params if p.requires_grad]


class KineticEnergy:
    """``|Δθ|²`` of the update made between :meth:`before` and :meth:`after`.

    Cheap enough for every step: the parameters are copied into buffers allocated once, and the
    differences and norms are computed with torch's fused ``_foreach`` kernels. Given a
    :class:`~common.flat_params.FlatParameters`, each of those is a single kernel.

    Args:
        params: the parameters to watch (e.g. ``model.parameters()``), or a network's
            :class:`~common.flat_params.FlatParameters`.
    """

    def __init__(self, params: Iterable[torch.Tensor] | FlatParameters) -> None:
        if isinstance(params, FlatParameters):
            flat = params
            self.params = [flat.data]
            self._grads: Callable[[], list[torch.Tensor]] = lambda: [flat.grad]
        else:
            originals = _params(params)
            # Detached views share storage with the parameters, so they see in-place updates.
            self.params = [p.detach() for p in originals]
            self._grads = lambda: [p.grad for p in originals if p.grad is not None]
        self._buffers = [torch.empty_like(p) for p in self.params]
        self._armed = False

    def before(self) -> None:
        torch._foreach_copy_(self._buffers, self.params)
        self._armed = True

    def _update(self) -> list[torch.Tensor]:
        """The buffers, now holding ``-Δθ`` (subtracted in place: no allocation per step)."""
        if not self._armed:
            raise RuntimeError("KineticEnergy.after() without a matching before()")
        self._armed = False
        torch._foreach_sub_(self._buffers, self.params)
        return self._buffers

    def after_tensor(self) -> torch.Tensor:
        """The energy as a 0-d tensor (no device sync, for per-step use on a GPU)."""
        return torch.stack(torch._foreach_norm(self._update())).square().sum()

    def after(self) -> float:
        return float(self.after_tensor())

    def after_with_grad_norm(self) -> tuple[float, float]:
        """``(|Δθ|², gradient norm)`` from one ``_foreach_norm`` and one read-back.

        ``optimizer.step()`` leaves ``.grad`` as it was, so the gradient norm of the update just
        made can be read here.
        """
        update = self._update()
        squares = torch.stack(torch._foreach_norm(update + self._grads())).square().tolist()
        n = len(update)
        return math.fsum(squares[:n]), math.sqrt(math.fsum(squares[n:]))


def grad_norm_tensor(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """The global L2 norm of the gradients as a 0-d tensor (0 where no gradient is set)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def grad_norm(params: Iterable[torch.Tensor]) -> float:
    """The global L2 norm of the gradients (0 where no gradient is set)."""
    return float(grad_norm_tensor(params))


class Thermostat:
    """Gradient noise that holds the expected kinetic energy of each SGD update at ``target``.

    Call :meth:`apply` after ``backward()`` and before ``optimizer.step()``; it adds
    ``sigma * xi`` (``xi`` standard normal) to every gradient.

    **Derivation.** With learning rate η, momentum μ, dampening τ and weight decay λ, torch's
    SGD moves ``Δθ = -η u`` with ``u = μ b + (1-τ)(g + λθ + σξ)`` (``b`` the momentum buffer;
    ``u = g + λθ + σξ`` without momentum or at the first step; Nesterov moves along
    ``g + λθ + σξ + μu``). Split ``u = u₀ + c σ ξ`` into its deterministic part ``u₀`` and the
    noise, with gain ``c`` (1, 1-τ, or 1+μ(1-τ) for Nesterov). ξ is independent of everything
    known at this step, with zero mean and identity covariance over the ``D`` coordinates, so
    the cross term vanishes in expectation::

        E|Δθ|² = Σ_groups η² (|u₀|² + c² σ² D)

    and the target ``K`` is met in expectation, given the current state, by::

        σ² = max(0, (K - Σ η²|u₀|²) / Σ η² c² D)

    (no noise when the update alone already carries more than ``K``: noise can only add energy).

    Only SGD: Adam-style optimizers divide the update by a running RMS of the gradient, which
    the noise itself inflates, so extra noise can *lower* ``|Δθ|²``; there is no closed form.

    Args:
        optimizer: a ``torch.optim.SGD``.
        target: the kinetic energy ``K = E|Δθ|²`` to hold, > 0.
        generator: a torch generator for reproducible noise (default: the global one).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        target: float,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.SGD):
            raise ValueError(
                f"thermostat: needs torch.optim.SGD, got {type(optimizer).__name__} "
                "(adaptive optimizers rescale the noise; no closed form)"
            )
        if not target > 0:
            raise ValueError(f"thermostat target = {target!r}: must be > 0")
        self.optimizer, self.target, self.generator = optimizer, target, generator
        self.sigma = 0.0

    def _sigma(self) -> float:
        deterministic, noise_weight = 0.0, 0.0
        for group in self.optimizer.param_groups:
            lr = float(group["lr"])
            mu, tau = group["momentum"], group["dampening"]
            wd, nesterov = group["weight_decay"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.detach()
                if wd:
                    d = d + wd * p.detach()
                buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
                if mu and buf is not None:
                    u, c = mu * buf + (1 - tau) * d, 1 - tau
                else:
                    u, c = d, 1.0
                if mu and nesterov:
                    u, c = d + mu * u, 1 + mu * c
                deterministic += lr**2 * float(u.pow(2).sum())
                noise_weight += lr**2 * c**2 * p.numel()
        if noise_weight == 0:
            return 0.0
        return math.sqrt(max(0.0, (self.target - deterministic) / noise_weight))

    @torch.no_grad()
    def apply(self) -> float:
        """Add the noise to the gradients; returns the σ used."""
        self.sigma = self._sigma()
        if self.sigma > 0:
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        noise = torch.randn(
                            p.grad.shape, generator=self.generator, dtype=p.grad.dtype
                        ).to(p.device)
                        p.grad.add_(noise, alpha=self.sigma)
        return self.sigma


def hessian_top_eigenvalue(
    loss_fn: Callable[[], torch.Tensor],
    params: Iterable[torch.Tensor],
    iters: int = 30,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
) -> float:
    """The Hessian eigenvalue of largest magnitude (the sharpness L), by power iteration.

    Each iteration is one Hessian-vector product ``Hv = ∇(∇loss · v)`` on the graph of one call
    to ``loss_fn``, so the cost is about two backward passes per iteration. Stops when the
    estimate changes by less than ``tol`` relative, or after ``iters`` iterations.

    Args:
        loss_fn: computes the loss (a scalar tensor) from ``params``.
        params: the parameters the Hessian is taken over.
        iters: at most this many iterations (>= 1).
        tol: relative change that counts as converged.
        generator: for a reproducible start vector.
    """
    params = _params(params)
    loss = loss_fn()
    # Parameters the loss does not touch have a zero Hessian block.
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    if not used:
        return 0.0
    params, grads = [params[i] for i in used], [grads[i] for i in used]
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    norm = torch.sqrt(sum((x * x).sum() for x in v))
    v = [x / norm for x in v]
    eigenvalue = 0.0
    for _ in range(iters):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        new = float(sum((a * b).sum() for a, b in zip(hv, v, strict=True)))
        norm = torch.sqrt(sum((x * x).sum() for x in hv))
        if float(norm) == 0.0:
            return 0.0
        v = [x.detach() / norm for x in hv]
        converged = abs(new - eigenvalue) <= tol * abs(new)
        eigenvalue = new
        if converged:
            break
    return eigenvalue


# -- stability of a schedule shape -----------------------------------------------------------

Shape = str | Schedule | Callable[[float], float]


def _wave(shape: Shape) -> Callable[[np.ndarray], np.ndarray]:
    """The schedule's first cycle as η(p)/η_max over positions p in [0, 1)."""
    if isinstance(shape, str):
        waves = {
            "constant": lambda p: np.ones_like(p),
            "cosine": lambda p: 0.5 * (1 + np.cos(np.pi * p)),
            "triangular": lambda p: 1.0 - np.abs(2.0 * p - 1.0),
            "one_cycle": lambda p: np.vectorize(lambda q: one_cycle_wave(q, 0.3, 1 / 25))(p),
        }
        if shape not in waves:
            raise ValueError(f"shape = {shape!r}: must be one of {', '.join(waves)}")
        return waves[shape]
    if isinstance(shape, Decay):
        return lambda p: np.ones_like(p) if shape.kind == "constant" else _unsupported(shape)
    if isinstance(shape, Cyclic):
        floor = shape.min / shape.max
        wave = np.vectorize(shape._wave)
        return lambda p: floor + (1.0 - floor) * wave(p)
    if callable(shape):
        return np.vectorize(shape)
    raise ValueError(f"shape = {shape!r}: a name, a schedule or a function of position")


def _unsupported(schedule: Schedule) -> np.ndarray:
    raise ValueError(f"kind {schedule.kind!r}: has no cycle; stability needs a periodic shape")


def _positions(points: int) -> np.ndarray:
    return (np.arange(points) + 0.5) / points


def _growth(wave: np.ndarray, peak_times_L: float) -> float:
    with np.errstate(divide="ignore"):
        return float(np.exp(np.mean(np.log(np.abs(1.0 - peak_times_L * wave)))))


def cycle_growth_factor(shape: Shape, peak_times_L: float, points: int = 200_000) -> float:
    """Per-step growth of gradient descent on ``f = L x²/2``, geometric mean over one cycle.

    GD multiplies ``x`` by ``1 - η_t L`` at each step, so over a long cycle ``|x|`` grows by
    ``exp(∫₀¹ log|1 - η(p) L| dp)`` per step on average; the cycle is stable when this is <= 1.
    For the cosine ``η(p) = η_max (1 + cos πp)/2`` the integral is known in closed form:
    the factor is exactly ``η_max L / 4`` once ``η_max L >= 1``, hence the 4/L bound.
    """
    return _growth(_wave(shape)(_positions(points)), peak_times_L)


def max_stable_peak(shape: Shape = "cosine", points: int = 200_000) -> float:
    """The largest ``η_max · L`` for which a cycle of ``shape`` is stable (growth <= 1).

    ``constant`` gives 2 (the classic 2/L), ``cosine`` gives 4 (4/L), ``triangular`` about
    4.59 (its linear ramp spends even less time near the peak: the root of
    ``(a-1) log(a-1) = a``). Found by bisection on :func:`cycle_growth_factor`.
    """
    wave = _wave(shape)(_positions(points))
    lo, hi = 1.0, 2.0
    while _growth(wave, hi) <= 1.0:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ValueError("no finite stability bound for this shape")
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if _growth(wave, mid) <= 1.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def suggest_max(L: float, shape: Shape = "cosine", safety: float = 1.0) -> float:
    """A peak learning rate at the stability edge for measured sharpness ``L``: 4/L for cosine.

    ``safety`` < 1 backs off from the edge (e.g. 0.5 for half the bound).
    """
    if not L > 0:
        raise ValueError(f"L = {L!r}: the sharpness must be > 0")
    return safety * max_stable_peak(shape) / L


def stability_margin(lr: float, L: float) -> float:
    """``lr · L / 4``: below 1 a cosine cycle peaking at ``lr`` is stable on this curvature."""
    return lr * L / 4.0


def linear_scaling(lr: float, batch: int, base_batch: int, rule: str = "linear") -> float:
    """Scale a learning rate tuned at ``base_batch`` to ``batch`` (Goyal et al., 2017).

    ``rule="linear"`` multiplies by ``batch/base_batch``; ``"sqrt"`` by its square root (the
    usual choice for Adam).
    """
    if batch <= 0 or base_batch <= 0:
        raise ValueError(f"batch = {batch}, base_batch = {base_batch}: must be > 0")
    ratio = batch / base_batch
    if rule == "linear":
        return lr * ratio
    if rule == "sqrt":
        return lr * math.sqrt(ratio)
    raise ValueError(f"rule = {rule!r}: must be linear | sqrt")
