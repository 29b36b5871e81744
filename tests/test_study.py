"""The study runner on a small real trainer (tests/study_fixture_train.py: softmax regression on
the digits): run layout, overrides, statistics, failure isolation, resuming, the CLI and Ray."""

import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import tomllib

from common.config import apply_overrides
from common.schedules import from_spec
from common.stats import iqm, mean_se, probability_of_improvement
from common.study import StudyError, find_study, load_study, plan_runs, run_study
from common.study.backends import run_local
from common.study.figures import iqm_figure
from common.study.report import compare_arms, metric_value, results_markdown, summarize
from common.study.run import get_path
from common.study.spec import Arm, View, overrides, parse_study

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "study.py"

DIGITS = """
name = "digits_lr"
command = "python tests/study_fixture_train.py"
{configs}
seeds = 2
baseline = "slow"
higher_is_better = {{ loss = false }}
curve = {{ key = "history", y = ["accuracy", "loss"] }}
[metrics]
accuracy = "final.accuracy"
loss = "final.loss"
steps_to_90 = {{ reach = "accuracy", at_least = 0.9 }}
[shared]
steps = 40
[arms.slow]
lr = 0.1
[arms.fast]
lr = 1.0
{extra}
"""


def write_study(folder: Path, configs: str = 'config = "digits"', extra: str = "") -> Path:
    path = folder / "study.toml"
    path.write_text(DIGITS.format(configs=configs, extra=extra))
    return path


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# -- a finished study with two base configs and an arm that always fails ----------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finished")
    (folder / "l2.toml").write_text(
        "seed = 0\nsteps = 60\nlr = 0.5\nl2 = 0.01\neval_every = 20\ntest_fraction = 0.3\n"
        "fail = false\n"
    )
    configs = f'configs = ["digits", "{(folder / "l2.toml").as_posix()}"]'
    extra = """
[arms.fast.on.l2]         # on the l2 config only
eval_every = 10
[arms.broken]
fail = true
[views.fast_early]        # the fast runs' first evaluation instead of their last
arm = "fast"
metrics = { accuracy = "history.0.accuracy" }
[sweep]                   # the arms as points of the learning rate (a view too)
x = "learning rate"
points = { fast = 1.0, slow = 0.1, fast_early = 1.5, broken = 0.05 }
"""
    study = load_study(write_study(folder, configs, extra))
    outcome = run_study(study, runs_root=folder / "runs", workers=2, progress=False, cwd=REPO)
    return study, outcome, folder / "runs" / "digits_lr"


def test_runs_land_in_their_folders_with_the_arm_overrides(finished):
    study, outcome, root = finished
    assert len(outcome.runs) == 2 * 3 * 2  # configs × arms × seeds
    for config, l2 in [("digits", 1e-4), ("l2", 0.01)]:
        for arm, lr in [("slow", 0.1), ("fast", 1.0)]:
            for seed in (0, 1):
                run_dir = root / config / arm / f"seed{seed}"
                written = (run_dir / "config.toml").read_text()  # the trainer's resolved config
                assert f"lr = {lr}" in written and f"seed = {seed}" in written
                assert f"l2 = {l2}" in written and "steps = 40" in written
                steps = [h["step"] for h in read_metrics(run_dir)["history"]]
                per_config = arm == "fast" and config == "l2"
                assert steps == ([10, 20, 30, 40] if per_config else [20, 40])


def test_summary_statistics_are_those_of_the_run_scores(finished):
    study, outcome, root = finished
    summary = json.loads((root / "summary.json").read_text())
    assert summary == outcome.summary
    for config in ("digits", "l2"):
        arms = summary["configs"][config]["arms"]
        scores = {
            arm: [read_metrics(root / config / arm / f"seed{s}")["final"] for s in (0, 1)]
            for arm in ("slow", "fast")
        }
        for metric in ("accuracy", "loss"):
            slow = [m[metric] for m in scores["slow"]]
            fast = [m[metric] for m in scores["fast"]]
            entry = arms["fast"]["metrics"][metric]
            assert entry["scores"] == fast and entry["n"] == 2
            assert (entry["mean"], entry["se"]) == pytest.approx(mean_se(fast))
            assert entry["iqm"] == pytest.approx(iqm(fast))
            assert entry["iqm_ci"][0] <= entry["iqm"] <= entry["iqm_ci"][1]
            sign = 1 if metric == "accuracy" else -1  # a lower loss is the improvement
            expected = probability_of_improvement(sign * np.array(fast), sign * np.array(slow))
            assert entry["poi"] == pytest.approx(expected)
            assert entry["poi_ci"][0] <= entry["poi"] <= entry["poi_ci"][1]
            assert "poi" not in arms["slow"]["metrics"][metric]  # the baseline
        for arm in ("slow", "fast"):  # the first evaluation at >= 90%, else the last step
            expected = []
            for s in (0, 1):
                history = read_metrics(root / config / arm / f"seed{s}")["history"]
                hits = [h["step"] for h in history if h["accuracy"] >= 0.9]
                expected.append(hits[0] if hits else history[-1]["step"])
            assert arms[arm]["metrics"]["steps_to_90"]["scores"] == expected
        assert summary["metrics"]["steps_to_90"]["higher_is_better"] is False
        # Ten times the step size wins on both metrics after 40 steps, seed for seed.
        assert arms["fast"]["metrics"]["accuracy"]["poi"] == 1.0
        assert arms["fast"]["metrics"]["loss"]["poi"] == 1.0


def test_a_view_reads_another_arms_runs_without_running_them(finished):
    study, outcome, root = finished
    assert not any("fast_early" in run.dir for run in outcome.runs)
    for config in ("digits", "l2"):
        arms = outcome.summary["configs"][config]["arms"]
        view, fast, slow = arms["fast_early"], arms["fast"], arms["slow"]
        assert view["view_of"] == "fast" and view["done"] == 2
        first = [read_metrics(root / config / "fast" / f"seed{s}")["history"][0] for s in (0, 1)]
        assert view["metrics"]["accuracy"]["scores"] == [h["accuracy"] for h in first]
        assert view["metrics"]["loss"] == fast["metrics"]["loss"]  # not listed: read as fast's
        expected = probability_of_improvement(
            view["metrics"]["accuracy"]["scores"], slow["metrics"]["accuracy"]["scores"]
        )
        assert view["metrics"]["accuracy"]["poi"] == pytest.approx(expected)
    assert "| fast_early (fast's runs) | 2 |" in (root / "results.md").read_text()


def test_a_view_metric_set_to_false_has_no_reading_in_the_view(finished):
    """A deterministic ensemble has no sampled counterpart: a view lists such a metric as
    false, and its row has no scores for it instead of the arm's."""
    _, outcome, _ = finished
    raw = tomllib.loads(
        DIGITS.format(configs='config = "digits"', extra="")
        + '[views.fast_acc]\narm = "fast"\nmetrics = { accuracy = "history.0.accuracy", '
        "loss = false }\n"
    )
    study = parse_study(raw)
    assert study.views["fast_acc"].metrics["loss"] is None
    runs = [run for run in outcome.runs if run.label == "digits"]
    summary = summarize(study, runs, REPO)
    view = summary["configs"]["digits"]["arms"]["fast_acc"]
    assert view["metrics"]["loss"]["scores"] == [None, None] and view["metrics"]["loss"]["n"] == 0
    assert view["metrics"]["accuracy"]["n"] == 2
    assert summary["views"]["fast_acc"]["metrics"]["loss"] is None
    text = results_markdown(summary)
    assert "| fast_acc (fast's runs) | 0 |" in text
    assert "reading accuracy at `history.0.accuracy`; no reading of loss." in text


def test_a_reading_is_a_view_of_every_arm_alike(finished):
    """``[readings.<name>]`` reads every arm's runs through other paths: one view per arm,
    named ``<arm>_<name>``, arm by arm, and one paragraph in results.md for all of them."""
    _, outcome, _ = finished
    raw = tomllib.loads(
        DIGITS.format(configs='config = "digits"', extra="")
        + '[readings.early]\naccuracy = "history.0.accuracy"\nloss = false\n'
        + '[readings.last]\naccuracy = "final.accuracy"\n'
    )
    study = parse_study(raw)
    assert list(study.views) == ["slow_early", "slow_last", "fast_early", "fast_last"]
    assert study.views["fast_early"] == View(
        arm="fast", metrics={"accuracy": "history.0.accuracy", "loss": None}, reading="early"
    )
    runs = [run for run in outcome.runs if run.label == "digits"]
    summary = summarize(study, runs, REPO)
    arms = summary["configs"]["digits"]["arms"]
    for arm in ("slow", "fast"):
        early = arms[f"{arm}_early"]
        assert early["view_of"] == arm and early["metrics"]["loss"]["n"] == 0
        first = [history[0]["accuracy"] for history in _histories(runs, arm)]
        assert early["metrics"]["accuracy"]["scores"] == first
        for metric, part in arms[arm]["metrics"].items():  # the arm's own paths
            assert arms[f"{arm}_last"]["metrics"][metric]["scores"] == part["scores"]
    assert summary["views"]["slow_early"]["reading"] == "early"
    text = results_markdown(summary)
    assert "View `" not in text
    assert (
        "Reading `early`: every arm's runs read again, in the columns `early:` (`<arm>_early` "
        "in summary.json): accuracy at `history.0.accuracy`; no reading of loss."
    ) in text
    tables = text.split("### ")
    accuracy = next(t for t in tables if t.startswith("accuracy"))
    assert "| early: IQM [95% CI] | early: P(improve) | last: IQM [95% CI] |" in accuracy
    rows = [line for line in accuracy.splitlines() if line.startswith("| fast")]
    assert len(rows) == 1 and rows[0].count("|") == 10  # the readings beside fast's row
    loss = next(t for t in tables if t.startswith("loss"))
    fast = next(line for line in loss.splitlines() if line.startswith("| fast"))
    assert fast.split("|")[6:8] == [" — ", " — "]  # no reading of loss in `early`


