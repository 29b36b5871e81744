"""The schedule core: closed form, phase, validation (torch parity: test_schedules_torch)."""

import math
import textwrap
from fractions import Fraction

import numpy as np
import pytest
import tomllib

import common.schedules
from common.coupling import Coupled
from common.schedules import Phase, Schedule, build_schedules, from_spec, with_offset


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


# -- follow: a schedule on another schedule's clock -----------------------------------------

RING8_G = {"kind": "cosine_restarts", "max": 1e-3, "min": 1e-5, "period": 2000}


def _pair(mode: str, **g_keys) -> dict[str, Schedule]:
    return build_schedules(
        {
            "G": {**RING8_G, **g_keys},
            "D": {"follow": "G", "mode": mode, "max": 4e-4, "min": 2e-6},
        }
    )


@pytest.mark.parametrize("mode,correlation", [("anti", -1.0), ("in", 1.0)])
def test_follow_correlates_exactly_with_its_clock(mode, correlation):
    pair = _pair(mode, warmup=300)
    t = np.arange(0, 3 * 2000 + 300, 1.0)
    g, d = pair["G"].values(t), pair["D"].values(t)
    assert np.corrcoef(g, d)[0, 1] == pytest.approx(correlation, abs=1e-9)
    level = pair["G"].levels(t)
    expected = 2e-6 + (4e-4 - 2e-6) * (1 - level if mode == "anti" else level)
    np.testing.assert_allclose(d, expected, rtol=1e-15)


def test_follow_restarts_where_its_clock_does():
    pair = _pair("anti", period_mult=1.5, offset=0.2)
    steps = range(12_000)
    g_phases = [pair["G"].phase(t) for t in steps]
    d_phases = [pair["D"].phase(t) for t in steps]
    assert [p.restart for p in g_phases] == [p.restart for p in d_phases]
    assert [p.cycle for p in g_phases] == [p.cycle for p in d_phases]
    assert [t for t in steps if d_phases[t].restart] == [1600, 4600, 9100]
    # At G's restart G jumps to its peak and D drops to its floor.
    first = next(t for t in steps if d_phases[t].restart)
    assert pair["D"].value(first) == 2e-6 and pair["D"].value(first - 1) > 3.9e-4


def test_a_half_cycle_offset_is_a_shift_not_a_mirror():
    pair = build_schedules({"G": RING8_G, "D": {**RING8_G, "offset": 0.5}})
    t = np.arange(6000.0)
    g, d = pair["G"].values(t), pair["D"].values(t)
    assert np.corrcoef(g, d)[0, 1] == pytest.approx(-2 / math.pi, abs=1e-3)  # about -0.64
    np.testing.assert_allclose(d, pair["G"].values(t + 1000), rtol=1e-15)


def test_follow_resumes_and_round_trips():
    pair = _pair("anti", period_mult=2.0, peak_decay=0.8)
    assert pair["D"].spec() == {"follow": "G", "mode": "anti", "max": 4e-4, "min": 2e-6}
    again = build_schedules({"D": pair["D"].spec(), "G": pair["G"].spec()})  # order is free
    # Resuming: a fresh table asked in any order gives what the first gave in order.
    steps = np.arange(0, 20_000, 3.5)
    in_order = pair["D"].values(steps)
    shuffled = np.random.default_rng(1).permutation(len(steps))
    np.testing.assert_array_equal(again["D"].values(steps[shuffled]), in_order[shuffled])
    assert list(again) == ["D", "G"]


def test_follow_chains_follow_levels():
    table = build_schedules(
        {
            "E": {"follow": "D", "mode": "anti", "max": 1.0, "min": 0.0},  # anti of anti
            "D": {"follow": "G", "mode": "anti", "max": 1.0, "min": 0.0},
            "G": RING8_G,
        }
    )
    t = np.arange(0, 6000, 7.0)
    np.testing.assert_allclose(table["E"].values(t), table["G"].levels(t), atol=1e-15)


