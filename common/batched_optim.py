"""Adam and SGD for a population: N members' parameters stacked along a leading dimension.

A population trains N copies of one network as one batched model: every parameter tensor has
shape ``(N, ...)``, row ``k`` belonging to member ``k``. ``torch.optim`` cannot drive such a
model, because its learning rate and betas are one number per param group, while each member of
a population follows its own schedule. Here the per-member hyperparameters are tensors of shape
``(N,)``, written before each step:

- ``lr``: the learning rate of each member;
- ``beta1``: Adam's ``betas[0]`` (SGD: the momentum) of each member;
- the step count (Adam's bias correction) is per member too, and so are restart resets:
  :meth:`BatchedOptimizer.reset` zeroes the named state of the members a boolean mask picks.

Each member's update is, operation for operation, the one ``torch.optim.Adam`` (single-tensor
path, the CPU default) or ``torch.optim.SGD`` makes for that member alone, so a member follows a
lone optimizer to rounding (``tests/test_batched_optim.py`` checks it in float64).

Typical loop::

    opt = BatchedAdam([stacked.data], members=N, betas=(0.5, 0.999))
    opt.set(lr=lrs)                            # one value per member
    opt.reset(restarted, ("exp_avg",))         # members whose cycle restarted
    loss.sum().backward(); opt.step()
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = ["BatchedOptimizer", "BatchedAdam", "BatchedSGD"]


class BatchedOptimizer(ABC):
    """What Adam and SGD share: per-member ``lr`` and ``beta1``, resets, inactive members.

    Args:
        params: tensors of shape ``(N, ...)`` whose ``.grad`` holds the gradients at
            :meth:`step` (views of one buffer work, and are fastest: one kernel per operation).
        members: N.
        lr: initial learning rate of every member (overwrite :attr:`lr` before each step).
        beta1: initial ``beta1`` of every member (Adam's ``betas[0]``, SGD's momentum).

    Attributes:
        lr: learning rates, shape ``(N,)``, float64 on the parameters' device (torch computes
            with its Python-float hyperparameters in double precision too).
        beta1: Adam's ``betas[0]`` / SGD's momentum per member, shape ``(N,)``, float64.
    """

    state_keys: tuple[str, ...] = ()
    """The per-member state :meth:`reset` can zero."""
    first_moment: str = ""
    """The state key of the first moment (momentum): what ``reset = "momentum"`` forgets."""

    def __init__(
        self, params: Iterable[torch.Tensor], members: int, lr: float, beta1: float
    ) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: no parameters")
        for p in self.params:
            if p.dim() == 0 or p.shape[0] != members:
                raise ValueError(
                    f"{type(self).__name__}: parameter of shape {tuple(p.shape)} has no leading "
                    f"member dimension of size {members}"
                )
        self.members = members
        self.dtype, device = self.params[0].dtype, self.params[0].device
        self.lr = torch.full((members,), float(lr), dtype=torch.float64, device=device)
        self.beta1 = torch.full_like(self.lr, float(beta1))
        self.state: dict[str, list[torch.Tensor]] = {}

    def _per_member(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``values`` of shape (N,) shaped to broadcast over ``like`` (N, ...), in its dtype."""
        return values.to(like.dtype).view((self.members,) + (1,) * (like.dim() - 1))

    def set(
        self,
        lr: Sequence[float] | torch.Tensor | None = None,
        beta1: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        """Write the members' learning rates and/or beta1 (N values each, kept in float64)."""
        for name, values in (("lr", lr), ("beta1", beta1)):
            if values is None:
                continue
            target = getattr(self, name)
            if not isinstance(values, torch.Tensor):
                values = torch.tensor(values, dtype=torch.float64)
            if tuple(values.shape) != (self.members,):
                raise ValueError(f"{name}: {self.members} values needed, got {tuple(values.shape)}")
            target.copy_(values)

    def _check_mask(self, mask: torch.Tensor) -> torch.Tensor:
        if mask.dtype != torch.bool or tuple(mask.shape) != (self.members,):
            raise ValueError(
                f"mask: must be a bool tensor of shape ({self.members},), "
                f"got {mask.dtype} of shape {tuple(mask.shape)}"
            )
        return mask.to(self.lr.device)

    @torch.no_grad()
    def reset(self, mask: torch.Tensor, keys: Iterable[str]) -> int:
        """Zero the state ``keys`` of the members where ``mask`` (bool, shape (N,)) is true.

        Keys as :func:`common.torch_driver.reset_optimizer_state`: ``exp_avg``, ``exp_avg_sq``,
        ``step`` (Adam), ``momentum_buffer`` (SGD). A key this optimizer keeps no state for is
        skipped, as torch skips it. Returns the number of state entries zeroed (per member).
        """
        mask = self._check_mask(mask)
        keys = tuple(keys)
        known = set(BatchedAdam.state_keys) | set(BatchedSGD.state_keys)
        unknown = [key for key in keys if key not in known]
        if unknown:
            raise ValueError(f"reset: unknown state {unknown}; allowed: {', '.join(sorted(known))}")
        count = 0
        chosen = int(mask.sum())
        if chosen == 0:
            return 0
        for key in keys:
            for tensor in self.state.get(key, ()):
                tensor.masked_fill_(mask.view(mask.shape + (1,) * (tensor.dim() - 1)), 0)
                count += chosen
        return count

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """One update of every member, or of the members where ``active`` (bool, (N,)) is true.

        An inactive member's parameters and state stay exactly as they were, whatever its
        gradient holds (a stopped member's gradient may be NaN).
        """
        if active is None:
            self._step()
            return
        active = self._check_mask(active)
        if bool(active.all()):
            self._step()
            return
        frozen = ~active
        tensors = self.params + [t for key in self.state_keys for t in self.state[key]]
        kept = [t[frozen].clone() for t in tensors]
        self._step()
        for tensor, old in zip(tensors, kept, strict=True):
            tensor[frozen] = old

    @abstractmethod
    def _step(self) -> None:
        """One update of every member (the subclass's rule); ``step`` restores frozen ones."""

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters and state, in types ``torch.load(weights_only=True)`` reads."""
        return {
            "lr": self.lr.clone(),
            "beta1": self.beta1.clone(),
            "state": {key: [t.clone() for t in self.state[key]] for key in self.state_keys},
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr.copy_(state["lr"])
        self.beta1.copy_(state["beta1"])
        for key in self.state_keys:
            for tensor, saved in zip(self.state[key], state["state"][key], strict=True):
                tensor.copy_(saved)


class BatchedAdam(BatchedOptimizer):
    """Adam with a learning rate, a ``beta1`` and a step count per member.

    ``beta2`` and ``eps`` are shared. No weight decay, AMSGrad or maximise.

    Args:
        params: stacked parameters, shape ``(N, ...)`` each.
        members: N.
        lr: initial learning rate of every member.
        betas: ``(beta1, beta2)``; beta1 is the initial value of every member's :attr:`beta1`.
        eps: added to the denominator.

    State (lists parallel to ``params``, except ``step``): ``exp_avg``, ``exp_avg_sq``, and
    ``step``: one count per member, shape ``(N,)``, float64 as torch keeps it in float64 runs.
    """

    state_keys = ("exp_avg", "exp_avg_sq", "step")
    first_moment = "exp_avg"

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        members: int,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, members, lr, betas[0])
        self.beta2, self.eps = float(betas[1]), float(eps)
        self.state = {
            "exp_avg": [torch.zeros_like(p) for p in self.params],
            "exp_avg_sq": [torch.zeros_like(p) for p in self.params],
            "step": [torch.zeros(members, dtype=torch.float64, device=self.lr.device)],
        }

    @property
    def step_count(self) -> torch.Tensor:
        """Updates each member has made since its last ``step`` reset, shape (N,)."""
        return self.state["step"][0]

    def _step(self) -> None:
        # The order of operations is torch.optim.adam._single_tensor_adam's, per member.
        steps = self.step_count
        steps += 1
        bias_correction1 = 1 - self.beta1**steps
        bias_correction2 = 1 - self.beta2**steps
        neg_step_size = -(self.lr / bias_correction1)
        bias_correction2_sqrt = bias_correction2**0.5
        one_minus_beta1 = 1 - self.beta1
        for p, exp_avg, exp_avg_sq in zip(
            self.params, self.state["exp_avg"], self.state["exp_avg_sq"], strict=True
        ):
            grad = p.grad
            exp_avg.lerp_(grad, self._per_member(one_minus_beta1, p))
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            denom = (exp_avg_sq.sqrt() / self._per_member(bias_correction2_sqrt, p)).add_(self.eps)
            # addcdiv_(t1, t2, value=v) computes p + v * t1 / t2, in that order.
            update = exp_avg * self._per_member(neg_step_size, p)
            p.add_(update.div_(denom))


class BatchedSGD(BatchedOptimizer):
    """SGD with momentum (``beta1``, per member) and a learning rate per member.

    As ``torch.optim.SGD(momentum=m)`` with no dampening, Nesterov or weight decay. The
    momentum buffer starts at zero, which gives torch's first step (buffer = gradient) exactly;
    a reset zeroes it, as :func:`common.torch_driver.reset_optimizer_state` does torch's.

    State: ``momentum_buffer`` (a list parallel to ``params``).
    """

    state_keys = ("momentum_buffer",)
    first_moment = "momentum_buffer"

    def __init__(
        self, params: Iterable[torch.Tensor], members: int, lr: float = 1e-3, momentum: float = 0.0
    ) -> None:
        super().__init__(params, members, lr, momentum)
        self.state = {"momentum_buffer": [torch.zeros_like(p) for p in self.params]}

    def _step(self) -> None:
        neg_lr = -self.lr
        for p, buf in zip(self.params, self.state["momentum_buffer"], strict=True):
            buf.mul_(self._per_member(self.beta1, p)).add_(p.grad)
            p.add_(buf * self._per_member(neg_lr, p))


def member_mask(members: int, chosen: Sequence[int], device: Any = None) -> torch.Tensor:
    """A bool mask of shape ``(members,)``, true at the indices ``chosen``."""
    mask = torch.zeros(members, dtype=torch.bool, device=device)
    mask[list(chosen)] = True
    return mask
