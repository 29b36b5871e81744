"""Periodic averaging and phase offsets in a population, and the population across gloo ranks."""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import MIRROR

from common.config import ConfigError
from common.schedules import with_offset
from gancycle.averaging import evaluate_generator, mean_generator, resolve_offsets
from gancycle.distributed import member_block, train_population_ranks
from gancycle.models import MLPGenerator
from gancycle.population import Population, check_members, seeded_members
from gancycle.population_runs import train_population
from gancycle.settings import SCHEMA, check_config

ROOT = Path(__file__).resolve().parents[1]

SMALL = [
    "device=cpu",
    "threads=1",
    "model.hidden=16",
    "model.layers=2",
    "data.batch=32",
    "eval.samples=200",
    *MIRROR,
    "lr.G.period=40",
]


def members(n: int, *sets: str) -> list[dict]:
    """``n`` small ring8 members, seeds 0..n-1, sharing ``sets``."""
    return seeded_members(SCHEMA.load("ring8", [*SMALL, *sets]), n)


pytestmark = pytest.mark.usefixtures("float64")


def rows(population: Population) -> dict[str, torch.Tensor]:
    return {net: population.nets[net].data.detach().clone() for net in ("G", "D")}


def test_pull_one_makes_every_member_the_mean_of_the_weights_before(float64):
    population = Population(members(3, "population.average_every=6"))
    population.advance(5)
    before = rows(population)
    ema = population.ema.clone()
    population.advance(6)  # the 6th update averages, after its optimizer step
    for net in ("G", "D"):
        data = population.nets[net].data
        assert all(torch.equal(data[k], data[0]) for k in range(3)), net
    # Against the pre-average weights: averaging alone, on a copy of the state before it.
    again = Population(members(3, "population.average_every=6"))
    again.advance(5)
    again.averaging = type(again.averaging)(every=0)  # the 6th update without averaging
    again.advance(6)
    stepped = rows(again)
    again.average()
    for net in ("G", "D"):
        assert not torch.equal(stepped[net][0], stepped[net][1])
        assert torch.equal(again.nets[net].data, population.nets[net].data), net
        mean = stepped[net].mean(0)
        assert torch.allclose(population.nets[net].data[1], mean, rtol=0, atol=1e-15), net
        assert not torch.equal(before[net], stepped[net])
    # The EMA stays each member's own.
    assert not torch.equal(population.ema[0], population.ema[1])
    assert not torch.equal(population.ema, ema)


def test_pull_half_halves_each_members_distance_to_the_mean(float64):
    population = Population(members(4, "population.pull=0.5"))
    population.advance(8)
    before = rows(population)
    population.average()
    for net in ("G", "D"):
        mean = before[net].mean(0)
        after = population.nets[net].data
        torch.testing.assert_close(after - mean, 0.5 * (before[net] - mean), rtol=0, atol=1e-15)
        torch.testing.assert_close(after.mean(0), mean, rtol=0, atol=1e-15)


@pytest.mark.parametrize("optimizer", [True, False])
def test_optimizer_moments_are_averaged_only_when_asked(float64, optimizer):
    population = Population(members(3, f"population.average_optimizer={str(optimizer).lower()}"))
    population.advance(6)
    opt = population.opts["G"]
    state = {key: opt.state[key][0].clone() for key in opt.state_keys}
    population.average()
    for key in ("exp_avg", "exp_avg_sq"):
        now = opt.state[key][0]
        if optimizer:
            assert all(torch.equal(now[k], now[0]) for k in range(3)), key
            torch.testing.assert_close(now[0], state[key].mean(0), rtol=0, atol=1e-18)
        else:
            assert torch.equal(now, state[key]), key
    assert torch.equal(opt.step_count, state["step"])  # bias correction stays per member


