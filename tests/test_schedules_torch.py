"""The schedule core against torch's schedulers stepped side by side, and timm's formula."""

import math

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler

from common.schedules import from_spec


def _torch_lrs(make_scheduler, steps, lr=0.1):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


@pytest.mark.parametrize("period,mult", [(10, 1), (10, 2), (7, 3), (1, 2)])
def test_cosine_restarts_equals_torch_step_for_step(period, mult):
    torch_lrs = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            o, T_0=period, T_mult=mult, eta_min=1e-3
        ),
        3000,
    )
    ours = from_spec(
        {"kind": "cosine_restarts", "max": 0.1, "min": 1e-3, "period": period, "period_mult": mult}
    )
    np.testing.assert_allclose(ours.values(np.arange(3000)), torch_lrs, rtol=0, atol=1e-12)


def test_cosine_equals_torch_within_its_period():
    torch_lrs = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=100, eta_min=1e-3), 101
    )
    ours = from_spec({"kind": "cosine", "max": 0.1, "min": 1e-3, "period": 100})
    np.testing.assert_allclose(ours.values(np.arange(101)), torch_lrs, rtol=0, atol=1e-12)
    assert ours.value(5000) == 1e-3  # holds the floor after its one cycle


@pytest.mark.parametrize("up,down", [(20, 20), (20, 30)])
def test_triangular_equals_torch_cyclic_lr(up, down):
    torch_lrs = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, base_lr=1e-3, max_lr=0.1, step_size_up=up, step_size_down=down, mode="triangular"
        ),
        1000,
    )
    ours = from_spec(
        {
            "kind": "triangular",
            "max": 0.1,
            "min": 1e-3,
            "period": up + down,
            "pct_up": up / (up + down),
        }
    )
    np.testing.assert_allclose(ours.values(np.arange(1000)), torch_lrs, rtol=0, atol=1e-12)


def _cyclic_lr(mode, up, down, steps, gamma=1.0):
    return _torch_lrs(
        lambda o: lr_scheduler.CyclicLR(
            o,
            base_lr=1e-3,
            max_lr=0.1,
            step_size_up=up,
            step_size_down=down,
            mode=mode,
            gamma=gamma,
        ),
        steps,
    )


@pytest.mark.parametrize("up,down", [(20, 20), (20, 30), (7, 3)])
def test_triangular2_equals_torch_cyclic_lr(up, down):
    steps = 8 * (up + down)
    ours = from_spec(
        {
            "kind": "triangular2",
            "min": 1e-3,  # base_lr
            "max": 0.1,  # max_lr
            "period": up + down,
            "pct_up": up / (up + down),
        }
    )
    expected = _cyclic_lr("triangular2", up, down, steps)
    np.testing.assert_allclose(ours.values(np.arange(steps)), expected, rtol=0, atol=1e-12)
    # It halves the amplitude max - min, not max: cycle 3 peaks at min + (max - min) / 8.
    assert ours.cycle_peak(3) == pytest.approx(1e-3 + (0.1 - 1e-3) / 8, rel=1e-15)


@pytest.mark.parametrize("up,down", [(20, 20), (20, 30), (7, 3)])
def test_exp_range_equals_torch_cyclic_lr(up, down):
    steps, gamma = 8 * (up + down), 0.995
    ours = from_spec(
        {
            "kind": "exp_range",
            "min": 1e-3,
            "max": 0.1,
            "period": up + down,
            "pct_up": up / (up + down),
            "gamma": gamma,
        }
    )
    expected = _cyclic_lr("exp_range", up, down, steps, gamma=gamma)
    np.testing.assert_allclose(ours.values(np.arange(steps)), expected, rtol=0, atol=1e-12)


def test_a_sequence_of_two_cosines_equals_sequential_lr():
    def make(o):
        return lr_scheduler.SequentialLR(
            o,
            [
                lr_scheduler.CosineAnnealingLR(o, T_max=100, eta_min=1e-3),
                lr_scheduler.CosineAnnealingLR(o, T_max=40, eta_min=1e-4),
            ],
            milestones=[100],
        )

    ours = from_spec(
        {
            "kind": "sequence",
            "parts": [
                {"kind": "cosine", "max": 0.1, "min": 1e-3, "period": 100},
                {"kind": "cosine", "max": 0.1, "min": 1e-4, "period": 40},
            ],
            "milestones": [100],
        }
    )
    expected = _torch_lrs(make, 141)
    np.testing.assert_allclose(ours.values(np.arange(141)), expected, rtol=0, atol=1e-12)


def test_a_sequence_into_warm_restarts_equals_sequential_lr():
    def make(o):
        return lr_scheduler.SequentialLR(
            o,
            [
                lr_scheduler.CosineAnnealingLR(o, T_max=60, eta_min=1e-3),
                lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=15, T_mult=2, eta_min=1e-4),
            ],
            milestones=[60],
        )

    ours = from_spec(
        {
            "kind": "sequence",
            "parts": [
                {"kind": "cosine", "max": 0.1, "min": 1e-3, "period": 60},
                {
                    "kind": "cosine_restarts",
                    "max": 0.1,
                    "min": 1e-4,
                    "period": 15,
                    "period_mult": 2,
                },
            ],
            "milestones": [60],
        }
    )
    expected = _torch_lrs(make, 60 + 15 + 30 + 60)
    steps = np.arange(len(expected))
    np.testing.assert_allclose(ours.values(steps), expected, rtol=0, atol=1e-12)
    # The clock counts on: cosine is cycle 0, the restarts part's cycles are 1, 2, 3.
    assert [ours.phase(t).cycle for t in (59, 60, 74, 75, 104, 105)] == [0, 1, 1, 2, 2, 3]
    assert [t for t in steps if ours.phase(t).restart] == [60, 75, 105]


def _timm_cosine_lr(
    t, base, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, warmup_t, warmup_prefix
):
    """timm's CosineLRScheduler._get_lr (timm/scheduler/cosine_lr.py), with
    warmup_lr_init = lr_min and k_decay = 1, restated for one parameter group."""
    if t < warmup_t:
        return lr_min + t * (base - lr_min) / warmup_t
    if warmup_prefix:
        t = t - warmup_t
    if cycle_mul != 1:
        i = math.floor(math.log(1 - t / t_initial * (1 - cycle_mul), cycle_mul))
        t_i = cycle_mul**i * t_initial
        t_curr = t - (1 - cycle_mul**i) / (1 - cycle_mul) * t_initial
    else:
        i = t // t_initial
        t_i = t_initial
        t_curr = t - t_initial * i
    if i >= cycle_limit:
        return lr_min
    lr_max = base * cycle_decay**i
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * t_curr / t_i))


@pytest.mark.parametrize("prefix", [True, False])
@pytest.mark.parametrize("mult", [1, 2])
def test_warmup_equals_timm_cosine_lr(prefix, mult):
    ours = from_spec(
        {
            "kind": "cosine_restarts",
            "max": 0.1,
            "min": 1e-4,
            "period": 50,
            "period_mult": mult,
            "peak_decay": 0.7,
            "cycle_limit": 4,
            "warmup": 20,
            "warmup_prefix": prefix,
        }
    )
    steps = range(20 + 50 * (1 + mult + mult**2 + mult**3) + 30)
    expected = [_timm_cosine_lr(t, 0.1, 50, 1e-4, mult, 0.7, 4, 20, prefix) for t in steps]
    np.testing.assert_allclose(ours.values(np.array(steps)), expected, rtol=0, atol=1e-12)
