"""Couplings and the torch driver: anti-phase values, targets, resume, restart and end hooks."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from common.coupling import CallableTarget, Coupled, coupled_from_spec
from common.schedules import Follow, from_spec
from common.torch_driver import (
    ModuleAttr,
    OptimizerKey,
    ResetOptimizerState,
    ScheduleDriver,
    drive_optimizer,
)

LR = {"kind": "cosine_restarts", "max": 0.1, "min": 0.0, "period": 20}


def test_anti_phase_coupling_mirrors_the_learning_rate():
    lr = from_spec(LR)
    wd = Coupled(lr, lo=0.0, hi=1e-3, mode="anti")
    same = coupled_from_spec({"mode": "in", "lo": 0.0, "hi": 1e-3}, lr)
    t = np.arange(200)
    level = lr.values(t) / 0.1
    np.testing.assert_allclose(wd.values(t), 1e-3 * (1 - level), atol=1e-15)
    np.testing.assert_allclose(same.values(t), 1e-3 * level, atol=1e-15)
    assert wd.value(0) == 0.0 and wd.value(19.999) == pytest.approx(1e-3, rel=1e-6)
    assert np.corrcoef(wd.values(t), lr.values(t))[0, 1] < -0.999
    with pytest.raises(ValueError, match="couple.wd.mode"):
        coupled_from_spec({"mode": "sideways", "lo": 0, "hi": 1}, lr, name="couple.wd")


def test_a_coupling_is_the_follow_form_in_a_couplings_words():
    lr = from_spec(LR)
    wd = Coupled(lr, lo=1e-4, hi=1e-3, mode="anti")
    follow = from_spec(
        {"follow": "lr", "mode": "anti", "max": 1e-3, "min": 1e-4}, schedules={"lr": lr}
    )
    t = np.arange(0, 200, 0.5)
    assert isinstance(wd, Follow) and np.array_equal(wd.values(t), follow.values(t))
    assert wd.phase(5) == follow.phase(5) and wd.phase(5).level == 1 - lr.phase(5).level
    assert (wd.lo, wd.hi) == (1e-4, 1e-3) and wd.spec() == {"mode": "anti", "lo": 1e-4, "hi": 1e-3}


def test_targets_reach_optimizer_keys_adam_beta_dropout_batchnorm_and_callables():
    model = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.1), nn.Linear(8, 2), nn.Dropout(0.2)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1.0)
    seen = []
    lr = from_spec(LR)
    driver = ScheduleDriver(lr)
    driver.bind("lr", lr, OptimizerKey(opt, "lr"))
    driver.bind("beta1", Coupled(lr, 0.85, 0.95, "anti"), OptimizerKey(opt, "betas[0]"))
    driver.bind("dropout", Coupled(lr, 0.0, 0.5, "in"), ModuleAttr(model, "p", (nn.Dropout,)))
    driver.bind(
        "bn", Coupled(lr, 0.01, 0.1, "anti"), ModuleAttr(model, "momentum", (nn.BatchNorm1d,))
    )
    driver.bind("difficulty", Coupled(lr, 0.0, 1.0, "anti"), CallableTarget(seen.append))
    values = driver.set(10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert opt.param_groups[0]["betas"] == (pytest.approx(0.9), 0.999)
    assert model[2].p == pytest.approx(0.25) and model[4].p == pytest.approx(0.25)
    assert model[1].momentum == pytest.approx(0.055)
    assert seen == [pytest.approx(0.5)] and values["difficulty"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="momentum"):
        OptimizerKey(opt, "momentum")  # Adam has no momentum key: say so


def test_driver_is_idempotent_and_resumes_on_the_same_curve():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    lr = from_spec({**LR, "period_mult": 1.5, "offset": 0.3})
    full = drive_optimizer(opt, lr, couplings={"momentum": Coupled(lr, 0.85, 0.95, "anti")})
    curve = [full.step()["lr"] for _ in range(100)]
    assert full.set(42) == full.set(42)

    first = drive_optimizer(opt, lr)
    part = [first.step()["lr"] for _ in range(60)]
    state = first.state_dict()
    resumed = drive_optimizer(opt, from_spec(lr.spec()))
    resumed.load_state_dict(state)
    part += [resumed.step()["lr"] for _ in range(40)]
    assert part == curve


def _train_steps(model, opt, driver, steps):
    x = torch.randn(16, 4)
    for _ in range(steps):
        driver.step()
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def test_restart_hook_resets_adam_moments_on_a_real_adam():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    lr = from_spec({"kind": "cosine_restarts", "max": 1e-2, "period": 5})
    fired = []
    driver = drive_optimizer(opt, lr, reset=["exp_avg", "exp_avg_sq", "step"])
    driver.on_restart(lambda step, phase: fired.append((step, phase.cycle)))
    _train_steps(model, opt, driver, 5)  # steps 0..4: cycle 0
    state = next(iter(opt.state.values()))
    assert state["exp_avg"].abs().sum() > 0 and float(state["step"]) == 5
    driver.step()  # step 5: the restart, before the optimizer moves
    for s in opt.state.values():
        assert s["exp_avg"].abs().sum() == 0 and s["exp_avg_sq"].abs().sum() == 0
        assert float(s["step"]) == 0
    assert fired == [(5, 1)]
    driver.set(5)  # idempotent: no second reset
    assert fired == [(5, 1)]


def test_default_reset_keeps_adam_second_moment_and_sgd_loses_momentum():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    driver = drive_optimizer(
        adam, from_spec({"kind": "cosine_restarts", "max": 1e-2, "period": 3}), reset=True
    )
    _train_steps(model, adam, driver, 4)  # the reset fired at step 3, then one more update
    s = next(iter(adam.state.values()))
    assert float(s["step"]) == 4 and s["exp_avg_sq"].abs().sum() > 0

    sgd = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    driver = drive_optimizer(
        sgd, from_spec({"kind": "cosine_restarts", "max": 1e-2, "period": 3}), reset=True
    )
    _train_steps(model, sgd, driver, 3)
    driver.step()
    assert all(s["momentum_buffer"].abs().sum() == 0 for s in sgd.state.values())


def test_per_group_schedules():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    opt = torch.optim.SGD([{"params": a.parameters()}, {"params": b.parameters()}], lr=1.0)
    slow = from_spec({"kind": "constant", "max": 1e-3})
    driver = drive_optimizer(opt, [from_spec(LR), slow])
    values = driver.set(0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 1e-3]
    assert set(values) == {"lr/0", "lr/1"}


def test_default_reset_keys_name_what_they_cannot_reset():
    from common.torch_driver import default_reset_keys

    params = list(nn.Linear(2, 2).parameters())
    assert default_reset_keys(torch.optim.AdamW(params)) == ("exp_avg",)
    assert default_reset_keys(torch.optim.RMSprop(params, momentum=0.9)) == ("momentum_buffer",)
    with pytest.raises(ValueError, match="RMSprop without momentum"):
        default_reset_keys(torch.optim.RMSprop(params))
    with pytest.raises(ValueError, match="Adagrad; name the keys"):
        default_reset_keys(torch.optim.Adagrad(params))


# -- restarts, the end of a limited schedule, stepping ---------------------------------------

LIMITED = {"kind": "cosine_restarts", "max": 1e-2, "period": 10, "cycle_limit": 2}


def _recording(driver):
    """Lists that the driver's restart and end hooks fill with (step, cycle)."""
    restarts, ends = [], []
    driver.on_restart(lambda step, phase: restarts.append((step, phase.cycle)))
    driver.on_end(lambda step, phase: ends.append((step, phase.cycle)))
    return restarts, ends