@pytest.mark.parametrize(
    "specs,message",
    [
        ({"D": {"follow": "X"}, "G": RING8_G}, r"^lr\.D\.follow = 'X': .*available: G$"),
        (
            {"G": {"follow": "D"}, "D": {"follow": "G"}},
            r"^lr\.D\.follow = 'G': a cycle of follows \(G -> D -> G\)",
        ),
        ({"G": {"follow": "G"}}, r"^lr\.G\.follow = 'G': a cycle of follows \(G -> G\)"),
        ({"G": RING8_G, "D": {"follow": "G", "mode": "mirror"}}, r"^lr\.D\.mode = 'mirror'"),
        ({"G": RING8_G, "D": {"follow": "G", "kind": "cosine"}}, r"^lr\.D\.kind: unknown key"),
        ({"G": RING8_G, "D": {"follow": "G", "max": 1e-3, "min": 1}}, r"^lr\.D\.min = 1"),
        ({"G": RING8_G, "D": {"follow": ["G"]}}, r"^lr\.D\.follow = \['G'\]"),
    ],
)
def test_bad_follow_tables_name_the_key(specs, message):
    with pytest.raises(ValueError, match=message):
        build_schedules(specs)


def test_a_follow_without_its_table_names_the_clocks_available():
    g = from_spec(RING8_G)
    with pytest.raises(ValueError, match=r"^lr\.D\.follow = 'G': .*available: none"):
        from_spec({"follow": "G"}, name="lr.D")
    with pytest.raises(ValueError, match=r"^lr\.D\.follow = 'H': .*available: G, P$"):
        from_spec({"follow": "H"}, name="lr.D", schedules={"G": g, "P": g})
    assert from_spec({"follow": "G"}, schedules={"G": g}).spec()["mode"] == "anti"


# -- sequence: schedules back to back ------------------------------------------------------

EXPLORE_THEN_FINE_TUNE = {
    "kind": "sequence",
    "parts": [
        {"kind": "cosine_restarts", "max": 1e-2, "min": 1e-4, "period": 100},
        {"kind": "triangular", "max": 1e-3, "min": 1e-5, "period": 20, "cycle_limit": 3},
    ],
    "milestones": [250],
}


def test_a_sequence_runs_each_part_on_its_own_clock():
    s = from_spec(EXPLORE_THEN_FINE_TUNE)
    first = from_spec(EXPLORE_THEN_FINE_TUNE["parts"][0])
    second = from_spec(EXPLORE_THEN_FINE_TUNE["parts"][1])
    for t in (0, 99, 100, 249, 249.5):
        assert s.value(t) == first.value(t)
    for t in (250, 260, 270.25, 300, 10**9):
        assert s.value(t) == second.value(t - 250)
    assert s.value(250) == 1e-5 and s.value(260) == 1e-3  # the triangle starts at its floor
    # The clock counts on: part 0 began cycles 0, 1, 2; part 1's cycles are 3, 4, 5.
    cycles = {t: s.phase(t).cycle for t in (0, 100, 200, 249, 250, 269, 270, 290, 309, 310)}
    assert cycles == {0: 0, 100: 1, 200: 2, 249: 2, 250: 3, 269: 3, 270: 4, 290: 5, 309: 5, 310: 6}
    assert [t for t in range(400) if s.phase(t).restart] == [100, 200, 250, 270, 290]
    assert s.end_step == 310 and s.phase(310).restart is False


def test_a_sequence_counts_a_finished_part_once():
    s = from_spec(
        {
            "kind": "sequence",
            "parts": [
                {"kind": "cosine", "max": 1.0, "period": 50},  # over at 50, floor until 80
                {"kind": "cosine_restarts", "max": 1.0, "period": 10},
            ],
            "milestones": [80],
        }
    )
    # the finished cosine holds its cycle (at its floor) until the next part begins at 80
    assert [s.phase(t).cycle for t in (49, 50, 79, 80, 90)] == [0, 0, 0, 1, 2]
    assert [t for t in range(100) if s.phase(t).restart] == [80, 90]
    assert s.end_step == math.inf


