"""The double-well demo and the schedule plots."""

import numpy as np
import pytest

from common.double_well import DoubleWell, deep_fraction, descend
from common.plots import plot_config
from common.schedules import from_spec


def test_the_tilt_makes_one_well_deeper():
    well = DoubleWell(tilt=0.5)
    shallow, deep = well.minima()
    assert shallow > 0 > deep
    assert well.f(deep) < well.f(shallow) - 0.5
    assert abs(well.grad(shallow)) < 1e-9 and abs(well.grad(deep)) < 1e-9
    assert DoubleWell(tilt=0.0).f(1.0) == DoubleWell(tilt=0.0).f(-1.0)  # the symmetric one


def test_cyclical_schedule_escapes_the_shallow_well_monotone_decay_stays():
    cyclic = from_spec({"kind": "cosine_restarts", "max": 0.05, "min": 1e-4, "period": 500})
    monotone = from_spec({"kind": "exponential", "max": 0.05, "min": 1e-4, "gamma": 0.998})
    assert deep_fraction(cyclic, seeds=20) >= 0.8
    assert deep_fraction(monotone, seeds=20) <= 0.5
    # Without noise, gradient descent from the bottom of the shallow well never moves.
    still = descend(cyclic, steps=200, noise=0.0)
    assert np.allclose(still, DoubleWell().minima()[0])


def test_warmup_with_offset_is_continuous():
    s = from_spec(
        {
            "kind": "cosine_restarts",
            "max": 1.0,
            "min": 0.0,
            "period": 100,
            "warmup": 10,
            "offset": 0.5,
        }
    )
    assert s.value(10 - 1e-9) == pytest.approx(s.value(10), abs=1e-8)
    assert s.value(10) == pytest.approx(0.5)


def test_plot_config_writes_a_png(tmp_path):
    config = {
        "lr": {
            "G": {"kind": "cosine_restarts", "max": 1e-3, "period": 100},
            "D": {"kind": "cosine_restarts", "max": 1e-3, "period": 100, "offset": 0.5},
        },
        "couplings": {"noise": {"clock": "D", "mode": "anti", "lo": 0.0, "hi": 0.1}},
    }
    fig = plot_config(config, steps=400, path=tmp_path / "lr.png")
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    lines = fig.axes[1].get_lines()
    assert len(fig.axes) == 2 and len(lines) == 1
    noise = lines[0].get_ydata()
    d = from_spec(config["lr"]["D"]).values(lines[0].get_xdata())
    assert np.corrcoef(noise, d)[0, 1] < -0.99  # anti-phase with D
    with pytest.raises(ValueError, match="couplings.noise.clock"):
        bad = {**config, "couplings": {"noise": {**config["couplings"]["noise"], "clock": "E"}}}
        plot_config(bad, steps=10)
