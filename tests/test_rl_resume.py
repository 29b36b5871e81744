"""A run killed mid-way and resumed with --resume continues the same lr and difficulty curves."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.config import read_config
from common.runs import load_checkpoint
from common.schedules import from_spec
from common.tb import read_scalars
from rlcycle.cli import train_main
from rlcycle.curriculum import curriculum_from_spec

ROOT = Path(__file__).resolve().parents[1]
STEPS = 16_384
ARGS = [
    "--steps", str(STEPS), "--device", "cpu", "--no-progress",
    "--set", "checkpoint_every=1024", "--set", "log_every=256", "--set", "lr.period=3000",
    "--set", "eval.difficulties=[0.0]", "--set", "eval.episodes=1",
]  # fmt: skip


def kill_after_first_checkpoint(run: Path, timeout: float = 120.0) -> int:
    """Start a CLI run, SIGKILL it once a checkpoint exists; return the checkpoint's step."""
    cmd = [sys.executable, str(ROOT / "scripts" / "train_rl.py"), "--out", str(run), *ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    last = run / "checkpoints" / "last.pt"
    began = time.monotonic()
    while not last.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - began < timeout
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return load_checkpoint(last)["step"]


def test_killed_run_resumes_on_the_same_curves(tmp_path):
    run = tmp_path / "run"
    killed_at = kill_after_first_checkpoint(run)
    assert 1024 <= killed_at < STEPS
    assert not (run / "metrics.json").exists()
    with pytest.raises(SystemExit) as done:
        train_main(["--resume", str(run), "--no-progress"])
    assert done.value.code == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == STEPS

    config = read_config(run / "config.toml")
    clock = from_spec(config["lr"])
    curriculum = curriculum_from_spec(config["curriculum"], clock, config["steps"])
    lr = read_scalars(run, "train/learning_rate")
    difficulty = read_scalars(run, "curriculum/difficulty")
    cycle = read_scalars(run, "schedule/cycle")
    after = [s for s, _ in lr if s > killed_at]
    assert after and after[-1] == STEPS  # the resumed half logged up to the end
    for step, value in lr:
        assert value == pytest.approx(clock.value(step), rel=1e-6), step
    for step, value in difficulty:
        assert value == pytest.approx(round(curriculum.difficulty(step), 2), abs=1e-6), step
    for step, value in cycle:
        assert value == clock.phase(step).cycle
    # No gap: some log lands in every 512-step window (PPO updates every 256 steps).
    steps = sorted({s for s, _ in lr})
    assert max(np.diff(steps)) <= 512
    # Snapshots: one per finished cycle, none duplicated by the restart of the process.
    # Cycles end every 3000 steps: 0..4 finished, 5 kept at the end; max_snapshots = 5.
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["snapshot_cycles"] == [1, 2, 3, 4, 5]