def test_a_sequence_is_o1_round_trips_and_resumes():
    parts = [{"kind": "cosine_restarts", "max": 1.0, "period": 7.3}] * 2000
    spec = {"kind": "sequence", "parts": parts, "milestones": [100.0 * i for i in range(1, 2000)]}
    s = from_spec(spec)
    assert s.spec() == {**spec, "parts": [from_spec(parts[0]).spec()] * 2000}
    assert from_spec(s.spec()) == s
    steps = np.random.default_rng(2).permutation(np.arange(0, 250_000, 37.5))
    again = from_spec(s.spec())
    np.testing.assert_array_equal(again.values(steps), s.values(steps))
    # Part 1999 starts at 199,900 after 1999 parts of 14 cycles each (100 / 7.3 = 13.7).
    assert s.phase(199_900).cycle == 1999 * 14 and s.phase(199_900).restart


@pytest.mark.parametrize(
    "spec,key",
    [
        ({"parts": [{"kind": "cosine"}], "milestones": [10]}, "milestones"),
        ({"parts": [{"kind": "cosine"}] * 3, "milestones": [10, 10]}, "milestones"),
        ({"parts": [{"kind": "cosine"}] * 2, "milestones": [-5]}, "milestones"),
        ({"parts": [{"kind": "cosine"}] * 2, "milestones": ["10"]}, "milestones"),
        ({"parts": [], "milestones": []}, "parts"),
        ({"parts": {"kind": "cosine"}}, "parts"),
        (
            {"parts": [{"kind": "cosine"}, {"kind": "cosine", "period": 0}], "milestones": [5]},
            "parts[1].period",
        ),
        ({"parts": [{"kind": "cosine"}], "milestones": [], "period": 3}, "period"),
        ({"parts": [{"kind": "cosine"}, {"follow": "G"}], "milestones": [5]}, "parts[1].follow"),
    ],
)
def test_bad_sequences_name_the_key(spec, key):
    with pytest.raises(ValueError) as err:
        from_spec({"kind": "sequence", **spec}, name="lr")
    assert str(err.value).startswith(f"lr.{key}") and "\n" not in str(err.value)


# -- scaled and end_step for every kind ------------------------------------------------------

EVERY_KIND = {
    "constant": {"kind": "constant", "max": 3e-4},
    "exponential": {"kind": "exponential", "max": 1e-3, "min": 1e-5, "gamma": 0.99, "warmup": 5},
    "inverse_time": {"kind": "inverse_time", "max": 1e-3, "tau": 30},
    "cosine": {
        "kind": "cosine",
        "max": 1e-3,
        "min": 1e-5,
        "period": 100,
        "warmup": 10,
        "offset": 0.3,
    },
    "triangular": {
        "kind": "triangular",
        "max": 1e-3,
        "min": 1e-5,
        "period": 40,
        "pct_up": 0.3,
        "peak_decay": 0.8,
        "cycle_limit": 4,
    },
    "triangular2": {
        "kind": "triangular2",
        "max": 1e-3,
        "min": 1e-4,
        "period": 30,
        "cycle_limit": 5,
        "warmup": 7,
    },
    "exp_range": {"kind": "exp_range", "max": 1e-3, "min": 1e-4, "period": 30, "gamma": 0.99},
    "cosine_restarts": {
        "kind": "cosine_restarts",
        "max": 1e-3,
        "min": 1e-5,
        "period": 10,
        "period_mult": 2,
        "cycle_limit": 3,
        "warmup": 5,
        "offset": 0.5,
    },
    "overlaid_warmup": {
        "kind": "cosine_restarts",
        "max": 1e-3,
        "period": 50,
        "warmup": 20,
        "cycle_limit": 2,
        "warmup_prefix": False,
    },
    "one_cycle": {"kind": "one_cycle", "max": 1e-3, "period": 100, "offset": 0.1},
    "sequence": EXPLORE_THEN_FINE_TUNE,
}


def _every_schedule() -> dict[str, Schedule]:
    table = build_schedules(
        {
            **EVERY_KIND,
            "follow": {"follow": "cosine_restarts", "mode": "anti", "max": 5e-4, "min": 1e-6},
            "follow_sequence": {"follow": "sequence", "mode": "in", "max": 1.0},
        },
        where="",
    )
    return table


