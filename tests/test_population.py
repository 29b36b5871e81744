"""A population of GAN runs against the single runs of the same configs (float64, CPU)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import MIRROR, default_dtype

from common.config import ConfigError
from gancycle.population import Event, Population
from gancycle.settings import SCHEMA
from gancycle.trainer import NETS, GanTrainer

STEPS = 200

SMALL = [
    "device=cpu",
    *MIRROR,
    "model.hidden=24",
    "model.layers=2",
    "data.batch=48",
    "loss.d_steps=2",
    "log.every=1000000",
    "checkpoint.every=1000000",
    "eval.every=0",
    "eval.samples=10",
    "dynamics.every=1000000",
]

CYCLES_40 = "{kind='cosine_restarts', max=1e-3, min=1e-5, period=40, offset=0.5}"

MEMBERS = [
    # Restarts every 40 steps, D's half a cycle after G's; G forgets all its Adam state, D its
    # momentum; the regularisers on D's clock (instance noise is drawn only while above zero).
    [
        "seed=0",
        "lr.G.period=40",
        f"lr.D={CYCLES_40}",
        "reset.G=all",
        "reset.D=momentum",
        "instance_noise.enabled=true",
        "instance_noise.hi=0.05",
        "label_smoothing.enabled=true",
    ],
    # Another seed, other shapes and periods, a schedule that ends (cosine over 150 steps), its
    # own beta1 and EMA decay.
    [
        "seed=5",
        "lr.G={kind='cosine', max=2e-3, min=1e-5, period=150}",
        "lr.D={kind='triangular', max=1e-3, min=1e-5, period=30, offset=0.25}",
        "reset.D=all",
        "optim.beta1=0.7",
        "ema.decay=0.99",
    ],
    # ring8's own rhythm, shorter: D mirrors G (follow, anti-phase); nothing reset.
    ["seed=11", "lr.G.period=50"],
]


def member_config(sets: list[str], *more: str) -> dict:
    """ring8 made small, with the member's overrides."""
    return SCHEMA.load("ring8", [*SMALL, *sets, *more])


def single_run(config: dict, run_dir, steps: int) -> tuple[GanTrainer, list[Event]]:
    """The single trainer's own loop, recording its restarts and ends as a population does."""
    trainer = GanTrainer(config, run_dir)
    events: list[Event] = []
    for net in NETS:
        for method, kind in (
            (trainer.drivers[net].on_restart, "restart"),
            (trainer.drivers[net].on_end, "end"),
        ):
            method(
                lambda step, phase, net=net, kind=kind: events.append(
                    Event(int(step), net, kind, int(phase.cycle))
                )
            )
    trainer.advance(steps)
    return trainer, events


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def test_a_member_starts_as_its_single_run_starts(tmp_path, float64):
    configs = [member_config(sets) for sets in MEMBERS]
    population = Population(configs)
    for k, config in enumerate(configs):
        trainer = GanTrainer(config, tmp_path / str(k))
        state = population.member_state(k)
        for name, module in (("G", trainer.G), ("D", trainer.D), ("ema", trainer.ema.model)):
            for key, value in module.state_dict().items():
                assert torch.equal(state[name][key], value), (k, name, key)


@pytest.fixture(scope="module")
def trained():
    """The population of MEMBERS after STEPS steps in float64 (shared by the tests below)."""
    with default_dtype("float64"):
        configs = [member_config(sets) for sets in MEMBERS]
        population = Population(configs)
        population.advance(STEPS)
    return configs, population


@pytest.mark.parametrize("k", range(len(MEMBERS)))
def test_each_member_follows_its_single_run(tmp_path, float64, trained, k):
    configs, population = trained
    assert population.dtype == torch.float64
    trainer, events = single_run(configs[k], tmp_path, STEPS)
    member = population.members[k]
    state = population.member_state(k)
    for name, module in (("G", trainer.G), ("D", trainer.D), ("ema", trainer.ema.model)):
        assert max_diff(state[name], module.state_dict()) < 1e-9, (k, name)
    # Same clock: learning rates of the last step, restarts and ends at the same steps.
    assert member.events == events
    for net in NETS:
        assert population.opts[net].lr[k] == trainer.opts[net].param_groups[0]["lr"]
        assert member.drivers[net].state_dict() == trainer.drivers[net].state_dict()
        # Adam's state too, restarts' resets included.
        opt, stack = population.opts[net], population.nets[net].stack
        lone = trainer.opts[net]
        params = dict(trainer.nets[net].named_parameters())
        for key in ("exp_avg", "exp_avg_sq"):
            mine = stack.member_state_dict(k, opt.state[key][0])
            theirs = {name: lone.state[p][key] for name, p in params.items()}
            assert max_diff(mine, theirs) < 1e-9, (k, net, key)
        assert opt.step_count[k] == lone.state[params["net.0.weight"]]["step"]
    assert member.coupled == trainer.coupled


