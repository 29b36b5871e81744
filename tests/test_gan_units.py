"""gancycle's parts on their own: data constants, models, losses, mode scoring and metrics."""

import math

import pytest
import torch

from gancycle.data import (
    GRID25_STD,
    RING8_STD,
    ImageData,
    grid25_centers,
    load_data,
    ring8_centers,
)
from gancycle.losses import discriminator_loss, generator_loss, gradient_penalty
from gancycle.metrics import (
    chance_mode_metrics,
    class_metrics,
    frechet_distance,
    kl_from_uniform,
    mode_metrics,
    prdc,
)
from gancycle.models import Maxout, build_models, generate_in_packs, pack_samples
from gancycle.settings import SCHEMA

# -- data ------------------------------------------------------------------------------------


def test_ring8_constants_match_veegan_and_pacgan():
    centers = ring8_centers()
    assert centers.shape == (8, 2)
    assert torch.allclose(centers.norm(dim=1), torch.ones(8), atol=1e-6)  # radius 1
    angles = torch.atan2(centers[:, 1], centers[:, 0]).remainder(2 * math.pi)
    assert torch.allclose(angles, torch.arange(8) * math.pi / 4, atol=1e-6)
    assert RING8_STD == 0.01


def test_grid25_constants_match_veegan_and_pacgan():
    centers = grid25_centers()
    assert centers.shape == (25, 2)
    axis = [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert sorted({tuple(c) for c in centers.tolist()}) == [(x, y) for x in axis for y in axis]
    assert GRID25_STD == 0.05


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_mixture_samples_spread_evenly_with_the_mode_std(name):
    data = load_data({"name": name})
    samples = data.sample(20000, torch.Generator().manual_seed(0))
    dist, nearest = torch.cdist(samples, data.centers).min(dim=1)
    counts = torch.bincount(nearest, minlength=data.num_modes).float()
    assert counts.min() > 0.8 * counts.mean()  # every mode drawn about equally
    offsets = samples - data.centers[nearest]
    assert offsets.std().item() == pytest.approx(data.std, rel=0.05)


def test_same_generator_state_same_batches():
    data = load_data({"name": "ring8"})
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(data.sample(64, a), data.sample(64, b))
    assert not torch.equal(data.sample(64, a), data.sample(64, torch.Generator().manual_seed(4)))


def test_digits_load_offline_as_images_in_minus_one_one():
    data = load_data({"name": "digits"})
    assert isinstance(data, ImageData)
    assert data.images.shape == (1797, 1, 8, 8) and data.num_classes == 10
    batch = data.sample(32, torch.Generator().manual_seed(0))
    assert batch.shape == (32, 1, 8, 8)
    assert batch.min() >= -1 and batch.max() <= 1 and batch.max() > 0.9


def test_fake_data_for_tests():
    data = load_data({"name": "fake", "fake_size": 20, "channels": 3, "image_size": 32})
    assert data.images.shape == (20, 3, 32, 32) and data.images.dtype == torch.uint8


def test_missing_torchvision_set_names_the_path_and_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_data({"name": "mnist", "root": str(tmp_path / "nowhere"), "download": False})
    message = str(err.value)
    assert "nowhere" in message and "--download" in message and "\n" not in message


def test_unknown_dataset_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="data.name = 'svhn'.*ring8 \\| grid25"):
        load_data({"name": "svhn"})


# -- models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_dcgan_pair_shapes(shape):
    G, D = build_models({"arch": "dcgan", "z_dim": 16, "width": 8}, shape)
    images = G(torch.randn(4, 16))
    assert images.shape == (4, *shape)
    assert images.abs().max() <= 1
    assert D(images).shape == (4,)


def test_mlp_pair_shapes_and_wrong_arch():
    G, D = build_models({"arch": "mlp", "z_dim": 2, "hidden": 16, "layers": 2}, (2,))
    assert G(torch.randn(5, 2)).shape == (5, 2) and D(torch.randn(5, 2)).shape == (5,)
    with pytest.raises(ValueError, match="model.arch = 'mlp'"):
        build_models({"arch": "mlp", "z_dim": 2, "hidden": 16, "layers": 2}, (1, 8, 8))


