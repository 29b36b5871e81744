"""Nothing read from an rlcycle run folder executes code.

A crafted SB3 zip (its ``data`` section unpickles a payload) placed wherever a zip could be read
from, and a checkpoint that names a zip outside its run folder: evaluating the run (alone and
with its snapshot ensemble) and resuming it must not run the payload.
"""

import base64
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error

from rlcycle.cli import eval_main, train_main

FAST = ["--device", "cpu", "--no-progress", "--set", "eval.episodes=1", "--set", "lr.period=128"]


class Payload:
    """Unpickling it writes ``flag``: what a malicious zip would do."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self):
        return exec, (f"open({str(self.flag)!r}, 'w').write('pwned')",)


def crafted_zip(genuine: Path, target: Path, flag: Path) -> None:
    """A copy of the SB3 zip ``genuine`` at ``target`` whose data section runs ``Payload``."""
    with zipfile.ZipFile(genuine) as source:
        entries = {name: source.read(name) for name in source.namelist()}
    data = json.loads(entries["data"])
    serialized = base64.b64encode(pickle.dumps(Payload(flag))).decode()
    data["policy_class"] = {":type:": "<class 'abc.ABCMeta'>", ":serialized:": serialized}
    entries["data"] = json.dumps(data).encode()
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as out:
        for name, content in entries.items():
            out.writestr(name, content)


def run_main(main, argv) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code


@pytest.fixture
def booby_trapped_run(tmp_path):
    """A finished 256-step run whose every zip, and a zip outside it, runs the payload."""
    run = tmp_path / "run"
    assert run_main(train_main, ["--out", str(run), "--steps", "256", *FAST]) == 0
    written = [*(run / "checkpoints").iterdir(), *(run / "snapshots").iterdir()]
    genuine = tmp_path / "genuine.zip"
    genuine.write_bytes((run / "model.zip").read_bytes())
    flag = tmp_path / "pwned"
    for target in (run / "model.zip", run / "checkpoints" / "model_256.zip"):
        crafted_zip(genuine, target, flag)
    crafted_zip(genuine, tmp_path / "outside" / "model_256.zip", flag)
    assert not flag.exists()
    return run, flag, written


def test_the_trap_is_real(booby_trapped_run):
    """SB3's own load of the crafted zip runs the payload: what rlcycle must never do."""
    from stable_baselines3 import PPO

    run, flag, _ = booby_trapped_run
    try:
        PPO.load(run / "model.zip", device="cpu")
    except Exception:
        pass  # the payload's return value is no policy class; it has run by then
    assert flag.exists()


@pytest.mark.parametrize("ensemble", [False, True], ids=["final", "ensemble"])
def test_evaluating_a_run_loads_no_pickle(booby_trapped_run, ensemble):
    run, flag, _ = booby_trapped_run
    argv = ["--run", str(run), "--episodes", "1", *(["--ensemble"] if ensemble else [])]
    assert run_main(eval_main, argv) == 0
    assert not flag.exists()


def test_resuming_a_run_loads_no_pickle(booby_trapped_run):
    run, flag, _ = booby_trapped_run
    assert run_main(train_main, ["--resume", str(run), "--steps", "512", *FAST]) == 0
    assert not flag.exists()
    assert json.loads((run / "metrics.json").read_text())["final"]["steps"] == 512


def test_a_checkpoint_naming_a_file_outside_its_folder_reads_nothing_there(booby_trapped_run):
    run, flag, _ = booby_trapped_run
    last = run / "checkpoints" / "last.pt"
    checkpoint = torch.load(last, weights_only=True)
    outside = "../../outside/model_256.zip"
    checkpoint["files"] = {"model": outside, "replay": outside}
    torch.save(checkpoint, last)
    assert run_main(eval_main, ["--run", str(run), "--episodes", "1"]) == 0
    assert run_main(train_main, ["--resume", str(run), "--steps", "512", *FAST]) == 0
    assert not flag.exists()


def test_checkpoints_and_snapshots_are_weights_only_files(booby_trapped_run):
    """Everything training reads back is a ``.pt`` that ``torch.load(weights_only=True)`` reads."""
    _, _, read_back = booby_trapped_run
    assert read_back and all(path.suffix == ".pt" for path in read_back), read_back
    for path in read_back:
        torch.load(path, weights_only=True)