def _histories(runs, arm):
    return [read_metrics(REPO / run.dir)["history"] for run in runs if run.arm == arm]


def test_a_failing_arm_is_reported_and_the_others_complete(finished):
    study, outcome, root = finished
    assert sorted(r.run.name for r in outcome.failed) == sorted(
        f"{c}/broken/seed{s}" for c in ("digits", "l2") for s in (0, 1)
    )
    assert all(r.returncode == 1 for r in outcome.failed)
    summary = outcome.summary
    assert summary["done"] == 8 and len(summary["failed"]) == 4
    for failure in summary["failed"]:
        assert failure["arm"] == "broken"
        assert "RuntimeError: failing on purpose" in failure["error"]
        error_file = (Path(failure["dir"]) / "error.txt").read_text()
        assert "exit code 1" in error_file and "Traceback" in error_file
        assert not (Path(failure["dir"]) / "metrics.json").exists()
    for config in ("digits", "l2"):
        arms = summary["configs"][config]["arms"]
        assert arms["broken"]["done"] == 0 and arms["broken"]["metrics"]["accuracy"]["n"] == 0
        assert arms["broken"]["metrics"]["accuracy"]["scores"] == [None, None]
        assert arms["fast"]["done"] == arms["slow"]["done"] == 2


def test_results_table_and_figures(finished):
    study, outcome, root = finished
    text = (root / "results.md").read_text()
    assert "## digits" in text and "## l2" in text
    assert "### loss (lower is better; `final.loss`)" in text
    digits = text[text.index("## digits") : text.index("## l2")]
    fast_rows = [line for line in digits.splitlines() if line.startswith("| fast | 2 |")]
    entry = outcome.summary["configs"]["digits"]["arms"]["fast"]["metrics"]["accuracy"]
    assert f"{entry['iqm']:.3g} [{entry['iqm_ci'][0]:.3g}, " in fast_rows[0]
    assert fast_rows[0].endswith("| 1.00 [1.00, 1.00] |")
    assert "| slow (baseline) | 2 |" in digits and "| broken | 0 | — | — | — |" in digits
    assert "## Failed runs (4)" in text
    import matplotlib.image

    for name in ("iqm_digits", "iqm_l2", "curve_digits", "curve_l2", "curve_l2_1"):
        image = matplotlib.image.imread(root / "figures" / f"{name}.png")
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05  # something is drawn
    accuracy, loss = (
        matplotlib.image.imread(root / "figures" / f"{name}.png")
        for name in ("curve_l2", "curve_l2_1")
    )
    assert study.curve.ys == ("accuracy", "loss")
    assert accuracy.shape != loss.shape or not np.array_equal(accuracy, loss)  # loss, plotted


def test_the_iqm_figure_draws_an_arms_readings_on_its_own_row(finished):
    """With ``[readings.<name>]``, each arm is one row of the IQM figure and its readings are
    marks of their own colour on that row (a legend names them), not rows of their own."""
    _, outcome, _ = finished
    raw = tomllib.loads(
        DIGITS.format(configs='config = "digits"', extra="")
        + '[readings.early]\naccuracy = "history.0.accuracy"\nloss = false\n'
    )
    runs = [run for run in outcome.runs if run.label == "digits"]
    summary = summarize(parse_study(raw), runs, REPO)
    arms = summary["configs"]["digits"]["arms"]
    fig = iqm_figure(summary, "digits")
    accuracy, loss = fig.axes[:2]
    names = [t.get_text() for t in accuracy.get_yticklabels()]
    assert names == ["slow (baseline)", "fast"]
    for ax, metric in ((accuracy, "accuracy"), (loss, "loss")):
        dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
        drawn = sorted(float(line.get_xdata()[0]) for line in dots)
        expected = [
            arms[name]["metrics"][metric]["iqm"]
            for name in ("slow", "fast", "slow_early", "fast_early")
            if arms[name]["metrics"][metric]["iqm"] is not None
        ]
        assert drawn == pytest.approx(sorted(expected))
    assert len([line for line in loss.get_lines() if line.get_marker() == "o"]) == 2
    legend = [t.get_text() for t in accuracy.get_legend().get_texts()]
    assert legend == ["raw", "early"]


def test_a_sweep_reads_arms_as_points_of_one_knob(finished):
    """The sweep's points, in the order of their values, with every metric's IQM and CI as
    the arms' rows have them; a point without scores is listed and left out of the figure."""
    study, outcome, root = finished
    points = {"broken": 0.05, "slow": 0.1, "fast": 1.0, "fast_early": 1.5}
    assert list(study.sweep.points.items()) == list(points.items())
    assert outcome.summary["sweep"] == {"x": "learning rate", "points": points}
    text = (root / "results.md").read_text()
    digits = text[text.index("## digits") : text.index("## l2")]
    table = digits[digits.index("### Sweep: learning rate") :].split("\n\n")[1].splitlines()
    assert table[0] == (
        "| learning rate | arm | n | accuracy IQM [95% CI] | loss IQM [95% CI] | "
        "steps_to_90 IQM [95% CI] |"
    )
    rows = table[2:]
    assert [row.split(" | ")[1] for row in rows] == list(points)
    arms = outcome.summary["configs"]["digits"]["arms"]
    for row, arm in zip(rows, points, strict=True):
        for metric in ("accuracy", "loss"):
            s = arms[arm]["metrics"][metric]
            cell = "—" if s["iqm"] is None else f"{s['iqm']:.3g} [{s['iqm_ci'][0]:.3g}, "
            assert cell in row, (arm, metric, row)
    assert rows[0].startswith("| 0.05 | broken | 0 |")
    import matplotlib.image

    image = matplotlib.image.imread(root / "figures" / "sweep_digits.png")
    assert image.shape[1] > 600 and image[..., :3].std() > 0.05


def test_the_phase_diagnostic_section_and_figure_from_real_run_folders(tmp_path):
    # The fixture's learning rate follows a cosine with restarts every 10 steps, evaluated
    # every 5: one evaluation per half cycle, so nothing is split between the halves.
    base = tmp_path / "cyclic.toml"
    base.write_text(
        "seed = 0\nsteps = 40\nlr = 1.0\nl2 = 0.0001\neval_every = 5\ntest_fraction = 0.3\n"
        "fail = false\n"
        '[schedule]\nkind = "cosine_restarts"\nmax = 1.0\nmin = 0.0\nperiod = 10\n'
    )
    extra = '[diagnostic]\nclock = "schedule"\nbins = 2\n'
    path = write_study(tmp_path, f'config = "{base.as_posix()}"', extra)
    study = load_study(path)
    assert study.diagnostic.metrics == ("accuracy",) and study.diagnostic.bins == 2
    outcome = run_study(study, runs_root=tmp_path / "runs", workers=2, progress=False, cwd=REPO)
    assert not outcome.failed
    summary, root = outcome.summary, tmp_path / "runs" / "digits_lr"
    assert summary["diagnostic"] == {
        "metrics": ["accuracy"],
        "clock": "schedule",
        "bins": 2,
        "skip_cycles": 0,
    }
    fast = summary["configs"]["cyclic"]["diagnostic"]["accuracy"]["fast"]
    assert fast["runs"] == 2 and summary["configs"]["cyclic"]["diagnostic"]["accuracy"]["slow"]
    for seed in range(2):
        high, low = fast["high"]["scores"][seed], fast["low"]["scores"][seed]
        history = read_metrics(root / "fast" / f"seed{seed}")["history"]
        accuracy = [h["accuracy"] for h in history]
        assert high + low == pytest.approx(accuracy[-1] - accuracy[0])  # parts add up
        assert fast["bins"][0]["scores"][seed] == pytest.approx(high)  # bin 0 = the high half
    assert fast["split_halves"] == 0.0 and fast["bins"][1]["split"] == 0.0
    text = (root / "results.md").read_text()
    assert "### Where in the cycle: `accuracy` on `schedule`" in text
    assert "| arm | n | high | low | high − low | 0–0.5 | 0.5–1 | split |" in text
    assert "| fast | 2 | " in text[text.index("### Where in the cycle") :]
    import matplotlib.image

    image = matplotlib.image.imread(root / "figures" / "phase_cyclic.png")
    assert image.shape[0] > 150 and image[..., :3].std() > 0.05

    # skip_cycles = 1: the same runs, counted from the evaluation at the first restart (10).
    later = load_study(
        write_study(tmp_path, f'config = "{base.as_posix()}"', extra + "skip_cycles = 1\n")
    )
    assert later.diagnostic.skip_cycles == 1
    summary = summarize(later, outcome.runs, REPO)
    fast = summary["configs"]["cyclic"]["diagnostic"]["accuracy"]["fast"]
    assert fast["runs"] == 2 and fast["skip_cycles"] == 1
    for seed in range(2):
        history = read_metrics(root / "fast" / f"seed{seed}")["history"]
        at = {h["step"]: h["accuracy"] for h in history}
        high, low = fast["high"]["scores"][seed], fast["low"]["scores"][seed]
        assert high + low == pytest.approx(history[-1]["accuracy"] - at[10])
    assert "The clock's first cycle (a run learning from scratch) left out" in results_markdown(
        summary
    )


