"""bf16 autocast (``amp = true``) on the CPU, for a single run and a population, and resuming a
checkpoint whose random stream is another device's (the CPU halves of tests/test_cuda.py)."""

from __future__ import annotations

import torch
from conftest import TINY_RING8

from common.runs import atomic_torch_save, load_checkpoint
from gancycle.population import Population
from gancycle.settings import SCHEMA
from gancycle.trainer import GanTrainer, train


def tiny(*extra: str) -> dict:
    return SCHEMA.load("ring8", [*TINY_RING8, "progress=false", "device=cpu", *extra])


def test_amp_trains_a_run_under_bf16_autocast_on_the_cpu(tmp_path):
    runs = {amp: GanTrainer(tiny(f"amp={amp}"), tmp_path / amp) for amp in ("false", "true")}
    with runs["true"]._autocast():
        assert runs["true"].G(torch.zeros(3, 2)).dtype == torch.bfloat16
    with runs["false"]._autocast():
        assert runs["false"].G(torch.zeros(3, 2)).dtype == torch.float32
    for trainer in runs.values():
        trainer.advance(5)
    plain, mixed = runs["false"].flat["G"].data, runs["true"].flat["G"].data
    assert mixed.dtype == torch.float32 and bool(mixed.isfinite().all())  # fp32 master weights
    assert not torch.equal(plain, mixed)  # bf16 arithmetic changed the updates...
    torch.testing.assert_close(mixed, plain, rtol=0.05, atol=0.05)  # ... a little


def test_amp_trains_a_population_under_bf16_autocast_on_the_cpu():
    populations = {
        amp: Population([tiny(f"amp={amp}", f"seed={k}") for k in range(2)])
        for amp in ("false", "true")
    }
    for population in populations.values():
        population.advance(4)
    plain, mixed = populations["false"].G.data, populations["true"].G.data
    assert mixed.dtype == torch.float32 and bool(mixed.isfinite().all())
    assert not torch.equal(plain, mixed)
    torch.testing.assert_close(mixed, plain, rtol=0.05, atol=0.05)


def test_a_checkpoint_with_another_devices_random_stream_resumes(tmp_path, capsys):
    """A run written on CUDA holds a Philox generator state (16 bytes), which a CPU generator
    cannot take: the resumed run seeds its stream from it, the same way each time."""
    config = tiny("steps=4")
    run = tmp_path / "run"
    train(config, run)
    path = run / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    state["generator"] = torch.arange(16, dtype=torch.uint8)  # seed and offset, as CUDA's
    atomic_torch_save(state, path)

    draws = []
    for _ in range(2):
        trainer = GanTrainer.from_run(run)
        assert trainer.step == 4
        draws.append(torch.randn(3, generator=trainer.generator))
    assert torch.equal(draws[0], draws[1])
    assert "another device's" in capsys.readouterr().err

    final = train({**config, "steps": 6}, run, resume=True)
    assert final["steps"] == 6 and final["resumes"] == 1