def test_a_checkpoint_of_the_old_zip_layout_is_refused_in_one_line(booby_trapped_run, capsys):
    """Earlier versions' last.pt named a model zip: such a run is refused, its zip not read."""
    run, flag, _ = booby_trapped_run
    last = run / "checkpoints" / "last.pt"
    torch.save({"step": 256, "files": {"model": "model_256.zip"}}, last)
    for main, argv in (
        (eval_main, ["--run", str(run)]),
        (train_main, ["--resume", str(run), "--steps", "512", *FAST]),
    ):
        assert run_main(main, argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{last}: not an rlcycle checkpoint" in err, err
    assert not flag.exists()


@pytest.mark.parametrize("damage", ["truncated", "payload"])
def test_a_damaged_snapshot_is_one_line_and_runs_nothing(booby_trapped_run, damage, capsys):
    """A snapshot cut short, or one holding a pickled object: evaluating the ensemble and
    resuming (which reads the snapshots kept) refuse it in one line naming the file."""
    run, flag, _ = booby_trapped_run
    snapshot = run / "snapshots" / "cycle_0.pt"
    (run / "snapshots" / "cycle_x.pt").write_bytes(b"a stray file, not a snapshot: ignored")
    later = run / "snapshots" / "cycle_2.pt"  # taken after the last checkpoint (a killed run's)
    later.write_bytes((run / "snapshots" / "cycle_1.pt").read_bytes())
    if damage == "truncated":
        data = snapshot.read_bytes()
        snapshot.write_bytes(data[: len(data) // 2])
    else:
        torch.save({"policy": Payload(flag)}, snapshot)
    before = {p.name: p.read_bytes() for p in [*(run / "snapshots").iterdir(), run / "config.toml"]}
    capsys.readouterr()
    for main, argv in (
        (eval_main, ["--run", str(run), "--episodes", "1", "--ensemble"]),
        (train_main, ["--resume", str(run), "--steps", "512", *FAST]),
    ):
        code = run_main(main, argv)
        assert_one_line_error(code, capsys.readouterr().err, str(snapshot), "damaged")
    assert not flag.exists()
    # The refused resume lost nothing: no later snapshot removed, config.toml not rewritten.
    after = {p.name: p.read_bytes() for p in [*(run / "snapshots").iterdir(), run / "config.toml"]}
    assert after == before


@pytest.mark.parametrize(
    "entry, value",
    [("history", 5), ("callbacks", {}), ("rng", {}), ("logger", 3), ("envs", "x")],
)
def test_a_checkpoint_whose_entries_do_not_fit_is_one_line(booby_trapped_run, entry, value, capsys):
    """A last.pt that loads but whose states do not fit the run (as a GAN checkpoint's do):
    one line naming it, and the refused resume rewrites nothing."""
    run, _, _ = booby_trapped_run
    last = run / "checkpoints" / "last.pt"
    checkpoint = torch.load(last, weights_only=True)
    torch.save({**checkpoint, entry: value}, last)
    config = (run / "config.toml").read_bytes()
    capsys.readouterr()
    code = run_main(train_main, ["--resume", str(run), "--steps", "512", *FAST])
    assert_one_line_error(code, capsys.readouterr().err, str(last), "does not fit")
    assert (run / "config.toml").read_bytes() == config


def refused_by_eval_and_resume(run: Path, capsys, *needles: str) -> None:
    """``rlcycle-eval`` and ``rlcycle-train --resume`` each refuse ``run`` in one line holding
    ``needles``, and its files are as they were."""
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    for main, argv in (
        (eval_main, ["--run", str(run), "--episodes", "1"]),
        (train_main, ["--resume", str(run), "--steps", "512", *FAST]),
    ):
        assert_one_line_error(run_main(main, argv), capsys.readouterr().err, *needles)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("step", [-256, 2.5, True, "256"])
def test_a_checkpoint_whose_step_is_not_a_count_is_one_line(booby_trapped_run, step, capsys):
    run, _, _ = booby_trapped_run
    last = run / "checkpoints" / "last.pt"
    torch.save({**torch.load(last, weights_only=True), "step": step}, last)
    refused_by_eval_and_resume(run, capsys, str(last), f"step = {step!r}")


def test_a_run_whose_config_names_another_algorithm_is_one_line(booby_trapped_run, capsys):
    run, _, _ = booby_trapped_run
    config = run / "config.toml"
    config.write_text(config.read_text().replace('algo = "ppo"', 'algo = "dqn"'))
    capsys.readouterr()
    for main, argv in (
        (eval_main, ["--run", str(run), "--episodes", "1"]),
        (eval_main, ["--run", str(run), "--episodes", "1", "--ensemble"]),
        (train_main, ["--resume", str(run), "--steps", "512", *FAST]),
    ):
        code = run_main(main, argv)
        assert_one_line_error(code, capsys.readouterr().err, "does not fit", "config.toml")


@pytest.mark.parametrize("left", ["", 'algo = "ppo"\n'], ids=["emptied", "cut_short"])
def test_a_run_config_without_its_steps_and_seed_is_refused_not_filled_in(
    booby_trapped_run, left, capsys
):
    """Every version wrote a run's whole config; one without `steps` and `seed` was emptied or
    cut short, and filling in today's defaults would train and evaluate another run."""
    run, _, _ = booby_trapped_run
    (run / "config.toml").write_text(left)
    refused_by_eval_and_resume(run, capsys, str(run / "config.toml"), "steps")
