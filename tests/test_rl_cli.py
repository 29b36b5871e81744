"""rlcycle-train / rlcycle-eval: every bad input is one line naming it, exit code 2."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_main

from rlcycle.cli import eval_main, train_main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--device", "cpu", "--no-progress", "--set", "eval.episodes=1"]


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished CartPole run (256 env steps), no snapshots."""
    run = tmp_path_factory.mktemp("cli") / "run"
    no_snapshots = ["--set", "snapshots.max=0"]
    with pytest.raises(SystemExit) as exit_:
        train_main(["--out", str(run), "--steps", "256", *FAST, *no_snapshots])
    assert exit_.value.code == 0
    return run


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--config", "nosuch"], ["--config 'nosuch'", "cartpole, lunarlander, pendulum"]),
        (["--set", "nosuch=1"], ["--set nosuch", "unknown key", "allowed here"]),
        (["--set", "steps=many"], ["steps = 'many'", "an integer"]),
        (["--steps", "0"], ["steps = 0", "> 0"]),
        (["--set", "env.id=CartPole-v1"], ["env.id = 'CartPole-v1'", "rlcycle/CartPole-v1"]),
        (["--config", "pendulum", "--algo", "dqn"], ["algo = 'dqn'", "discrete", "Pendulum"]),
        (["--algo", "sac"], ["algo = 'sac'", "continuous"]),
        (["--algo", "td3"], ["--algo", "invalid choice: 'td3'"]),
        (["--vec", "threads"], ["--vec", "invalid choice"]),
        (["--n-envs", "0"], ["n_envs = 0", ">= 1"]),
        (["--set", "curriculum.value=1.5"], ["curriculum.value = 1.5", "[0, 1]"]),
        (["--set", "curriculum.hi=-0.5"], ["curriculum.hi = -0.5", "[0, 1]"]),
        (["--set", "curriculum.mode=sideways"], ["curriculum.mode = 'sideways'", "anti | in"]),
        (["--set", "eval.difficulties=[0.0, 2.0]"], ["eval.difficulties[1] = 2.0", "[0, 1]"]),
        (["--set", "lr.kind=zigzag"], ["lr.kind = 'zigzag'", "cosine_restarts"]),
        (["--set", "lr.periode=5"], ["lr.periode", "unknown key"]),
        (["--set", "vec=threads"], ["vec = 'threads'", "dummy | subproc"]),
        (["--set", "probe.every=1", "--algo", "dqn"], ["probe.every = 1", "on-policy"]),
        (
            ["--config", "pendulum", "--set", "couplings.ent_coef.enabled=true"],
            ["couplings.ent_coef", "'sac' has no ent_coef"],
        ),
        (["--set", "ppo.n_stepz=3"], ["ppo.n_stepz"]),
        (
            ["--algo", "a2c", "--set", "reset.policy=momentum"],
            ["reset.policy = 'momentum'", "RMSprop", "a2c.use_rms_prop = false"],
        ),
        (["--set", "reset.policy=sometimes"], ["reset.policy = 'sometimes'", "none | momentum"]),
        (["--set", "snapshots.max=-1"], ["snapshots.max = -1", ">= 0"]),
        (["--set", "log.every=0"], ["log.every = 0", ">= 1"]),
        (["--resume", "."], ["--resume .", "no config.toml"]),
    ],
)
def test_train_errors_are_one_line_naming_the_key(argv, needles, capsys, tmp_path):
    code, _, err = run_main(train_main, ["--out", str(tmp_path / "run"), *argv], capsys)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "run").exists()  # nothing written for a bad config


