"""Configs, --set overrides, the shared CLI and run-folder helpers."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.cli import add_run_arguments, resolve_run, run_cli
from common.config import ConfigError, apply_overrides, read_config, save_config
from common.runs import atomic_torch_save, load_checkpoint, resolve_device

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "seed": 0,
    "steps": 100,
    "device": "auto",
    "lr": {"kind": "cosine_restarts", "max": 3e-4, "period": 50},
    "model": {"hidden": 64, "ema": True, "name": "mlp"},
}


def _config():
    return {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}


def test_overrides_parse_toml_values_and_keep_types():
    config = apply_overrides(
        _config(),
        [
            "lr.max=1e-3",
            "model.hidden=128",
            "model.ema=false",
            "model.name=dcgan",
            "lr.period_mult=2",
        ],
    )
    assert config["lr"]["max"] == 1e-3 and config["model"]["hidden"] == 128
    assert config["model"]["ema"] is False and config["model"]["name"] == "dcgan"
    assert config["lr"]["period_mult"] == 2  # new key inside a schedule table: from_spec checks


@pytest.mark.parametrize(
    "override,words",
    [
        ("model.hiden=3", ["model.hiden", "unknown key", "hidden"]),
        ("modl.hidden=3", ["modl", "no table", "model"]),
        ("model.hidden=big", ["model.hidden", "expected int"]),
        ("model.ema=1", ["model.ema", "expected bool"]),
        ("model=3", ["model", "is a table"]),
        ("lr.max", ["expected key=value"]),
    ],
)
def test_bad_overrides_are_one_line_naming_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        apply_overrides(_config(), [override])
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words)


def test_save_and_read_round_trip(tmp_path):
    save_config(_config(), tmp_path / "run" / "config.toml")
    assert read_config(tmp_path / "run" / "config.toml") == _config()
    (tmp_path / "bad.toml").write_text("lr = [")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        read_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="nope.toml: no such config file"):
        read_config(tmp_path / "nope.toml")


def _parser():
    parser = argparse.ArgumentParser()
    add_run_arguments(parser, default_config="ring8", choices=["ring8"])
    return parser


def test_resolve_run_from_file_and_resume(tmp_path):
    save_config(_config(), tmp_path / "base.toml")
    args = _parser().parse_args(
        [
            "--config",
            str(tmp_path / "base.toml"),
            "--out",
            str(tmp_path / "run"),
            "--seed",
            "7",
            "--set",
            "lr.max=1e-2",
        ]
    )
    config, run_dir, resuming = resolve_run(args, "common")
    assert (config["seed"], config["lr"]["max"], run_dir, resuming) == (
        7,
        1e-2,
        tmp_path / "run",
        False,
    )
    save_config(config, run_dir / "config.toml")
    args = _parser().parse_args(["--resume", str(run_dir), "--steps", "300"])
    resumed, again, resuming = resolve_run(args, "common")
    assert resuming and again == run_dir
    assert resumed == {**config, "steps": 300}
    with pytest.raises(ConfigError, match="not a run folder"):
        resolve_run(_parser().parse_args(["--resume", str(tmp_path / "none")]), "common")


def test_run_cli_turns_errors_into_one_line_and_exit_2():
    script = (
        "from common.cli import run_cli\n"
        "from common.config import ConfigError\n"
        "def main():\n"
        "    raise ConfigError('--set lr.mx: unknown key; allowed here: kind, max')\n"
        "run_cli(main)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "error: --set lr.mx: unknown key; allowed here: kind, max\n"
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: 0)
    assert exit_.value.code == 0


def test_a_path_the_file_system_refuses_is_one_line_naming_it(tmp_path, capsys):
    """A folder where a file belongs, a file where a folder belongs, a file it may not read:
    one line naming the path (before, a traceback)."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for refused in (
        lambda: (tmp_path / "a_folder.pt").mkdir() or (tmp_path / "a_folder.pt").read_bytes(),
        lambda: (a_file / "run" / "config.toml").write_text("x"),
    ):
        with pytest.raises(SystemExit) as exit_:
            run_cli(refused)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ")
        assert str(tmp_path) in err, err
    assert a_file.read_text() == "mine"
    with pytest.raises(OSError):  # an OSError naming no file is not bad input: it propagates
        run_cli(lambda: (_ for _ in ()).throw(OSError("no file named")))


