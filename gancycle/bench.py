"""How much does the trainer cost? Its steps per second against a bare hand-written loop.

The bare loop is what a researcher would write in a notebook (pytorch/examples' DCGAN step):
the same models, batch, data sampler and Adam settings, the non-saturating loss, a constant
learning rate, no schedules, no EMA, no dynamics, no logging, no checkpoints. The trainer runs
its own loop (:meth:`~gancycle.trainer.GanTrainer.advance`) as configured: schedules, EMA,
gradient norms and kinetic energies, scalars every ``log.every`` steps, checkpoints every
``checkpoint.every`` steps; evaluations are off (``eval.every = 0``).

A shared machine's load drifts by a factor of two within a minute, so the two arms alternate
in chunks of ``chunk`` steps and each arm's time is summed over all its chunks: both see the
same load on average. ``ratio`` = trainer steps/s over bare steps/s.

:func:`evaluation_bench` times what an evaluation costs instead: scoring G and its EMA once,
with and without precision / recall / density / coverage (``eval.prdc``), the two alternating.
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

from common.benchmark import compare_in_chunks
from common.runs import resolve_device, seed_everything, torch_threads
from gancycle.data import load_data
from gancycle.models import build_models
from gancycle.trainer import GanTrainer

__all__ = ["BareLoop", "run_bench", "evaluation_bench"]


class BareLoop:
    """A hand-written GAN loop with the config's models, batch, data and optimizer settings."""

    def __init__(self, config: dict[str, Any]) -> None:
        loss = config["loss"]
        if loss["name"] != "ns" or loss["d_steps"] != 1 or config["model"]["pack"] != 1:
            raise ValueError(
                "bench: the bare loop is loss.name = 'ns' with loss.d_steps = 1, model.pack = 1"
            )
        self.device = resolve_device(config["device"])
        seed_everything(config["seed"])
        self.generator = torch.Generator(self.device).manual_seed(config["seed"])
        self.data = load_data(config["data"]).to(self.device)
        self.G, self.D = (m.to(self.device) for m in build_models(config["model"], self.data.shape))
        betas = (config["optim"]["beta1"], config["optim"]["beta2"])
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=config["lr"]["G"]["max"], betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=config["lr"]["D"]["max"], betas=betas)
        self.batch, self.z_dim = config["data"]["batch"], config["model"]["z_dim"]

    def step(self) -> None:
        G, D, batch = self.G, self.D, self.batch
        real = self.data.sample(batch, self.generator)
        z = torch.randn(batch, self.z_dim, generator=self.generator, device=self.device)
        fake = G(z)
        loss_D = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.opt_D.step()
        loss_G = F.softplus(-D(fake)).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        float(loss_D.detach()), float(loss_G.detach())  # a loop that prints its losses reads them

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()


def run_bench(
    config: dict[str, Any], steps: int = 2000, chunk: int = 100, warmup: int = 20
) -> dict[str, Any]:
    """Time ``steps`` steps of each arm, alternating in chunks of ``chunk`` steps.

    Returns:
        ``bare_steps_per_s`` and ``trainer_steps_per_s`` (over all chunks), ``ratio`` (trainer
        over bare; 1.0 = no overhead), ``chunk_ratio_median`` (the median of the per-chunk
        ratios, robust to load spikes), ``threads`` and ``device``.
    """
    config = copy.deepcopy(config)
    config["eval"]["every"] = 0
    config["eval"]["samples"] = 100  # only for the trainer's constructor; nothing is evaluated
    with torch_threads(config["threads"]):
        return _run_bench(config, steps, chunk, warmup)


def _run_bench(config: dict[str, Any], steps: int, chunk: int, warmup: int) -> dict[str, Any]:
    bare = BareLoop(config)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = GanTrainer(config, Path(tmp) / "run")
        bare.run(warmup)
        trainer.advance(warmup)
        turns = max(1, steps // chunk)
        times = compare_in_chunks(
            lambda: bare.run(chunk),
            lambda: trainer.advance(trainer.step + chunk),
            turns,
            chunk,
            bare.device,
        )
        trainer.writer.close()
    return {
        "bare_steps_per_s": times["baseline_per_s"],
        "trainer_steps_per_s": times["contender_per_s"],
        "ratio": times["ratio"],
        "chunk_ratio_median": times["chunk_ratio_median"],
        "threads": torch.get_num_threads(),
        "device": str(bare.device),
    }


def evaluation_bench(config: dict[str, Any], repeats: int = 6) -> dict[str, float]:
    """Seconds to score G and its EMA once (:meth:`GanTrainer.evaluate`, ``eval.samples``
    samples each), with PRDC and without, alternating; medians over ``repeats``.

    Returns:
        ``with_prdc_s``, ``without_prdc_s`` and ``prdc_share`` (1 - without / with: the share
        of an evaluation that PRDC takes).
    """
    seconds: dict[bool, list[float]] = {True: [], False: []}
    with torch_threads(config["threads"]), tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for prdc in seconds:
            setting = copy.deepcopy(config)
            setting["eval"]["prdc"] = prdc
            trainers[prdc] = GanTrainer(setting, Path(tmp) / f"prdc_{prdc}")
        for _ in range(repeats):
            for prdc, trainer in trainers.items():
                start = time.perf_counter()
                trainer.evaluate("G")
                trainer.evaluate("ema")
                seconds[prdc].append(time.perf_counter() - start)
    with_prdc, without = (statistics.median(seconds[prdc]) for prdc in (True, False))
    share = 1 - without / with_prdc
    return {"with_prdc_s": with_prdc, "without_prdc_s": without, "prdc_share": share}
