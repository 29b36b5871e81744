"""Runs you can trust: divergence of any kind stops cleanly, damaged input is one line, a
resumed or rolled-back run reads as one curve, one trainer per folder, quiet logs, and a demo
that prints the same numbers for its seed every time."""

import contextlib
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_RING8, assert_one_line_error
from conftest import assert_one_line_error as one_line_error
from conftest import run_main as call
from conftest import set_args as sets
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.config import save_config
from gancycle.cli import eval_main, sample_main, train_main
from gancycle.settings import SCHEMA
from gancycle.trainer import Divergence, GanTrainer, train

ROOT = Path(__file__).resolve().parents[1]

TINY = ["device=cpu", *TINY_RING8]
# Both peaks at 1e3 with ring8's own 128-unit nets (the issue's case): the losses stay finite
# (about 1e33) while the gradient norms overflow to inf within a few steps.
BLOW_UP = ["lr.G.max=1e3", "lr.D.max=1e3", "model.hidden=128", "model.layers=3"]


def tiny_config(*sets: str) -> dict:
    return SCHEMA.load("ring8", [*TINY, *sets])


TRAIN = [sys.executable, "-c", "from gancycle.cli import train_main; train_main()"]
"""``gancycle-train`` in a process of its own."""


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def scalar_steps(run_dir: Path, tag: str) -> list[int]:
    """Every step of ``tag`` as TensorBoard reads the folder (purges applied), in file order."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def next_second() -> None:
    """Event files sort by their creation second first: start the next one a second later."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


# -- 1. divergence: losses, gradient norms and parameters -------------------------------------