def test_members_follow_their_own_clocks(trained):
    _, population = trained
    # The members did follow different clocks: restarts and ends where their schedules say.
    kinds = [{(e.net, e.kind) for e in m.events} for m in population.members]
    assert kinds[0] == {("G", "restart"), ("D", "restart")}
    assert ("G", "end") in kinds[1] and ("D", "restart") in kinds[1]
    assert kinds[2] == {("G", "restart"), ("D", "restart")}
    assert [e.step for e in population.members[2].events] == [50, 50, 100, 100, 150, 150]
    assert Event(40, "G", "restart", 1) in population.members[0].events
    assert Event(150, "G", "end", 1) in population.members[1].events
    # They trained, and apart: each moved far from where it started, differently.
    start = Population([member_config(sets) for sets in MEMBERS], dtype=torch.float64)
    for k in range(len(MEMBERS)):
        assert max_diff(population.member_state(k)["G"], start.member_state(k)["G"]) > 1e-2
    assert max_diff(population.member_state(0)["G"], population.member_state(1)["G"]) > 1e-2


def test_batched_mlps_compute_what_each_member_computes(float64):
    from gancycle.batched_models import BatchedMLP
    from gancycle.models import MLPDiscriminator, MLPGenerator

    gens = [MLPGenerator(2, 2, 8, 3) for _ in range(3)]
    discs = [MLPDiscriminator(2, 8, 3) for _ in range(3)]
    G, D = BatchedMLP(gens), BatchedMLP(discs)
    x = torch.randn(3, 5, 2)
    for k in range(3):
        torch.testing.assert_close(G(x)[k], gens[k](x[k]), rtol=0, atol=1e-14)
    scores = D(x)
    assert scores.shape == (3, 5)
    scores.sum().backward()
    for k, disc in enumerate(discs):
        disc(x[k]).sum().backward()
        for name, p in disc.named_parameters():
            torch.testing.assert_close(D.stack.params[name].grad[k], p.grad, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="members of one MLP class"):
        BatchedMLP([gens[0], discs[0]])


@pytest.mark.filterwarnings("ignore:grad and param do not obey")  # views into one buffer
def test_batched_batchnorm_generators_compute_and_track_what_each_member_does(float64):
    from gancycle.batched_models import BatchedMLP
    from gancycle.models import MLPGenerator

    gens = [MLPGenerator(2, 2, 8, 2, batchnorm=True) for _ in range(3)]
    for k, gen in enumerate(gens):  # members with statistics and scales of their own
        gen.net[1].running_mean.fill_(0.1 * k)
        torch.nn.init.normal_(gen.net[1].weight)
    G = BatchedMLP(gens)
    x = torch.randn(3, 6, 2)
    out = G(x)
    out.square().sum().backward()
    for k, gen in enumerate(gens):
        mine = gen(x[k])  # training mode: batch statistics, running statistics moved once
        torch.testing.assert_close(out[k], mine, rtol=0, atol=1e-14)
        mine.square().sum().backward()
        for name, p in gen.named_parameters():
            torch.testing.assert_close(G.stack.params[name].grad[k], p.grad, rtol=0, atol=1e-14)
        state = G.member_state_dict(k)
        assert state.keys() == gen.state_dict().keys()
        for name, value in gen.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=0, atol=1e-15)