# -- resuming ---------------------------------------------------------------------------------


@pytest.fixture
def executed(tmp_path, monkeypatch):
    """The run folders the trainer was started in, as the trainer itself logs them."""
    log = tmp_path / "executed.txt"
    monkeypatch.setenv("STUDY_FIXTURE_LOG", str(log))

    def read() -> list[str]:
        lines = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        root = tmp_path / "runs" / "digits_lr"
        return sorted(Path(line).relative_to(root).as_posix() for line in lines)

    return read


def test_a_second_start_runs_only_missing_or_incomplete_runs(tmp_path, executed):
    runs = tmp_path / "runs"
    study = load_study(write_study(tmp_path))
    options = dict(runs_root=runs, workers=2, progress=False, cwd=REPO)
    run_study(study, **options)
    assert executed() == ["fast/seed0", "fast/seed1", "slow/seed0", "slow/seed1"]

    root = runs / "digits_lr"
    (root / "fast/seed0/metrics.json").unlink()  # never finished
    (root / "slow/seed1/metrics.json").write_text('{"final": null, "history": []}')  # cut off
    outcome = run_study(study, **options)
    assert executed() == ["fast/seed0", "slow/seed1"]
    assert outcome.summary["done"] == 4 and not outcome.summary["failed"]

    outcome = run_study(study, **options)
    assert executed() == [] and outcome.todo == []
    assert outcome.summary["configs"]["digits"]["arms"]["fast"]["metrics"]["loss"]["n"] == 2

    (tmp_path / "study.toml").write_text(
        (tmp_path / "study.toml").read_text().replace("lr = 1.0", "lr = 0.9")
    )
    changed = load_study(tmp_path / "study.toml")
    before = read_metrics(root / "fast/seed0")
    run_study(changed, **options)  # the arm changed: its runs are stale
    assert executed() == ["fast/seed0", "fast/seed1"]
    (aside,) = (root / "fast").glob("seed0.replaced-*")  # the old run is kept, not overwritten
    assert read_metrics(aside) == before != read_metrics(root / "fast/seed0")
    run_study(changed, seeds=3, **options)
    assert executed() == ["fast/seed2", "slow/seed2"]


@pytest.mark.parametrize("record", [{"argv": "not a list"}, {"started": "no argv"}, None])
def test_a_cut_off_run_whose_record_names_no_command_line_is_set_aside(tmp_path, record):
    """Only a run that recorded this command line resumes; a checkpoint beside a record that
    names none (malformed or missing) is kept aside, and the run starts afresh."""
    from common.study.run import prepare_run

    run = plan_runs(load_study(write_study(tmp_path)), tmp_path / "runs")[0]
    folder = Path(run.dir)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    if record is not None:
        (folder / "study_run.json").write_text(json.dumps(record))
    argv, _ = prepare_run(run, REPO)
    assert argv == list(run.argv) and "--resume" not in argv
    (aside,) = folder.parent.glob(f"{folder.name}.replaced-*")
    assert (aside / "checkpoints" / "last.pt").read_bytes() == b"a checkpoint"


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_as_if_never_stopped(
    tmp_path, executed, monkeypatch
):
    study = load_study(write_study(tmp_path))  # 40 steps, a checkpoint every 20
    options = dict(workers=2, progress=False, cwd=REPO)
    monkeypatch.setenv("STUDY_FIXTURE_KILL_AT", "20")
    outcome = run_study(study, runs_root=tmp_path / "runs", **options)
    assert outcome.summary["done"] == 0 and len(outcome.failed) == 4
    assert all(r.returncode == -9 for r in outcome.failed)
    root = tmp_path / "runs" / "digits_lr"
    assert "killed by signal 9" in (root / "fast/seed0/error.txt").read_text()
    assert len(executed()) == 4

    monkeypatch.delenv("STUDY_FIXTURE_KILL_AT")
    outcome = run_study(study, runs_root=tmp_path / "runs", **options)
    assert executed() == ["fast/seed0", "fast/seed1", "slow/seed0", "slow/seed1"]
    assert outcome.summary["done"] == 4 and not outcome.failed
    record = json.loads((root / "fast/seed0/study_run.json").read_text())
    assert record["resumed"] is True and record["argv"][record["argv"].index("--out") + 1]

    run_study(study, runs_root=tmp_path / "fresh", **options)  # the same runs, never stopped
    for run in ("fast/seed0", "fast/seed1", "slow/seed0", "slow/seed1"):
        fresh = read_metrics(tmp_path / "fresh" / "digits_lr" / run)
        assert read_metrics(root / run) == fresh and len(fresh["history"]) == 2
    assert not list(root.glob("*/*.replaced-*"))


def test_resumed_runs_are_counted_and_marked_in_the_summary_and_table(tmp_path):
    study = load_study(write_study(tmp_path))
    runs = plan_runs(study, tmp_path / "runs")
    run_study(study, runs_root=tmp_path / "runs", workers=2, progress=False, cwd=REPO)
    root = tmp_path / "runs" / "digits_lr"
    for run, resumes in (("fast/seed1", 2), ("slow/seed0", 1)):  # as both trainers record it
        metrics = read_metrics(root / run)
        metrics["final"]["resumes"] = resumes
        (root / run / "metrics.json").write_text(json.dumps(metrics))
    # the other runs' metrics.json have no "resumes" (an older trainer): never resumed

    summary = summarize(study, runs, REPO)
    arms = summary["configs"]["digits"]["arms"]
    assert arms["fast"]["resumes"] == [0, 2] and arms["fast"]["resumed"] == 1
    assert arms["slow"]["resumes"] == [1, 0] and arms["slow"]["resumed"] == 1
    assert sorted((r["arm"], r["seed"], r["resumes"]) for r in summary["resumed"]) == [
        ("fast", 1, 2),
        ("slow", 0, 1),
    ]
    text = results_markdown(summary)
    assert "4 of 4 runs done (2 resumed from a checkpoint)" in text
    assert "| fast (1 resumed) | 2 |" in text and "| slow (baseline; 1 resumed) | 2 |" in text
    assert "## Resumed runs (2)" in text
    assert f"- `{root / 'fast/seed1'}`: seed 1, resumed 2 times" in text
    assert f"- `{root / 'slow/seed0'}`: seed 0, resumed once" in text


def test_metrics_added_after_training_are_listed_in_the_summary_and_table(tmp_path):
    """A run whose metrics.json says metrics were added after training (``final.rescored``,
    as ``gancycle-eval --record`` writes it) is listed with what was added."""
    study = load_study(write_study(tmp_path))
    runs = plan_runs(study, tmp_path / "runs")
    run_study(study, runs_root=tmp_path / "runs", workers=2, progress=False, cwd=REPO)
    root = tmp_path / "runs" / "digits_lr"
    for run in ("fast/seed0", "fast/seed1", "slow/seed1"):
        metrics = read_metrics(root / run)
        metrics["final"]["rescored"] = {"added": ["G.modes_held", "ema.modes_held"], "at": "x"}
        (root / run / "metrics.json").write_text(json.dumps(metrics))

    summary = summarize(study, runs, REPO)
    assert summary["rescored"] == [
        {
            "added": ["G.modes_held", "ema.modes_held"],
            "runs": ["digits/slow/seed1", "digits/fast/seed0", "digits/fast/seed1"],
        }
    ]
    text = results_markdown(summary)
    assert "## Metrics added after training (3 runs)" in text
    assert "- G.modes_held, ema.modes_held: digits/slow seed 1; digits/fast seeds 0–1" in text
    plain = summarize(study, plan_runs(study, tmp_path / "other"), REPO)
    assert plain["rescored"] == [] and "after training" not in results_markdown(plain)


def test_the_backend_of_each_run_is_recorded_and_a_mix_is_reported(tmp_path):
    study = load_study(write_study(tmp_path))
    runs = plan_runs(study, tmp_path / "runs")
    run_study(study, runs_root=tmp_path / "runs", workers=2, progress=False, cwd=REPO)
    root = tmp_path / "runs" / "digits_lr"
    record = json.loads((root / "fast/seed0/study_run.json").read_text())
    assert record["backend"] == "local"
    summary = summarize(study, runs, REPO)
    assert summary["backends"] == {"local": 4}
    assert "Backends:" not in results_markdown(summary)  # one backend: nothing to say

    record["backend"] = "population"
    (root / "fast/seed0/study_run.json").write_text(json.dumps(record))
    record = json.loads((root / "slow/seed1/study_run.json").read_text())
    del record["backend"]  # a run from before runs recorded their backend
    (root / "slow/seed1/study_run.json").write_text(json.dumps(record))
    summary = summarize(study, runs, REPO)
    assert list(summary["backends"].items()) == [
        ("local", 2),
        ("not recorded", 1),
        ("population", 1),
    ]
    assert (
        "Backends: local (2), not recorded (1), population (1); a population member matches "
        "its single run only to rounding." in results_markdown(summary)
    )


