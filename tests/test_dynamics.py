"""Kinetic energy, thermostat, Hessian eigenvalue, stability bounds, linear scaling."""

import math

import numpy as np
import pytest
import torch
from conftest import digits
from torch import nn

from common.dynamics import (
    KineticEnergy,
    Thermostat,
    cycle_growth_factor,
    grad_norm,
    hessian_top_eigenvalue,
    linear_scaling,
    max_stable_peak,
    stability_margin,
    suggest_max,
)
from common.schedules import from_spec


def test_kinetic_energy_is_the_squared_update_length():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ke = KineticEnergy(model.parameters())
    model(torch.randn(8, 5)).pow(2).sum().backward()
    expected = sum(float((0.1 * p.grad).pow(2).sum()) for p in model.parameters())
    assert grad_norm(model.parameters()) == pytest.approx(math.sqrt(expected) / 0.1, rel=1e-5)
    ke.before()
    opt.step()
    assert ke.after() == pytest.approx(expected, rel=1e-5)
    ke.before()
    opt.step()  # the same gradients again: the same update
    energy, norm = ke.after_with_grad_norm()
    assert energy == pytest.approx(expected, rel=1e-5)
    assert norm == pytest.approx(math.sqrt(expected) / 0.1, rel=1e-5)
    with pytest.raises(RuntimeError, match="without a matching before"):
        ke.after()


@pytest.mark.parametrize("nesterov", [False, True])
def test_thermostat_holds_kinetic_energy_within_ten_percent(nesterov):
    torch.manual_seed(0)
    x, y = digits()
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=1e-4
    )
    ke = KineticEnergy(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(1)

    def step(thermostat=None):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        if thermostat:
            thermostat.apply()
        ke.before()
        opt.step()
        return ke.after()

    natural = np.mean([step() for _ in range(100)])
    target = 5 * natural
    thermostat = Thermostat(opt, target, generator=torch.Generator().manual_seed(2))
    measured = [step(thermostat) for _ in range(300)]
    assert np.mean(measured) == pytest.approx(target, rel=0.10)
    assert thermostat.sigma > 0
    # Without it the energy stays far below the target: the thermostat does the work.
    assert natural < 0.5 * target


def test_thermostat_refuses_adaptive_optimizers():
    adam = torch.optim.Adam(nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="needs torch.optim.SGD, got Adam"):
        Thermostat(adam, target=1.0)


def test_hessian_top_eigenvalue_of_a_known_quadratic():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor([10.0, 4.0, 3.0, 1.0, 0.5, 0.1], dtype=torch.float64)) @ q.T
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    found = hessian_top_eigenvalue(lambda: 0.5 * x @ a @ x, [x], iters=100, tol=1e-6)
    assert found == pytest.approx(10.0, rel=0.01)


def test_hessian_top_eigenvalue_matches_dense_hessian_of_a_real_model():
    torch.manual_seed(0)
    x, y = digits()
    x, y = x[:300], y[:300] % 3  # a 3-class softmax regression keeps the dense Hessian small
    w = (0.1 * torch.randn(64, 3)).requires_grad_()
    b = torch.zeros(3, requires_grad=True)

    def loss_of(weight, bias):
        return nn.functional.cross_entropy(x @ weight + bias, y)

    dense = torch.autograd.functional.hessian(
        lambda flat: loss_of(flat[:192].view(64, 3), flat[192:]),
        torch.cat([w.detach().flatten(), b.detach()]),
        vectorize=True,
    )
    top = float(torch.linalg.eigvalsh(dense).abs().max())
    found = hessian_top_eigenvalue(
        lambda: loss_of(w, b),
        [w, b],
        iters=300,
        tol=1e-6,
        generator=torch.Generator().manual_seed(0),
    )
    assert found == pytest.approx(top, rel=0.01)


def test_stability_bounds_two_over_L_constant_four_over_L_cosine():
    assert max_stable_peak("constant") == pytest.approx(2.0, abs=1e-6)
    assert max_stable_peak("cosine") == pytest.approx(4.0, rel=1e-4)
    # Cosine growth factor is exactly η_max·L/4 once η_max·L >= 1 (closed-form integral).
    for a in (1.0, 2.0, 3.0, 6.0):
        assert cycle_growth_factor("cosine", a) == pytest.approx(a / 4, rel=1e-4)
    # Triangular: the root of (a-1) log(a-1) = a, about 4.59.
    tri = max_stable_peak("triangular")
    assert (tri - 1) * math.log(tri - 1) == pytest.approx(tri, rel=1e-4)
    # A real schedule object gives its own shape's bound.
    sgdr = from_spec({"kind": "cosine_restarts", "max": 0.1, "period": 100})
    assert max_stable_peak(sgdr) == pytest.approx(4.0, rel=1e-4)
    assert suggest_max(L=20.0) == pytest.approx(0.2, rel=1e-4)
    assert stability_margin(0.2, 20.0) == pytest.approx(1.0)


@pytest.mark.parametrize("kind,bound", [("constant", 2.0), ("cosine", 4.0)])
def test_gradient_descent_on_a_quadratic_obeys_the_bound(kind, bound):
    L, period = 3.0, 2000
    spec = {"kind": "cosine_restarts", "min": 0.0, "period": period}
    for factor, grows in ((0.97, False), (1.03, True)):
        peak = factor * bound / L
        s = from_spec(
            {**spec, "max": peak} if kind == "cosine" else {"kind": "constant", "max": peak}
        )
        log_growth = np.sum(np.log(np.abs(1 - s.values(np.arange(period)) * L)))
        assert (log_growth > 0) == grows


def test_linear_scaling_rule():
    assert linear_scaling(0.1, batch=1024, base_batch=256) == pytest.approx(0.4)
    assert linear_scaling(1e-3, batch=1024, base_batch=256, rule="sqrt") == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="rule"):
        linear_scaling(0.1, 2, 1, rule="cubic")


def test_hessian_ignores_parameters_the_loss_does_not_use():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    unused = torch.zeros(3, requires_grad=True)
    found = hessian_top_eigenvalue(lambda: 3.0 * (x**2).sum(), [x, unused], iters=20)
    assert found == pytest.approx(6.0, rel=1e-6)