def _rates(spec: dict) -> list[float]:
    """Every rate in a spec (a sequence's parts included)."""
    own = [spec[key] for key in ("max", "min", "start") if key in spec]
    return own + [r for part in spec.get("parts", []) for r in _rates(part)]


def test_scaled_scales_every_value_and_keeps_the_clock():
    steps = np.arange(0, 400, 0.5)
    for name, s in _every_schedule().items():
        half = s.scaled(0.5)
        np.testing.assert_allclose(
            half.values(steps), 0.5 * s.values(steps), rtol=1e-12, err_msg=name
        )
        assert [half.phase(t)[:2] + half.phase(t)[3:] for t in steps] == [
            s.phase(t)[:2] + s.phase(t)[3:] for t in steps
        ], name
        assert half.end_step == s.end_step, name
        assert type(half) is type(s), name
        assert _rates(half.spec()) == pytest.approx([0.5 * r for r in _rates(s.spec())]), name
    with pytest.raises(ValueError, match="factor"):
        from_spec(RING8_G).scaled(0.0)
    coupling = Coupled(from_spec(RING8_G), lo=0.0, hi=5e-4)  # a follow in a coupling's words
    assert type(coupling.scaled(2.0)) is Coupled and coupling.scaled(2.0).spec()["hi"] == 1e-3


@pytest.mark.parametrize(
    "name,end",
    [
        ("constant", math.inf),
        ("exponential", math.inf),
        ("exp_range", math.inf),
        ("cosine", 10 + 100 - 30),  # warmup + period - offset * period
        ("triangular", 160),
        ("triangular2", 7 + 150),
        ("cosine_restarts", 5 + 70 - 5),
        ("overlaid_warmup", 100),  # timm's overlay: the warmup does not delay the clock
        ("one_cycle", 90),
        ("sequence", 310),
        ("follow", 70),
    ],
)
def test_end_step_is_where_the_schedule_has_run_its_course(name, end):
    s = _every_schedule()[name]
    assert s.end_step == end
    if math.isinf(end):
        return
    last = s.value(end)
    assert [s.value(t) for t in (end + 0.5, end + 1000, 10**9)] == [last] * 3
    assert s.cycle(math.nextafter(end, 0)) == s.cycle(end) - 1
    assert not s.phase(end).restart


def test_every_kind_round_trips_through_its_spec():
    table = _every_schedule()
    again = build_schedules({name: s.spec() for name, s in table.items()}, where="")
    steps = np.arange(0, 500, 0.75)
    for name, s in table.items():
        assert again[name] == s, name
        np.testing.assert_array_equal(again[name].values(steps), s.values(steps), err_msg=name)


def test_follow_and_sequence_pickle():
    import pickle

    for name, s in _every_schedule().items():
        again = pickle.loads(pickle.dumps(s))
        steps = np.arange(0, 500, 3.0)
        np.testing.assert_array_equal(again.values(steps), s.values(steps), err_msg=name)


def test_the_shift_vs_mirror_figure_and_a_follow_table_plot(tmp_path):
    from common.plots import plot_config, plot_shift_vs_mirror

    _, correlations = plot_shift_vs_mirror(RING8_G, cycles=3, path=tmp_path / "f.png")
    assert correlations["shift"] == pytest.approx(-2 / math.pi, abs=2e-3)
    assert correlations["mirror"] == pytest.approx(-1.0, abs=1e-9)
    assert (tmp_path / "f.png").stat().st_size > 10_000
    config = {"lr": {"D": {"follow": "G", "max": 2e-4}, "G": RING8_G}}
    fig = plot_config(config, steps=4000, path=tmp_path / "lr.png")
    d = fig.axes[0].lines[0]  # D comes first in the table
    np.testing.assert_allclose(d.get_ydata(), 2e-4 * (1 - from_spec(RING8_G).levels(d.get_xdata())))
    with pytest.raises(ValueError, match=r"^lr\.D\.follow = 'H': .*available: G$"):
        plot_config({"lr": {"D": {"follow": "H"}, "G": RING8_G}})