def test_the_end_of_a_limited_schedule_is_no_restart_and_keeps_adam_moments():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    driver = drive_optimizer(opt, from_spec(LIMITED))
    resets = ResetOptimizerState(opt)
    driver.on_restart(resets)
    _train_steps(model, opt, driver, 20)  # steps 0..19: the restart at 10
    before = [s["exp_avg"].clone() for s in opt.state.values()]
    driver.step()  # step 20: the last cycle is over, no restart
    assert resets.resets == 1
    assert all(
        torch.equal(s["exp_avg"], b) for s, b in zip(opt.state.values(), before, strict=True)
    )
    _train_steps(model, opt, driver, 10)
    assert resets.resets == 1


@pytest.mark.parametrize("kind", ["cosine", "one_cycle"])
def test_one_cycle_shapes_end_without_a_restart(kind):
    driver = ScheduleDriver(from_spec({"kind": kind, "max": 0.1, "period": 10}))
    restarts, ends = _recording(driver)
    for _ in range(30):
        driver.step()
    assert restarts == [] and ends == [(10, 1)]


@pytest.mark.parametrize(
    "stride, restarts_seen, end_step",
    [(1, [(10, 1)], 20), (4, [(12, 1)], 20), (7, [(14, 1)], 21), (12, [(12, 1)], 24)]
    + [(20, [], 20), (25, [], 25)],  # past the last restart and the end at once: the end only
)
def test_hooks_fire_once_per_event_whatever_the_stride(stride, restarts_seen, end_step):
    driver = ScheduleDriver(from_spec(LIMITED))
    restarts, ends = _recording(driver)
    for t in range(0, 60, stride):  # RL sets the step in strides of n_envs
        driver.set(t)
    assert restarts == restarts_seen and ends == [(end_step, 2)]


def test_an_unlimited_schedule_never_ends():
    driver = ScheduleDriver(from_spec({**LIMITED, "cycle_limit": 0}))
    restarts, ends = _recording(driver)
    for t in range(0, 10**6, 10**5):
        driver.set(t)
    assert len(restarts) == 9 and ends == []


def test_a_resumed_driver_fires_the_end_once_old_checkpoints_too():
    lr = from_spec(LIMITED)
    first = ScheduleDriver(lr)
    _, ends = _recording(first)
    for _ in range(25):
        first.step()
    assert ends == [(20, 2)] and first.state_dict()["ended"] is True

    def resume(state):
        driver = ScheduleDriver(from_spec(LIMITED))
        driver.load_state_dict(state)
        restarts, ends = _recording(driver)
        for _ in range(10):
            driver.step()
        return restarts, ends

    assert resume(first.state_dict()) == ([], [])
    # Checkpoints written before the driver knew of ends: no "ended" key.
    assert resume({"step_count": 25, "cycle": 2}) == ([], [])
    assert resume({"step_count": 15, "cycle": 1}) == ([], [(20, 2)])
    assert resume({"step_count": 5, "cycle": 0}) == ([(10, 1)], [])


def test_step_continues_after_the_last_step_set():
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    lr = from_spec(LR)
    driver = drive_optimizer(opt, lr)
    driver.set(41)
    assert driver.step()["lr"] == lr.value(42) != lr.value(41)
    assert opt.param_groups[0]["lr"] == lr.value(42)
    assert driver.step()["lr"] == lr.value(43)


def test_coupling_is_pure_python_without_torch():
    code = "import sys, common.coupling; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