def test_even_offsets_spread_the_members_over_one_cycle(float64):
    sets = ["population.offsets=even", "lr.G.offset=0.1"]
    population = Population(members(4, *sets))
    single = check_config(members(1, *sets)[0])
    base_G = single.schedules["G"]
    population.set_schedules(0)
    for k, member in enumerate(population.members):
        assert member.config["population"]["offsets"] == "none"
        assert member.config["lr"]["G"]["offset"] == pytest.approx((0.1 + k / 4) % 1.0)
        shifted = with_offset(base_G, (0.1 + k / 4) % 1.0)
        for t in (0, 7, 33):
            assert member.schedules["G"].value(t) == pytest.approx(shifted.value(t), rel=1e-12)
        # D follows G in anti-phase: the shifted clock, mirrored.
        g_level = member.schedules["G"].phase(0).level
        assert member.schedules["D"].phase(0).level == pytest.approx(1 - g_level, abs=1e-12)
        assert population.opts["G"].lr[k] == member.schedules["G"].value(0)
        assert population.opts["D"].lr[k] == member.schedules["D"].value(0)
    assert population.members[0].schedules["G"].value(0) == base_G.value(0)
    levels = [m.schedules["G"].phase(0).position for m in population.members]
    assert levels == pytest.approx([(0.1 + k / 4) % 1.0 for k in range(4)], abs=1e-12)
    # Resolving again changes nothing: a member's config says what it runs.
    resolved = check_members(members(4, *sets))
    assert [c.config for c in resolve_offsets(resolved)] == [c.config for c in resolved]


def test_listed_offsets_and_what_cannot_be_shifted_are_named(float64):
    population = Population(members(2, "population.offsets=[0.0, 0.5]"))
    assert population.members[1].config["lr"]["G"]["offset"] == 0.5
    with pytest.raises(ConfigError, match=re.escape("population.offsets: 3 offsets for 2")):
        Population(members(2, "population.offsets=[0.0, 0.5, 0.25]"))
    with pytest.raises(ConfigError, match=re.escape("member 1: lr.G (kind 'constant') has no")):
        Population(members(2, "population.offsets=even", "lr.G={kind='constant', max=1e-3}"))
    with pytest.raises(ConfigError, match=re.escape("population.offsets = 'odd': must be none")):
        SCHEMA.load("ring8", ["population.offsets=odd"])
    with pytest.raises(ConfigError, match=re.escape("population.pull = 0: must be a number in")):
        SCHEMA.load("ring8", ["population.pull=0"])
    config = members(2)
    config[1]["population"]["average_every"] = 5
    with pytest.raises(ConfigError, match="member 1: population = .* differs from member 0's"):
        Population(config)


def test_members_drift_apart_between_averages(float64):
    population = Population(members(3, "population.average_every=5"))
    population.advance(5)
    assert torch.equal(population.G.data[0], population.G.data[2])
    population.advance(7)
    spread = (population.G.data - population.G.data.mean(0)).abs().max()
    assert spread > 1e-6  # own data streams: apart again after two steps
    population.advance(10)
    assert torch.equal(population.G.data[0], population.G.data[2])


def test_member_run_folders_average_as_the_population_does(tmp_path, float64):
    # The study backend's path (train_population, a run folder per member) averages and shifts
    # as Population.advance does: every 6th update, each member the mean, offsets spread.
    sets = ["population.average_every=6", "population.offsets=even", "steps=14"]
    sets += ["eval.every=0", "checkpoint.every=4"]
    configs = members(3, *sets)
    dirs = [tmp_path / f"member{k}" for k in range(3)]
    train_population(configs, dirs)
    population = Population(members(3, *sets))
    population.advance(14)
    saved = [torch.load(d / "checkpoints" / "last.pt", weights_only=True) for d in dirs]
    for k in range(3):
        expected = population.member_state(k)["G"]
        for key, value in expected.items():
            assert torch.allclose(saved[k]["G"][key], value, rtol=0, atol=1e-12), (k, key)
    lr = [float(s["opt_G"]["param_groups"][0]["lr"]) for s in saved]
    assert len(set(lr)) == 3  # shifted clocks: three rates at the same step