def test_only_runs_the_named_configs_and_reports_all(tmp_path, executed):
    (tmp_path / "l2.toml").write_text(
        "seed = 0\nsteps = 20\nlr = 0.5\nl2 = 0.01\neval_every = 10\ntest_fraction = 0.3\n"
        "fail = false\n"
    )
    study = load_study(write_study(tmp_path, f'configs = ["digits", "{tmp_path / "l2.toml"}"]'))
    options = dict(runs_root=tmp_path / "runs", workers=2, progress=False, cwd=REPO)
    outcome = run_study(study, only=["digits"], **options)
    assert executed() == [
        "digits/fast/seed0",
        "digits/fast/seed1",
        "digits/slow/seed0",
        "digits/slow/seed1",
    ]
    assert outcome.summary["configs"]["digits"]["arms"]["fast"]["done"] == 2
    assert outcome.summary["configs"]["l2"]["arms"]["fast"]["done"] == 0
    assert len(outcome.summary["pending"]) == 4 and not outcome.summary["failed"]
    text = (tmp_path / "runs" / "digits_lr" / "results.md").read_text()
    assert "## l2\n\nNo run done yet." in text and "## Not run yet (4)\n\n4 of l2." in text
    with pytest.raises(StudyError, match="--only 'grid': not a config of digits_lr"):
        run_study(study, only=["grid"], **options)


def test_stopping_the_local_backend_stops_its_runs_and_starts_no_more(tmp_path):
    # Seed 0 ends at once, the others would sleep for a minute.
    sleeper = "import sys, time; time.sleep(60 * (sys.argv[sys.argv.index('--seed') + 1] != '0'))"
    study = parse_study({**GOOD, "command": f'python -c "{sleeper}"', "arms": {"a": {}}})
    runs = plan_runs(study, tmp_path / "runs", seeds=4)
    started = time.perf_counter()
    results = run_local(runs, REPO, workers=2)
    assert next(results).run.seed == 0
    results.close()  # what a Ctrl-C in the consumer does too
    assert time.perf_counter() - started < 30
    started_runs = sorted(p.parent.name for p in (tmp_path / "runs").glob("s/a/*/study_run.json"))
    assert started_runs in (["seed0", "seed1"], ["seed0", "seed1", "seed2"])  # never seed3
    for seed in started_runs[1:]:
        record = json.loads((tmp_path / f"runs/s/a/{seed}/study_run.json").read_text())
        assert record["returncode"] < 0 and not record["ok"]  # terminated