@pytest.mark.parametrize(
    "table, needles",
    [
        ("[ppo]\nlearning_rate = 1e-3\n", ["ppo.learning_rate", "[lr] schedule"]),
        ("[ppo]\nclip = 0.1\n", ["ppo.clip", "not a PPO argument", "clip_range"]),
        ("[envs]\nid = 'x'\n", ["envs: unknown key"]),
        ("[eval\n", ["not valid TOML"]),
        ("log_every = 5\n", ["log_every", "log.every"]),
        ("checkpoint_every = 5\n", ["checkpoint_every", "checkpoint.every"]),
        ("progress_bar = false\n", ["progress_bar", "progress"]),
        ("[restart]\nmax_snapshots = 3\n", ["restart.max_snapshots", "snapshots.max"]),
        ("[restart]\nsnapshots = false\n", ["restart.snapshots", "snapshots.max", "0 = none"]),
        ("[restart]\nreset_optimizer = true\n", ["restart.reset_optimizer", "reset.policy"]),
        ("[restart]\nreset_keys = ['exp_avg']\n", ["restart.reset_keys", "reset.policy"]),
    ],
)
def test_bad_config_files_name_the_key(table, needles, capsys, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(table)
    code, _, err = run_main(train_main, ["--config", str(path), "--no-progress"], capsys)
    assert_one_line_error(code, err, *needles)


def test_a_run_folder_is_never_overwritten_and_a_finished_run_needs_more_steps(
    finished_run, capsys
):
    code, _, err = run_main(train_main, ["--out", str(finished_run), *FAST], capsys)
    assert_one_line_error(code, err, f"--out {finished_run}", "--resume")
    code, _, err = run_main(train_main, ["--resume", str(finished_run), *FAST], capsys)
    assert_one_line_error(code, err, "steps = 256", "already has 256 steps")
    code, _, err = run_main(
        train_main, ["--resume", str(finished_run), "--algo", "a2c", *FAST], capsys
    )
    assert_one_line_error(code, err, "--algo a2c", "keeps its algo")


def test_a_run_killed_during_its_final_evaluation_resumes_to_the_same_metrics(tmp_path):
    run = tmp_path / "run"
    argv = ["--steps", "256", *FAST, "--set", "snapshots.max=0"]
    with pytest.raises(SystemExit) as exit_:
        train_main(["--out", str(run), *argv])
    assert exit_.value.code == 0
    first = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()  # its last checkpoint is at the final step
    with pytest.raises(SystemExit) as exit_:
        train_main(["--resume", str(run), *argv])
    assert exit_.value.code == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["final"]["eval"] == first["final"]["eval"]
    assert again["final"]["steps"] == first["final"]["steps"] == 256
    assert again["final"]["resumes"] == 1
    assert [h["step"] for h in again["history"]] == [h["step"] for h in first["history"]]
    assert [h["step"] for h in again["history"]].count(256) == 1


def test_eval_reevaluates_a_saved_run(finished_run, capsys):
    argv = ["--run", str(finished_run), "--difficulty", "1.0", "--episodes", "3"]
    code, out, err = run_main(eval_main, argv, capsys)
    assert code == 0, err
    rows = dict(line.split() for line in out.strip().splitlines())
    assert set(rows) == {"eval/return/d=1", "eval/success/d=1", "eval/return", "eval/success"}
    assert float(rows["eval/return/d=1"]) >= 8.0


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--run", "nowhere"], ["--run nowhere", "not a run folder"]),
        (["--difficulty", "2"], ["--difficulty = 2.0", "[0, 1]"]),
        (["--episodes", "0"], ["--episodes 0", ">= 1"]),
        (["--ensemble"], ["snapshots: no cycle_<k>.pt snapshots"]),
        (["--episodes", "many"], ["--episodes", "invalid int value"]),
    ],
)
def test_eval_errors_are_one_line(argv, needles, finished_run, capsys):
    if "--run" not in argv:
        argv = ["--run", str(finished_run), *argv]
    code, _, err = run_main(eval_main, argv, capsys)
    assert_one_line_error(code, err, *needles)


def test_help_lists_every_option_with_its_default(capsys):
    code, out, _ = run_main(train_main, ["--help"], capsys)
    assert code == 0
    for option in ("--config", "--out", "--seed", "--steps", "--device", "--resume", "--set"):
        assert option in out
    for option in ("--algo", "--n-envs", "--vec"):
        assert option in out
    assert "(default: cartpole)" in out and "(default: config's)" in out
    assert "(default: None)" not in out


def test_console_script_exits_2_without_traceback(tmp_path):
    script = ROOT / "scripts" / "train_rl.py"
    argv = ["--out", str(tmp_path / "r"), "--set", "curriculum.ceiling=7"]
    proc = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)
    assert_one_line_error(proc.returncode, proc.stderr, "curriculum.ceiling = 7")


