"""On a CUDA device (skipped without one, as in CI): a GAN run and a population under bf16
autocast, a checkpoint written on CUDA resumed on the CPU and back, TensorBoard events of a CUDA
run, and one data-parallel rank on NCCL. The CPU halves: tests/test_precision.py, test_ddp.py."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_RING8

from common.runs import load_checkpoint
from common.tb import read_scalars
from gancycle.population import Population
from gancycle.settings import SCHEMA
from gancycle.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY_DIGITS = [
    "model.width=8",
    "model.z_dim=8",
    "data.batch=32",
    "lr.G.period=10",
    "log.every=5",
    "eval.every=0",
    "eval.samples=200",
    "eval.classifier_steps=20",
    "progress=false",
]


def test_a_gan_run_trains_on_cuda_under_bf16_autocast(tmp_path):
    config = SCHEMA.load("digits", [*TINY_DIGITS, "steps=20", "device=cuda", "amp=true"])
    final = train(config, tmp_path / "run")
    assert final["steps"] == 20 and "diverged" not in final
    assert all(math.isfinite(v) for v in final["G"].values())
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(t.dtype != torch.bfloat16 for t in state["G"].values())  # fp32 master weights


def test_a_population_trains_on_cuda_under_bf16_autocast():
    configs = [
        SCHEMA.load("ring8", [*TINY_RING8, f"seed={k}", "device=cuda", "amp=true"])
        for k in range(8)
    ]
    population = Population(configs)
    assert population.G.data.device.type == "cuda"
    population.advance(20)
    assert bool(population.G.data.isfinite().all()) and bool(population.D.data.isfinite().all())
    assert population.G.data.dtype == torch.float32
    assert all(m.diverged is None for m in population.members)


def test_a_checkpoint_written_on_cuda_resumes_on_the_cpu_and_back(tmp_path):
    run = tmp_path / "run"
    base = SCHEMA.load("digits", [*TINY_DIGITS, "steps=10", "device=cuda"])
    train(base, run)
    on_cpu = train({**base, "steps": 15, "device": "cpu"}, run, resume=True)
    assert on_cpu["steps"] == 15 and on_cpu["resumes"] == 1
    assert all(math.isfinite(v) for v in on_cpu["G"].values())
    on_cuda = train({**base, "steps": 20, "device": "cuda"}, run, resume=True)
    assert on_cuda["steps"] == 20 and on_cuda["resumes"] == 2
    assert all(math.isfinite(v) for v in on_cuda["G"].values())
    losses = read_scalars(run, "loss/G")
    assert [step for step, _ in losses] == sorted({step for step, _ in losses})  # one curve


def test_tensorboard_events_of_a_cuda_run_read_back(tmp_path):
    config = SCHEMA.load("ring8", [*TINY_RING8, "steps=20", "log.every=5", "device=cuda"])
    train(config, tmp_path / "run")
    losses = read_scalars(tmp_path / "run", "loss/D")
    assert [step for step, _ in losses] == [4, 9, 14, 19]
    assert all(math.isfinite(value) for _, value in losses)
    assert read_scalars(tmp_path / "run", "lr/G")


def test_one_data_parallel_rank_on_nccl_matches_the_single_trainer(tmp_path):
    from test_ddp import run_ranks, tiny_digits

    config = tiny_digits("device=cuda")
    run_ranks(1, config, tmp_path / "ddp")
    state = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert state["step"] == config["steps"]
    assert all(bool(t.isfinite().all()) for t in state["G"].values() if t.is_floating_point())