def _children(pid: int, needle: str) -> list[int]:
    """Live processes whose parent is ``pid`` and whose command line holds ``needle`` (Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == pid and needle in cmdline:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie has ended; it waits only for a parent to collect its exit status)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_trainers_end_with_a_study_that_is_sigkilled(tmp_path):
    path = write_study(tmp_path)  # trainers of 10^7 steps: they would run for an hour
    study = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(path), "--runs-root", str(tmp_path / "runs")]
        + ["--workers", "2", "--steps", str(10**7)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    trainers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(trainers) < 2:
            assert time.monotonic() < deadline and study.poll() is None, "no trainers started"
            time.sleep(0.2)
            trainers = _children(study.pid, "study_fixture_train.py")
        study.send_signal(signal.SIGKILL)  # no handler, no cleanup: only the kernel acts
        study.wait()
        deadline = time.monotonic() + 5
        while any(map(_alive, trainers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, trainers)), "trainers outlived their study"
    finally:
        study.kill()
        study.wait()
        for pid in trainers:  # if the test failed, do not leave them running
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# -- the command line -------------------------------------------------------------------------


def study_cli(*args, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["study.py", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    return exit_info.value.code


def test_cli_dry_run_prints_the_commands_and_runs_nothing(tmp_path, monkeypatch, capsys):
    path = write_study(tmp_path)
    monkeypatch.chdir(REPO)
    code = study_cli(
        path, "--steps", 7, "--runs-root", tmp_path / "runs", "--dry-run", monkeypatch=monkeypatch
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 4
    root = (tmp_path / "runs" / "digits_lr-steps7").as_posix()  # a quick try's own folder
    assert out[0] == (
        f"python tests/study_fixture_train.py --config digits --out {root}/slow/seed0 "
        "--seed 0 --steps 7 --set steps=40 --set lr=0.1"
    )
    assert not (tmp_path / "runs").exists()


def test_cli_report_only_writes_the_report_of_the_runs_done_so_far(
    tmp_path, monkeypatch, capsys, executed
):
    """A long study's partial results, read while it runs (or after it stopped): --report-only
    writes summary.json, results.md and the figures from the runs done so far and starts no
    run, also none of the missing ones."""
    path = write_study(tmp_path)
    root = tmp_path / "runs" / "digits_lr"
    monkeypatch.chdir(REPO)
    assert study_cli(path, "--runs-root", tmp_path / "runs", monkeypatch=monkeypatch) == 0
    assert len(executed()) == 4
    (root / "fast/seed1/metrics.json").unlink()  # a run still training
    for name in ("summary.json", "results.md"):
        (root / name).unlink()
    capsys.readouterr()

    code = study_cli(
        path, "--runs-root", tmp_path / "runs", "--report-only", monkeypatch=monkeypatch
    )
    out, err = capsys.readouterr()
    assert code == 0 and executed() == []
    assert "3 of 4 runs done" in err and out.strip().startswith(f"{root}/results.md")
    summary = json.loads((root / "summary.json").read_text())
    assert summary["done"] == 3
    assert [(run["arm"], run["seed"]) for run in summary["pending"]] == [("fast", 1)]
    fast = summary["configs"]["digits"]["arms"]["fast"]["metrics"]["loss"]
    assert fast["n"] == 1 and fast["poi_n"] == 1  # against slow's seed 0 only, not both slow seeds
    compared = compare_arms(summary, "fast", "slow")["digits"]["loss"]  # a partial summary too
    assert (compared["n"], compared["poi"], compared["poi_ci"]) == (1, fast["poi"], fast["poi_ci"])
    assert "3 of 4 runs done" in (root / "results.md").read_text()
    assert not (root / "fast/seed1/metrics.json").exists()

    code = study_cli(path, "--report-only", "--dry-run", monkeypatch=monkeypatch)
    assert code == 2 and "--report-only" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["no_such_study"], "error: study 'no_such_study': not a shipped study"),
        (["{study}", "--workers", "0"], "error: --workers 0: must be >= 1"),
        (["{study}", "--seeds", "0"], "error: --seeds 0: must be >= 1"),
        (["{study}", "--address", "auto"], "error: --address: only for --backend ray"),
        (["{bad}"], "bad.toml: baseline = 'nope': not an arm; arms: slow, fast"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_code_2(args, message, tmp_path, monkeypatch, capsys):
    study = write_study(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(study.read_text().replace('baseline = "slow"', 'baseline = "nope"'))
    args = [a.format(study=study, bad=bad) for a in args]
    code = study_cli(*args, "--runs-root", tmp_path / "runs", monkeypatch=monkeypatch)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "runs").exists()


# -- study files ------------------------------------------------------------------------------


GOOD = {
    "name": "s",
    "command": "python train.py",
    "config": "digits",
    "seeds": 3,
    "metrics": ["final.accuracy"],
    "arms": {"a": {}, "b": {"lr": 0.1}},
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"arm": 1}, "arm: unknown key; allowed: name, description, command"),
        ({"command": ""}, "command = '': must be a non-empty string"),
        ({"seeds": 0}, "seeds = 0: must be an integer >= 1"),
        ({"baseline": "c"}, "baseline = 'c': not an arm; arms: a, b"),
        ({"configs": ["x"]}, "give exactly one of config = NAME or configs"),
        ({"metrics": []}, "metrics = []: must be a list of dotted paths"),
        ({"higher_is_better": {"loss": False}}, "higher_is_better.loss: not a metric"),
        ({"arms": {}}, "arms: no arms"),
        ({"arms": {"a/b": {}}}, "arms.a/b: letters, digits"),
        ({"curve": {"key": "history", "z": "step"}}, "curve.z: unknown key; allowed: key, x, y"),
        (
            {"curve": {"key": "history", "y": ["acc", 1]}},
            "curve = {'key': 'history', 'y': ['acc', 1]}: must",
        ),
        ({"shared": {"lr": float("nan")}}, "shared.lr = nan: must be a finite number"),
        ({"metrics": {"t": {"reach": "acc"}}}, "metrics.t = {'reach': 'acc'}: must be a dotted"),
        ({"metrics": {"t": {"reach": "acc", "at_least": 1}}}, "metrics.t: a reach or area metric"),
        ({"metrics": {"t": {"area": "acc"}}}, "metrics.t: a reach or area metric needs"),
        ({"diagnostic": {"clock": "lr.G"}}, "diagnostic: needs curve"),
        (
            {"curve": "history", "diagnostic": {"clock": "lr", "bins": 0}},
            "diagnostic.bins = 0: must be an integer >= 1",
        ),
        ({"curve": "history", "diagnostic": {"metric": "acc"}}, "diagnostic.clock = None"),
        ({"curve": "history", "diagnostic": {"clock": "lr", "x": 1}}, "diagnostic.x: unknown"),
        (
            {"curve": "history", "diagnostic": {"clock": "lr", "skip_cycles": -1}},
            "diagnostic.skip_cycles = -1: must be an integer >= 0",
        ),
        ({"arms": {"a": {"on": {"nope": {}}}}}, "arms.a.on.nope: not a config; configs: digits"),
        ({"views": {"v": {"arm": "z", "metrics": {}}}}, "views.v.arm = 'z': not an arm"),
        ({"views": {"a": {"arm": "b", "metrics": {}}}}, "views.a: must be a new name"),
        ({"views": {"v": {"arm": "b", "metrics": {"x": "y"}}}}, "views.v.metrics.x: not a metric"),
        ({"readings": {"r": "acc"}}, "readings.r: must be a table metric = path"),
        ({"readings": {"r": {"x": "y"}}}, "readings.r.x: not a metric; metrics: final.accuracy"),
        (
            {
                "readings": {"r": {"final.accuracy": "y"}},
                "views": {"b_r": {"arm": "a", "metrics": {"final.accuracy": "z"}}},
            },
            "readings.r: its row for arm b, 'b_r', must be a new name",
        ),
        ({"sweep": {"points": {"a": 0, "b": 1}}}, "sweep.x = None: what the knob is"),
        ({"sweep": {"x": "lr", "points": {"a": 0}}}, "sweep.points = {'a': 0}: a table arm ="),
        ({"sweep": {"x": "lr", "points": {"a": 0, "c": 1}}}, "sweep.points.c: not an arm or view"),
        ({"sweep": {"x": "lr", "points": {"a": 0, "b": "1"}}}, "sweep.points.b = '1': must be"),
        ({"sweep": {"x": "lr", "points": {"a": 0, "b": 1}, "y": 2}}, "sweep.y: unknown key"),
    ],
)
def test_study_file_errors_name_the_key(change, message):
    with pytest.raises(StudyError, match="^study: " + message.replace("[", r"\[")):
        parse_study({**GOOD, **change})


def test_study_defaults():
    study = parse_study(GOOD)
    assert study.baseline == "a" and study.headline == "final.accuracy"
    assert study.higher_is_better == {"final.accuracy": True} and study.curve is None
    assert study.arms == {"a": Arm(), "b": Arm(sets=("lr=0.1",))}


def test_area_under_the_curve_is_its_trapezoid_mean_over_the_steps():
    study = parse_study(
        {
            **GOOD,
            "curve": {"key": "history", "y": "acc"},
            "metrics": {"area": {"area": "acc"}, "last": "final.accuracy"},
        }
    )
    assert (
        study.higher_is_better["area"] and str(study.metrics["area"]) == "area under acc per step"
    )
    history = [{"step": 10, "acc": 0.0}, {"step": 20, "acc": 1.0}, {"step": 40, "acc": 1.0}]
    # (0.5 * 10 + 1.0 * 20) / 30: the mean of the curve between its first and last step
    assert metric_value(study, {"history": history}, study.metrics["area"]) == pytest.approx(
        25 / 30
    )
    assert metric_value(study, {"history": history[:1]}, study.metrics["area"]) == 0.0
    assert metric_value(study, {"history": []}, study.metrics["area"]) is None


def test_overrides_reach_the_trainer_with_their_types():
    table = {
        "lr": {"G": {"max": 2e-4}},
        "curriculum.mode": "anti",
        "eval": {"difficulties": [0.0, 0.5, 1.0]},
        "reset": {"enabled": True},
        "steps": 300_000,
    }
    sets = overrides(table, "arms.x")
    assert sets == (
        "lr.G.max=0.0002",
        'curriculum.mode="anti"',
        "eval.difficulties=[0.0, 0.5, 1.0]",
        "reset.enabled=true",
        "steps=300000",
    )
    config = {
        "lr": {"G": {"kind": "cosine", "max": 1e-3}},
        "curriculum": {"mode": "fixed"},
        "eval": {"difficulties": [1.0]},
        "reset": {"enabled": False},
        "steps": 1000,
    }
    assert apply_overrides(config, sets) == {
        "lr": {"G": {"kind": "cosine", "max": 2e-4}},
        "curriculum": {"mode": "anti"},
        "eval": {"difficulties": [0.0, 0.5, 1.0]},
        "reset": {"enabled": True},
        "steps": 300_000,
    }


def test_paths_into_metrics_json():
    metrics = {
        "eval": {"eval/return/d=0.5": 200.0, "eval/return/d=1": 150.0, "eval": {"x": 1}},
        "history": [{"step": 10}, {"step": 20}],
    }
    assert get_path(metrics, "eval.eval/return/d=0.5") == 200.0  # a key with a dot, whole
    assert get_path(metrics, "eval.eval/return/d=1") == 150.0
    assert get_path(metrics, "eval.eval.x") == 1
    assert get_path(metrics, "history.-1.step") == 20
    for missing in ("eval.eval/return/d=0.7", "history.2.step", "history.x", "eval.eval.x.y"):
        with pytest.raises(KeyError):
            get_path(metrics, missing)


def test_find_study_by_path_and_unknown_name(tmp_path):
    path = write_study(tmp_path)
    assert find_study(str(path)).name == "digits_lr"
    with pytest.raises(StudyError, match="study 'nope': not a shipped study"):
        find_study("nope")


# -- Ray ----------------------------------------------------------------------------------------


def test_ray_backend_on_a_local_ray_instance(tmp_path):
    import ray  # `make test` installs the extra, cyclelab[ray]: a missing ray fails here

    study = load_study(write_study(tmp_path))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcome = run_study(
            study, seeds=1, backend="ray", runs_root=tmp_path / "runs", progress=False, cwd=REPO
        )
        assert ray.is_initialized()  # an instance the caller started is left running
    finally:
        ray.shutdown()
    assert sorted(r.run.name for r in outcome.results if r.ok) == [
        "digits/fast/seed0",
        "digits/slow/seed0",
    ]
    for arm in ("fast", "slow"):
        assert read_metrics(tmp_path / "runs" / "digits_lr" / arm / "seed0")["final"]["accuracy"]
    assert outcome.summary["done"] == 2


def test_ray_backend_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    study = load_study(write_study(tmp_path))
    with pytest.raises(StudyError, match=r"Ray is not installed; pip install cyclelab\[ray\]"):
        run_study(study, backend="ray", runs_root=tmp_path / "runs", progress=False, cwd=REPO)


# -- the shipped studies ----------------------------------------------------------------------


def _first_runs(runs, label):
    return {run.arm: run for run in runs if run.label == label and run.seed == 0}


def _means(checked, stride: int = 7) -> dict[str, float]:
    """Each network's mean learning rate over every ``stride``-th step of the run (a stride
    prime to the periods, so restarts are not over-sampled: within 0.2% of the exact mean)."""
    steps = np.arange(0, checked.config["steps"], stride)
    return {net: float(checked.schedules[net].values(steps).mean()) for net in "GD"}


def test_gan_study_v2_arms_share_budget_seeds_and_mean_rates():
    from gancycle.settings import SCHEMA, check_config

    study = find_study("gan_rhythm")
    runs = plan_runs(study)
    assert study.seeds == 10 and len(runs) == 2 * 19 * 10
    assert study.diagnostic.clock == "lr.G" and study.diagnostic.bins == 8
    assert study.diagnostic.skip_cycles == 1  # G's first cycle: learning from scratch
    for arm in study.arms:  # every arm read three ways on the same runs
        assert study.views[f"{arm}_ema"].metrics["modes"] == "final.ema.modes"
        assert study.views[f"{arm}_ensemble"].metrics["modes"] == "final.ensemble.modes"
    m = 5.05e-4
    for label, period, every in (("grid25", 5000, 625), ("ring8", 2000, 250)):
        first = {
            arm: check_config(SCHEMA.load(run.config, _sets(run)))
            for arm, run in _first_runs(runs, label).items()
        }
        assert len(first) == 19
        assert len({c.config["steps"] for c in first.values()}) == 1
        assert {c.config["eval"]["every"] for c in first.values()} == {every}
        means = {arm: _means(checked) for arm, checked in first.items()}
        for arm, mean in means.items():
            expected = {
                "constant_peak": (1e-3, 1e-3),
                "ttur": (m, 3 * m),
                "ttur_cycled": (m, 3 * m),
            }.get(arm, (m, m))
            assert mean["G"] == pytest.approx(expected[0], rel=2e-3), (label, arm)
            assert mean["D"] == pytest.approx(expected[1], rel=2e-3), (label, arm)
        steps = np.arange(0, first["constant"].config["steps"], 10)

        def rates(arm, net, first=first, steps=steps):
            return first[arm].schedules[net].values(steps)

        def correlation(arm, rates=rates):
            return np.corrcoef(rates(arm, "G"), rates(arm, "D"))[0, 1]

        assert correlation("anti_mirror") == pytest.approx(-1.0, abs=1e-9)
        np.testing.assert_allclose(rates("in_phase", "D"), rates("in_phase", "G"))
        # The sweep's points are D ahead of G by their value: D(t) = G(t + x P), G unshifted.
        assert list(study.sweep.points.values()) == [k / 8 for k in range(8)]
        cycle = first["in_phase"].schedules["G"]
        for arm, x in study.sweep.points.items():
            np.testing.assert_allclose(rates(arm, "G"), rates("in_phase", "G"))
            ahead = cycle.values(steps + round(x * period))
            np.testing.assert_allclose(rates(arm, "D"), ahead, rtol=1e-9, err_msg=arm)
        assert -0.7 < correlation("shift_D") < -0.6  # a shift, not anti-phase
        assert first["shift_D"].schedules["D"].value(0) == pytest.approx(m, rel=0.01)
        assert first["shift_G"].schedules["D"].value(0) == pytest.approx(1e-3)  # D at its peak
        assert np.ptp(rates("G_only", "D")) == 0 and np.ptp(rates("D_only", "G")) == 0
        assert np.ptp(rates("D_only", "D")) > 9e-4
        anneal = rates("anneal", "G")
        assert np.all(np.diff(anneal) <= 0) and anneal[-1] == pytest.approx(1e-5, abs=1e-7)
        np.testing.assert_allclose(rates("anneal", "D"), anneal)
        offsets = [first[f"offset_{k}_8"].config["lr"]["D"] for k in (1, 2, 3, 5, 6, 7)]
        assert [o["offset"] for o in offsets] == [k / 8 for k in (1, 2, 3, 5, 6, 7)]
        assert {o["period"] for o in offsets} == {period}
        assert first["pacgan4_mirror"].config["model"]["pack"] == 4
        assert first["pacgan4_mirror"].config["lr"] == first["anti_mirror"].config["lr"]
        assert first["pacgan4_const"].config["lr"] == first["constant"].config["lr"]


def test_gan_control_arms_differ_only_in_packing_at_pacgans_settings():
    """gan_control's arms are PacGAN's GAN and PacGAN4: the same budget, seeds, evaluation and
    rates (their Adam at 1e-4 with beta1 0.8), D scoring 100 packs per batch in both; only the
    pack size (and with it the samples per batch) differs."""
    from common.config import get
    from gancycle.settings import SCHEMA, check_config

    study = find_study("gan_control")
    runs = plan_runs(study)
    assert study.seeds == 10 and study.baseline == "gan" and len(runs) == 2 * 10
    first = {
        arm: check_config(SCHEMA.load(run.config, _sets(run))).config
        for arm, run in _first_runs(runs, "grid25_pacgan").items()
    }
    gan, pacgan4 = first["gan"], first["pacgan4"]
    assert (gan["model"]["pack"], pacgan4["model"]["pack"]) == (1, 4)
    assert gan["data"]["batch"] // 1 == pacgan4["data"]["batch"] // 4 == 100
    assert gan["steps"] == 50_000 and gan["eval"]["samples"] == 2500
    for key in ("lr.G", "lr.D"):
        assert get(gan, key)["kind"] == "constant" and get(gan, key)["max"] == 1e-4
    assert (gan["optim"]["name"], gan["optim"]["beta1"]) == ("adam", 0.8)

    def rest(config):  # all but the pack and the batch
        other = {k: v for k, v in config.items() if k != "seed"}
        other["model"] = {k: v for k, v in config["model"].items() if k != "pack"}
        other["data"] = {k: v for k, v in config["data"].items() if k != "batch"}
        return other

    assert rest(gan) == rest(pacgan4)


def _sets(run) -> list[str]:
    return [run.argv[i + 1] for i, arg in enumerate(run.argv) if arg == "--set"]


def _applied_rates(config, rollout: int) -> np.ndarray:
    """The learning rates SB3 applies: one per rollout, read at the rollout's end."""
    clock = from_spec(config["lr"])
    return np.array([clock.value(k * rollout) for k in range(1, config["steps"] // rollout + 1)])


RL_ARMS = {
    "flat_zoo": "fixed",
    "flat_cosine": "fixed",
    "anti_phase": "anti",
    "in_phase": "in",
    "wave_const": "anti",
    "random_d": "random_d",
    "ramp": "linear",
    "gated": "gated",
}


@pytest.mark.parametrize(
    "name, seeds, rollout, rollouts, period",
    [("rl_rhythm", 5, 16 * 1024, 62, 16), ("rl_rhythm_cartpole", 20, 8 * 32, 391, 98)],
)
def test_rl_study_v2_budget_whole_rollout_cycles_and_mean_matched_rates(
    name, seeds, rollout, rollouts, period
):
    from rlcycle.settings import SCHEMA, check_config

    study = find_study(name)
    runs = plan_runs(study)
    assert len(runs) == len(RL_ARMS) * seeds
    first = {
        arm: check_config(SCHEMA.load(run.config, _sets(run))).config
        for arm, run in _first_runs(runs, next(iter(study.configs))).items()
    }
    assert {arm: c["curriculum"]["mode"] for arm, c in first.items()} == RL_ARMS
    for config in first.values():  # the budget, whole rollouts, the evaluation
        assert config["steps"] == rollouts * rollout
        assert config["eval"]["difficulties"] == [0.0, 0.5, 1.0]
        assert config["eval"]["episodes"] == 50 and config["eval"]["sampled"]
        assert config["eval"]["every"] % rollout == 0
    cosines = ("flat_cosine", "anti_phase", "in_phase", "random_d", "gated")
    zoo = _applied_rates(first["flat_zoo"], rollout).mean()
    if name == "rl_rhythm":
        assert zoo == pytest.approx(3e-4)  # the zoo's constant
    else:  # the zoo's lin_1e-3: 1e-3 at the start, 0 at the end
        values = from_spec(first["flat_zoo"]["lr"]).values(
            np.array([0, first["flat_zoo"]["steps"]])
        )
        assert values == pytest.approx([1e-3, 0.0], abs=1e-12)
    for arm in cosines:
        lr = first[arm]["lr"]
        assert lr["kind"] == "cosine_restarts" and lr["period"] == period * rollout
        assert _applied_rates(first[arm], rollout).mean() == pytest.approx(zoo, rel=1e-4), arm
        assert lr == first["flat_cosine"]["lr"]
        last = from_spec(lr).phase(first[arm]["steps"])
        assert 0.75 < last.position < 1.0  # the last update at a low rate, not a restart
    assert _applied_rates(first["wave_const"], rollout).mean() == pytest.approx(zoo, rel=1e-4)
    assert np.ptp(_applied_rates(first["wave_const"], rollout)) < 3e-10  # constant, yet
    flat, wave = from_spec(first["wave_const"]["lr"]), from_spec(first["anti_phase"]["lr"])
    for step in range(0, first["wave_const"]["steps"], rollout):  # the clock's level cycles
        assert flat.phase(step).level == pytest.approx(wave.phase(step).level), step
    assert first["ramp"]["lr"] == first["flat_zoo"]["lr"]
    assert first["flat_zoo"]["curriculum"]["value"] == 1.0
    if name == "rl_rhythm_cartpole":  # the zoo's lin_0.2 clip range for every arm
        clip = from_spec(first["gated"]["ppo"]["clip_range"])
        steps = first["gated"]["steps"]
        assert clip.values(np.array([0, steps / 2, steps])) == pytest.approx([0.2, 0.1, 0.0])


def test_the_shipped_lunarlander_default_is_the_studied_anti_phase_arm():
    """The default trains what rl_rhythm v2 measured as `anti_phase` (mean-matched cosine,
    16-rollout periods, the zoo's budget and PPO), so the README's numbers for it hold."""
    from rlcycle.settings import SCHEMA, check_config

    study = find_study("rl_rhythm")
    arm = _first_runs(plan_runs(study), next(iter(study.configs)))["anti_phase"]
    studied = check_config(SCHEMA.load(arm.config, _sets(arm))).config
    shipped = check_config(SCHEMA.load("lunarlander", [])).config
    scored_apart = ("eval", "snapshots", "device", "progress", "seed")
    assert {k: v for k, v in shipped.items() if k not in scored_apart} == {
        k: v for k, v in studied.items() if k not in scored_apart
    }
    assert shipped["eval"]["sampled"]  # both views, as the study scored them


def test_progress_off_a_terminal_is_one_line_per_finished_run(tmp_path, capsys):
    """A study's stderr in a log file: a line per run with the count and the time left, no bar
    redrawn with carriage returns."""
    study = load_study(write_study(tmp_path))
    run_study(study, runs_root=tmp_path / "runs", workers=1, progress=True, cwd=REPO)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert [line.split(";")[0] for line in lines] == [
        f"digits_lr: {k}/4 runs" for k in (1, 2, 3, 4)
    ]
    assert "left" in lines[0] and lines[-1].endswith("all done")
    assert sorted(line.split("; ")[1].split(" ok in ")[0] for line in lines) == [
        f"digits/{arm}/seed{seed}" for arm in ("fast", "slow") for seed in (0, 1)
    ]


def test_runs_of_an_edited_base_config_are_set_aside_and_run_again(tmp_path, executed):
    """The same command line trains something else once a base config it names is edited: a
    study started again finds those runs by their config.toml, moves them aside and reruns
    them; the other config's runs are kept."""
    base = tmp_path / "l2.toml"
    base.write_text(
        "seed = 0\nsteps = 40\nlr = 0.5\nl2 = 0.01\neval_every = 20\ntest_fraction = 0.3\n"
        "fail = false\n"
    )
    configs = f'configs = ["digits", "{base.as_posix()}"]'
    study = load_study(write_study(tmp_path, configs))
    options = dict(runs_root=tmp_path / "runs", workers=2, progress=False, cwd=REPO)
    run_study(study, **options)
    assert len(executed()) == 8

    assert run_study(study, dry_run=True, **options).todo == []  # nothing changed
    base.write_text(base.read_text().replace("l2 = 0.01", "l2 = 0.02"))
    planned = run_study(study, dry_run=True, **options)
    assert sorted(run.name for run in planned.stale) == [
        f"l2/{arm}/seed{seed}" for arm in ("fast", "slow") for seed in (0, 1)
    ]
    assert planned.todo == planned.stale and executed() == []  # a dry run moves nothing
    outcome = run_study(study, **options)
    assert executed() == [f"l2/{arm}/seed{seed}" for arm in ("fast", "slow") for seed in (0, 1)]
    assert read_metrics(tmp_path / "runs/digits_lr/l2/fast/seed0") != {}
    aside = sorted((tmp_path / "runs/digits_lr/l2/fast").glob("seed0.replaced-*"))
    assert len(aside) == 1 and "l2 = 0.01" in (aside[0] / "config.toml").read_text()
    assert "l2 = 0.02" in (tmp_path / "runs/digits_lr/l2/fast/seed0/config.toml").read_text()
    assert outcome.summary["done"] == 8
    run_study(study, **options)
    assert executed() == []


def test_a_study_reworded_to_build_the_same_configs_keeps_its_runs(tmp_path, executed):
    """A study file reworded without changing what it trains (here l2 set at the value the base
    config already has) gives every run another command line. A study started again finds that
    each run's config.toml is what the new command builds, keeps the runs and records the new
    command line beside the one they started with; a rewording that changes a config reruns."""
    study_file = write_study(tmp_path)
    options = dict(runs_root=tmp_path / "runs", workers=2, progress=False, cwd=REPO)
    run_study(load_study(study_file), **options)
    assert len(executed()) == 4
    record_file = tmp_path / "runs/digits_lr/fast/seed0/study_run.json"
    trained_with = json.loads(record_file.read_text())["argv"]
    before = read_metrics(record_file.parent)

    study_file.write_text(study_file.read_text().replace("[shared]\n", "[shared]\nl2 = 1e-4\n"))
    reworded = load_study(study_file)
    planned = run_study(reworded, dry_run=True, **options)
    assert planned.todo == [] and not planned.stale
    assert sorted(run.name for run in planned.adopted) == [
        f"digits/{arm}/seed{seed}" for arm in ("fast", "slow") for seed in (0, 1)
    ]
    assert json.loads(record_file.read_text())["argv"] == trained_with  # a dry run writes nothing

    outcome = run_study(reworded, **options)
    assert executed() == [] and outcome.todo == [] and outcome.summary["done"] == 4
    record = json.loads(record_file.read_text())
    (run,) = [run for run in outcome.runs if run.name == "digits/fast/seed0"]
    assert record["argv"] == list(run.argv) != trained_with and "l2=0.0001" in record["argv"]
    assert record["argv_at_start"] == trained_with and record["ok"]
    assert read_metrics(record_file.parent) == before
    assert run_study(reworded, **options).adopted == []  # adopted once

    study_file.write_text(study_file.read_text().replace("l2 = 1e-4", "l2 = 1e-3"))
    run_study(load_study(study_file), **options)
    assert executed() == [f"{arm}/seed{seed}" for arm in ("fast", "slow") for seed in (0, 1)]


def test_a_cut_off_run_of_a_reworded_study_resumes_instead_of_starting_again(
    tmp_path, executed, monkeypatch
):
    """A run killed mid-way, then its study file reworded to build the same config: it resumes
    from its checkpoint under the new command line and keeps the first as argv_at_start."""
    study_file = write_study(tmp_path)
    options = dict(runs_root=tmp_path / "runs", workers=2, progress=False, cwd=REPO)
    monkeypatch.setenv("STUDY_FIXTURE_KILL_AT", "20")
    assert len(run_study(load_study(study_file), **options).failed) == 4
    executed()
    record_file = tmp_path / "runs/digits_lr/slow/seed1/study_run.json"
    started_with = json.loads(record_file.read_text())["argv"]

    monkeypatch.delenv("STUDY_FIXTURE_KILL_AT")
    study_file.write_text(study_file.read_text().replace("[shared]\n", "[shared]\nl2 = 1e-4\n"))
    outcome = run_study(load_study(study_file), **options)
    assert len(outcome.adopted) == 4 and outcome.summary["done"] == 4
    assert executed() == ["fast/seed0", "fast/seed1", "slow/seed0", "slow/seed1"]
    record = json.loads(record_file.read_text())
    assert record["resumed"] is True and record["argv_at_start"] == started_with
    assert not list((tmp_path / "runs/digits_lr").glob("*/*.replaced-*"))


def test_a_run_recorded_before_a_key_existed_is_kept_if_the_key_keeps_its_default(tmp_path):
    """A trainer gains keys while a long study's records accumulate. A recorded config.toml
    that lacks a key the command now builds at its default is not stale (the new key keeps the
    old behaviour); one whose command sets the new key to another value is, and so is one with
    a value that differs. The real gancycle trainer answers both --print-config questions."""
    from common.study.stale import current_config, stale_runs

    study_file = tmp_path / "keys.toml"
    study_file.write_text(
        'name = "keys"\ndescription = "stale records"\ncommand = "gancycle-train --no-progress"\n'
        'config = "ring8"\nseeds = 1\n[metrics]\nmodes = "final.G.modes"\n[shared]\n'
        'device = "cpu"\n[arms.plain]\n[arms.edited]\n[arms.new_key_set]\n'
        '"eval.classifier_steps" = 300\n'
    )
    runs = {run.arm: run for run in plan_runs(load_study(study_file), tmp_path / "runs")}
    for arm, run in runs.items():  # each run recorded by a trainer without classifier_steps
        config = current_config(run, REPO)
        assert config["eval"]["classifier_steps"] == (300 if arm == "new_key_set" else 600)
        del config["eval"]["classifier_steps"]
        if arm == "edited":
            config["eval"]["samples"] = 1000
        Path(run.dir).mkdir(parents=True)
        (Path(run.dir) / "config.toml").write_text(tomli_w.dumps(config))
    assert sorted(run.arm for run in stale_runs(list(runs.values()), REPO)) == [
        "edited",
        "new_key_set",
    ]


@pytest.mark.parametrize(
    "name, configs",
    [("rl_defaults", ["cartpole", "lunarlander"]), ("gan_defaults", ["ring8", "grid25"])],
)
def test_the_defaults_studies_run_the_shipped_configs_unchanged(name, configs):
    """What the README says a default run reaches comes from the shipped configs as they are
    (on the CPU), at least five seeds each."""
    runs = plan_runs(find_study(name))
    assert sorted({run.label for run in runs}) == sorted(configs)
    for label in configs:
        assert sorted(run.seed for run in runs if run.label == label) == [0, 1, 2, 3, 4]
    for run in runs:
        argv = list(run.argv)
        assert argv[argv.index("--config") + 1] == run.label
        assert [argv[i + 1] for i, a in enumerate(argv) if a == "--set"] == ['device="cpu"']


def test_a_study_continues_from_the_run_records_git_keeps(tmp_path, executed):
    """Run folders under records/ keep in git only config.toml, metrics.json and
    study_run.json: a clone holds no checkpoint, event file or log, and a study started there
    runs nothing again and reports what the original reported."""
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / ".gitignore").write_text((REPO / ".gitignore").read_text())
    study = load_study(write_study(tmp_path))
    options = dict(workers=2, progress=False, cwd=REPO)
    first = run_study(study, runs_root=origin / "records", **options)
    assert first.summary["done"] == 4
    (origin / "runs").mkdir()  # the default root keeps nothing
    (origin / "runs" / "metrics.json").write_text("{}")

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", str(origin)], check=True)
    subprocess.run([*git, "-C", str(origin), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(origin), "commit", "-qm", "records"], check=True)
    tracked = subprocess.run(
        ["git", "-C", str(origin), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    kept = {Path(path).name for path in tracked if path.startswith("records/")}
    assert kept == {"config.toml", "metrics.json", "study_run.json"}
    assert sum(path.endswith("/metrics.json") for path in tracked) == 4
    assert not any(path.startswith("runs/") for path in tracked)

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    assert not list(clone.glob("records/**/checkpoints"))
    (tmp_path / "executed.txt").unlink()  # the first start's runs
    again = run_study(study, runs_root=clone / "records", **options)
    assert again.todo == [] and not again.stale
    assert not (tmp_path / "executed.txt").exists()  # no trainer started
    assert again.summary["configs"] == first.summary["configs"]


def _git(folder: Path, *args: str) -> str:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(folder), *args]
    return subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()


def test_each_run_records_the_code_it_ran_and_the_report_counts_the_versions(tmp_path):
    """A study over several sittings may run its seeds with different code: each run's
    study_run.json records the commit (and uncommitted .py changes) it started with, a run
    resumed with other code keeps the first, and the summary and results.md count the runs of
    each version."""
    from common.study.run import code_version

    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "study_fixture_train.py", project / "tests")
    (project / "notes.md").write_text("notes\n")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "first")
    first = _git(project, "rev-parse", "HEAD")
    study = load_study(write_study(tmp_path))
    options = dict(runs_root=tmp_path / "runs", workers=2, progress=False, cwd=project)
    root = tmp_path / "runs" / "digits_lr"

    def record(run: str) -> dict:
        return json.loads((root / run / "study_run.json").read_text())

    outcome = run_study(study, **options)
    assert record("fast/seed0")["code"] == {"commit": first, "py_changed": False}
    assert [(v["commit"], len(v["runs"])) for v in outcome.summary["code"]] == [(first, 4)]
    assert f"Code: every done run ran commit `{first[:7]}`." in results_markdown(outcome.summary)

    (project / "tests" / "extra.py").write_text("X = 1\n")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "second")
    second = _git(project, "rev-parse", "HEAD")
    shutil.rmtree(root / "slow" / "seed1")  # run again from scratch at the second commit
    (root / "fast" / "seed0" / "metrics.json").unlink()  # cut off: resumes at the second
    run_study(study, **options)
    assert record("fast/seed0")["resumed"] is True
    assert record("fast/seed0")["code_at_start"] == {"commit": first, "py_changed": False}

    (project / "notes.md").write_text("edited\n")  # not code
    assert code_version(project) == {"commit": second, "py_changed": False}
    (project / "tests" / "extra.py").write_text("X = 2\n")  # code, not committed
    shutil.rmtree(root / "fast" / "seed1")
    outcome = run_study(study, **options)
    assert record("fast/seed1")["code"] == {"commit": second, "py_changed": True}

    versions = {
        (v["commit"], v["py_changed"], v["commit_at_start"], tuple(v["runs"]))
        for v in outcome.summary["code"]
    }
    assert versions == {
        (first, False, None, ("digits/slow/seed0",)),
        (second, False, None, ("digits/slow/seed1",)),
        (second, False, first, ("digits/fast/seed0",)),
        (second, True, None, ("digits/fast/seed1",)),
    }
    text = results_markdown(outcome.summary)
    assert "the done runs ran 4 versions of the code" in text
    assert f"`{second[:7]}` with uncommitted .py changes (1)" in text
    assert f"`{second[:7]}` (started at `{first[:7]}`): digits/fast seed 0" in text
    assert "## Code versions" in text

    unrecorded = record("slow/seed0")  # a run from before runs recorded their code
    del unrecorded["code"]
    (root / "slow" / "seed0" / "study_run.json").write_text(json.dumps(unrecorded))
    summary = summarize(study, plan_runs(study, tmp_path / "runs"), cwd=project)
    assert "not recorded (1)" in results_markdown(summary)
    for run in ("slow/seed1", "fast/seed0", "fast/seed1"):
        (root / run / "study_run.json").write_text(json.dumps({"argv": record(run)["argv"]}))
    summary = summarize(study, plan_runs(study, tmp_path / "runs"), cwd=project)
    assert "Code: not recorded by the done runs" in results_markdown(summary)
    assert code_version(tmp_path / "runs") is None  # outside a git work tree


