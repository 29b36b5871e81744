"""The schedule core: torch parity, closed form, phase, validation."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from common.schedules import Phase, from_spec, with_offset


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


def test_closed_form_at_huge_and_fractional_steps():
    s = from_spec({"kind": "cosine_restarts", "max": 1.0, "min": 0.0, "period": 10})
    # Step 10**9 + 5 is half way through a cycle: exactly the midpoint of the cosine.
    assert s.value(10**9 + 5) == pytest.approx(0.5, abs=1e-12)
    assert s.value(2.5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)), abs=1e-15)
    doubling = from_spec({"kind": "cosine_restarts", "max": 1.0, "period": 10, "period_mult": 2.0})
    # Cycle k starts at 10 * (2**k - 1): check a cycle start far out, and just before it.
    start = 10 * (2**26 - 1)
    assert doubling.value(start) == 1.0
    assert doubling.phase(start) == Phase(26, 0.0, 1.0, True)
    assert doubling.value(start - 1) < 1e-12
    assert doubling.phase(1e9).cycle == 26


def test_non_integer_period_mult_is_continuous_and_o1():
    s = from_spec({"kind": "cosine_restarts", "max": 1.0, "period": 10, "period_mult": 1.5})
    # starts: 0, 10, 25, 47.5, 81.25, ...
    assert s.phase(47.5).cycle == 3 and s.phase(47.4).cycle == 2
    assert s.value(10 + 7.5) == pytest.approx(0.5, abs=1e-12)  # midpoint of cycle 1 (len 15)
    assert s.phase(48).restart and not s.phase(49).restart
    assert np.isfinite(s.value(1e12))


def test_peak_decay_cycle_limit_and_warmup():
    s = from_spec(
        {
            "kind": "cosine_restarts",
            "max": 1.0,
            "min": 0.1,
            "period": 10,
            "peak_decay": 0.5,
            "cycle_limit": 3,
            "warmup": 5,
        }
    )
    assert s.value(0) == 0.1 and s.value(2.5) == pytest.approx(0.55)  # linear from min
    assert s.value(5) == 1.0
    assert s.value(15) == 0.5 and s.value(25) == 0.25  # peaks decay per restart
    assert s.value(35) == 0.1 and s.value(10**9) == 0.1  # floor after 3 cycles
    assert s.phase(35) == Phase(3, 0.0, 0.0, False)
    assert s.phase(20).level == pytest.approx(0.5)  # level is relative to this cycle's peak


def test_phase_clock():
    s = from_spec({"kind": "cosine_restarts", "max": 1.0, "min": 0.0, "period": 100})
    assert s.phase(0) == Phase(0, 0.0, 1.0, False)
    mid = s.phase(150)
    assert mid.cycle == 1 and mid.position == 0.5 and mid.level == pytest.approx(0.5)
    assert [t for t in range(401) if s.phase(t).restart] == [100, 200, 300, 400]
    tri = from_spec({"kind": "triangular", "max": 1.0, "period": 100})
    assert tri.phase(50).level == 1.0 and tri.phase(0).level == 0.0


def test_offset_shifts_by_a_fraction_of_the_first_cycle():
    base = from_spec({"kind": "cosine_restarts", "max": 1.0, "min": 0.0, "period": 100})
    anti = with_offset(base, 0.5)
    t = np.arange(0, 1000, 7.0)
    np.testing.assert_allclose(anti.values(t), base.values(t + 50), atol=1e-15)
    # In anti-phase, when one is at its peak the other is at mid-level.
    assert anti.value(0) == pytest.approx(0.5)


def test_one_cycle_and_decays():
    oc = from_spec({"kind": "one_cycle", "max": 1.0, "min": 0.0, "period": 100, "start": 0.04})
    assert oc.value(0) == pytest.approx(0.04) and oc.value(30) == pytest.approx(1.0)
    assert oc.value(100) == 0.0
    ex = from_spec({"kind": "exponential", "max": 1.0, "min": 0.01, "gamma": 0.9})
    assert ex.value(2) == pytest.approx(0.81) and ex.value(10**9) == 0.01
    inv = from_spec({"kind": "inverse_time", "max": 1.0, "tau": 10})
    assert inv.value(10) == pytest.approx(0.5) and inv.phase(10).level == pytest.approx(0.5)
    assert from_spec({"kind": "constant", "max": 3e-4}).value(10**9) == 3e-4


@pytest.mark.parametrize(
    "spec",
    [
        {
            "kind": "cosine_restarts",
            "max": 1e-3,
            "period": 100,
            "period_mult": 2.5,
            "peak_decay": 0.7,
            "offset": 0.25,
            "warmup": 10,
            "cycle_limit": 4,
        },
        {"kind": "triangular", "max": 1e-3, "min": 1e-5, "period": 40, "pct_up": 0.3},
        {"kind": "one_cycle", "max": 1e-3, "period": 40, "pct_start": 0.25},
        {"kind": "exponential", "max": 1e-3, "gamma": 0.99},
    ],
)
def test_spec_round_trip_and_no_hidden_state(spec):
    s = from_spec(spec)
    again = from_spec(s.spec())
    steps = np.arange(0, 2000, 3.5)
    np.testing.assert_array_equal(s.values(steps), again.values(steps))
    # Resuming: asking in any order gives the same values as asking in order.
    shuffled = np.random.default_rng(0).permutation(steps)
    np.testing.assert_array_equal(s.values(shuffled), again.values(shuffled))


@pytest.mark.parametrize(
    "spec,key",
    [
        ({"kind": "cosine_wave"}, "kind"),
        ({"kind": "cosine", "perod": 10}, "perod"),
        ({"kind": "cosine", "period": 0}, "period"),
        ({"kind": "cosine", "period": -5}, "period"),
        ({"kind": "cosine", "max": 1e-3, "min": 1e-2}, "min"),
        ({"kind": "cosine_restarts", "period_mult": 0.5}, "period_mult"),
        ({"kind": "cosine_restarts", "peak_decay": 0.0}, "peak_decay"),
        ({"kind": "cosine_restarts", "peak_decay": 1.5}, "peak_decay"),
        ({"kind": "cosine_restarts", "max": float("nan")}, "max"),
        ({"kind": "cosine_restarts", "cycle_limit": 1.5}, "cycle_limit"),
        ({"kind": "cosine_restarts", "offset": 1.0}, "offset"),
        ({"kind": "cosine", "max": "big"}, "max"),
        ({"kind": "exponential", "gamma": 1.1}, "gamma"),
        ({"kind": "inverse_time", "tau": 0}, "tau"),
        ({"kind": "one_cycle", "start": 5.0}, "start"),
        ({"kind": "cosine", "warmup": -1}, "warmup"),
    ],
)
def test_bad_specs_rejected_naming_the_key(spec, key):
    with pytest.raises(ValueError) as err:
        from_spec(spec, name="lr.G")
    message = str(err.value)
    assert f"lr.G.{key}" in message and "\n" not in message


@pytest.mark.parametrize("kind", ["triangular", "one_cycle", "cosine_restarts", "exponential"])
def test_schedules_pickle(kind):
    import pickle

    s = from_spec({"kind": kind, "max": 1e-3})
    again = pickle.loads(pickle.dumps(s))
    steps = np.arange(0, 3000, 13.0)
    np.testing.assert_array_equal(again.values(steps), s.values(steps))


# -- defect 1: each restart flags exactly once ----------------------------------------------


def _exact_restart_steps(period: float, mult: int, steps: int) -> list[int]:
    """Integer steps t with a cycle start in (t-1, t], from exact rational cycle starts."""
    p, out, k = Fraction(period), [], 1
    while True:
        start = p * k if mult == 1 else p * (mult**k - 1) / (mult - 1)
        if start > steps:
            return out
        out.append(math.ceil(start))
        k += 1


@pytest.mark.parametrize(
    "kind,period,mult,restarts",
    [
        ("cosine_restarts", 49, 1, 204),
        ("triangular", 49, 1, 204),
        ("cosine_restarts", 7.3, 1, 1369),
        ("triangular", 7.3, 1, 1369),
        ("cosine_restarts", 1, 3, 9),
        ("cosine_restarts", 7, 3, 7),
    ],
)
def test_each_restart_flags_exactly_once(kind, period, mult, restarts):
    s = from_spec({"kind": kind, "max": 1.0, "period": period, "period_mult": mult})
    flagged = [t for t in range(10_001) if s.phase(t).restart]
    expected = _exact_restart_steps(period, mult, 10_000)
    assert len(expected) == restarts
    assert flagged == expected
    # The flag and the cycle index agree: a flag exactly where the cycle index moves on.
    moved = [t for t in range(1, 10_001) if s.cycle(t) > s.cycle(t - 1)]
    assert moved == expected


def test_restart_flags_once_with_warmup_and_offset():
    s = from_spec(
        {"kind": "cosine_restarts", "max": 1.0, "period": 49, "warmup": 13, "offset": 0.3}
    )
    flagged = [t for t in range(5_001) if s.phase(t).restart]
    moved = [t for t in range(1, 5_001) if s.cycle(t) > s.cycle(t - 1)]
    assert flagged == moved and len(flagged) == len(set(flagged)) == 102


# -- defect 3: with period_mult = 1, positions stay in [0, 1) and values in [min, peak] ------


@pytest.mark.parametrize(
    "kind,period,offset",
    [
        ("triangular", 0.3, 0.0),
        ("triangular", 3.7, 0.4),
        ("triangular", 7.3, 0.0),
        ("cosine_restarts", 0.7, 0.0),
        ("cosine_restarts", 7.3, 0.0),
    ],
)
def test_positions_in_unit_interval_and_values_in_range(kind, period, offset):
    s = from_spec({"kind": kind, "max": 1.0, "min": 0.1, "period": period, "offset": offset})
    steps = np.concatenate([np.arange(3001.0), np.arange(0, 10_000, 0.37), [2971.1]])
    positions = np.array([s.phase(t).position for t in steps])
    assert positions.min() >= 0.0 and positions.max() < 1.0
    values = s.values(steps)
    assert values.min() >= 0.1 and values.max() <= 1.0


def test_triangular_at_the_reported_step_is_not_below_min():
    s = from_spec({"kind": "triangular", "max": 1.0, "min": 0.1, "period": 7.3})
    assert s.value(2971.1) >= 0.1


@pytest.mark.parametrize("kind", ["cosine_restarts", "triangular"])
def test_far_steps_are_exact(kind):
    s = from_spec({"kind": kind, "max": 1.0, "min": 0.0, "period": 7.3})
    t = 10**12
    position = float((Fraction(t) % Fraction(7.3)) / Fraction(7.3))
    expected = 0.5 * (1.0 + math.cos(math.pi * position))
    if kind == "triangular":
        expected = 2 * position if position <= 0.5 else 2 * (1 - position)
    assert s.phase(t).position == pytest.approx(position, rel=1e-12, abs=0)
    assert s.value(t) == pytest.approx(expected, rel=1e-12, abs=1e-15)


# -- defect 4: validation of huge numbers, odd kinds, numpy scalars --------------------------


@pytest.mark.parametrize("key", ["period", "max", "warmup", "offset", "min"])
def test_huge_integers_are_a_value_error_naming_the_key(key):
    with pytest.raises(ValueError) as err:
        from_spec({"kind": "cosine_restarts", key: 10**400}, name="lr.G")
    assert f"lr.G.{key}" in str(err.value) and not isinstance(err.value, OverflowError)


@pytest.mark.parametrize("kind", [["cosine"], {"name": "cosine"}, 3, None])
def test_kind_of_the_wrong_type_is_a_value_error_naming_kind(kind):
    with pytest.raises(ValueError, match=r"^lr\.G\.kind = .*must be one of"):
        from_spec({"kind": kind}, name="lr.G")


def test_numpy_scalars_are_numbers():
    spec = {
        "kind": "cosine_restarts",
        "max": np.float32(0.5),
        "min": np.float64(0.01),
        "period": np.int64(10),
        "period_mult": np.float64(2.0),
        "cycle_limit": np.int64(3),
        "warmup": np.int32(2),
    }
    s = from_spec(spec)
    plain = from_spec({k: v.item() if hasattr(v, "item") else v for k, v in spec.items()})
    np.testing.assert_array_equal(s.values(np.arange(100)), plain.values(np.arange(100)))
    assert all(type(v) in (str, int, float) for v in s.spec().values())