def test_a_stopped_member_is_left_out_of_the_mean_and_left_as_it_is(float64):
    population = Population(members(3, "population.average_every=5"))
    population.advance(3)
    with torch.no_grad():
        population.D.data[2, 0] = math.nan  # member 2's loss_D turns NaN at step 3
    poisoned = rows(population)["G"][2]
    lone = Population(members(3)[:2])  # members 0 and 1 alone, averaged by hand at step 5
    lone.advance(5)
    lone.average()
    population.advance(5)
    assert population.members[2].diverged is not None
    assert torch.equal(population.G.data[2], poisoned)
    for net in ("G", "D"):
        data = population.nets[net].data
        assert bool(torch.isfinite(data[:2]).all())
        assert torch.allclose(data[:2], lone.nets[net].data, rtol=0, atol=1e-12), net
    assert bool(torch.isfinite(next(mean_generator(population).parameters())).all())


def test_the_mean_generator_is_a_generator_scored_as_a_run_scores_its_own(tmp_path, float64):
    from gancycle.trainer import GanTrainer

    population = Population(members(3))
    population.advance(10)
    G = mean_generator(population)
    assert isinstance(G, MLPGenerator)
    for name, value in G.state_dict().items():
        stacked = population.G.stack.params[name].detach()
        torch.testing.assert_close(value, stacked.mean(0), rtol=0, atol=1e-15)
    ema = mean_generator(population, "ema").state_dict()["net.0.weight"]
    assert not torch.equal(ema, G.state_dict()["net.0.weight"])
    # A run's own G, scored here and by the run: the same numbers.
    trainer = GanTrainer(members(1)[0], tmp_path)
    trainer.advance(10)
    assert evaluate_generator(trainer.G, trainer.config) == trainer.evaluate("G")


def test_a_single_run_refuses_what_only_a_population_does(tmp_path, capsys):
    from gancycle.cli import train_main
    from gancycle.trainer import train

    config = members(1, "population.average_every=5")[0]
    with pytest.raises(ConfigError, match=r"population.average_every = 5: averaging needs"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--check", "--set", "population.offsets=even"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: population.offsets = 'even': member offsets need") and (
        "\n" not in err
    )


def test_member_blocks_are_contiguous_and_cover_the_population():
    assert [member_block(5, r, 2) for r in range(2)] == [range(0, 3), range(3, 5)]
    blocks = [member_block(10, r, 4) for r in range(4)]
    assert [k for b in blocks for k in b] == list(range(10))
    assert [len(b) for b in blocks] == [3, 3, 2, 2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DISTRIBUTED = [
    "population.average_every=6",
    "population.pull=0.5",
    "population.average_optimizer=true",
    "population.offsets=even",
    "steps=20",
]


def test_two_gloo_ranks_give_the_one_process_populations_weights(tmp_path, float64):
    """5 members over 2 ranks (3 + 2) on loopback, averaged every 6 steps: the same bits."""
    sets = [arg for s in [*SMALL, *DISTRIBUTED] for arg in ("--set", s)]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={_free_port()}",
        "-m",
        "gancycle.distributed",
        "--members=5",
        "--dtype=float64",
        f"--out={tmp_path}",
        *sets,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"ranks": 2' in done.stdout
    ranks = torch.load(tmp_path / "population.pt", weights_only=True)
    one = train_population_ranks(members(5, *DISTRIBUTED), 20, dtype=torch.float64)
    assert ranks["step"] == one.step == 20
    for name, tensor in (("G", one.G.data), ("D", one.D.data), ("ema", one.ema)):
        assert torch.equal(ranks[name], tensor.detach()), name
    mean_G = torch.load(tmp_path / "mean_G.pt", weights_only=True)
    for key, value in mean_generator(one).state_dict().items():
        assert torch.equal(mean_G[key], value), key
