"""Short real GAN runs: the rhythm in the event files, restarts, resume, snapshots, divergence."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY_RING8, set_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.util import tensor_util

from common.config import ConfigError, apply_overrides, load_config
from common.schedules import from_spec
from common.tb import read_scalars
from gancycle.cli import train_main
from gancycle.models import build_models
from gancycle.sampling import generate
from gancycle.settings import SCHEMA
from gancycle.trainer import GanTrainer, train

# ring8 made tiny, every step logged.
TINY = ["device=cpu", "steps=30", "log.every=1", *TINY_RING8]


def tiny_config(*sets: str) -> dict:
    return SCHEMA.load("ring8", [*TINY, *sets])


def series(run_dir, tag) -> np.ndarray:
    return np.array([value for _, value in read_scalars(run_dir, tag)])


def test_anti_phase_learning_rates_and_coupled_noise_in_the_event_files(tmp_path):
    config = tiny_config("steps=40", "instance_noise.enabled=true", "instance_noise.hi=0.05")
    train(config, tmp_path, progress=False)

    lr_G, lr_D = read_scalars(tmp_path, "lr/G"), read_scalars(tmp_path, "lr/D")
    assert [step for step, _ in lr_G] == list(range(40)) == [step for step, _ in lr_D]
    lr_G, lr_D = series(tmp_path, "lr/G"), series(tmp_path, "lr/D")
    expected = from_spec(config["lr"]["G"]).values(np.arange(40))
    np.testing.assert_allclose(lr_G, expected, rtol=1e-6)
    # D mirrors G (follow = "G", mode = "anti", same range): it rises exactly as G falls and
    # drops at G's restarts, so the two rates always add up to max + min.
    np.testing.assert_allclose(lr_G + lr_D, np.full(40, 1e-3 + 1e-5), rtol=1e-6)
    assert np.corrcoef(lr_G, lr_D)[0, 1] == pytest.approx(-1.0)
    # Instance noise follows D's clock in anti-phase: loudest exactly where D's lr is lowest.
    noise = series(tmp_path, "hparam/instance_noise")
    level_D = series(tmp_path, "schedule/level/D")
    np.testing.assert_allclose(noise, 0.05 * (1 - level_D), atol=1e-7)
    assert np.argmax(noise[:10]) == np.argmin(lr_D[:10])
    # Losses, D outputs and dynamics are there, every step.
    for tag in (
        "loss/G",
        "loss/D",
        "D/real",
        "D/fake",
        "dynamics/kinetic_energy/G",
        "dynamics/kinetic_energy/D",
        "dynamics/grad_norm/G",
        "dynamics/grad_norm/D",
    ):
        values = series(tmp_path, tag)
        assert len(values) == 40 and np.isfinite(values).all(), tag
    assert (series(tmp_path, "dynamics/kinetic_energy/D") > 0).all()
    # The evaluation at the end: modes, the PacGAN numbers, and a scatter of samples.
    assert len(read_scalars(tmp_path, "eval/modes")) == 1
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert "samples" in events.Tags()["images"]
    # The custom-scalars layout puts lr/G and lr/D on one chart.
    config_event = events.Tensors("custom_scalars__config__")[0]
    raw = tensor_util.make_ndarray(config_event.tensor_proto).item()
    charts = {
        chart.title: list(chart.multiline.tag)
        for category in layout_pb2.Layout.FromString(raw).category
        for chart in category.chart
    }
    assert charts["G and D learning rates"] == ["lr/G", "lr/D"]


def test_restarts_reset_each_networks_adam_state_as_configured(tmp_path):
    # D on a clock of its own, shifted half a cycle: its restarts fall between G's.
    shift = ["lr.D.kind=cosine_restarts", "lr.D.period=10", "lr.D.offset=0.5"]
    trainer = GanTrainer(tiny_config("reset.G=all", "reset.D=momentum", *shift), tmp_path)
    trainer.train(steps=13, progress=False)
    state_G = next(iter(trainer.opts["G"].state.values()))
    state_D = next(iter(trainer.opts["D"].state.values()))
    # G restarted at step 10 with all its Adam state forgotten: 3 updates since.
    assert state_G["step"].item() == 3
    # D restarts at 5 (offset 0.5) forgetting only its first moment: the count goes on.
    assert state_D["step"].item() == 13

    trainer.set_schedules(15)  # D's next restart
    for state in trainer.opts["D"].state.values():
        assert not state["exp_avg"].any() and state["exp_avg_sq"].any()
    assert all(s["exp_avg"].any() for s in trainer.opts["G"].state.values())
    trainer.set_schedules(20)  # G's next restart
    for state in trainer.opts["G"].state.values():
        assert not state["exp_avg"].any() and not state["exp_avg_sq"].any()
        assert state["step"].item() == 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("whole")
    _cli_train(run, "30")
    return run


RESUME_SETS = [
    "log.every=4",  # the seam at 13 falls inside a log window
    "reset.G=all",
    "reset.D=momentum",
    "instance_noise.enabled=true",
    "label_smoothing.enabled=true",
    "eval.every=10",
]


def _cli_train(run, steps, *extra):
    args = ["--config", "ring8", "--out", str(run), "--steps", steps, "--no-progress"]
    args += set_args(*TINY, *RESUME_SETS)
    with pytest.raises(SystemExit) as done:
        train_main([*args, *extra])
    assert done.value.code == 0


@pytest.mark.parametrize("k", [13, 20])  # 20: G's restart (snapshot, Adam reset) at the seam
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, uninterrupted, k):
    _cli_train(tmp_path, str(k))
    with pytest.raises(SystemExit) as done:
        train_main(["--resume", str(tmp_path), "--steps", "30", "--no-progress"])
    assert done.value.code == 0

    # The split run also logged and evaluated at its seam; that must not disturb what follows.
    for tag in (
        "lr/G",
        "lr/D",
        "loss/G",
        "loss/D",
        "D/real",
        "D/fake",
        "hparam/instance_noise",
        "hparam/label_smoothing",
        "dynamics/kinetic_energy/G",
        "dynamics/grad_norm/D",
    ):
        whole, split = read_scalars(uninterrupted, tag), dict(read_scalars(tmp_path, tag))
        assert [step for step, _ in whole] == [3, 7, 11, 15, 19, 23, 27, 29], tag
        assert all(split.pop(step) == value for step, value in whole), tag
        assert set(split) <= {k - 1}, tag  # the seam logged its partial window too
    a = torch.load(uninterrupted / "checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 30
    for net in ("G", "D", "ema"):
        for name, tensor in a[net].items():
            assert torch.equal(tensor, b[net][name]), (net, name)
    assert a["snapshots"]["cycles"] == b["snapshots"]["cycles"] == [0, 1, 2]


def test_snapshots_at_cycle_ends_and_ensemble_sampling_mixes_them(tmp_path):
    trainer = GanTrainer(tiny_config("snapshots.max=2"), tmp_path)
    trainer.train(progress=False)
    # Cycles end at 10, 20, 30; only the newest 2 are kept, on disk too.
    assert trainer.snapshots.cycles == [1, 2]
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        "cycle_1.pt",
        "cycle_2.pt",
    ]
    on_disk = torch.load(tmp_path / "snapshots/cycle_2.pt", weights_only=True)
    for name, tensor in trainer.G.state_dict().items():  # the last cycle ended with the run
        assert torch.equal(on_disk[name], tensor)

    n = 400
    samples = trainer.sample(n, "ensemble", seed=5)
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(5))
    G, _ = build_models(trainer.config["model"], (2,))
    members = []
    for state in trainer.snapshots.state_dicts:
        G.load_state_dict(state)
        members.append(generate(G, z))
    assert not torch.allclose(members[0], members[1])
    from_first = (samples - members[0]).abs().amax(dim=1) < 1e-6
    from_second = (samples - members[1]).abs().amax(dim=1) < 1e-6
    assert (from_first | from_second).all()  # every sample is one member's output for its z
    assert 0.4 < from_first.float().mean() < 0.6  # members chosen uniformly


def test_a_schedule_that_ends_is_snapshotted_at_its_end_as_its_last_cycle(tmp_path):
    limited = "lr.G.cycle_limit=2"  # cycles 0 and 1 (steps 0-19), then G's rate stays at min
    trainer = GanTrainer(tiny_config("steps=30", limited), tmp_path / "long")
    trainer.train(progress=False)
    assert trainer.snapshots.cycles == [0, 1]  # the restart at 10, the end at 20: no more
    files = sorted(p.name for p in (tmp_path / "long/snapshots").iterdir())
    assert files == ["cycle_0.pt", "cycle_1.pt"]
    short = GanTrainer(tiny_config("steps=20", limited), tmp_path / "short")
    short.train(progress=False)  # G after step 19: the end of cycle 1
    at_end = torch.load(tmp_path / "long/snapshots/cycle_1.pt", weights_only=True)
    for name, tensor in short.G.state_dict().items():
        assert torch.equal(at_end[name], tensor), name
    # The checkpoint follows the end's snapshot at once, as it follows a restart's.
    paused = GanTrainer(tiny_config("steps=30", limited), tmp_path / "paused")
    paused.save_checkpoint()
    assert paused.advance(22) is None
    assert torch.load(paused.checkpoint_path, weights_only=True)["step"] == 21


# D's rate jumps from 1e-4 to 2e29 at step 1; dynamics unmeasured after step 0, so the NaN
# loss the blown-up D gives is the first sign.
NAN_LOSS = [
    'lr.D.kind="triangular"',
    "lr.D.max=1e30",
    "lr.D.min=1e-4",
    "lr.D.offset=0.0",
    "dynamics.every=1000",
]


def test_a_nan_loss_stops_the_run_at_the_last_good_checkpoint(tmp_path):
    metrics = train(tiny_config(*NAN_LOSS), tmp_path, progress=False)
    assert metrics["diverged"] == {"step": 1, "net": "G", "tag": "loss/G", "value": "nan"}
    assert metrics["steps"] == 0  # the state of the last checkpoint, evaluated
    saved = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert saved["step"] == 0
    for net in ("G", "D"):
        assert all(torch.isfinite(t).all() for t in saved[net].values())


def test_rollback_restores_the_checkpoint_and_lowers_both_peaks(tmp_path):
    config = tiny_config(
        "lr.D.max=1e30", "lr.D.min=1e29", "on_nan=rollback", "rollback.factor=1e-33"
    )
    metrics = train(config, tmp_path, progress=False)
    assert "diverged" not in metrics and metrics["steps"] == 30 and metrics["rollbacks"] == 1
    lr_G, lr_D = series(tmp_path, "lr/G"), series(tmp_path, "lr/D")
    assert lr_D.max() <= 1e30 * 1e-33 * 1.0001  # D's schedule scaled down...
    assert lr_G.max() == pytest.approx(1e-3 * 1e-33)  # ...and G's with it
    saved = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert saved["lr_scale"] == pytest.approx(1e-33) and saved["rollbacks"] == 1


def test_image_run_trains_and_caches_the_metric_classifier(tmp_path):
    config = load_config("digits", "gancycle")
    apply_overrides(
        config,
        [
            "device=cpu",
            "steps=20",
            "data.batch=16",
            "model.z_dim=8",
            "model.width=8",
            "eval.every=0",
            "eval.samples=200",
            "eval.classifier_steps=300",
        ],
    )
    metrics = train(config, tmp_path, progress=False)
    cached = tmp_path / "data" / "classifier.pt"
    assert cached.is_file()
    assert metrics["classifier_accuracy"] > 0.85  # a classifier worth measuring with
    for key in ("classes", "class_kl", "fd_classifier", "precision", "recall"):
        assert np.isfinite(metrics["G"][key]), key
    assert metrics["G"]["fd_classifier"] > 0
    stamp = cached.stat().st_mtime_ns
    again = GanTrainer.from_run(tmp_path)
    assert again.evaluate("G") == pytest.approx(metrics["G"])  # same fixed draws, cached net
    assert cached.stat().st_mtime_ns == stamp
    torch.save({"accuracy": 0.9}, cached)  # a cache of something else: one line naming it
    with pytest.raises(ConfigError, match=f"{cached}: does not fit"):
        GanTrainer.from_run(tmp_path).evaluate("G")
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert "samples" in events.Tags()["images"]  # the fixed-noise grid


def test_dynamics_every_n_steps(tmp_path):
    train(tiny_config("steps=12", "dynamics.every=3"), tmp_path, progress=False)
    for tag in ("dynamics/kinetic_energy/G", "dynamics/grad_norm/D"):
        assert [step for step, _ in read_scalars(tmp_path, tag)] == [0, 3, 6, 9]
    assert len(read_scalars(tmp_path, "loss/G")) == 12  # losses still every step


def test_fid_from_a_local_inception_weights_file(tmp_path):
    from torchvision.models import inception_v3

    weights = tmp_path / "inception.pt"
    torch.save(
        inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), weights
    )
    config = load_config("digits", "gancycle")
    apply_overrides(
        config,
        [
            "device=cpu",
            "steps=1",
            "data.batch=8",
            "model.z_dim=4",
            "model.width=4",
            "eval.samples=10",
            "eval.classifier_steps=20",
            f"eval.inception_weights={weights}",
        ],
    )
    metrics = GanTrainer(config, tmp_path / "run").evaluate("G")
    assert metrics["fid"] > 0 and np.isfinite(metrics["fid"])  # untrained G: far from real


def test_ttur_is_two_constant_rates(tmp_path):
    config = tiny_config("steps=12")
    config["lr"] = {"G": {"kind": "constant", "max": 1e-4}, "D": {"kind": "constant", "max": 4e-4}}
    metrics = train(config, tmp_path, progress=False)
    np.testing.assert_allclose(series(tmp_path, "lr/G"), np.full(12, 1e-4), rtol=1e-6)
    np.testing.assert_allclose(series(tmp_path, "lr/D"), np.full(12, 4e-4), rtol=1e-6)
    assert "ensemble" not in metrics and not list((tmp_path / "snapshots").glob("*.pt"))


def test_thermostat_holds_each_networks_kinetic_energy_with_sgd(tmp_path):
    # Constant rates: a restart's jump would release the noise stored in the momentum buffer,
    # an energy no added noise can take back (the thermostat only heats).
    sgd = ['optim.name="sgd"', "optim.beta1=0.9", "steps=60", "lr.G.min=1e-3", "lr.D.min=1e-3"]
    train(tiny_config(*sgd), tmp_path / "plain", progress=False)
    natural = {
        net: np.mean(series(tmp_path / "plain", f"dynamics/kinetic_energy/{net}"))
        for net in ("G", "D")
    }
    targets = {net: 4 * natural[net] for net in ("G", "D")}
    hot = tiny_config(*sgd, *(f"thermostat.{net}={targets[net]}" for net in ("G", "D")))
    train(hot, tmp_path / "hot", progress=False)
    for net in ("G", "D"):
        energy = series(tmp_path / "hot", f"dynamics/kinetic_energy/{net}")
        sigma = series(tmp_path / "hot", f"dynamics/thermostat_sigma/{net}")
        assert np.mean(energy[10:]) == pytest.approx(targets[net], rel=0.15)
        assert (sigma[10:] > 0).mean() > 0.9


def test_a_packed_discriminator_trains(tmp_path):
    """model.pack = 4: D reads packs of four points (8 inputs) and the losses stay finite."""
    config = tiny_config("model.pack=4", "steps=20")
    trainer = GanTrainer(config, tmp_path)
    assert trainer.D.net[0].in_features == 8
    before = [p.detach().clone() for p in trainer.D.parameters()]
    final = trainer.train(progress=False)
    assert final["steps"] == 20 and 0 <= final["G"]["modes"] <= 8
    for tag in ("loss/D", "loss/G"):
        values = series(tmp_path, tag)
        assert len(values) == 20 and np.isfinite(values).all()
    assert all(not torch.equal(a, b) for a, b in zip(before, trainer.D.parameters(), strict=True))


def test_pacgans_grid25_setup_trains_with_packs_batchnorm_and_maxout(tmp_path):
    sets = ["device=cpu", "steps=4", "log.every=1", "eval.samples=100", "checkpoint.every=0"]
    config = SCHEMA.load("grid25_pacgan", [*sets, "model.pack=4", "data.batch=40"])
    final = train(config, tmp_path, progress=False)
    assert final["steps"] == 4
    losses = series(tmp_path, "loss/D")
    assert len(losses) == 4 and np.isfinite(losses).all()
    # G's BatchNorm statistics moved (train mode while training, eval mode for samples).
    trainer = GanTrainer.from_run(tmp_path)
    assert float(trainer.G.net[1].running_var.sub(1).abs().max()) > 0


@pytest.mark.parametrize("simultaneous", [True, False])
def test_simultaneous_updates_take_gs_gradient_before_d_moves(tmp_path, simultaneous):
    """loss.simultaneous (PacGAN's code): G's first update does not depend on D's rate."""

    def g_after_one_step(lr_d: float) -> list[torch.Tensor]:
        config = tiny_config(
            f"loss.simultaneous={str(simultaneous).lower()}",
            "lr.G={kind='constant', max=1e-3}",
            f"lr.D={{kind='constant', max={lr_d}, min={lr_d}}}",
        )
        trainer = GanTrainer(config, tmp_path / f"{lr_d}")
        trainer.advance(1)
        return [p.detach().clone() for p in trainer.G.parameters()]

    same = all(
        torch.equal(a, b)
        for a, b in zip(g_after_one_step(1e-2), g_after_one_step(1e-8), strict=True)
    )
    assert same == simultaneous


def test_eval_prdc_false_skips_only_prdc(tmp_path):
    """eval.prdc = false (studies that report no PRDC skip most of a 2D evaluation's time)
    leaves every other number of the run as it was: same modes, quality and KL, same history."""
    PRDC = {"precision", "recall", "density", "coverage"}
    runs = {}
    for prdc in ("true", "false"):
        config = tiny_config("steps=20", "eval.every=10", f"eval.prdc={prdc}")
        runs[prdc] = train(config, tmp_path / prdc, progress=False)
    full, lean = runs["true"], runs["false"]
    for which in ("G", "ema", "ensemble"):
        assert PRDC <= set(full[which]) and not PRDC & set(lean[which])
        assert {k: v for k, v in full[which].items() if k not in PRDC} == lean[which]
    history = {
        prdc: json.loads((tmp_path / prdc / "metrics.json").read_text())["history"] for prdc in runs
    }
    assert [e["step"] for e in history["true"]] == [10, 20]
    for a, b in zip(history["true"], history["false"], strict=True):
        assert {k: v for k, v in a["G"].items() if k not in PRDC} == b["G"]
    assert len(series(tmp_path / "true", "eval/precision")) == 2
    with pytest.raises(KeyError, match="eval/precision: not in"):
        series(tmp_path / "false", "eval/precision")
    assert len(series(tmp_path / "false", "eval/modes")) == 2


def test_the_evaluation_bench_times_prdc_as_most_of_a_2d_evaluation():
    """What the README's "95–99%" rests on: at the PacGAN protocol's 2500 samples, PRDC's three
    distance matrices dwarf the mode metrics (the bench alternates the two settings)."""
    from gancycle.bench import evaluation_bench

    timed = evaluation_bench(SCHEMA.load("ring8", ["device=cpu", "threads=1"]), repeats=2)
    assert timed["without_prdc_s"] < timed["with_prdc_s"]
    assert timed["prdc_share"] > 0.5
