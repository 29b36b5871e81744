"""gancycle-train, gancycle-sample, gancycle-eval: real runs and every error path."""

import json
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import TINY_RING8 as TINY
from conftest import assert_one_line_error as one_line_error
from conftest import run_main as call
from conftest import set_args as sets

from gancycle.cli import eval_main, sample_main, train_main


def train_args(out, steps="25", *extra) -> list[str]:
    base = ["--out", str(out), "--steps", steps, "--device", "cpu", "--no-progress"]
    return [*base, *sets(*TINY), *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny ring8 run with snapshots (cycles end at 10 and 20)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    with pytest.raises(SystemExit) as done:
        train_main(train_args(out))
    assert done.value.code == 0
    return out


# -- happy paths -----------------------------------------------------------------------------


def test_train_prints_metrics_and_writes_the_run_folder(run):
    for name in ("config.toml", "metrics.json", "checkpoints/last.pt", "snapshots/cycle_1.pt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["final"]["steps"] == 25 and "modes" in metrics["final"]["G"]
    assert "steps = 25" in (run / "config.toml").read_text()  # the resolved config


def test_sample_writes_points_from_each_generator(run, tmp_path, capsys):
    outputs = {}
    for flag in ([], ["--ema"], ["--ensemble"]):
        path = tmp_path / f"s{len(outputs)}.npy"
        code, out, _ = call(
            sample_main, ["--run", str(run), "--n", "300", "--out", str(path), *flag], capsys
        )
        assert code == 0 and str(path) in out
        outputs[tuple(flag)] = np.load(path)
        assert outputs[tuple(flag)].shape == (300, 2)
        assert np.isfinite(outputs[tuple(flag)]).all()
    assert not np.allclose(outputs[()], outputs[("--ema",)])
    assert not np.allclose(outputs[()], outputs[("--ensemble",)])


def test_eval_recomputes_the_final_metrics(run, capsys):
    code, out, _ = call(eval_main, ["--run", str(run), "--all"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["step"] == 25 and set(result) == {"step", "G", "ema", "ensemble"}
    final = json.loads((run / "metrics.json").read_text())["final"]
    for key, value in final["G"].items():
        assert result["G"][key] == pytest.approx(value), key


def _drop_final(run, metric):
    """The run's metrics.json as a run recorded before ``metric`` existed would hold it."""
    path = run / "metrics.json"
    metrics = json.loads(path.read_text())
    for which in ("G", "ema", "ensemble"):
        metrics["final"][which].pop(metric)
    path.write_text(json.dumps(metrics))
    return metrics


def test_eval_record_adds_the_final_metrics_a_run_lacks(run, tmp_path, capsys):
    """A run recorded before ``modes_held`` existed gets it from its last checkpoint, once the
    metrics it holds come out the same again; its history is left as it was."""
    copy = tmp_path / "old_run"
    shutil.copytree(run, copy)
    before = _drop_final(copy, "modes_held")
    code, out, _ = call(eval_main, ["--run", str(copy), "--record"], capsys)
    assert code == 0 and "added G.modes_held, ema.modes_held, ensemble.modes_held" in out
    after = json.loads((copy / "metrics.json").read_text())
    original = json.loads((run / "metrics.json").read_text())
    for which in ("G", "ema", "ensemble"):
        assert after["final"][which] == original["final"][which]
    assert after["history"] == before["history"]
    assert after["final"]["rescored"]["added"] == [
        "G.modes_held",
        "ema.modes_held",
        "ensemble.modes_held",
    ]
    code, out, _ = call(eval_main, ["--run", str(copy), "--record"], capsys)
    assert code == 0 and "nothing to add" in out
    assert json.loads((copy / "metrics.json").read_text()) == after


def test_eval_record_refuses_a_checkpoint_that_does_not_give_the_recorded_scores(
    run, tmp_path, capsys
):
    copy = tmp_path / "changed_run"
    shutil.copytree(run, copy)
    metrics = _drop_final(copy, "modes_held")
    metrics["final"]["ema"]["high_quality"] += 1.0
    (copy / "metrics.json").write_text(json.dumps(metrics))
    code, _, err = call(eval_main, ["--run", str(copy), "--record"], capsys)
    one_line_error(code, err, "ema.high_quality", "recorded")
    assert json.loads((copy / "metrics.json").read_text()) == metrics  # nothing written


@pytest.mark.parametrize(
    ("which", "value"),
    [("G", 3), ("ema", ["modes", 1]), ("G", {"modes": "many"}), ("ema", {"kl": None})],
)
def test_eval_record_on_a_record_this_code_did_not_write_is_one_line(
    run, tmp_path, capsys, which, value
):
    """A final table that is not metric names and numbers (hand-edited, another program's) is
    refused in one line naming it, and nothing is written."""
    copy = tmp_path / "odd_run"
    shutil.copytree(run, copy)
    metrics = _drop_final(copy, "modes_held")
    metrics["final"][which] = value
    (copy / "metrics.json").write_text(json.dumps(metrics))
    code, _, err = call(eval_main, ["--run", str(copy), "--record"], capsys)
    one_line_error(code, err, "metrics.json", f"final.{which}")
    assert json.loads((copy / "metrics.json").read_text()) == metrics


def test_help_lists_every_option_with_its_default(capsys):
    code, out, _ = call(train_main, ["--help"], capsys)
    assert code == 0
    for option in (
        "--config",
        "--out",
        "--seed",
        "--steps",
        "--device",
        "--resume",
        "--set",
        "--on-nan",
        "--data-root",
        "--download",
        "--inception-weights",
    ):
        assert option in out, option
    assert "default: ring8" in " ".join(out.split())  # however argparse wraps the line


def test_help_is_fast_and_imports_no_torch():
    code = "import gancycle.cli, sys; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
    start = time.perf_counter()
    script = "from gancycle.cli import train_main; train_main(['--help'])"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and "--check" in done.stdout
    assert time.perf_counter() - start < 2.0  # about 0.5 s: torch is not imported


@pytest.mark.parametrize("main", ["train_main", "sample_main", "eval_main"])
def test_every_gan_script_answers_help_and_usage_errors_without_torch(main):
    """``--help`` and an argument error come before torch is imported (under a second)."""
    for argv in (["--help"], ["--n", "0"]):
        script = (
            f"import sys\nfrom gancycle.cli import {main}\n"
            f"try:\n    {main}({argv!r})\nexcept SystemExit as e:\n"
            "    print(e.code, 'torch' in sys.modules)"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        code, torch_loaded = done.stdout.split()[-2:]
        assert code in ("0", "2") and torch_loaded == "False", (main, argv, done.stdout)


def test_the_help_example_is_one_gancycle_accepts(capsys, tmp_path):
    code, out, _ = call(train_main, ["--help"], capsys)
    example = re.search(r"e\.g\. --set (\S+)", " ".join(out.split())).group(1)
    assert example == "lr.G.max=3e-4"
    code, out, err = call(train_main, ["--check", *sets(example)], capsys)
    assert code == 0, err
    assert out.count("\n") == 1 and out.startswith("ok: ring8: 12000 steps; schedules G")


def test_check_trains_nothing_and_refuses_a_bad_key(tmp_path, capsys):
    out_dir = tmp_path / "r"
    code, out, _ = call(train_main, ["--check", "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0 and out.startswith("ok: ring8") and not out_dir.exists()
    code, _, err = call(train_main, ["--check", *sets("lr.G.ofset=0.5")], capsys)
    one_line_error(code, err, "lr.G.ofset", "offset")
    code, _, err = call(train_main, ["--check", *sets("nonsense.key=1")], capsys)
    one_line_error(code, err, "nonsense", "unknown key", "allowed here: seed")


def test_image_run_samples_are_images_in_zero_one(tmp_path, capsys):
    out = tmp_path / "digits"
    args = [
        "--config",
        "digits",
        "--out",
        str(out),
        "--steps",
        "5",
        "--device",
        "cpu",
        "--no-progress",
        *sets(
            "data.batch=8",
            "model.width=4",
            "model.z_dim=4",
            "eval.samples=50",
            "eval.classifier_steps=20",
        ),
    ]
    assert call(train_main, args, capsys)[0] == 0
    path = tmp_path / "img.npy"
    code, _, _ = call(sample_main, ["--run", str(out), "--n", "6", "--out", str(path)], capsys)
    images = np.load(path)
    assert code == 0 and images.shape == (6, 1, 8, 8)
    assert images.min() >= 0 and images.max() <= 1


def test_divergence_exits_1_and_says_where(tmp_path, capsys):
    nan_loss = sets('lr.D.kind="triangular"', "lr.D.max=1e30", "lr.D.offset=0.0")
    args = train_args(tmp_path / "nan", "10", *nan_loss, *sets("dynamics.every=1000"))
    code, out, err = call(train_main, args, capsys)
    assert code == 1
    assert err.strip() == "stopped: loss/G = nan at step 1 (see --on-nan)"
    assert "modes=" in out  # the metrics of what was trained so far


# -- error paths: one line, exit code 2 ------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (sets("model.hiden=3"), ["model.hiden", "hidden"]),
        (sets("data.batch=many"), ["data.batch", "int"]),
        (sets("lr.G.maxx=1"), ["lr.G.maxx", "max"]),
        (sets("lr.G.offset=1.5"), ["lr.G.offset", "[0, 1)"]),
        (sets("lr.D.period=10"), ["lr.D.period", "unknown key", "follow"]),
        (sets("lr.G.kind=zigzag"), ["lr.G.kind", "cosine_restarts"]),
        (sets("loss.name=lsgan"), ["loss.name", "ns | hinge | wgan"]),
        (sets("reset.G=moments"), ["reset.G", "none | momentum | all"]),
        (sets("data.batch=0"), ["data.batch", ">= 1"]),
        (sets("optim.name=sgd", "optim.beta1=0.0", "reset.G=momentum"), ["reset.G", "momentum"]),
        (sets("instance_noise.hi=-1.0"), ["instance_noise.hi"]),
        (sets("thermostat.G=0.1"), ["thermostat.G", "optim.name = 'sgd'"]),
        (sets("label_smoothing.enabled=true", "loss.name=hinge"), ["label_smoothing", "ns"]),
        (sets("nokey"), ["nokey", "key=value"]),
        (sets("model.pack=3"), ["model.pack = 3", "data.batch = 32", "a multiple of it"]),
        (sets("model.d_maxout=1"), ["model.d_maxout = 1", "k >= 2"]),
        (sets("loss.simultaneous=true", "loss.d_steps=2"), ["loss.simultaneous", "d_steps = 1"]),
        (["--config", "svhn"], ["svhn", "ring8"]),
        (["--inception-weights", "missing.pth"], ["--inception-weights", "missing.pth"]),
        (["--device", "cuda"], ["cuda"]),
    ],
)
def test_train_errors(tmp_path, capsys, extra, needles):
    if extra == ["--device", "cuda"] and torch.cuda.is_available():
        extra, needles = sets("model.arch=resnet"), ["model.arch", "mlp | dcgan"]
    code, _, err = call(train_main, train_args(tmp_path / "r", "5", *extra), capsys)
    one_line_error(code, err, *needles)
    assert not (tmp_path / "r" / "checkpoints").exists()  # nothing trained


def test_missing_dataset_names_the_path_and_the_download_flag(tmp_path, capsys):
    args = [
        "--config",
        "mnist",
        "--data-root",
        str(tmp_path / "empty"),
        "--out",
        str(tmp_path / "r"),
        "--device",
        "cpu",
    ]
    code, _, err = call(train_main, args, capsys)
    one_line_error(code, err, "empty", "--download", "MNIST")


def test_resume_errors(run, tmp_path, capsys):
    code, _, err = call(train_main, ["--resume", str(tmp_path / "gone")], capsys)
    one_line_error(code, err, "--resume", "gone")
    code, _, err = call(train_main, ["--out", str(run), "--device", "cpu"], capsys)
    one_line_error(code, err, "--resume", str(run))  # would overwrite a run


def test_sample_more_than_the_machine_holds_is_one_line(run, tmp_path, capsys):
    """--n 10**13 ran out of memory (80 TB of points) instead of saying so; so did
    gancycle-eval --samples 10**13."""
    out = tmp_path / "huge.npy"
    argv = ["--run", str(run), "--n", str(10**13), "--out", str(out)]
    code, _, err = call(sample_main, argv, capsys)
    one_line_error(code, err, f"--n {10**13}", "80 TB", "memory")
    assert not out.exists()
    code, _, err = call(eval_main, ["--run", str(run), "--samples", str(10**13)], capsys)
    one_line_error(code, err, f"--samples {10**13}", "memory")


def test_sample_errors(run, tmp_path, capsys):
    code, _, err = call(sample_main, ["--run", str(tmp_path), "--out", "x.npy"], capsys)
    one_line_error(code, err, "--run", "config.toml")
    code, _, err = call(sample_main, ["--run", str(run), "--out", "x.txt"], capsys)
    one_line_error(code, err, "--out", ".npy")
    code, _, err = call(sample_main, ["--run", str(run), "--n", "0", "--out", "x.npy"], capsys)
    one_line_error(code, err, "--n")
    young = tmp_path / "young"  # 5 steps: no cycle has ended, no snapshot yet
    assert call(train_main, train_args(young, "5"), capsys)[0] == 0
    out = str(tmp_path / "e.npy")
    code, _, err = call(sample_main, ["--run", str(young), "--ensemble", "--out", out], capsys)
    one_line_error(code, err, "ensemble", "snapshot")


def test_eval_errors(run, tmp_path, capsys):
    code, _, err = call(eval_main, ["--run", str(tmp_path)], capsys)
    one_line_error(code, err, "--run")
    code, _, err = call(eval_main, ["--run", str(run), "--inception-weights", "no.pth"], capsys)
    one_line_error(code, err, "--inception-weights", "no.pth")
    code, _, err = call(eval_main, ["--run", str(run), "--samples", "3"], capsys)
    one_line_error(code, err, "--samples")
    code, _, err = call(eval_main, ["--run", str(run), "--record", "--samples", "100"], capsys)
    one_line_error(code, err, "--record", "--samples")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "metrics.json").write_text(json.dumps({"final": None, "history": []}))
    code, _, err = call(eval_main, ["--run", str(unfinished), "--record"], capsys)
    one_line_error(code, err, "no final metrics")


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"\xff\xfe not utf-8", "not UTF-8"), (b'{"final": {"G": ', "not valid JSON")],
)
def test_eval_record_on_a_damaged_metrics_file_says_so(run, tmp_path, capsys, content, needle):
    """A finished run whose metrics.json is damaged was told to finish the run first."""
    copy = tmp_path / "damaged"
    shutil.copytree(run, copy)
    (copy / "metrics.json").write_bytes(content)
    code, _, err = call(eval_main, ["--run", str(copy), "--record"], capsys)
    line = one_line_error(code, err, "metrics.json", needle)
    assert "finish the run" not in line
    assert (copy / "metrics.json").read_bytes() == content


@pytest.mark.parametrize("where", ["config", "flag"])
@pytest.mark.parametrize("weights", ["absent", "damaged"])
def test_inception_weights_are_checked_before_a_run_starts(tmp_path, capsys, where, weights):
    """A missing or damaged FID network named in the config (or by the flag) stops the run
    before its folder exists, not at the first evaluation after training."""
    path = tmp_path / "inception.pt"
    if weights == "damaged":
        path.write_bytes(b"not a state dict" * 64)
    run = tmp_path / "run"
    image = sets("data.batch=16", "model.z_dim=8", "model.width=8", "eval.every=0")
    named = (
        sets(f'eval.inception_weights="{path}"')
        if where == "config"
        else ["--inception-weights", str(path)]
    )
    argv = ["--config", "digits", "--out", str(run), "--steps", "20", "--no-progress"]
    code, _, err = call(train_main, [*argv, "--device", "cpu", *image, *named], capsys)
    flag = "eval.inception_weights" if where == "config" else "--inception-weights"
    one_line_error(code, err, f"{flag} {path}")
    assert not run.exists()


def test_inception_weights_that_are_not_inception(tmp_path):
    from gancycle.inception import InceptionFeatures

    path = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="not an inception_v3 state dict"):
        InceptionFeatures(path)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        InceptionFeatures(tmp_path / "absent.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a download cut short
    with pytest.raises(ValueError, match=f"--inception-weights {path}: not an inception_v3"):
        InceptionFeatures(path)


@pytest.mark.parametrize(
    ("main", "argv", "needle"),
    [
        (train_main, ["--device", "tpu"], "--device"),
        (train_main, ["--on-nan", "maybe"], "--on-nan"),
        (train_main, ["--steps", "ten"], "--steps"),
        (train_main, ["--steps", "0", "--device", "cpu"], "steps"),
        (sample_main, ["--out", "x.npy"], "--run"),
        (sample_main, ["--run", "r", "--out", "x.npy", "--ema", "--ensemble"], "--ensemble"),
        (eval_main, ["--run", "r", "--samples", "many"], "--samples"),
    ],
)
def test_usage_errors_are_one_line_too(capsys, main, argv, needle):
    code, _, err = call(main, argv, capsys)
    one_line_error(code, err, needle)


def test_print_config_is_what_the_run_wrote_and_trains_nothing(run, tmp_path, capsys):
    """``--print-config`` prints the config.toml the same command line writes (a study compares
    the two to find runs of an edited base config); the run's folder is left as it was."""
    before = sorted(p.name for p in run.iterdir())
    code, out, err = call(train_main, [*train_args(run), "--print-config"], capsys)
    assert code == 0, err
    assert out == (run / "config.toml").read_text()
    assert sorted(p.name for p in run.iterdir()) == before
    code, other, _ = call(train_main, [*train_args(run), "--print-config", "--seed", "7"], capsys)
    assert code == 0 and other != out and "seed = 7" in other


def test_eval_samples_beyond_memory_is_refused_before_training(tmp_path, capsys):
    """eval.samples = 10**13 passed --check and would have trained until its first
    evaluation ran out of memory; like gancycle-eval --samples, it is one line now."""
    out = tmp_path / "r"
    argv = [*sets(*TINY), "--set", f"eval.samples={10**13}", "--out", str(out), "--device", "cpu"]
    code, _, err = call(train_main, [*argv, "--check"], capsys)
    one_line_error(code, err, f"eval.samples = {10**13}", "memory")
    code, _, err = call(train_main, argv, capsys)
    one_line_error(code, err, f"eval.samples = {10**13}", "memory")
    assert not out.exists()


def test_check_says_when_a_schedule_goes_flat_before_the_run_ends(capsys):
    """ring8's one cosine spans its 12000 steps; with --steps 20000 the last 8000 train at the
    floor rate, and --check said nothing of it."""
    code, out, err = call(train_main, ["--check", "--steps", "20000"], capsys)
    assert code == 0, err
    assert "schedules G (cosine, flat from step 12000), D (follow G, flat from step 12000)" in out
    code, out, err = call(train_main, ["--check"], capsys)  # flat only at the run's end: no note
    assert code == 0 and "flat" not in out, err
    code, out, err = call(train_main, ["--check", "--config", "grid25", "--steps", "90000"], capsys)
    assert code == 0 and "flat" not in out, err  # warm restarts never go flat


def test_print_config_prints_on_any_machine(tmp_path, capsys):
    """--print-config (what a study compares its records with) asked this machine for the
    run's memory and inception weights, which --check and training ask; it refused both."""
    missing = tmp_path / "inception.pt"
    argv = ["--set", f"eval.samples={10**13}", "--set", f'eval.inception_weights="{missing}"']
    code, out, err = call(train_main, [*argv, "--print-config"], capsys)
    assert code == 0, err
    assert f"samples = {10**13}" in out and str(missing) in out
    code, _, err = call(train_main, [*argv, "--check"], capsys)
    one_line_error(code, err, "eval.samples", "memory")