def test_comparing_two_arms_gives_the_reports_statistic_for_any_pair(finished):
    made_up = {
        "study": "made_up",
        "bootstrap": {"level": 0.95, "reps": 200, "seed": 0},
        "metrics": {"acc": {"higher_is_better": True}, "loss": {"higher_is_better": False}},
        "configs": {
            "c": {
                "arms": {  # per seed 0, 1, 2; None: not done
                    "a": {
                        "metrics": {"acc": {"scores": [3, 4, 5]}, "loss": {"scores": [1, 1, None]}}
                    },
                    "b": {
                        "metrics": {"acc": {"scores": [0, 1, 2]}, "loss": {"scores": [None] * 3}}
                    },
                    "d": {
                        "metrics": {
                            "acc": {"scores": [3, 4, 5]},
                            "loss": {"scores": [0.5, None, 2]},
                        }
                    },
                }
            }
        },
    }
    a_b = compare_arms(made_up, "a", "b")["c"]
    assert a_b["acc"]["poi"] == 1.0 and a_b["acc"]["poi_ci"] == [1.0, 1.0]
    assert compare_arms(made_up, "b", "a")["c"]["acc"]["poi"] == 0.0
    assert compare_arms(made_up, "a", "d")["c"]["acc"]["poi"] == 0.5  # the same scores
    assert compare_arms(made_up, "d", "a")["c"]["loss"]["poi"] == 1.0  # lower is better
    assert a_b["loss"] == {"n": 0, "poi": None, "poi_ci": None}
    assert compare_arms(made_up, "d", "a")["c"]["loss"]["n"] == 1  # seed 0 only: both have it
    with pytest.raises(StudyError, match="arm 'e': not in study made_up; arms: a, b, d"):
        compare_arms(made_up, "e", "a")

    _, outcome, _ = finished  # against the baseline: what the report says
    for label, metrics in compare_arms(outcome.summary, "fast", "slow").items():
        for metric, entry in metrics.items():
            reported = outcome.summary["configs"][label]["arms"]["fast"]["metrics"][metric]
            assert (entry["poi"], entry["poi_ci"]) == (reported["poi"], reported["poi_ci"])


