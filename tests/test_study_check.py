"""A study's --dry-run checks every arm's overrides with the trainer's own --check."""

import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "study.py"

FIXTURE_STUDY = """
name = "checked"
command = "python tests/study_fixture_train.py"
config = "digits"
seeds = 3
metrics = ["final.accuracy"]
[arms.good]
lr = 0.1
[arms.unknown]
nonsense = 1
[arms.not_a_table]
lr.x = 1
"""

GAN_STUDY = """
name = "gan_checked"
command = "gancycle-train --no-progress"
config = "ring8"
seeds = 2
metrics = ["final.G.modes"]
[arms.typo]
"lr.D.ofset" = 0.5
[arms.nonsense]
"nonsense.key" = 1
"""


def dry_run(tmp_path, text, monkeypatch, capsys):
    path = tmp_path / "study.toml"
    path.write_text(text)
    monkeypatch.chdir(REPO)
    argv = ["study.py", str(path), "--runs-root", str(tmp_path / "runs"), "--dry-run"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    out, err = capsys.readouterr()
    assert not (tmp_path / "runs").exists()  # nothing ran, no folder made
    return done.value.code, out, [line for line in err.splitlines() if line.startswith("bad")]


def test_dry_run_reports_each_bad_arm_in_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    code, out, bad = dry_run(tmp_path, FIXTURE_STUDY, monkeypatch, capsys)
    assert code == 2
    assert len(out.splitlines()) == 9  # the commands are still printed
    assert len(bad) == 2  # one line per arm, not per seed
    assert bad[0].startswith("bad arm: digits/unknown: error: ") and "nonsense" in bad[0]
    assert bad[1].startswith("bad arm: digits/not_a_table: error: ") and "lr.x" in bad[1]


def test_dry_run_of_good_arms_exits_0(tmp_path, monkeypatch, capsys):
    good = FIXTURE_STUDY.split("[arms.unknown]")[0]
    code, out, bad = dry_run(tmp_path, good, monkeypatch, capsys)
    assert code == 0 and bad == [] and len(out.splitlines()) == 3


def test_dry_run_checks_gan_arms_against_the_schema(tmp_path, monkeypatch, capsys):
    """It accepted lr.D.ofset and nonsense.key; the real runs then all failed."""
    code, _, bad = dry_run(tmp_path, GAN_STUDY, monkeypatch, capsys)
    assert code == 2 and len(bad) == 2
    assert bad[0].startswith("bad arm: ring8/typo: error: lr.D.ofset: unknown key")
    assert bad[1].startswith("bad arm: ring8/nonsense: error: --set nonsense: unknown key")