def test_pack_groups_one_sample_of_each_group_per_pack():
    x = torch.arange(12.0).reshape(6, 2)  # samples 0..5, two features each
    packed = pack_samples(x, 3)
    # Three groups of two (as generate_in_packs makes them); pack j holds sample j of each.
    assert packed.tolist() == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]
    assert pack_samples(x, 1) is x
    images = torch.randn(8, 3, 4, 4)
    assert pack_samples(images, 4).shape == (2, 12, 4, 4)  # channels concatenated
    assert torch.equal(pack_samples(images, 4)[1, 3:6], images[3])
    # A population's (N, batch, d) tensors: each member packed as a single run packs it.
    members = torch.randn(3, 8, 2)
    batched = pack_samples(members, 4, dim=1)
    assert batched.shape == (3, 2, 8)
    assert all(torch.equal(batched[k], pack_samples(members[k], 4)) for k in range(3))


def test_generate_in_packs_calls_g_once_per_position_in_the_pack():
    calls = []

    def G(z):
        calls.append(len(z))
        return z * 2

    z = torch.randn(12, 2)
    assert torch.equal(generate_in_packs(G, z, 3), z * 2)
    assert calls == [4, 4, 4]


def test_packing_widens_the_mlp_and_conv_discriminators():
    cfg = {"arch": "mlp", "z_dim": 2, "hidden": 16, "layers": 2, "pack": 4}
    _, D = build_models(cfg, (2,))
    assert D.net[0].in_features == 8
    assert D(pack_samples(torch.randn(20, 2), 4)).shape == (5,)
    _, D = build_models({"arch": "dcgan", "z_dim": 16, "width": 8, "pack": 2}, (3, 8, 8))
    assert D.net[0].in_channels == 6
    assert D(pack_samples(torch.randn(6, 3, 8, 8), 2)).shape == (3,)


def test_maxout_takes_the_largest_of_each_group_of_pieces():
    x = torch.tensor([[1.0, 5.0, 2.0, -1.0, -3.0, -2.0]])
    assert Maxout(3)(x).tolist() == [[5.0, -1.0]]


