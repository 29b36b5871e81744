"""The seeds' diagnostic: a metric's changes attributed to the phase of the cycle, on made-up
histories whose answer is known."""

import numpy as np
import pytest

from common.phase_diagnostic import attribute_run, phase_diagnostic
from common.schedules import from_spec

PERIOD = 1000
CLOCK = from_spec({"kind": "cosine_restarts", "max": 1e-3, "min": 1e-5, "period": PERIOD})


def history(gain_at, steps=8 * PERIOD, every=PERIOD // 8, start=0.0):
    """Evaluations every ``every`` steps; each interval gains ``gain_at(position)`` (its start)."""
    points = np.arange(0, steps + 1, every, dtype=float)
    values = [start]
    for s in points[:-1]:
        values.append(values[-1] + gain_at((s % PERIOD) / PERIOD))
    return points, np.array(values)


def test_gains_all_in_the_high_rate_half_are_attributed_there():
    # A cosine restart's first half (position < 0.5) is its high-rate half (level >= 0.5).
    steps, values = history(lambda p: 1.0 if p < 0.5 else 0.0)
    shares = attribute_run(steps, values, CLOCK, bins=4)
    assert shares.high == pytest.approx(32.0)  # 8 cycles x 4 intervals of +1
    assert shares.low == pytest.approx(0.0)
    assert shares.bins == pytest.approx([16.0, 16.0, 0.0, 0.0])
    assert shares.bin_steps == pytest.approx([2000.0] * 4)
    assert not shares.bin_split_steps.any()  # intervals of 1/8 cycle: none spans two bins
    assert shares.split_steps_halves == 0.0


def test_won_at_peaks_and_lost_in_troughs_over_seeds():
    runs = []
    for seed in range(6):
        noise = np.random.default_rng(seed)
        steps, values = history(lambda p, n=noise: (2.0 if p < 0.5 else -1.0) + n.normal(0, 0.1))
        runs.append((steps, values, CLOCK))
    out = phase_diagnostic(runs, bins=2, reps=500)
    assert out["runs"] == 6
    assert out["high"]["mean"] == pytest.approx(64.0, abs=2.0)  # 8 cycles x 4 x +2
    assert out["low"]["mean"] == pytest.approx(-32.0, abs=2.0)
    lo, hi = out["high_minus_low"]["ci"]
    assert 90.0 < lo <= out["high_minus_low"]["mean"] <= hi < 102.0
    assert [b["lo"] for b in out["bins"]] == [0.0, 0.5]
    assert out["bins"][0]["mean"] == pytest.approx(out["high"]["mean"])
    assert out["bins"][0]["split"] == 0.0 and out["split_halves"] == 0.0
    assert len(out["high"]["scores"]) == 6


def test_an_even_change_is_split_pro_rata_with_no_phase_effect():
    # One evaluation per 1.5 cycles: every interval spans both halves and several bins.
    steps = np.arange(0, 9 * PERIOD + 1, 1500, dtype=float)
    values = 0.01 * steps  # the metric grows evenly with the steps
    shares = attribute_run(steps, values, CLOCK, bins=4)
    assert shares.high == pytest.approx(shares.low, rel=0.02)
    assert shares.bins == pytest.approx([22.5] * 4, rel=0.02)
    assert shares.bin_split_steps == pytest.approx(shares.bin_steps)  # all split
    assert shares.high + shares.low == pytest.approx(values[-1] - values[0])


def test_halves_follow_the_level_not_the_position():
    # D mirroring G: D's high-rate half is G's low-rate half; the bins are the cycle's.
    mirror = from_spec(
        {"follow": "G", "mode": "anti", "max": 1e-3, "min": 1e-5}, schedules={"G": CLOCK}
    )
    steps, values = history(lambda p: 1.0 if p < 0.5 else 0.0)
    shares = attribute_run(steps, values, mirror, bins=4)
    assert shares.low == pytest.approx(32.0) and shares.high == pytest.approx(0.0)
    assert shares.bins == pytest.approx([16.0, 16.0, 0.0, 0.0])


def test_steps_before_the_first_evaluation_and_repeated_steps():
    shares = attribute_run([250.0, 500.0, 500.0, 750.0], [1.0, 2.0, 5.0, 5.0], CLOCK, bins=4)
    # (250, 500] gains 5 - 1 (the later value at 500 counts); (500, 750] gains nothing.
    assert shares.bins == pytest.approx([0.0, 4.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="must not decrease"):
        attribute_run([500.0, 250.0], [1.0, 2.0], CLOCK)
    out = phase_diagnostic([([100.0], [1.0], CLOCK)], bins=2, reps=10)
    assert out["runs"] == 0 and out["high"]["mean"] is None and out["bins"][0]["split"] is None


def test_the_first_cycles_are_left_out_when_asked():
    """A run learning from scratch gains most in its first cycle, wherever that lands: with
    ``skip_cycles = 1`` only the later cycles' changes count, from the evaluation at the first
    restart on; a run with fewer cycles than that is left out."""

    def gain(step: float) -> float:
        position = (step % PERIOD) / PERIOD
        if step < PERIOD:  # the first cycle: +10 in its low-rate half (learning)
            return 10.0 if position >= 0.5 else 0.0
        return 1.0 if position < 0.5 else 0.0  # afterwards: +1 in the high-rate half

    steps = np.arange(0, 8 * PERIOD + 1, PERIOD // 8, dtype=float)
    values = np.concatenate([[0.0], np.cumsum([gain(s) for s in steps[:-1]])])
    whole = attribute_run(steps, values, CLOCK, bins=2)
    assert whole.low == pytest.approx(40.0) and whole.high == pytest.approx(28.0)
    later = attribute_run(steps, values, CLOCK, bins=2, skip_cycles=1)
    assert later.high == pytest.approx(28.0) and later.low == pytest.approx(0.0)
    assert later.high + later.low == pytest.approx(values[-1] - values[steps == PERIOD][0])
    assert later.bin_steps.sum() == pytest.approx(7 * PERIOD)

    one_cycle = from_spec({"kind": "cosine", "max": 1e-3, "min": 1e-5, "period": 8 * PERIOD})
    out = phase_diagnostic(
        [(steps, values, CLOCK), (steps, values, one_cycle)], bins=2, reps=10, skip_cycles=1
    )
    assert out["runs"] == 1 and out["skip_cycles"] == 1
    assert out["high"]["scores"] == pytest.approx([28.0])
    with pytest.raises(ValueError, match="skip_cycles = -1: must be >= 0"):
        attribute_run(steps, values, CLOCK, skip_cycles=-1)