def test_a_member_whose_loss_turns_nan_stops_alone(float64):
    configs = [member_config(MEMBERS[0]), member_config(MEMBERS[2])]
    population = Population(configs)
    population.advance(5)
    with torch.no_grad():
        population.D.data[1, 0] = math.nan  # member 1's D now scores NaN: its loss_D is NaN
    poisoned = population.member_state(1)
    population.advance(20)
    diverged = population.members[1].diverged
    assert (diverged.step, diverged.tag) == (5, "loss/D") and math.isnan(diverged.value)
    assert population.members[0].diverged is None
    assert (population.member_steps(0), population.member_steps(1)) == (20, 5)
    after = population.member_state(1)
    for name in ("G", "D", "ema"):
        for key, value in poisoned[name].items():
            same = torch.allclose(after[name][key], value, rtol=0, atol=0, equal_nan=True)
            assert same, (name, key)
    # Member 0 went on as if alone.
    alone = Population(configs[:1])
    alone.advance(20)
    assert max_diff(population.member_state(0)["G"], alone.member_state(0)["G"]) < 1e-12
    assert max_diff(population.member_state(0)["D"], alone.member_state(0)["D"]) < 1e-12


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["data.batch=32"], "member 1: data.batch = 32 differs from member 0's 48"),
        (['data.root="elsewhere"'], "member 1: data.root = 'elsewhere' differs"),
        (["data.download=true"], "member 1: data.download = True differs"),
        (["model.hidden=8"], "member 1: model = "),
        (["optim.beta2=0.99"], "member 1: optim.beta2 = 0.99 differs"),
        (["thermostat.D=0.1", "optim.name=sgd"], "member 1: optim.name = 'sgd' differs"),
        (["lr.G.max=-1"], "member 1: lr.G.max"),
    ],
)
def test_members_that_cannot_share_a_population_are_named(sets, message):
    configs = [member_config(MEMBERS[0]), member_config(MEMBERS[0], *sets)]
    with pytest.raises(ConfigError, match=re.escape(message)):
        Population(configs)
    with pytest.raises(ConfigError, match="population: no members"):
        Population([])


@pytest.mark.parametrize(
    "sets",
    [
        ["loss.name=wgan", "loss.gp_weight=10.0", "label_smoothing.enabled=false"],
        [
            "loss.name=hinge",
            "label_smoothing.enabled=false",
            "optim.name=sgd",
            "optim.beta1=0.9",
            "reset.G=momentum",
        ],
        # PacGAN: D scores packs of four (instance noise on member 0), maxout layers of its
        # own width, a BatchNorm G made in four groups, N(0, std) initialisation, G's and D's
        # gradients from one point (simultaneous); and packs under the gradient penalty.
        [
            "model.pack=4",
            "model.d_maxout=3",
            "model.d_hidden=12",
            "model.g_batchnorm=true",
            "model.init_std=0.05",
            "loss.d_steps=1",
            "loss.simultaneous=true",
        ],
        ["model.pack=4", "loss.name=wgan", "loss.gp_weight=10.0", "label_smoothing.enabled=false"],
    ],
    ids=["wgan-gp", "hinge-sgd", "pack4-pacgan", "pack4-wgan-gp"],
)
def test_other_losses_and_sgd_follow_the_single_run(tmp_path, float64, sets):
    configs = [member_config(MEMBERS[k], *sets) for k in (0, 2)]
    population = Population(configs)
    population.advance(60)
    for k, config in enumerate(configs):
        trainer, events = single_run(config, tmp_path / str(k), 60)
        assert population.members[k].events == events
        for name, module in (("G", trainer.G), ("D", trainer.D), ("ema", trainer.ema.model)):
            assert max_diff(population.member_state(k)[name], module.state_dict()) < 1e-9


def test_averaging_a_batchnorm_generator_is_refused_by_name():
    sets = ["model.g_batchnorm=true", "population.average_every=10"]
    configs = [member_config(MEMBERS[2], *sets), member_config(MEMBERS[2], "seed=3", *sets)]
    message = "member 0: population.average_every = 10: not with model.g_batchnorm = true"
    with pytest.raises(ConfigError, match=re.escape(message)):
        Population(configs)


def test_the_bench_times_both_arms_on_the_same_member_steps():
    from gancycle.population_bench import member_configs, run_population_bench

    config = SCHEMA.load("ring8", ["device=cpu", "model.hidden=8", "data.batch=16"])
    assert [c["seed"] for c in member_configs(config, 3)] == [0, 1, 2]
    result = run_population_bench(config, members=2, steps=4, chunk=2, warmup=1)
    assert result["steps"] == 4 and result["members"] == 2 and result["threads"] == 1
    assert result["population_member_steps_per_s"] > 0 and result["singles_member_steps_per_s"] > 0
    assert result["ratio"] > 0
