"""A run killed mid-way and resumed with --resume ends exactly as a run never stopped: the same
weights, returns, learning-rate and difficulty curves, and one TensorBoard curve per tag."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import logged_difficulty
from stable_baselines3.common.callbacks import BaseCallback

from common.config import load_config, read_config
from common.runs import load_checkpoint
from common.schedules import from_spec
from common.tb import read_scalars
from rlcycle.cli import train_main
from rlcycle.curriculum import curriculum_from_spec
from rlcycle.envs import make_env
from rlcycle.train import train
from rlcycle.vecenv import Resumable

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4096
ARGS = [
    "--steps", str(STEPS), "--device", "cpu", "--no-progress",
    "--set", "checkpoint.every=1024", "--set", "log.every=256", "--set", "lr.period=750",
    "--set", "eval.difficulties=[0.0, 1.0]", "--set", "eval.episodes=1",
]  # fmt: skip
TAGS = ("train/loss", "train/learning_rate", "curriculum/difficulty", "rollout/ep_rew_mean")


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


def run_cli(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as done:
        train_main(argv)
    assert done.value.code == 0


def policy_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]["params"]["policy"]


def assert_one_curve(run: Path, tag: str) -> list[tuple[int, float]]:
    scalars = read_scalars(run, tag)
    steps = [s for s, _ in scalars]
    assert len(steps) == len(set(steps)), (tag, steps)  # no step twice after the resume
    return scalars


def test_killed_run_resumes_to_the_same_weights_returns_and_curves(tmp_path):
    killed = tmp_path / "killed"
    killed_at = kill_after_first_checkpoint(killed)
    assert 1024 <= killed_at < STEPS
    assert not (killed / "metrics.json").exists()
    run_cli(["--resume", str(killed), "--no-progress"])
    whole = tmp_path / "whole"
    run_cli(["--out", str(whole), *ARGS])

    # Exactly the run that was never stopped: weights, returns, evaluations, snapshots.
    resumed = json.loads((killed / "metrics.json").read_text())
    reference = json.loads((whole / "metrics.json").read_text())
    assert resumed["final"]["resumes"] == 1 and reference["final"]["resumes"] == 0
    for key in ("steps", "eval", "snapshot_cycles"):
        assert resumed["final"][key] == reference["final"][key], key
    assert resumed["history"] == reference["history"]
    mine, theirs = policy_weights(killed), policy_weights(whole)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    # Snapshots: one per finished cycle, none duplicated by the restart of the process.
    # Cycles end every 750 steps: 0..4 finished, 5 kept at the end; snapshots.max = 5.
    assert resumed["final"]["snapshot_cycles"] == [1, 2, 3, 4, 5]
    for k in range(1, 6):
        mine = torch.load(killed / "snapshots" / f"cycle_{k}.pt", weights_only=True)
        theirs = torch.load(whole / "snapshots" / f"cycle_{k}.pt", weights_only=True)
        assert all(torch.equal(mine[name], theirs[name]) for name in theirs), k

    # TensorBoard: each tag one curve, equal to the uninterrupted run's, up to the end.
    for tag in TAGS:
        assert assert_one_curve(killed, tag) == read_scalars(whole, tag), tag
    lr = read_scalars(killed, "train/learning_rate")
    assert [s for s, _ in lr if s > killed_at] and lr[-1][0] == STEPS
    assert max(np.diff([s for s, _ in lr])) <= 512  # no gap around the kill

    # And the curves are the clock's and the curriculum's.
    config = read_config(killed / "config.toml")
    clock = from_spec(config["lr"])
    curriculum = curriculum_from_spec(config["curriculum"], clock, config["steps"])
    for step, value in lr:
        assert value == pytest.approx(clock.value(step), rel=1e-6), step
    for step, value in read_scalars(killed, "curriculum/difficulty"):
        assert value == pytest.approx(logged_difficulty(config, curriculum, step), abs=1e-6), step
    for step, value in read_scalars(killed, "schedule/cycle"):
        assert value == clock.phase(step).cycle


class Crash(BaseCallback):
    """Stops a run like a kill would, once it has passed ``step``."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def _on_step(self) -> bool:
        if self.num_timesteps > self.step:
            raise KeyboardInterrupt
        return True


def small(name: str, steps: int, **top) -> dict:
    config = load_config(name, "rlcycle")
    config.update(steps=steps, device="cpu", progress=False, **top)
    config["log"]["every"] = 64
    config["checkpoint"]["every"] = steps // 4
    config["lr"]["period"] = steps // 3
    config["snapshots"]["max"] = 2
    config["eval"].update(difficulties=[0.5], episodes=1)
    return config


