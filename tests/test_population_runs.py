"""A population's members write the run folders of their single runs (float64, CPU)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tomllib
import torch
from conftest import TINY_RING8, default_dtype
from conftest import run_main as call

from common.config import ConfigError
from common.tb import read_scalars
from gancycle.cli import eval_main, sample_main, train_main
from gancycle.population_runs import train_population
from gancycle.settings import SCHEMA
from gancycle.trainer import train

STEPS = 30

RUN = [
    *TINY_RING8,
    "device=cpu",
    "progress=false",
    f"steps={STEPS}",
    "log.every=4",
    "checkpoint.every=12",
    "eval.every=20",
    "snapshots.max=2",
    "lr.G.max=5e-3",
]
"""Tiny ring8 runs: restarts every 10 steps, logs, checkpoints, an evaluation on the way."""

MEMBERS = [
    ["seed=0"],
    ["seed=3", "lr.G.period=7", "reset.G=all", "reset.D=momentum", "ema.decay=0.9"],
]

NOT_COMPARED = {"wall_s", "steps_per_s"}
"""Final metrics that are timings."""


def config(sets: list[str], *more: str) -> dict:
    return SCHEMA.load("ring8", [*RUN, *sets, *more])


def assert_close(a, b, tol: float, where: str = "") -> None:
    """Nested dicts, lists, tensors and numbers equal (numbers and tensors within ``tol``)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, a.keys(), b.keys())
        for key in a:
            assert_close(a[key], b[key], tol, f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, tol, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.shape == b.shape and a.dtype == b.dtype, where
        if a.dtype == torch.uint8:  # a generator's state
            assert torch.equal(a, b), where
        else:
            assert a.numel() == 0 or float((a - b).abs().max()) <= tol, where
    elif isinstance(a, float) and not isinstance(b, bool):
        assert math.isclose(a, b, rel_tol=0, abs_tol=tol) or a == b, (where, a, b)
    else:
        assert a == b, (where, a, b)


def checkpoint(run_dir) -> dict:
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    del state["rng"]  # the process's global RNG, which training does not draw from
    return state


def final(run_dir) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics["final"].items() if k not in NOT_COMPARED}, metrics["history"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The members trained as a population and each alone by ``gancycle.trainer.train``."""
    root = tmp_path_factory.mktemp("population")
    configs = [config(sets) for sets in MEMBERS]
    members = [root / f"member{k}" for k in range(len(configs))]
    singles = [root / f"single{k}" for k in range(len(configs))]
    with default_dtype("float64"):
        returned = train_population(configs, members)
        for conf, single in zip(configs, singles, strict=True):
            train(conf, single)
    return configs, members, singles, returned


@pytest.mark.parametrize("k", range(len(MEMBERS)))
def test_a_member_writes_its_single_runs_folder(folders, k):
    _, members, singles, returned = folders
    member, single = members[k], singles[k]
    assert (member / "config.toml").read_text() == (single / "config.toml").read_text()
    # metrics.json: the same final metrics (G, EMA, snapshot ensemble, steps, counts) and
    # the same evaluations on the way.
    assert_close(final(member), final(single), 1e-9, "metrics")
    assert {k: v for k, v in returned[k].items() if k not in NOT_COMPARED} == final(member)[0]
    assert final(member)[0]["steps"] == STEPS and "ensemble" in final(member)[0]
    # checkpoints/last.pt in the single trainer's format and state: weights, Adam's state,
    # the clock, the random stream, the snapshots, the logging window.
    assert_close(checkpoint(member), checkpoint(single), 1e-9, "last.pt")
    # The same snapshots, cycle by cycle.
    names = sorted(p.name for p in (single / "snapshots").iterdir())
    assert names == sorted(p.name for p in (member / "snapshots").iterdir()) and names
    for name in names:
        load = [torch.load(d / "snapshots" / name, weights_only=True) for d in (member, single)]
        assert_close(*load, 1e-9, name)
    # TensorBoard: the same tags at the same steps, the same values.
    for tag in ("lr/G", "lr/D", "loss/D", "loss/G", "D/real", "schedule/cycle"):
        ours, theirs = read_scalars(member, tag), read_scalars(single, tag)
        assert [s for s, _ in ours] == [s for s, _ in theirs], tag
        assert np.allclose([v for _, v in ours], [v for _, v in theirs], rtol=1e-5), tag
    for tag in ("dynamics/kinetic_energy/G", "dynamics/grad_norm/D", "eval/modes", "eval/ema/kl"):
        assert [s for s, _ in read_scalars(member, tag)] == [
            s for s, _ in read_scalars(single, tag)
        ]


def test_sample_eval_and_resume_read_a_member_folder(folders, tmp_path, capsys):
    configs, members, singles, _ = folders
    member, single = members[1], singles[1]
    for which in ("--ema", "--ensemble"):
        outs = [tmp_path / f"{d.name}{which}.npy" for d in (member, single)]
        for d, out in zip((member, single), outs, strict=True):
            code, _, err = call(
                sample_main, ["--run", str(d), "--n", "50", "--out", str(out), which], capsys
            )
            assert code == 0, err
        assert np.allclose(np.load(outs[0]), np.load(outs[1]), atol=1e-6)
    code, out, err = call(eval_main, ["--run", str(member), "--all"], capsys)
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["step"] == STEPS
    assert_close(
        {w: evaluated[w] for w in ("G", "ema", "ensemble")},
        {w: final(member)[0][w] for w in ("G", "ema", "ensemble")},
        1e-9,
    )
    # gancycle-train --resume continues a member's run as it continues the single run.
    more = ["--steps", str(STEPS + 8), "--no-progress"]
    for d in (member, single):
        code, _, err = call(train_main, ["--resume", str(d), *more], capsys)
        assert code == 0, err
    assert_close(final(member), final(single), 1e-9, "resumed metrics")
    assert_close(checkpoint(member), checkpoint(single), 1e-9, "resumed last.pt")
    assert final(member)[0]["resumes"] == 1


D_LEAPS = ['lr.D.kind="triangular"', "lr.D.max=1e30", "lr.D.offset=0.0"]
"""D's learning rate leaps to 1e30 at once: in float32 its loss turns NaN within steps."""


def test_a_diverging_member_stops_or_rolls_back_alone(tmp_path, float32):
    healthy = config(["seed=1"])
    stops = config(["seed=2", *D_LEAPS, "dynamics.every=1000"])  # found by its loss
    rolls = config(["seed=4", *D_LEAPS, "on_nan=rollback", "rollback.factor=1e-33"])
    names = ("healthy", "stops", "rolls")
    configs = [healthy, stops, rolls]
    finals = train_population(configs, [tmp_path / name for name in names])
    singles = {k: train(configs[k], tmp_path / f"single_{names[k]}") for k in (1, 2)}
    # The one that stops: its folder tells what the single run's tells, its metrics are those
    # of its last checkpoint (step 0).
    assert finals[1]["diverged"] == singles[1]["diverged"]
    assert finals[1]["diverged"]["tag"] == "loss/G" and finals[1]["steps"] == 0
    assert_close(checkpoint(tmp_path / "stops"), checkpoint(tmp_path / "single_stops"), 0)
    # The one rolled back: as often as its single run, with the same lowered rates, to the end.
    assert finals[2]["rollbacks"] == singles[2]["rollbacks"] >= 1
    assert finals[2]["steps"] == STEPS and "diverged" not in finals[2]
    rolled = checkpoint(tmp_path / "rolls")
    assert rolled["lr_scale"] == checkpoint(tmp_path / "single_rolls")["lr_scale"] == 1e-33
    assert_close(rolled["G"], checkpoint(tmp_path / "single_rolls")["G"], 1e-4)
    # The healthy one went on as if beside two healthy members (a population of the same size:
    # float32 kernels of another batch size may round otherwise).
    calm = [healthy, config(["seed=2"]), config(["seed=4"])]
    train_population(calm, [tmp_path / f"calm{k}" for k in range(3)])
    assert_close(checkpoint(tmp_path / "healthy"), checkpoint(tmp_path / "calm0"), 0)
    assert finals[0]["rollbacks"] == 0 and "diverged" not in finals[0]


def test_a_population_resumes_each_member_from_its_checkpoint(tmp_path, float64):
    more = STEPS + 14
    configs = [config(MEMBERS[0]), config(MEMBERS[1]), config(["seed=7"])]
    longer = [config(MEMBERS[0], f"steps={more}"), config(MEMBERS[1], f"steps={more}"), configs[2]]
    dirs = [tmp_path / f"member{k}" for k in range(3)]
    train_population(configs, dirs)
    ended = (dirs[2] / "metrics.json").read_text(), (dirs[2] / "checkpoints" / "last.pt").stat()
    resumed = train_population(longer, dirs, resume=True)
    # Member 2 had ended at its steps: not trained again, its folder untouched.
    assert (dirs[2] / "metrics.json").read_text() == ended[0]
    assert (dirs[2] / "checkpoints" / "last.pt").stat().st_mtime_ns == ended[1].st_mtime_ns
    assert resumed[2] == json.loads(ended[0])["final"]
    # The others went on from their checkpoints as if never stopped; their histories also keep
    # the evaluation at their first end.
    straight = [tmp_path / f"straight{k}" for k in range(2)]
    train_population(longer[:2], straight)
    for k in range(2):
        assert_close(checkpoint(dirs[k])["G"], checkpoint(straight[k])["G"], 1e-12)
        ours, theirs = checkpoint(dirs[k]), checkpoint(straight[k])
        assert ours.pop("resumes") == 1 and theirs.pop("resumes") == 0
        assert [row["step"] for row in ours["history"]].count(STEPS) == 1
        ours["history"] = [row for row in ours["history"] if row["step"] != STEPS]
        assert_close(ours, theirs, 1e-12, f"member {k}")
        ours, theirs = final(dirs[k]), final(straight[k])
        assert ours[0].pop("resumes") == 1 and theirs[0].pop("resumes") == 0
        ours = ours[0], [row for row in ours[1] if row["step"] != STEPS]
        assert_close(ours, theirs, 1e-12, f"member {k} metrics")
    # A fresh population refuses folders that hold runs; one trainer per folder.
    with pytest.raises(ConfigError, match="holds a run|already"):
        train_population(configs[:1], dirs[:1])


TINY_STUDY = """
name = "tiny_population"
command = "gancycle-train --no-progress"
population = "python -m gancycle.population_cli"
config = "ring8"
seeds = 2
baseline = "calm"
higher_is_better = { kl = false }
curve = { key = "history", x = "step", y = "G.kl" }
[metrics]
kl = "final.G.kl"
modes = "final.G.modes"
[shared]
device = "cpu"
steps = 24
"eval.every" = 12
"snapshots.max" = 2
{tiny}
[arms.calm]
[arms.brisk]
"lr.G.max" = 5e-3
"reset.G" = "all"
"""


@pytest.mark.slow
def test_the_population_backend_writes_the_local_backends_run_folders(tmp_path):
    from common.study import load_study, run_study

    pairs = (item.split("=") for item in TINY_RING8 if not item.startswith("eval.every"))
    tiny = "\n".join(f'"{key}" = {value}' for key, value in pairs)
    path = tmp_path / "study.toml"
    path.write_text(TINY_STUDY.replace("{tiny}", tiny))
    study = load_study(path)
    local = run_study(study, runs_root="local", cwd=tmp_path, progress=False, workers=2)
    batched = run_study(study, backend="population", runs_root="pop", cwd=tmp_path, progress=False)
    assert not local.failed and not batched.failed and len(batched.results) == 4
    for run_l, run_p in zip(local.runs, batched.runs, strict=True):
        ours, theirs = tmp_path / run_p.dir, tmp_path / run_l.dir
        assert (ours / "config.toml").read_text() == (theirs / "config.toml").read_text()
        assert json.loads((ours / "study_run.json").read_text())["ok"]
        assert json.loads((ours / "study_run.json").read_text())["backend"] == "population"
        assert json.loads((theirs / "study_run.json").read_text())["backend"] == "local"
        # float32 (the trainers' dtype): a batched member rounds otherwise than a single run.
        assert_close(final(ours), final(theirs), 1e-4, run_p.name)
        assert_close(checkpoint(ours)["G"], checkpoint(theirs)["G"], 1e-4, run_p.name)
    summary_p, summary_l = batched.summary["configs"], local.summary["configs"]
    assert summary_p.keys() == summary_l.keys()
    assert (tmp_path / batched.folder / "results.md").is_file()
    # Resumed per run: a finished run is skipped, a cut-off one continues from its checkpoint,
    # a missing one starts afresh.
    runs = batched.runs
    cut = tmp_path / runs[1].dir
    (cut / "metrics.json").unlink()
    gone = tmp_path / runs[2].dir
    for item in gone.rglob("*"):
        if item.is_file():
            item.unlink()
    kept = (tmp_path / runs[0].dir / "metrics.json").stat().st_mtime_ns
    again = run_study(study, backend="population", runs_root="pop", cwd=tmp_path, progress=False)
    assert [run.name for run in again.todo] == [runs[1].name, runs[2].name]
    assert not again.failed
    assert (tmp_path / runs[0].dir / "metrics.json").stat().st_mtime_ns == kept
    assert json.loads((cut / "study_run.json").read_text())["resumed"] is True
    assert final(cut)[0]["resumes"] == 1 and final(gone)[0]["resumes"] == 0
    for k in (1, 2):
        local_run = tmp_path / local.runs[k].dir
        assert_close(checkpoint(tmp_path / runs[k].dir)["G"], checkpoint(local_run)["G"], 1e-4)
    # A dry run of the finished study: nothing to do, and no arm refused for its full folders.
    options = dict(backend="population", runs_root="pop", cwd=tmp_path, progress=False)
    planned = run_study(study, dry_run=True, **options)
    assert planned.todo == [] and planned.bad_arms == []


def test_a_member_cut_off_after_its_last_step_only_finishes(tmp_path):
    configs = [config(["seed=0", "steps=6"]), config(["seed=1", "steps=9"])]
    dirs = [tmp_path / "a", tmp_path / "b"]
    train_population(configs, dirs)
    (dirs[0] / "metrics.json").unlink()  # as if killed after its checkpoint at the end
    finals = train_population(configs, dirs, resume=True)
    assert finals[0]["steps"] == 6 and finals[0]["resumes"] == 1 and finals[1]["resumes"] == 0


def test_population_backend_errors_are_one_line(tmp_path):
    from common.study import StudyError, run_study
    from common.study.spec import parse_study

    raw = {
        "name": "s",
        "command": "gancycle-train",
        "config": "ring8",
        "seeds": 1,
        "metrics": ["final.G.kl"],
        "arms": {"a": {}},
    }
    study = parse_study(raw)
    with pytest.raises(StudyError, match="study s names no population program; add e.g. pop"):
        run_study(study, backend="population", cwd=tmp_path)
    study = parse_study({**raw, "population": "python -m gancycle.population_cli"})
    with pytest.raises(StudyError, match="--workers: only for --backend local, not population"):
        run_study(study, backend="population", workers=2, cwd=tmp_path)
    with pytest.raises(StudyError, match="--population-size: only for --backend population"):
        run_study(study, population_size=4, cwd=tmp_path)
    with pytest.raises(StudyError, match="--population-size 0: must be >= 1"):
        run_study(study, backend="population", population_size=0, cwd=tmp_path)


def test_runs_are_packed_by_what_a_population_shares(float64):
    from gancycle.population_runs import pack_populations
    from gancycle.settings import check_config

    configs = [
        check_config(config(sets))
        for sets in (
            ["seed=0"],
            ["seed=1", "data.batch=16"],
            ["seed=2", "lr.G.max=1e-2"],
            ["seed=3", "data.name=digits", "model.arch=dcgan"],
            ["seed=4"],
            ["seed=5", "thermostat.D=0.1", "optim.name=sgd"],
        )
    ]
    assert pack_populations(configs, 64) == ([[0, 2, 4], [1], [3]], [5])
    assert pack_populations(configs, 2) == ([[0, 2], [4], [1], [3]], [5])


def test_member_folders_hold_their_resolved_phase_offsets(float64, tmp_path):
    """With ``population.offsets = "even"`` member k's folder says what it ran (its schedules
    shifted by k/N, offsets "none"), and a cut-off member resumed beside fresh ones keeps its
    shift rather than taking another."""
    sets = ["population.offsets=even", "steps=12", "eval.every=0"]
    dirs = [tmp_path / f"m{k}" for k in range(3)]
    train_population([config(["seed=0"], *sets)] * 2, dirs[:2])
    for k in range(2):
        saved = SCHEMA.load(str(dirs[k] / "config.toml"))
        assert saved["population"]["offsets"] == "none"
        assert saved["lr"]["G"].get("offset", 0.0) == pytest.approx(k / 2)
    longer = [config(["seed=0"], *sets, "steps=16")] * 3
    saved = [SCHEMA.load(str(d / "config.toml")) for d in dirs[:2]]
    again = [{**saved[0], "steps": 16}, {**saved[1], "steps": 16}, longer[2]]
    train_population(again, dirs, resume=[True, True, False])
    offsets = [SCHEMA.load(str(d / "config.toml"))["lr"]["G"].get("offset", 0.0) for d in dirs]
    assert offsets == pytest.approx([0.0, 0.5, 2 / 3])


def test_a_dry_run_checks_population_arms_with_the_population_program(tmp_path):
    """Averaging arms are refused by ``gancycle-train --check`` (a single run cannot average)
    but are what ``--backend population`` trains: its dry run asks the population program."""
    from common.study import run_study
    from common.study.spec import parse_study

    shared = dict(
        tomllib.loads(
            "\n".join(f'"{k}" = {v}' for k, v in map(str.split, TINY_RING8, "=" * len(TINY_RING8)))
        ).items()
    )
    raw = {
        "name": "avg",
        "command": "gancycle-train",
        "population": "python -m gancycle.population_cli",
        "config": "ring8",
        "seeds": 2,
        "metrics": ["final.G.kl"],
        "shared": shared,
        "arms": {
            "even": {"population.average_every": 4, "population.offsets": "even"},
            "bad": {
                "population.average_every": 4,
                "population.offsets": "even",
                "lr.G.kind": "constant",
            },
        },
    }
    study = parse_study(raw)
    local = run_study(study, dry_run=True, cwd=tmp_path, progress=False)
    assert len(local.bad_arms) == 2 and "population.average_every" in local.bad_arms[0]
    batched = run_study(study, backend="population", dry_run=True, cwd=tmp_path, progress=False)
    assert len(batched.bad_arms) == 1
    assert "bad" in batched.bad_arms[0] and "offset" in batched.bad_arms[0]
    assert not list(tmp_path.rglob("metrics.json"))  # nothing trained


def test_members_that_average_pack_by_family_and_are_never_split(float64):
    from gancycle.population_runs import pack_populations
    from gancycle.settings import check_config

    averaging = [
        check_config(config([f"seed={k}", "population.average_every=4"])) for k in range(4)
    ]
    families = ["arm_a", "arm_b", "arm_a", "arm_b"]
    assert pack_populations(averaging, 64, families) == ([[0, 2], [1, 3]], [])
    with pytest.raises(ConfigError, match="--population-size 1: .* cannot be split, and arm_a"):
        pack_populations(averaging, 1, families)


def test_the_population_program_refuses_negative_threads(tmp_path, capsys):
    from conftest import assert_one_line_error

    from gancycle.population_cli import main

    plan = tmp_path / "plan.json"
    plan.write_text('{"runs": []}')
    code, _, err = call(main, ["--plan", str(plan), "--threads", "-1"], capsys)
    assert_one_line_error(code, err, "--threads -1: must be >= 0")
