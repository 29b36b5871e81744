"""How much does the trainer cost? Its steps per second against a bare hand-written loop.

The bare loop is what a researcher would write in a notebook (pytorch/examples' DCGAN step):
the same models, batch, data sampler, optimizers and non-saturating loss, a constant learning
rate, no schedules, no EMA, no dynamics, no logging, no checkpoints. The trainer runs as
configured (schedules, EMA, kinetic energy and gradient norms every step, scalars every
``log.every`` steps, checkpoints), without its evaluations (``eval.every = 0``; the final
evaluation is outside the timed loop). The two arms alternate ``repeats`` times so that a busy
machine slows both alike; the ratio is of the medians.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from common.runs import resolve_device, seed_everything
from gancycle.data import load_data
from gancycle.models import build_models
from gancycle.trainer import GanTrainer

__all__ = ["bare_loop", "trainer_loop", "run_bench"]


def bare_loop(config: dict[str, Any], steps: int, warmup: int = 20) -> float:
    """Steps per second of a hand-written GAN loop with the config's models and batch."""
    if config["loss"]["name"] != "ns" or config["loss"]["d_steps"] != 1:
        raise ValueError("bench: the bare loop is the non-saturating loss with loss.d_steps = 1")
    device = resolve_device(config["device"])
    seed_everything(config["seed"])
    generator = torch.Generator(device).manual_seed(config["seed"])
    data = load_data(config["data"]).to(device)
    G, D = (net.to(device) for net in build_models(config["model"], data.shape))
    betas = (config["optim"]["beta1"], config["optim"]["beta2"])
    opt_G = torch.optim.Adam(G.parameters(), lr=config["lr"]["G"]["max"], betas=betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=config["lr"]["D"]["max"], betas=betas)
    batch, z_dim = config["data"]["batch"], config["model"]["z_dim"]

    def step() -> None:
        real = data.sample(batch, generator)
        fake = G(torch.randn(batch, z_dim, generator=generator, device=device))
        loss_D = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        loss_G = F.softplus(-D(fake)).mean()
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()
        float(loss_D.detach()), float(loss_G.detach())  # a loop that prints its losses reads them

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def trainer_loop(config: dict[str, Any], steps: int, warmup: int = 20) -> float:
    """Steps per second of :class:`~gancycle.trainer.GanTrainer` (its timed loop only)."""
    config = copy.deepcopy(config)
    config["eval"]["every"] = 0
    config["eval"]["samples"] = 100  # the final evaluation is not timed; keep it short
    with tempfile.TemporaryDirectory() as tmp:
        trainer = GanTrainer(config, Path(tmp) / "run")
        trainer.train(steps=warmup, progress=False)
        return trainer.train(steps=warmup + steps, progress=False)["steps_per_s"]


def run_bench(config: dict[str, Any], steps: int = 1000, repeats: int = 3) -> dict[str, Any]:
    """Alternate the two arms ``repeats`` times; returns each arm's runs and the ratio.

    ``ratio`` = median trainer steps/s over median bare steps/s (1.0 = no overhead).
    """
    if config["threads"] > 0:
        torch.set_num_threads(config["threads"])
    bare, trainer = [], []
    for _ in range(repeats):
        bare.append(bare_loop(config, steps))
        trainer.append(trainer_loop(config, steps))
    ratio = statistics.median(trainer) / statistics.median(bare)
    return {
        "bare_steps_per_s": bare,
        "trainer_steps_per_s": trainer,
        "threads": torch.get_num_threads(),
        "device": str(resolve_device(config["device"])),
        "ratio": ratio,
    }