EXACT = {  # the algorithms whose extra state a checkpoint carries, on small budgets
    "ppo-gsde": lambda: {
        **small("pendulum", 512, algo="ppo", n_envs=2),
        "ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 2, "use_sde": True},
    },
    "sac-replay": lambda: {
        **small("pendulum", 400),
        "sac": {"learning_starts": 100, "buffer_size": 1000, "batch_size": 32},
    },
    "random_d": lambda: {  # each environment's draws go on from the episode it was playing
        **small("cartpole", 1024, n_envs=2),
        "curriculum": {"mode": "random_d"},
        "ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 1},
    },
    "dqn-replay": lambda: {
        **small("cartpole", 800, algo="dqn", n_envs=1),
        "dqn": {"learning_starts": 100, "train_freq": 16, "gradient_steps": 2, "batch_size": 32},
    },
}


@pytest.mark.parametrize("case", list(EXACT))
def test_a_resumed_run_equals_one_never_stopped(case, tmp_path):
    """gSDE's exploration noise, replay buffers, DQN's exploration and target counters."""
    config = EXACT[case]()
    whole = train(config, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", callbacks=[Crash(config["steps"] // 2 + 10)])
    resumed = train(config, tmp_path / "stopped", resume=True)
    assert resumed["final"]["resumes"] == 1
    assert resumed["final"]["eval"] == whole["final"]["eval"]
    mine, theirs = policy_weights(tmp_path / "stopped"), policy_weights(tmp_path / "whole")
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    for tag in ("train/learning_rate", "curriculum/difficulty"):
        assert assert_one_curve(tmp_path / "stopped", tag) == read_scalars(tmp_path / "whole", tag)


def test_lunarlander_resumes_with_fresh_episodes_on_the_same_clock(tmp_path):
    """A Box2D world cannot be captured: the resumed run starts new episodes (documented), and
    its learning rate and difficulty still follow the clock, each tag one curve."""
    config = load_config("lunarlander", "rlcycle")
    config.update(steps=1536, device="cpu", progress=False, n_envs=2)
    config["ppo"].update(n_steps=128, batch_size=64, n_epochs=1)
    config["log"]["every"] = 256
    config["checkpoint"]["every"] = 512
    config["lr"]["period"] = 500
    config["snapshots"]["max"] = 0
    config["eval"].update(difficulties=[1.0], episodes=1)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path, callbacks=[Crash(800)])
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert checkpoint["step"] == 512 and checkpoint["envs"] is None
    metrics = train(config, tmp_path, resume=True)
    assert metrics["final"]["steps"] == 1536 and metrics["final"]["resumes"] == 1
    clock = from_spec(config["lr"])
    lr = assert_one_curve(tmp_path, "train/learning_rate")
    assert lr[-1][0] == 1536
    for step, value in lr:
        assert value == pytest.approx(clock.value(step), rel=1e-6), step
    assert_one_curve(tmp_path, "curriculum/difficulty")


@pytest.mark.parametrize("env_id", ["rlcycle/CartPole-v1", "rlcycle/Pendulum-v1"])
def test_an_episode_in_progress_continues_from_its_captured_state(env_id, tmp_path):
    def wrapped():
        return Resumable(make_env(env_id, difficulty=0.3))

    env = wrapped()
    env.reset(seed=5)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(40)]
    for action in actions[:10]:
        env.step(action)
    env.unwrapped.set_difficulty(0.8)  # asked for, not yet applied: it must stay so
    state = env.get_run_state()
    # Through a weights-only checkpoint, into an environment that never saw this episode.
    torch.save(state, tmp_path / "state.pt")
    twin = wrapped()
    twin.set_run_state(torch.load(tmp_path / "state.pt", weights_only=True))
    assert (twin.unwrapped.difficulty, twin.unwrapped.next_difficulty) == (0.3, 0.8)
    for action in actions[10:]:  # the same steps, rewards, ends and resets (same generator)
        a, b = env.step(action), twin.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4]
        if a[2] or a[3]:
            np.testing.assert_array_equal(env.reset()[0], twin.reset()[0])
    np.testing.assert_array_equal(env.reset()[0], twin.reset()[0])
    assert twin.unwrapped.difficulty == 0.8


def test_a_box2d_episode_cannot_be_captured():
    env = Resumable(make_env("rlcycle/LunarLander-v3"))
    env.reset(seed=0)
    assert env.get_run_state() is None
