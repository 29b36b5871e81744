"""DCGAN pairs in a population: member k against the single run of its config (float64, CPU,
tiny digits runs)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import run_main as call
from test_population import max_diff, single_run
from test_population_runs import assert_close, checkpoint, final

from common.config import ConfigError
from gancycle.batched_models import BatchedConvDiscriminator, BatchedConvGenerator
from gancycle.cli import eval_main
from gancycle.models import ConvDiscriminator, ConvGenerator
from gancycle.population import Population
from gancycle.population_runs import train_population
from gancycle.settings import SCHEMA
from gancycle.trainer import NETS, train

STEPS = 30

TINY = [
    "device=cpu",
    "progress=false",
    "model.width=3",
    "model.z_dim=4",
    "data.batch=12",
    "log.every=1000000",
    "checkpoint.every=1000000",
    "eval.every=0",
    "eval.samples=10",
    "eval.classifier_steps=1",
    "dynamics.every=1000000",
]
"""A digits DCGAN cut down to run 30 steps of 3 members in about a second."""

MEMBERS = [
    # G restarts every 10 steps and forgets all its Adam state; D's in anti-phase; instance
    # noise and label smoothing on D's clock.
    [
        "seed=0",
        "lr.G.max=2e-3",
        "lr.G.period=10",
        "reset.G=all",
        "instance_noise.enabled=true",
        "label_smoothing.enabled=true",
    ],
    # Another seed, a schedule that ends, a triangular D of its own, its own beta1 and EMA.
    [
        "seed=4",
        "lr.G={kind='cosine', max=3e-3, min=1e-5, period=25}",
        "lr.D={kind='triangular', max=1e-3, min=1e-5, period=12, offset=0.25}",
        "reset.D=momentum",
        "optim.beta1=0.7",
        "ema.decay=0.9",
    ],
    ["seed=9", "lr.G.period=14"],
]


def member_config(sets: list[str], *more: str) -> dict:
    return SCHEMA.load("digits", [*TINY, *sets, *more])


@pytest.mark.filterwarnings("ignore:grad and param do not obey")  # views into one buffer
def test_batched_conv_nets_compute_and_track_what_each_member_does(float64):
    gens = [ConvGenerator(4, 2, 8, 3) for _ in range(3)]
    discs = [ConvDiscriminator(2, 8, 3) for _ in range(3)]
    for k, gen in enumerate(gens):  # members with statistics of their own
        gen.net[1].running_mean.fill_(0.1 * k)
        torch.nn.init.normal_(gen.net[1].weight)
    G, D = BatchedConvGenerator(gens), BatchedConvDiscriminator(discs)
    z = torch.randn(3, 5, 4)
    images = G(z)
    assert images.shape == (3, 5, 2, 8, 8)
    scores = D(images)
    assert scores.shape == (3, 5)
    scores.square().sum().backward()
    for k, (gen, disc) in enumerate(zip(gens, discs, strict=True)):
        mine = disc(gen(z[k]))
        torch.testing.assert_close(scores[k], mine, rtol=0, atol=1e-14)
        mine.square().sum().backward()
        for net, batched in ((gen, G), (disc, D)):
            for name, p in net.named_parameters():
                got = batched.stack.params[name].grad[k]
                torch.testing.assert_close(got, p.grad, rtol=0, atol=1e-13)
            state = batched.member_state_dict(k)
            assert state.keys() == net.state_dict().keys()
            for name, value in net.state_dict().items():
                torch.testing.assert_close(state[name], value, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="one ConvGenerator class"):
        BatchedConvGenerator([gens[0], discs[0]])


@pytest.fixture(scope="module")
def trained():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        configs = [member_config(sets) for sets in MEMBERS]
        population = Population(configs)
        population.advance(STEPS)
    finally:
        torch.set_default_dtype(before)
    return configs, population


def assert_member_follows_its_single_run(population, configs, k, run_dir, steps) -> None:
    trainer, events = single_run(configs[k], run_dir, steps)
    member, state = population.members[k], population.member_state(k)
    for name, module in (("G", trainer.G), ("D", trainer.D), ("ema", trainer.ema.model)):
        # weights and BatchNorm's running statistics (state_dict holds both)
        assert max_diff(state[name], module.state_dict()) < 1e-9, (k, name)
    assert member.events == events
    assert member.coupled == trainer.coupled
    for net in NETS:
        assert population.opts[net].lr[k] == trainer.opts[net].param_groups[0]["lr"]
        opt, stack = population.opts[net], population.nets[net].stack
        lone, params = trainer.opts[net], dict(trainer.nets[net].named_parameters())
        for key in ("exp_avg", "exp_avg_sq"):
            mine = stack.member_state_dict(k, opt.state[key][0])
            theirs = {name: lone.state[p][key] for name, p in params.items()}
            assert max_diff(mine, theirs) < 1e-9, (k, net, key)
        assert opt.step_count[k] == lone.state[params["net.0.weight"]]["step"]


@pytest.mark.parametrize("k", range(len(MEMBERS)))
def test_each_dcgan_member_follows_its_single_run(tmp_path, float64, trained, k):
    configs, population = trained
    assert population.dtype == torch.float64
    assert_member_follows_its_single_run(population, configs, k, tmp_path, STEPS)
    # They trained apart; G's restarts did fire (and reset G's Adam state) for member 0.
    assert ("G", "restart") in {(e.net, e.kind) for e in population.members[0].events}
    g = [population.member_state(j)["G"] for j in range(2)]
    assert max_diff(g[0], g[1]) > 1e-3


@pytest.mark.parametrize(
    "sets",
    [
        [
            "model.pack=2",
            "loss.name=wgan",
            "loss.gp_weight=10",
            "loss.d_steps=2",
            "label_smoothing.enabled=false",
        ]
    ],
)
def test_packed_dcgan_members_with_a_gradient_penalty_follow_their_single_runs(
    tmp_path, float64, sets
):
    configs = [member_config(MEMBERS[0], *sets), member_config(MEMBERS[1], *sets)]
    population = Population(configs)
    population.advance(12)
    for k in range(2):
        assert_member_follows_its_single_run(population, configs, k, tmp_path / str(k), 12)


def test_averaging_a_dcgan_population_is_refused_in_one_line():
    configs = [member_config(sets, "population.average_every=5") for sets in MEMBERS[:2]]
    message = (
        "member 0: population.average_every = 5: not with model.arch = 'dcgan' (BatchNorm's "
        "running statistics have no mean here yet)"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        Population(configs)
    with pytest.raises(ConfigError, match="model.arch = 'mlp' on ring8 or grid25"):
        Population([member_config(MEMBERS[0], "model.arch=mlp")])


RUN = ["steps=16", "log.every=4", "checkpoint.every=6", "eval.every=8", "snapshots.max=2"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        root = tmp_path_factory.mktemp("dcgan_population")
        configs = [member_config(sets, *RUN) for sets in MEMBERS[:2]]
        members = [root / f"member{k}" for k in range(2)]
        train_population(configs, members)
        singles = [root / f"single{k}" for k in range(2)]
        for conf, single in zip(configs, singles, strict=True):
            train(conf, single)
    finally:
        torch.set_default_dtype(before)
    return configs, members, singles


@pytest.mark.parametrize("k", range(2))
def test_a_dcgan_member_writes_its_single_runs_folder(folders, k):
    _, members, singles = folders
    member, single = members[k], singles[k]
    assert (member / "config.toml").read_text() == (single / "config.toml").read_text()
    assert_close(final(member), final(single), 1e-9, "metrics")
    assert_close(checkpoint(member), checkpoint(single), 1e-9, "last.pt")
    # The image metrics' classifier, trained and cached in the folder as the single run does.
    assert (member / "data" / "classifier.pt").is_file()
    assert "classifier_accuracy" in final(member)[0]


def test_gancycle_eval_reads_a_dcgan_member_folder(folders, capsys, float64):
    _, members, _ = folders
    code, out, err = call(eval_main, ["--run", str(members[0]), "--all"], capsys)
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["step"] == 16
    expected = final(members[0])[0]
    assert_close(
        {w: evaluated[w] for w in ("G", "ema", "ensemble")},
        {w: expected[w] for w in ("G", "ema", "ensemble")},
        1e-9,
    )


def test_a_resumed_dcgan_member_keeps_its_batchnorm_statistics(tmp_path, float64):
    run = [*RUN, "eval.every=0"]
    configs = [member_config(sets, *run) for sets in MEMBERS[:2]]
    longer = [member_config(sets, *run, "steps=22") for sets in MEMBERS[:2]]
    dirs = [tmp_path / f"member{k}" for k in range(2)]
    train_population(configs, dirs)
    train_population(longer, dirs, resume=True)
    straight = [tmp_path / f"straight{k}" for k in range(2)]
    train_population(longer, straight)
    for k in range(2):
        ours, theirs = checkpoint(dirs[k]), checkpoint(straight[k])
        assert ours.pop("resumes") == 1 and theirs.pop("resumes") == 0
        first_end = configs[k]["steps"]  # its evaluation stays in the resumed member's history
        assert [row["step"] for row in ours["history"]] == [first_end, 22]
        ours["history"] = ours["history"][1:]
        assert_close(ours, theirs, 1e-12, f"member {k}")