def test_demo_prints_returns_at_three_difficulties(tmp_path, capsys):
    from rlcycle.demo import run_demo

    metrics = run_demo(tmp_path, steps=512)
    out = capsys.readouterr().out
    final = metrics["final"]
    for d in ("0", "0.5", "1"):
        assert f"eval/return/d={d}" in final["eval"]
    rows = [row for row in map(str.split, out.splitlines()) if len(row) == 3 and is_number(row[0])]
    assert [row[0] for row in rows] == ["0", "0.5", "1"]
    assert [float(row[1]) for row in rows] == [
        pytest.approx(final["eval"][f"eval/return/d={d}"], abs=0.05) for d in ("0", "0.5", "1")
    ]
    run = Path(metrics["run_dir"])
    assert run.parent == tmp_path / "cartpole" and f"logs: {run}" in out


def test_a_gan_run_folder_is_named_as_such(tmp_path, capsys):
    from common.config import load_config, save_config

    run = tmp_path / "gan"
    save_config(load_config("ring8", "gancycle"), run / "config.toml")
    code, _, err = run_main(eval_main, ["--run", str(run)], capsys)
    assert_one_line_error(code, err, f"--run {run}", "a gancycle run", "gancycle-eval")
    code, _, err = run_main(train_main, ["--resume", str(run), "--no-progress"], capsys)
    assert_one_line_error(code, err, f"--resume {run}", "a gancycle run")


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    code, _, err = run_main(train_main, ["--out", str(path), *FAST], capsys)
    assert_one_line_error(code, err, str(path), "is a file")
    assert path.read_text() == "mine"


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_checkpoint_on_resume_is_one_line(finished_run, damage, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    last = run / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00garbage" * 64)
    code, _, err = run_main(train_main, ["--resume", str(run), "--steps", "512", *FAST], capsys)
    assert_one_line_error(code, err, str(last))
    code, _, err = run_main(eval_main, ["--run", str(run)], capsys)
    assert_one_line_error(code, err, str(last))


def test_a_run_folder_in_use_is_refused(finished_run, capsys):
    from common.runs import hold_run_folder

    with hold_run_folder(finished_run, resume=True):  # another trainer, as the lock sees it
        code, _, err = run_main(train_main, ["--resume", str(finished_run), *FAST], capsys)
    assert_one_line_error(code, err, str(finished_run), "in use by another trainer", "pid")


def test_the_command_line_imports_no_torch_until_a_run_starts():
    heavy = "{'torch', 'stable_baselines3', 'tensorboard'}"
    code = f"import sys, rlcycle.cli; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_layered_config_and_check(tmp_path, capsys):
    """A user file holds only what it changes, on a shipped base; --check trains nothing."""
    mine = tmp_path / "mine.toml"
    mine.write_text('base = "lunarlander"\nsteps = 4096\n[curriculum]\nmode = "in"\n')
    run = tmp_path / "run"
    code, out, err = run_main(
        train_main, ["--config", str(mine), "--out", str(run), "--check"], capsys
    )
    assert code == 0, err
    assert out.startswith(f"ok: {mine}: 4096 steps; schedules policy (cosine_restarts)")
    assert not run.exists()
    from rlcycle.settings import SCHEMA, check_config

    config = SCHEMA.load(str(mine))
    assert config["env"]["id"] == "rlcycle/LunarLander-v3" and config["n_envs"] == 16
    assert check_config(config).extras["curriculum"].mode == "in"


def test_print_config_is_what_the_run_wrote_and_trains_nothing(finished_run, capsys):
    """``--print-config`` prints the config.toml the same command line writes."""
    before = sorted(p.name for p in finished_run.iterdir())
    argv = ["--out", str(finished_run), "--steps", "256", *FAST, "--set", "snapshots.max=0"]
    code, out, err = run_main(train_main, [*argv, "--print-config"], capsys)
    assert code == 0, err
    assert out == (finished_run / "config.toml").read_text()
    assert sorted(p.name for p in finished_run.iterdir()) == before


def test_a_cuda_run_is_evaluated_on_a_machine_without_cuda(finished_run, tmp_path, capsys):
    """Evaluation runs on the CPU whatever device trained the run: a config.toml saying
    device = "cuda" (a run copied from a GPU machine) is read on any machine."""
    run = tmp_path / "gpu_run"
    shutil.copytree(finished_run, run)
    config = run / "config.toml"
    config.write_text(config.read_text().replace('device = "cpu"', 'device = "cuda"'))
    assert 'device = "cuda"' in config.read_text()
    argv = ["--run", str(run), "--difficulty", "1.0", "--episodes", "2"]
    code, out, err = run_main(eval_main, argv, capsys)
    assert code == 0, err
    assert "eval/return/d=1" in out
