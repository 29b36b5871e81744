"""Data-parallel training of one GAN (gancycle.ddp): 2 gloo ranks on loopback against one
process on the whole batch, in float64."""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from common.runs import load_checkpoint
from gancycle.ddp import DataParallelTrainer, train_data_parallel
from gancycle.settings import SCHEMA
from gancycle.trainer import GanTrainer, train

TIMEOUT_S = 120

TINY_DIGITS = [
    "model.width=4",
    "model.z_dim=4",
    "data.batch=16",
    "steps=6",
    "lr.G.period=4",  # a restart (and a snapshot) inside the run
    "log.every=2",
    "checkpoint.every=3",
    "eval.every=0",
    "eval.samples=10",
    "eval.classifier_steps=1",
    "loss.gp_weight=1.0",  # mixing weights drawn for the whole batch, sharded
    "instance_noise.enabled=true",  # noise too
    "label_smoothing.enabled=true",
    "progress=false",
]


def tiny_digits(*extra: str) -> dict:
    return SCHEMA.load("digits", [*TINY_DIGITS, *extra])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, config: dict, run_dir: str) -> None:
    """One rank, as torchrun would start it (its variables), in float64."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_default_dtype(torch.float64)
    train_data_parallel(config, run_dir, progress=False)


def run_ranks(world: int, config: dict, run_dir) -> None:
    """``world`` ranks on loopback; fails (and stops them) if they run past ``TIMEOUT_S``."""
    context = mp.start_processes(
        _rank, args=(world, free_port(), config, str(run_dir)), nprocs=world, join=False,
        start_method="spawn",
    )  # fmt: skip
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=1.0):
            assert time.monotonic() < deadline, f"{world} ranks still running after {TIMEOUT_S}s"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()


def test_two_gloo_ranks_match_one_process_on_the_whole_batch_and_rank0_writes_the_run(tmp_path):
    """One spawn of 2 ranks (starting them is most of the time): equivalence, then the folder."""
    config = tiny_digits()
    run = tmp_path / "ddp"
    run_ranks(2, config, run)
    ddp = load_checkpoint(run / "checkpoints" / "last.pt", map_location="cpu")

    torch.set_default_dtype(torch.float64)
    try:
        single = GanTrainer(config, tmp_path / "single")
        single.advance(config["steps"])
        single.set_schedules(single.step)
        expected = single.state_dict()
    finally:
        torch.set_default_dtype(torch.float32)

    assert ddp["step"] == expected["step"] == 6
    assert ddp["driver_G"] == expected["driver_G"]  # the same restarts
    for key in ("G", "D", "ema"):  # BatchNorm's running statistics included
        for name, value in expected[key].items():
            assert value.dtype == ddp[key][name].dtype
            torch.testing.assert_close(ddp[key][name], value, rtol=0, atol=1e-12, msg=name)
    for key in ("opt_G", "opt_D"):
        for index, state in expected[key]["state"].items():
            for name in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(
                    ddp[key]["state"][index][name], state[name], rtol=0, atol=1e-12
                )
    # The same random stream: every rank drew the whole batch's numbers.
    assert torch.equal(ddp["generator"], expected["generator"])

    # Rank 0 alone wrote the folder: one event file, the snapshot of the cycle that ended.
    names = sorted(p.name for p in run.iterdir())
    assert "config.toml" in names and "metrics.json" in names
    assert len([name for name in names if name.startswith("events.out.tfevents")]) == 1
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["cycle_0.pt"]
    # ... in the single trainer's format: it resumes the run (in float32 now).
    resumed = train({**config, "steps": 8}, run, resume=True, progress=False)
    assert resumed["steps"] == 8 and resumed["resumes"] == 1


def test_a_batch_that_does_not_split_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"data.batch = 15: must be a multiple of the 2 ranks"):
        DataParallelTrainer(tiny_digits("data.batch=15"), tmp_path, rank=0, world=2)


def test_the_command_outside_torchrun_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from conftest import assert_one_line_error, run_main, set_args

    from gancycle.ddp import main

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    argv = ["--config", "digits", "--out", str(tmp_path / "run"), *set_args(*TINY_DIGITS)]
    code, _, err = run_main(main, argv, capsys)
    assert_one_line_error(code, err, "RANK and WORLD_SIZE are not set", "torchrun")
    assert not (tmp_path / "run").exists()  # nothing made
    code, out, _ = run_main(main, [*argv, "--check"], capsys)
    assert code == 0 and out.startswith("ok: digits")