def test_a_partly_done_study_compares_two_arms_on_the_seeds_both_have():
    """Runs of one seed share their initialisation and data across arms, so a partial study
    (a seed done for one arm, not yet for the other) compares the arms on their shared seeds."""
    made_up = {
        "study": "made_up",
        "bootstrap": {"level": 0.95, "reps": 200, "seed": 0},
        "metrics": {"acc": {"higher_is_better": True}},
        "configs": {
            "c": {
                "arms": {  # per seed 0..3; None: not done yet
                    "a": {"metrics": {"acc": {"scores": [3, 4, None, 0]}}},
                    "b": {"metrics": {"acc": {"scores": [1, None, 2, 5]}}},
                }
            }
        },
    }
    entry = compare_arms(made_up, "a", "b")["c"]["acc"]
    # seeds 0 and 3: 3 beats 1; 3 < 5, 0 < 1, 0 < 5 (all done runs, unpaired, would give 4/9)
    assert entry["n"] == 2 and entry["poi"] == pytest.approx(1 / 4)


def test_compare_arms_script_prints_a_table_and_refuses_an_unknown_arm(finished, tmp_path):
    _, outcome, folder = finished
    script = REPO / "scripts" / "compare_arms.py"
    shown = subprocess.run(
        [sys.executable, script, folder / "summary.json", "fast", "slow"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert shown.returncode == 0, shown.stderr
    poi = outcome.summary["configs"]["digits"]["arms"]["fast"]["metrics"]["accuracy"]["poi"]
    assert f"| accuracy | 2 | {poi:.2f} [" in shown.stdout
    summary, missing = folder / "summary.json", tmp_path / "none.json"
    unknown_arm = "error: arm 'quick': not in study digits_lr; arms: "
    cases = [
        (summary, ["fast", "quick"], unknown_arm),
        (missing, ["fast", "slow"], f"error: {missing}: not a readable summary.json"),
    ]
    whole = json.loads(summary.read_text())
    no_metric = json.loads(summary.read_text())
    del no_metric["configs"]["digits"]["arms"]["fast"]["metrics"]["accuracy"]
    for i, wrong in enumerate([[1, 2], {**whole, "configs": {}}, no_metric]):
        path = tmp_path / f"wrong{i}.json"  # JSON, but not a study's summary: no traceback
        path.write_text(json.dumps(wrong))
        cases.append((path, ["fast", "slow"], f"error: {path}: not a study's summary.json ("))
    for path, args, message in cases:
        refused = subprocess.run(
            [sys.executable, script, path, *args], capture_output=True, text=True, cwd=REPO
        )
        assert refused.returncode == 2 and refused.stderr.startswith(message), refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1


def test_a_dry_run_refuses_what_the_real_run_would(tmp_path):
    """A dry run is a rehearsal: options the run would refuse are refused before it plans
    (before, --workers 0 and a --runs-root that is a file passed the dry run)."""
    study = load_study(write_study(tmp_path))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for options, message in [
        ({"workers": 0}, "--workers 0: must be >= 1"),
        ({"runs_root": a_file}, f"--runs-root {a_file}: a file, not a folder"),
        ({"runs_root": a_file / "runs"}, f"--runs-root {a_file / 'runs'}: {a_file} is a file"),
    ]:
        for dry_run in (True, False):
            with pytest.raises(StudyError, match=re.escape(message)):
                run_study(study, dry_run=dry_run, progress=False, cwd=REPO, **options)
    assert a_file.read_text() == "mine"