def test_torch_and_timm_names_point_to_ours():
    with pytest.raises(ValueError, match=r"^lr\.base_lr: .*torch/timm's base_lr is min here"):
        from_spec({"kind": "triangular2", "base_lr": 1e-3, "max_lr": 0.1}, name="lr")
    with pytest.raises(ValueError, match=r"^lr\.T_0: .*is period here\); allowed: .*period_mult"):
        from_spec({"kind": "cosine_restarts", "T_0": 10}, name="lr")


def test_the_docstring_example_builds():
    doc = common.schedules.__doc__
    example = textwrap.dedent(doc[doc.index("Example (TOML)::") + len("Example (TOML)::") :])
    table = build_schedules(tomllib.loads(example)["lr"])
    assert table["D"].value(0) == 1e-5 and table["D"].value(1000) == pytest.approx(5.05e-4)
    assert table["policy"].value(40_000) == 5e-5 and table["policy"].phase(40_000).restart


@pytest.mark.parametrize(
    "kind,keys",
    [
        ("exp_range", {"gamma": 0.9}),
        ("triangular2", {}),
        ("cosine_restarts", {"peak_decay": 0.5}),
        ("one_cycle", {}),
    ],
)
def test_a_prefix_warmup_ends_where_the_shifted_first_cycle_begins(kind, keys):
    s = from_spec(
        {"kind": kind, "max": 1.0, "min": 0.1, "period": 20, "warmup": 10, "offset": 0.3, **keys}
    )
    assert s.value(math.nextafter(10, 0)) == pytest.approx(s.value(10), rel=1e-12)
    assert s.value(0) == 0.1


def test_a_part_that_ends_before_its_milestone_holds_its_cycle_until_the_next_part():
    """The driver sees one restart at the milestone, none where the inner cosine ends."""
    from common.torch_driver import ScheduleDriver

    seq = from_spec(
        {
            "kind": "sequence",
            "parts": [{"kind": "cosine", "period": 10}, {"kind": "cosine_restarts", "period": 10}],
            "milestones": [30],
        }
    )
    assert [seq.phase(t).cycle for t in (9, 10, 29)] == [0, 0, 0]
    assert [seq.phase(t).cycle for t in (30, 39, 40)] == [1, 1, 2]
    driver, restarts = ScheduleDriver(seq), []
    driver.on_restart(lambda t, phase: restarts.append(t))
    for t in range(60):
        driver.set(t)
    assert restarts == [30, 40, 50]


@pytest.mark.parametrize("kind", ["cosine_restarts", "triangular", "triangular2"])
def test_a_flat_cycle_is_a_constant_rate_that_keeps_its_clock(kind):
    """``min = max``: a constant rate whose level still runs the wave, so that couplings and
    curricula on its clock move while the rate stays put (the coupling's own control)."""
    flat = from_spec({"kind": kind, "max": 3e-4, "min": 3e-4, "period": 100})
    waving = from_spec({"kind": kind, "max": 1.0, "min": 0.0, "period": 100})
    steps = np.arange(0, 300, 7)
    assert set(flat.values(steps)) == {3e-4}
    np.testing.assert_allclose(flat.levels(steps), waving.levels(steps))
    assert np.ptp(flat.levels(steps)) > 0.9
    difficulty = Coupled(flat, 0.0, 1.0, "anti")
    assert np.ptp([difficulty.value(t) for t in steps]) > 0.9


def test_a_peak_decayed_onto_its_floor_has_level_zero():
    decayed = from_spec(
        {"kind": "cosine_restarts", "max": 1.0, "min": 0.5, "period": 10, "peak_decay": 0.5}
    )
    assert decayed.level(25) == 0.0 and decayed.value(25) == 0.5


def test_a_spec_described_in_one_line():
    from common.schedules import describe

    cycles = {"kind": "cosine_restarts", "max": 1e-3, "min": 1e-5, "period": 2000}
    assert describe(cycles) == "cosine_restarts (max 0.001, min 1e-05, period 2000)"
    mirror = {"follow": "G", "mode": "anti", "max": 1e-3, "min": 1e-5}
    assert describe(mirror) == "follow G (mode anti, max 0.001, min 1e-05)"
    assert describe({"kind": "constant", "max": 3e-4}) == "constant (max 0.0003)"
