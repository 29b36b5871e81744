"""The batched optimizers against torch's, member by member (float64, per-member hyperparameters
changing every step, restarts at different steps, members paused with NaN gradients)."""

from __future__ import annotations

import math

import pytest
import torch

from common.batched_optim import BatchedAdam, BatchedSGD, member_mask
from common.torch_driver import reset_optimizer_state

MEMBERS = 4
SHAPES = [(3, 5), (2, 2, 3)]
BETA2 = 0.999
MOMENTUM = ("exp_avg", "momentum_buffer")
ALL = ("exp_avg", "exp_avg_sq", "step", "momentum_buffer")  # gancycle's reset = "all"


def lr_of(k: int, t: int) -> float:
    """Each member on its own cosine cycle (period and phase differ)."""
    period = 40 + 13 * k
    return 1e-4 + 1e-2 * 0.5 * (1 + math.cos(2 * math.pi * ((t / period + k / MEMBERS) % 1)))


def beta1_of(k: int, t: int) -> float:
    return 0.5 + 0.4 * math.sin(2 * math.pi * t / (30 + 11 * k)) ** 2


def resets_at(k: int, t: int) -> tuple[str, ...]:
    """Member k restarts every 25 + 9k steps: even members forget the momentum, odd ones all."""
    if t == 0 or t % (25 + 9 * k):
        return ()
    return MOMENTUM if k % 2 == 0 else ALL


def paused(k: int, t: int) -> bool:
    """Member 2 sits out steps 100 to 119 with a NaN gradient (a stopped member)."""
    return k == 2 and 100 <= t < 120


def run_both(kind: str, steps: int, start_state=None, stop_at: int | None = None):
    """Train MEMBERS lone torch optimizers and one batched optimizer on the same gradients."""
    g = torch.Generator().manual_seed(0)
    start = [torch.randn((MEMBERS, *s), dtype=torch.float64, generator=g) for s in SHAPES]
    stacked = [p.clone() for p in start]
    lone = [[p[k].clone() for p in start] for k in range(MEMBERS)]
    if kind == "adam":
        batched = BatchedAdam(stacked, MEMBERS, betas=(0.9, BETA2))
        torch_opts = [torch.optim.Adam(ps, lr=0.0, betas=(0.9, BETA2)) for ps in lone]
    else:
        batched = BatchedSGD(stacked, MEMBERS, momentum=0.9)
        torch_opts = [torch.optim.SGD(ps, lr=0.0, momentum=0.9) for ps in lone]
    for t in range(steps):
        noise = [torch.randn(p.shape, dtype=torch.float64, generator=g) for p in stacked]
        for k, opt in enumerate(torch_opts):
            group = opt.param_groups[0]
            group["lr"] = lr_of(k, t)
            if kind == "adam":
                group["betas"] = (beta1_of(k, t), BETA2)
            else:
                group["momentum"] = beta1_of(k, t)
            reset_optimizer_state(opt, resets_at(k, t))
            if paused(k, t):
                continue
            for p, n in zip(lone[k], noise, strict=True):
                p.grad = torch.sin(3 * p) + 0.1 * n[k]
            opt.step()
        beta1 = torch.tensor([beta1_of(k, t) for k in range(MEMBERS)], dtype=torch.float64)
        batched.set(lr=[lr_of(k, t) for k in range(MEMBERS)], beta1=beta1)
        for keys in (MOMENTUM, ALL):
            chosen = [k for k in range(MEMBERS) if resets_at(k, t) == keys]
            batched.reset(member_mask(MEMBERS, chosen), keys)
        for p, n in zip(stacked, noise, strict=True):
            p.grad = torch.sin(3 * p) + 0.1 * n
            p.grad[2] = math.nan if paused(2, t) else p.grad[2]
        batched.step(member_mask(MEMBERS, [k for k in range(MEMBERS) if not paused(k, t)]))
    return stacked, lone, batched, torch_opts


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_each_member_follows_its_own_torch_optimizer(kind):
    stacked, lone, batched, torch_opts = run_both(kind, steps=300)
    for k in range(MEMBERS):
        for p, q in zip(stacked, lone[k], strict=True):
            assert torch.isfinite(p[k]).all()
            assert (p[k] - q).abs().max() <= 1e-12, (kind, k)
        state = torch_opts[k].state[lone[k][0]]
        if kind == "adam":
            assert batched.step_count[k] == state["step"]
            for key in ("exp_avg", "exp_avg_sq"):
                assert (batched.state[key][0][k] - state[key]).abs().max() <= 1e-12
        else:
            assert (
                batched.state["momentum_buffer"][0][k] - state["momentum_buffer"]
            ).abs().max() <= 1e-12
    # The paused member made 20 fewer steps; the last reset of member 1 ("all") zeroed its count.
    if kind == "adam":
        assert batched.step_count[2] == torch_opts[2].state[lone[2][0]]["step"] < 300 - 20 + 1


def test_members_that_moved_apart_really_differ():
    stacked, _, _, _ = run_both("adam", steps=50)
    assert (stacked[0][0] - stacked[0][1]).abs().max() > 1e-3


def test_state_dict_round_trip_continues_exactly():
    stacked, _, batched, _ = run_both("adam", steps=30)
    saved = batched.state_dict()
    copy = BatchedAdam([p.clone() for p in stacked], MEMBERS, betas=(0.9, BETA2))
    copy.load_state_dict(saved)
    for opt in (batched, copy):
        opt.lr.fill_(1e-2)
        for p in opt.params:
            p.grad = torch.cos(p)
        opt.step()
    for p, q in zip(batched.params, copy.params, strict=True):
        assert torch.equal(p, q)


def test_bad_masks_and_keys_are_refused():
    opt = BatchedAdam([torch.zeros(3, 2)], 3)
    with pytest.raises(ValueError, match=r"mask: must be a bool tensor of shape \(3,\)"):
        opt.reset(torch.ones(2, dtype=torch.bool), ("exp_avg",))
    with pytest.raises(ValueError, match="reset: unknown state"):
        opt.reset(member_mask(3, [0]), ("exp_avgs",))
    with pytest.raises(ValueError, match="no leading member dimension of size 4"):
        BatchedSGD([torch.zeros(3, 2)], 4)