def test_infinite_gradient_norms_stop_the_run_with_exit_1(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--out", str(run), "--steps", "40", "--no-progress"]
    code, out, err = call(train_main, [*args, *sets(*TINY, *BLOW_UP, "log.every=5")], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    # Every loss is finite (about 1e33): only the gradient norms tell.
    assert re.fullmatch(
        r"stopped: dynamics/grad_norm/[GD] = inf at step \d \(see --on-nan\)", lines[0]
    )
    diverged = json.loads((run / "metrics.json").read_text())["final"]["diverged"]
    assert diverged["tag"] == f"dynamics/grad_norm/{diverged['net']}"
    assert diverged["value"] == "inf"
    assert f"diverged at step {diverged['step']}" in out


def test_after_a_stop_metrics_json_last_pt_and_eval_describe_one_state(tmp_path, capsys):
    run = tmp_path / "run"
    config = tiny_config(*BLOW_UP, "steps=40", "checkpoint.every=1", "log.every=1")
    final = train(config, run, progress=False)
    saved = torch.load(run / "checkpoints/last.pt", weights_only=True)
    # last.pt: the state before the update of the step that diverged (its step count)
    assert 0 < final["diverged"]["step"] == saved["step"] == final["steps"]
    assert final["diverged"]["tag"].startswith("dynamics/grad_norm/")
    assert json.loads((run / "metrics.json").read_text())["final"] == json.loads(json.dumps(final))
    code, out, _ = call(eval_main, ["--run", str(run)], capsys)
    assert code == 0
    recomputed = json.loads(out)
    assert recomputed["step"] == saved["step"]
    assert recomputed["G"] == final["G"]  # bitwise: the same weights
    # The events still show the blow-up that stopped the run.
    assert final["diverged"]["step"] in scalar_steps(run, "loss/D")


def test_non_finite_parameters_are_a_divergence(tmp_path):
    trainer = GanTrainer(tiny_config(), tmp_path)
    trainer.check_finite(0)  # a fresh net is finite
    with torch.no_grad():
        trainer.D.net[0].bias[3] = float("nan")
    with pytest.raises(Divergence) as caught:
        trainer.check_finite(7)
    assert (caught.value.step, caught.value.tag) == (7, "parameters/D")


def test_a_checkpoint_never_holds_a_non_finite_weight(tmp_path):
    # Dynamics unmeasured after step 0 and no log: only the check before a checkpoint sees
    # the weight that step 7's update sends to inf (its loss was computed before the update).
    config = tiny_config("steps=30", "dynamics.every=1000", "log.every=1000", "checkpoint.every=4")
    trainer = GanTrainer(config, tmp_path)

    def overflow(optimizer, args, kwargs):
        if trainer.step == 7:
            trainer.G.net[-1].bias.data[0] = float("inf")

    trainer.opts["G"].register_step_post_hook(overflow)
    final = trainer.train(progress=False)
    assert final["diverged"] == {"step": 7, "net": "G", "tag": "parameters/G", "value": "inf"}
    saved = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert saved["step"] == 4 == final["steps"]
    assert all(t.isfinite().all() for net in ("G", "D", "ema") for t in saved[net].values())


# -- 2. damaged input: one line, exit 2 --------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (25 steps, snapshots at cycle ends)."""
    run = tmp_path_factory.mktemp("trust") / "run"
    train(tiny_config("steps=25", "log.every=5"), run, progress=False)
    return run


def damaged_copy(finished: Path, where: Path, how: str) -> Path:
    run = where / f"damaged_{how}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text((finished / "config.toml").read_text())
    data = (finished / "checkpoints/last.pt").read_bytes()
    damaged = data[: len(data) // 2] if how == "truncated" else os.urandom(4096)
    (run / "checkpoints/last.pt").write_bytes(damaged)
    return run


@pytest.mark.parametrize("how", ["truncated", "garbage"])
@pytest.mark.parametrize("command", ["resume", "sample", "eval"])
def test_a_damaged_checkpoint_is_one_line_and_exit_2(finished, tmp_path, capsys, how, command):
    run = damaged_copy(finished, tmp_path, how)
    main, argv = {
        "resume": (train_main, ["--resume", str(run), "--no-progress"]),
        "sample": (sample_main, ["--run", str(run), "--out", str(tmp_path / "s.npy")]),
        "eval": (eval_main, ["--run", str(run)]),
    }[command]
    code, _, err = call(main, argv, capsys)
    line = one_line_error(code, err, str(run / "checkpoints" / "last.pt"))
    assert "weights_only=False" not in line  # torch's advice is wrong for a damaged file
    assert not (tmp_path / "s.npy").exists()


def test_a_checkpoint_of_another_shape_is_one_line_and_exit_2(finished, tmp_path, capsys):
    run = tmp_path / "other"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints/last.pt").write_bytes((finished / "checkpoints/last.pt").read_bytes())
    save_config(tiny_config("steps=25", "model.hidden=32"), run / "config.toml")
    code, _, err = call(eval_main, ["--run", str(run)], capsys)
    one_line_error(code, err, "last.pt", "config.toml")


@pytest.mark.parametrize("step", [-5, 2.5, "25", None])
@pytest.mark.parametrize("command", ["resume", "sample", "eval"])
def test_a_checkpoint_whose_step_is_not_a_count_is_one_line(
    finished, tmp_path, capsys, step, command
):
    run = tmp_path / "odd"
    shutil.copytree(finished, run)
    state = torch.load(run / "checkpoints/last.pt", weights_only=True)
    state["step"] = step
    torch.save(state, run / "checkpoints/last.pt")
    main, argv = {
        "resume": (train_main, ["--resume", str(run), "--steps", "40", "--no-progress"]),
        "sample": (sample_main, ["--run", str(run), "--out", str(tmp_path / "s.npy")]),
        "eval": (eval_main, ["--run", str(run)]),
    }[command]
    before = (run / "metrics.json").read_text()
    code, _, err = call(main, argv, capsys)
    one_line_error(code, err, str(run / "checkpoints" / "last.pt"), f"step = {step!r}")
    assert not (tmp_path / "s.npy").exists()
    assert (run / "metrics.json").read_text() == before


def test_sample_refuses_a_missing_parent_folder_and_creates_none(finished, tmp_path, capsys):
    out = tmp_path / "nonexistent_dir" / "x.npy"
    code, _, err = call(sample_main, ["--run", str(finished), "--out", str(out)], capsys)
    one_line_error(code, err, "--out", str(out.parent))
    assert not out.parent.exists()


def test_eval_and_sample_on_an_rlcycle_run_say_so(tmp_path, capsys):
    run = tmp_path / "rl"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text((ROOT / "rlcycle/configs/cartpole.toml").read_text())
    torch.save({"step": 0}, run / "checkpoints/last.pt")
    code, _, err = call(eval_main, ["--run", str(run)], capsys)
    one_line_error(code, err, str(run), "rlcycle", "rlcycle-eval")
    npy = str(tmp_path / "x.npy")
    code, _, err = call(sample_main, ["--run", str(run), "--out", npy], capsys)
    one_line_error(code, err, str(run), "rlcycle")


def test_out_naming_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    code, _, err = call(train_main, ["--out", str(path), *sets(*TINY)], capsys)
    one_line_error(code, err, str(path))
    assert path.read_text() == "mine\n"


def test_a_second_trainer_on_a_held_folder_exits_2_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    train(tiny_config("steps=5"), run, progress=False)
    command = [*TRAIN, "--resume", str(run), "--steps", "100000", "--no-progress"]
    first = subprocess.Popen(command, env=cli_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (run / ".lock").is_file() or str(first.pid) not in (run / ".lock").read_text():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first trainer never took the lock"
            time.sleep(0.05)
        second = subprocess.run(command, env=cli_env(), capture_output=True, text=True)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    line = one_line_error(second.returncode, second.stderr, str(run), f"pid {first.pid}")
    assert "in use" in line


# -- 3. one curve after a resume or a rollback; temp files; resumes counted -------------------


def test_a_resumed_run_reads_as_one_curve(tmp_path, capsys):
    run = tmp_path / "run"
    config = tiny_config("steps=30", "log.every=1", "checkpoint.every=10")
    trainer = GanTrainer(config, run)
    save_config(config, run / "config.toml")
    trainer.save_checkpoint()
    assert trainer.advance(25) is None  # stopped at 25, with logs past the last checkpoint
    trainer.writer.close()
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["step"] < 24
    next_second()
    code, _, _ = call(train_main, ["--resume", str(run), "--no-progress"], capsys)
    assert code == 0
    for tag in ("loss/D", "lr/G", "dynamics/grad_norm/G"):
        assert scalar_steps(run, tag) == list(range(30)), tag
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert final["resumes"] == 1 and final["steps"] == 30


def test_resumes_are_counted(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--out", str(run), "--steps", "5", "--no-progress", *sets(*TINY)]
    assert call(train_main, args, capsys)[0] == 0
    assert json.loads((run / "metrics.json").read_text())["final"]["resumes"] == 0
    for steps, resumes in (("8", 1), ("12", 2)):
        argv = ["--resume", str(run), "--steps", steps, "--no-progress"]
        assert call(train_main, argv, capsys)[0] == 0
        final = json.loads((run / "metrics.json").read_text())["final"]
        assert (final["resumes"], final["steps"]) == (resumes, int(steps))


def test_resuming_a_finished_run_without_more_steps_is_refused_and_changes_nothing(
    tmp_path, capsys
):
    """As rlcycle does: a resume that would train nothing (or to fewer steps than the run has)
    says to raise --steps; before, it rewrote metrics.json (steps_per_s 0, one more resume)."""
    run = tmp_path / "run"
    args = ["--out", str(run), "--steps", "8", "--no-progress", *sets(*TINY)]
    assert call(train_main, args, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for more in ([], ["--steps", "8"], ["--steps", "5"]):
        code, _, err = call(train_main, ["--resume", str(run), "--no-progress", *more], capsys)
        one_line_error(code, err, "the run already has 8 steps", "raise --steps")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_run_extended_by_resume_keeps_each_earlier_end_in_its_history(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--out", str(run), "--steps", "5", "--no-progress", *sets(*TINY)]
    assert call(train_main, args, capsys)[0] == 0
    for steps in ("8", "12"):
        argv = ["--resume", str(run), "--steps", steps, "--no-progress"]
        assert call(train_main, argv, capsys)[0] == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert [row["step"] for row in metrics["history"]] == [5, 8, 12]
    assert metrics["history"][-1]["G"] == metrics["final"]["G"]


# D's rate leaps from 1e-4 at step 0 to 2e29 at step 1: step 1 diverges, after step 0 was logged
# past the only checkpoint (step 0).
D_LEAPS = ['lr.D.kind="triangular"', "lr.D.max=1e30", "lr.D.min=1e-4", "lr.D.period=10"]


def test_a_rollback_reads_as_one_curve(tmp_path):
    # In its own process: event files of one second sort by a per-process counter.
    run = tmp_path / "run"
    argv = ["--out", str(run), "--steps", "12", "--no-progress"]
    argv += sets(*TINY, *D_LEAPS, "log.every=1", "on_nan=rollback", "rollback.factor=1e-33")
    done = subprocess.run([*TRAIN, *argv], env=cli_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "rolled back to step 0" in done.stderr
    for tag in ("loss/D", "lr/D", "dynamics/grad_norm/D"):
        assert scalar_steps(run, tag) == list(range(12)), tag
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    lr_D = {e.step: e.value for e in events.Scalars("lr/D")}
    assert lr_D[1] == pytest.approx(2e29 * 1e-33, rel=1e-3)  # the rerun, at the scaled rates


def test_resume_leaves_no_temp_files_of_an_interrupted_checkpoint_write(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--out", str(run), "--steps", "5", "--no-progress", *sets(*TINY)]
    assert call(train_main, args, capsys)[0] == 0
    # What a SIGKILL inside atomic_write leaves: mkstemp's temp files beside their targets.
    left = [run / "checkpoints" / ".last.pt.k1ll3d00", run / "snapshots" / ".cycle_0.pt.abcd1234"]
    for path in left:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a checkpoint")
    argv = ["--resume", str(run), "--steps", "8", "--no-progress"]
    assert call(train_main, argv, capsys)[0] == 0
    assert not [p for p in run.rglob(".*") if p.name != ".lock"]


# -- 4. the progress bar: none in a log file, as configured on a terminal ----------------------


def _train_with_stderr(run: Path, stderr, *extra: str) -> int:
    argv = ["--out", str(run), "--steps", "60", *sets(*TINY, "log.every=5", *extra)]
    return subprocess.run(
        [*TRAIN, *argv],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    ).returncode


def test_no_progress_bar_in_a_log_file(tmp_path):
    log = tmp_path / "train.log"
    with log.open("wb") as stderr:
        assert _train_with_stderr(tmp_path / "run", stderr) == 0
    assert b"\r" not in log.read_bytes()


def _terminal_output(run: Path, *extra: str) -> bytes:
    """What ``gancycle-train`` writes to stderr when stderr is a (pseudo-)terminal."""
    leader, follower = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # read as it comes: a full terminal buffer would block the trainer
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer's end is closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    argv = ["--out", str(run), "--steps", "60", *sets(*TINY, "log.every=5", *extra)]
    try:
        with open(follower, "w", closefd=False) as tty, contextlib.redirect_stderr(tty):
            with pytest.raises(SystemExit) as done:
                train_main(argv)
    finally:
        os.close(follower)
        reader.join(timeout=10)
        os.close(leader)
    assert done.value.code == 0
    return b"".join(chunks)


def test_progress_bar_on_a_terminal_unless_the_config_says_no(tmp_path):
    assert b"\r" in _terminal_output(tmp_path / "bar")
    assert b"\r" not in _terminal_output(tmp_path / "quiet", "progress=false")


def test_a_garbage_checkpoint_is_one_line_on_a_real_stderr(finished, tmp_path):
    run = damaged_copy(finished, tmp_path, "garbage")
    code = "from gancycle.cli import eval_main; eval_main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "--run", str(run)],
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    one_line_error(done.returncode, done.stderr, str(run / "checkpoints" / "last.pt"))


# -- 5. the demo: the same numbers for its seed, process after process -------------------------

DEMO = """
import json, sys
from pathlib import Path
from gancycle.demo import run_demo

metrics = run_demo(Path(sys.argv[1]), progress=False, steps=150)
Path(sys.argv[2]).write_text(json.dumps(metrics))
"""


def test_the_demo_is_bitwise_the_same_in_separate_processes(tmp_path):
    # Two processes at once, each in its own folder, with other hash seeds and thread settings.
    runs = []
    for k, extra in enumerate(
        ({"PYTHONHASHSEED": "1"}, {"PYTHONHASHSEED": "2", "OMP_NUM_THREADS": "2"})
    ):
        folder = tmp_path / f"p{k}"
        folder.mkdir()
        process = subprocess.Popen(
            [sys.executable, "-c", DEMO, str(folder / "runs"), str(folder / "metrics.json")],
            cwd=folder,
            env={**cli_env(), **extra},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        runs.append((folder, process))
    results = []
    for folder, process in runs:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert "ring8 after 150 steps" in out and "modes" in out
        metrics = json.loads((folder / "metrics.json").read_text())
        (checkpoint,) = folder.glob("runs/ring8/*/checkpoints/last.pt")
        weights = torch.load(checkpoint, weights_only=True)
        results.append((metrics, weights))
    (a, weights_a), (b, weights_b) = results
    for key in ("wall_s", "steps_per_s"):
        a.pop(key), b.pop(key)
    assert a == b and {"G", "ema"} <= set(a)  # floats compared exactly
    for net in ("G", "D", "ema"):
        for name, tensor in weights_a[net].items():
            assert torch.equal(tensor, weights_b[net][name]), (net, name)


def test_the_demos_schedule_part_runs_on_its_example(tmp_path, capsys):
    # make demo starts here: the example's D follows G, which needs the table built as one.
    from common.demo import schedule_demo
    from common.tb import read_scalars

    run = schedule_demo(ROOT / "scripts/examples/anti_phase.toml", tmp_path, steps=400)
    lr_G = dict(read_scalars(run, "lr/G"))
    lr_D = dict(read_scalars(run, "lr/D"))
    # D mirrors G: max + min - lr_G, wherever G is
    for step in (0, 100, 250, 390):
        assert lr_D[step] == pytest.approx(3e-4 + 1e-5 - lr_G[step], rel=1e-5), step
    assert (run / "schedules.png").is_file() and (run / "double_well.png").is_file()


def test_resuming_an_rlcycle_run_names_it(tmp_path, capsys):
    from rlcycle.settings import SCHEMA as RL_SCHEMA

    run = tmp_path / "rl_run"
    save_config(RL_SCHEMA.defaults(), run / "config.toml")  # what rlcycle-train writes first
    code, _, err = call(train_main, ["--resume", str(run)], capsys)
    assert_one_line_error(code, err, f"--resume {run}", "an rlcycle run", "rlcycle-train --resume")