def test_the_pacgan_config_builds_pacgans_synthetic_networks():
    """fjxmlzn/PacGAN, synthetic_data_experiments/2DGrid_GAN&PacGAN: G 2-400x4-2 with BatchNorm
    and ReLU, D maxout 200 units x 5 pieces x 3 layers, weights N(0, 0.02)."""
    config = SCHEMA.load("grid25_pacgan", ["model.pack=4", "data.batch=400"])
    G, D = build_models(config["model"], (2,))
    g_linear = [m for m in G.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in g_linear] == [
        (2, 400), (400, 400), (400, 400), (400, 400), (400, 2)
    ]  # fmt: skip
    assert [m.bias is None for m in g_linear] == [True] * 4 + [False]
    batchnorms = [m for m in G.net if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(batchnorms) == 4 and all(m.eps == 1e-4 and m.momentum == 0.05 for m in batchnorms)
    d_linear = [m for m in D.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in d_linear] == [
        (8, 1000), (200, 1000), (200, 1000), (200, 1)
    ]  # fmt: skip
    assert [m.pieces for m in D.net if isinstance(m, Maxout)] == [5, 5, 5]
    weights = torch.cat([m.weight.detach().flatten() for m in g_linear + d_linear])
    assert float(weights.std()) == pytest.approx(0.02, rel=0.05)
    assert all(not m.bias.any() for m in d_linear)
    assert config["optim"]["beta1"] == 0.8 and config["lr"]["G"]["kind"] == "constant"
    assert config["lr"]["G"]["max"] == config["lr"]["D"]["max"] == 1e-4


def test_the_default_mlp_keys_keep_todays_networks():
    torch.manual_seed(0)
    G, D = build_models({"arch": "mlp", "z_dim": 2, "hidden": 16, "layers": 2}, (2,))
    torch.manual_seed(0)
    defaults = SCHEMA.load("ring8", ["model.hidden=16", "model.layers=2"])["model"]
    G2, D2 = build_models(defaults, (2,))
    for a, b in ((G, G2), (D, D2)):
        assert repr(a) == repr(b)
        assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


# -- losses ----------------------------------------------------------------------------------


def test_non_saturating_loss_is_binary_cross_entropy_with_smoothing():
    real, fake = torch.randn(64), torch.randn(64)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = bce(real, torch.full_like(real, 0.9)) + bce(fake, torch.zeros_like(fake))
    assert torch.allclose(discriminator_loss("ns", real, fake, smoothing=0.1), expected)
    assert torch.allclose(generator_loss("ns", fake), bce(fake, torch.ones_like(fake)))


def test_hinge_and_wgan_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(0.25 + 0.5)
    assert discriminator_loss("wgan", real, fake).item() == pytest.approx(-1.0 - 1.25)
    assert generator_loss("hinge", fake).item() == pytest.approx(1.0)


def test_gradient_penalty_zero_for_unit_slope_and_positive_otherwise():
    unit = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        unit.weight.copy_(torch.tensor([[0.6, 0.8]]))  # |grad| = 1 everywhere
    real, fake, gen = torch.randn(16, 2), torch.randn(16, 2), torch.Generator().manual_seed(0)
    assert gradient_penalty(unit, real, fake, gen).item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        unit.weight.mul_(3.0)  # |grad| = 3: penalty (3-1)^2 = 4
    assert gradient_penalty(unit, real, fake, gen).item() == pytest.approx(4.0, rel=1e-5)


# -- metrics ---------------------------------------------------------------------------------


def test_a_sample_at_a_mode_centre_counts_one_at_four_std_does_not():
    centers, std = ring8_centers(), RING8_STD
    at_centre = centers[:1].clone()
    four_std_out = centers[1:2] * (1 + 4 * std)  # radially 4 std beyond mode 1
    assert mode_metrics(at_centre, centers, std)["modes"] == 1
    assert mode_metrics(at_centre, centers, std)["high_quality"] == 100.0
    out = mode_metrics(four_std_out, centers, std)
    assert out["modes"] == 0 and out["high_quality"] == 0.0
    both = mode_metrics(torch.cat([at_centre, four_std_out]), centers, std)
    assert both["modes"] == 1 and both["high_quality"] == 50.0


def test_mode_metrics_full_coverage_and_collapse():
    data = load_data({"name": "grid25"})
    real = data.sample(2500, torch.Generator().manual_seed(0))
    full = mode_metrics(real, data.centers, data.std)
    assert full["modes"] == 25 and full["high_quality"] > 98 and full["kl"] < 0.05
    collapsed = data.centers[3] + data.std * torch.randn(2500, 2)
    one = mode_metrics(collapsed, data.centers, data.std)
    assert one["modes"] == 1 and one["kl"] == pytest.approx(math.log(25))


def test_a_mode_is_held_with_a_tenth_of_an_even_share_of_the_samples():
    """``modes`` counts a mode with one high-quality sample; ``modes_held`` needs
    ``min_share * n / K`` of them (as ``classes`` does for images): 2500 samples on grid25
    need 10 in a mode."""
    data = load_data({"name": "grid25"})
    centers, n = data.centers, 2500
    far = torch.full((n - 19, 2), 100.0)  # nearest mode far beyond 3 std: not high quality
    samples = torch.cat([centers[0].repeat(10, 1), centers[1].repeat(9, 1), far])
    out = mode_metrics(samples, centers, data.std)
    assert out["modes"] == 2 and out["modes_held"] == 1
    half = mode_metrics(samples, centers, data.std, min_share=0.05)  # 5 samples suffice
    assert half["modes_held"] == 2


def test_a_generator_blind_to_the_modes_captures_most_modes_but_holds_none():
    """Samples spread evenly over grid25's square land one high-quality sample in most modes
    by chance (PacGAN's rule counts them), but hold none."""
    data = load_data({"name": "grid25"})
    box = torch.rand(2500, 2, generator=torch.Generator().manual_seed(0)) * 8.3 - 4.15
    out = mode_metrics(box, data.centers, data.std)
    assert out["modes"] >= 18 and out["high_quality"] < 5
    assert out["modes_held"] == 0
    real = data.sample(2500, torch.Generator().manual_seed(1))
    assert mode_metrics(real, data.centers, data.std)["modes_held"] == 25


@pytest.mark.parametrize("name", ["grid25", "ring8"])
def test_chance_levels_match_the_arithmetic_of_a_uniform_box(name):
    """Uniform points in the square: each mode's 3-std disc (the discs are disjoint and
    inside the square) gets a point with p = area of disc / area of square, so the expected
    modes are K (1 - (1 - p)^n) and the expected high-quality share K p."""
    data = load_data({"name": name})
    levels = chance_mode_metrics(data.centers, data.std, n=2500, reps=200, seed=0)
    side = data.centers.max(0).values - data.centers.min(0).values + 6 * data.std
    p = math.pi * (3 * data.std) ** 2 / float(side.prod())
    k = len(data.centers)
    box = levels["box"]
    assert box["modes"] == pytest.approx(
        k * (1 - (1 - p) ** 2500), abs=4 * box["modes_sd"] / 200**0.5 + 0.05
    )
    assert box["high_quality"] == pytest.approx(100 * k * p, rel=0.05)
    assert box["modes_held"] == 0 and levels["gauss"]["modes_held"] <= 2
    assert 0 < levels["gauss"]["modes"] < box["modes"]  # the Gaussian misses the outer modes


def test_kl_from_uniform():
    assert kl_from_uniform(torch.tensor([5, 5, 5, 5])) == pytest.approx(0.0)
    assert kl_from_uniform(torch.tensor([10, 0, 0, 0])) == pytest.approx(math.log(4))
    assert kl_from_uniform(torch.tensor([0, 0])) == pytest.approx(math.log(2))


def test_prdc_same_distribution_versus_half_the_modes():
    data = load_data({"name": "ring8"})
    real = data.sample(1000, torch.Generator().manual_seed(0))
    same = prdc(real, data.sample(1000, torch.Generator().manual_seed(1)))
    assert same["precision"] > 0.9 and same["recall"] > 0.9 and same["coverage"] > 0.9
    assert same["density"] == pytest.approx(1.0, abs=0.15)
    half = data.sample(2000, torch.Generator().manual_seed(2))
    half = half[torch.cdist(half, data.centers).argmin(dim=1) < 4][:1000]  # modes 0..3 only
    dropped = prdc(real, half)
    assert dropped["precision"] > 0.9  # what it makes is good...
    assert 0.4 < dropped["recall"] < 0.6 and 0.4 < dropped["coverage"] < 0.6  # ...half is missing


def test_prdc_in_blocks_is_the_same_as_in_one():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(700, 2, generator=g), 1.3 * torch.randn(500, 2, generator=g)
    assert prdc(real, fake, block=1500) == prdc(real, fake)  # 2 or 3 rows a block, the last short


PRDC_MEMORY = """
import resource, sys, torch
from gancycle.metrics import prdc
g = torch.Generator().manual_seed(0)
prdc(torch.randn(15000, 2, generator=g), torch.randn(15000, 2, generator=g))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def test_prdc_memory_grows_with_the_samples_not_their_square():
    """gancycle-eval --samples 100000 asked for an 80 GB distance matrix and crashed. 15,000
    samples need 1.8 GB for one whole matrix (4.6 GB at their peak, measured); in blocks,
    torch's own 0.3-0.4 GB and a few blocks of 128 MB (0.9 to 1.6 GB measured)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PRDC_MEMORY], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 2.5e9


def test_frechet_distance_of_gaussians():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4000, 3, generator=g), torch.randn(4000, 3, generator=g)
    assert frechet_distance(a, b) == pytest.approx(0.0, abs=0.02)
    # mean shift d: |d|^2; std 2 vs 1 in each of 3 dims: 3 * (2 - 1)^2
    assert frechet_distance(a, b + torch.tensor([1.0, 2.0, 0.0])) == pytest.approx(5.0, abs=0.1)
    assert frechet_distance(a, 2 * b) == pytest.approx(3.0, abs=0.1)


def test_class_metrics():
    even = torch.eye(10).repeat(10, 1)  # 10 samples per class
    assert class_metrics(even, 10) == {"classes": 10.0, "class_kl": pytest.approx(0.0)}
    collapsed = torch.eye(10)[torch.zeros(100, dtype=torch.long)]
    out = class_metrics(collapsed, 10)
    assert out["classes"] == 1.0 and out["class_kl"] == pytest.approx(math.log(10))
