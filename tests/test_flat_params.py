"""FlatParameters: one buffer for a network's weights and one for its gradients."""

import math

import pytest
import torch
from conftest import digits
from torch import nn

from common.dynamics import KineticEnergy, grad_norm
from common.flat_params import FlatParameters


def _digits_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    # Odd sizes, so that the views need padding to stay aligned.
    return nn.Sequential(nn.Linear(64, 37), nn.LeakyReLU(0.2), nn.Linear(37, 10))


def _train(flatten: bool, steps: int = 30) -> tuple[nn.Module, list[tuple[float, float]]]:
    """Adam on the digits; returns the net and (|dtheta|^2, grad norm) of every step."""
    x, y = digits()
    net = _digits_net(0)
    flat = FlatParameters(net.parameters()) if flatten else None
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    ke = KineticEnergy(flat if flat else net.parameters())
    gen = torch.Generator().manual_seed(1)
    measured = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        if flat:
            flat.zero_grad()
        else:
            opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        ke.before()
        opt.step()
        measured.append(ke.after_with_grad_norm())
    return net, measured


def test_training_on_flat_buffers_is_bitwise_the_same():
    plain, plain_dyn = _train(flatten=False)
    flat, flat_dyn = _train(flatten=True)
    for a, b in zip(plain.parameters(), flat.parameters(), strict=True):
        assert torch.equal(a, b)
    for (e1, g1), (e2, g2) in zip(plain_dyn, flat_dyn, strict=True):
        assert e2 == pytest.approx(e1, rel=1e-5) and e1 > 0
        assert g2 == pytest.approx(g1, rel=1e-5) and g1 > 0


def test_parameters_and_gradients_are_aligned_views_of_the_buffers():
    net = _digits_net(0)
    before = [p.detach().clone() for p in net.parameters()]
    ids = [id(p) for p in net.parameters()]
    flat = FlatParameters(net.parameters())
    assert [id(p) for p in net.parameters()] == ids  # the same Parameter objects
    for p, old in zip(net.parameters(), before, strict=True):
        assert torch.equal(p, old)
        assert p.data_ptr() % 64 == 0 and p.grad.data_ptr() % 64 == 0
        assert p.untyped_storage().data_ptr() == flat.data.untyped_storage().data_ptr()
        assert p.grad.untyped_storage().data_ptr() == flat.grad.untyped_storage().data_ptr()
    numel = sum(p.numel() for p in net.parameters())
    assert numel <= flat.data.numel() < numel + 16 * len(flat)

    net(torch.randn(4, 64)).sum().backward()
    assert flat.grad.norm().item() == pytest.approx(grad_norm(net.parameters()), rel=1e-6)
    assert flat.grad.norm().item() > 0
    flat.zero_grad()
    assert all(p.grad.abs().sum() == 0 for p in net.parameters())

    state = {k: v + 1.0 for k, v in net.state_dict().items()}
    net.load_state_dict(state)  # in place: the views stay views
    assert torch.equal(net[0].weight, state["0.weight"])
    assert flat.data[: net[0].weight.numel()].sum().item() == pytest.approx(
        state["0.weight"].sum().item(), rel=1e-5
    )
    assert math.isclose(
        flat.data.sum().item(), sum(v.sum().item() for v in state.values()), rel_tol=1e-5
    )


def test_mixed_dtypes_are_refused_with_one_line():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double())
    with pytest.raises(
        ValueError, match="one dtype and device: torch.float32 on cpu, torch.float64 on cpu"
    ):
        FlatParameters(net.parameters())
    with pytest.raises(ValueError, match="no parameters"):
        FlatParameters(nn.Linear(2, 2).requires_grad_(False).parameters())