def test_a_config_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("note = 'caf\u00e9'\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"{path}: not valid TOML .*UTF-8"):
        read_config(path)


def test_checkpoints_are_atomic_and_load_weights_only(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    atomic_torch_save({"step": 3, "w": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"step": 4, "bad": Unpicklable()}, path)
    state = load_checkpoint(path)  # the previous checkpoint survives whole
    assert state["step"] == 3 and torch.equal(state["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="auto | cpu | cuda"):
        resolve_device("tpu")


def test_parser_errors_are_one_line_and_help_hides_none_defaults(capsys):
    from common.cli import CliParser

    parser = CliParser(prog="demo-train")
    add_run_arguments(parser, default_config="ring8", choices=["ring8"])
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--device", "tpu"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device" in err and "see demo-train --help" in err
    text = " ".join(parser.format_help().split())
    assert "(default: ring8)" in text and "(default: None)" not in text


# -- the shared pieces on a schema -----------------------------------------------------------


def _schema():
    from common.config import ScheduleTable, Schema, shared_keys

    keys = shared_keys(nets=("policy",), steps=100, log_every=10, checkpoint_every=0, snapshots=5)
    return Schema("common", {**keys, "lr": ScheduleTable(dict(BASE["lr"]), name="policy")})


def test_resolve_run_on_a_schema_layers_sets_and_no_progress(tmp_path):
    (tmp_path / "mine.toml").write_text("seed = 4\n")
    argv = ["--config", str(tmp_path / "mine.toml"), "--out", str(tmp_path / "run")]
    args = _parser().parse_args([*argv, "--no-progress", "--set", "lr.max=1e-2"])
    config, run_dir, resuming = resolve_run(args, _schema())
    assert config == {
        **_schema().defaults(),
        "seed": 4,
        "progress": False,
        "lr": {**BASE["lr"], "max": 1e-2},
    }
    assert (run_dir, resuming) == (tmp_path / "run", False)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="already holds a run; continue it with --resume"):
        resolve_run(_parser().parse_args(argv), _schema())
    assert resolve_run(_parser().parse_args([*argv, "--check"]), _schema())[0]["seed"] == 4


def test_rlcycle_set_into_its_schedule_says_lr_is_a_schedule_table(capsys):
    """rlcycle-train --set lr.G.max=1 said "no table 'lr.G'; tables here: none"."""
    from rlcycle.cli import train_main

    with pytest.raises(SystemExit) as done:
        train_main(["--set", "lr.G.max=1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1
    assert "lr is a schedule table" in err and "kind, max, min, period" in err


SCRIPTS = sorted((REPO / "scripts").glob("*.py"))
RUN_SCRIPT = """
import runpy, sys
path = sys.argv[1]
sys.argv = [path, *sys.argv[2:]]
try:
    runpy.run_path(path, run_name="__main__")
    print("no exit")
except SystemExit as e:
    print(e.code, "torch" in sys.modules)
"""


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_every_script_answers_help_before_importing_torch(script, tmp_path):
    """``--help`` explains and exits 0 at once: torch (seconds to import) is not loaded, and
    nothing runs (no runs/ folder appears where it was called)."""
    done = run_script(script, ["--help"], tmp_path)
    *shown, last = done.stdout.strip().splitlines()
    assert last == "0 False", (last, done.stderr[-2000:])
    assert shown[0].startswith("usage: ") and len(shown) > 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_every_script_refuses_an_unknown_flag_in_one_line(script, tmp_path):
    done = run_script(script, ["--no-such-flag"], tmp_path)
    assert done.stdout.strip().splitlines()[-1] == "2 False", done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert " --help)" in done.stderr  # the flag, or a missing argument; then where to look


def run_script(script: Path, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``script argv`` in a fresh interpreter, which prints its exit code and whether torch
    was imported."""
    return subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, str(script), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )


@pytest.mark.parametrize(
    "script, argv, needle",
    [
        ("bench_gan", ["--steps", "0"], "--steps 0: must be at least 1"),
        ("bench_gan", ["--chunk", "0"], "--chunk 0: must be at least 1"),
        ("bench_gan", ["--evaluation", "--repeats", "0"], "--repeats 0: must be at least 1"),
        ("bench_schedules", ["--calls", "0"], "--calls 0: must be at least 1"),
        ("bench_population", ["--members", "0"], "--members 0: must be at least 1"),
        ("chance_modes", ["--samples", "5"], "--samples 5: must be >= 10"),
        ("double_well", ["--seeds", "0"], "--seeds 0: must be at least 1"),
        ("double_well", ["--noise", "nan"], "--noise nan: must be a finite number >= 0"),
        ("double_well", ["--out", "runs/x"], "--out runs/x: must name a .png file"),
        ("plot_schedules", ["--cycles", "0"], "--cycles 0: must be at least 1"),
        ("plot_schedules", ["--steps", "-5"], "--steps -5: must be at least 1"),
    ],
)
def test_a_benchmark_given_a_count_below_one_says_so_in_one_line(script, argv, needle, tmp_path):
    """Before, ``bench_gan --steps 0`` printed a ratio of nothing and ``--chunk 0`` a
    ZeroDivisionError traceback."""
    done = run_script(REPO / "scripts" / f"{script}.py", argv, tmp_path)
    assert done.stdout.strip() == "2 False", (done.stdout, done.stderr[-2000:])
    assert done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr


@pytest.mark.parametrize(
    "main",
    [
        "gancycle.cli:train_main",
        "gancycle.cli:sample_main",
        "rlcycle.cli:train_main",
        "rlcycle.cli:eval_main",
    ],
)
@pytest.mark.parametrize("value", ["-1", str(2**64), "one"])
def test_a_seed_out_of_range_is_a_usage_error_naming_it(main, value, capsys):
    """Before, a seed past 64 bits reached torch (`Overflow when unpacking long long`)."""
    import importlib

    module, name = main.split(":")
    with pytest.raises(SystemExit) as exit_:
        getattr(importlib.import_module(module), name)(
            ["--run", "x", "--out", "x.npy", "--seed", value]
        )
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert f"--seed: {value}: must be an integer in [0, 4294967295]" in err


@pytest.mark.parametrize("package", ["gancycle", "rlcycle"])
def test_a_device_this_machine_lacks_is_refused_before_a_run_folder_exists(
    package, tmp_path, capsys
):
    """``--device cuda`` without CUDA: ``--check`` gives training's one-line error, not "ok",
    and training refuses before it makes the run folder. With CUDA the check passes."""
    from conftest import assert_one_line_error, run_main

    train_main = __import__(f"{package}.cli", fromlist=["train_main"]).train_main
    code, out, err = run_main(train_main, ["--device", "cuda", "--check"], capsys)
    if torch.cuda.is_available():
        assert code == 0 and out.startswith("ok: "), err
        return
    assert_one_line_error(code, err, "device = 'cuda'", "no CUDA device")
    run = tmp_path / "run"
    code, _, err = run_main(train_main, ["--device", "cuda", "--out", str(run)], capsys)
    assert_one_line_error(code, err, "device = 'cuda'", "no CUDA device")
    assert not run.exists()
