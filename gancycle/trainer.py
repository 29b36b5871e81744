"""The GAN trainer: generator and discriminator on one clock, their cycles out of phase.

One global step ``t`` drives everything. Each network's learning rate is a schedule from the
core (``[lr.G]``, ``[lr.D]``), built once by :func:`gancycle.settings.check_config`. In the
2D configs D follows G's clock in anti-phase (``follow = "G", mode = "anti"``): when G takes
large steps, D is cautious, and the other way round; an ``offset`` on a schedule of its own
would instead shift D's cycles. D's schedule is also
the clock of two optional regularisers that rise while D's learning rate is low (anti-phase):
instance noise on D's inputs and one-sided label smoothing. At each restart a network may forget
its Adam state, and G's weights at the end of each of its cycles join a snapshot ensemble.

One step, top to bottom (:meth:`GanTrainer.train_step`)::

    real ~ data, z ~ N(0, I), fake = G(z)
    D: minimise loss_D(D(real + noise), D(fake + noise))      (d_steps times)
    G: minimise loss_G(D(fake + noise))                         (fake reused, as in DCGAN)
    EMA of G

With ``loss.simultaneous`` G's update is computed before D's (both gradients at the same
point, as PacGAN's code takes them); G's gradient accumulated into D is cleared by D's update.
With ``model.pack = m`` D scores packs of ``m`` samples (PacGAN): real and fake batches are
grouped into ``batch / m`` packs after the instance noise, and the losses average over packs.

Everything random comes from one seeded ``torch.Generator`` saved in the checkpoint, so a run
resumed from ``checkpoints/last.pt`` continues exactly as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from common.config import (
    CheckedConfig,
    ConfigError,
    check_run_package,
    flatten,
    read_config,
    save_config,
)
from common.coupling import CallableTarget
from common.dynamics import KineticEnergy, Thermostat
from common.flat_params import FlatParameters
from common.runs import (
    MISFITS,
    atomic_torch_save,
    atomic_write_json,
    check_resume_steps,
    checkpoint_misfit,
    checkpoint_step,
    hold_run_folder,
    load_checkpoint,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)
from common.snapshots import SnapshotEnsemble
from common.tb import RunWriter
from common.torch_driver import ScheduleDriver, drive_optimizer
from gancycle.classifier import load_or_train_classifier
from gancycle.data import ImageData, Mixture2D, load_data
from gancycle.ema import EMA
from gancycle.inception import InceptionFeatures
from gancycle.losses import (
    d_output,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    mixing_weights,
)
from gancycle.metrics import evaluate
from gancycle.models import build_models, generate_in_packs, pack_samples
from gancycle.sampling import evaluation_draws, generate, generate_mixture
from gancycle.settings import COUPLED, RESETS, check_config, check_single_run

__all__ = ["GanTrainer", "Divergence", "train", "open_run", "NETS", "WHICH"]

NETS = ("G", "D")
WHICH = ("G", "ema", "ensemble")
"""Which generator to sample: the trained one, its EMA, or the mixture of cycle snapshots."""

CHARTS = {
    "G and D learning rates": ["lr/G", "lr/D"],
    "schedule levels": ["schedule/level/G", "schedule/level/D"],
    "losses": ["loss/G", "loss/D"],
    "D outputs": ["D/real", "D/fake"],
    "kinetic energy": ["dynamics/kinetic_energy/G", "dynamics/kinetic_energy/D"],
    "gradient norms": ["dynamics/grad_norm/G", "dynamics/grad_norm/D"],
    "D regularisers": ["hparam/instance_noise", "hparam/label_smoothing"],  # when enabled
}
"""Custom-scalar charts (``RunWriter.layout``): each shows once the run writes one of its tags."""


class Divergence(RuntimeError):
    """A NaN or Inf where training cannot go on: a loss, a gradient norm, an update's kinetic
    energy or a parameter.

    Attributes:
        step: the step whose update produced it.
        tag: what was not finite, as its TensorBoard tag (``loss/D``,
            ``dynamics/grad_norm/G``, ``dynamics/kinetic_energy/D``) or ``parameters/<net>``.
        value: the value (``nan``, ``inf`` or ``-inf``).
    """

    def __init__(self, step: int, tag: str, value: float) -> None:
        super().__init__(f"step {step}: {tag} = {value}")
        self.step, self.tag, self.value = step, tag, value

    @property
    def net(self) -> str:
        return self.tag.rsplit("/", 1)[-1]

    def record(self) -> dict[str, Any]:
        """What ``metrics.json`` keeps of it (``final.diverged``)."""
        return {"step": self.step, "net": self.net, "tag": self.tag, "value": str(self.value)}


class RunningMeans:
    """Sums and counts of logged values between two logs (saved in checkpoints)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, tag: str, value: float) -> None:
        self.sums[tag] = self.sums.get(tag, 0.0) + value
        self.counts[tag] = self.counts.get(tag, 0) + 1

    def pop_means(self) -> dict[str, float]:
        """The mean of each tag since the last call; starts a new window."""
        means = {tag: total / self.counts[tag] for tag, total in self.sums.items()}
        self.sums, self.counts = {}, {}
        return means

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])


class GanTrainer:
    """Trains one GAN run in ``run_dir`` from a checked config (see ``gancycle/configs``).

    Args:
        config: the run's config, whole or only the keys it changes, or a checked config
            (:func:`gancycle.settings.check_config` is applied).
        run_dir: the run folder: ``config.toml``, events, ``metrics.json``, ``checkpoints/``,
            ``snapshots/``, ``data/`` (the cached classifier of image metrics).
        device: overrides ``config["device"]``.
    """

    def __init__(
        self,
        config: dict[str, Any] | CheckedConfig,
        run_dir: str | Path,
        device: torch.device | str | None = None,
    ) -> None:
        self.checked = check_config(config)
        self.config = config = self.checked.config
        self.run_dir = Path(run_dir)
        self.device = torch.device(device) if device else resolve_device(config["device"])
        self.amp = bool(config["amp"])
        if config["threads"] > 0:
            torch.set_num_threads(config["threads"])
        seed = config["seed"]
        seed_everything(seed)
        # One generator for every random draw of training: batches, z, instance noise, GP.
        self.generator = torch.Generator(self.device).manual_seed(seed)

        self.data = load_data(config["data"]).to(self.device)
        self.G, self.D = (
            net.to(self.device) for net in build_models(config["model"], self.data.shape)
        )
        self.nets = {"G": self.G, "D": self.D}
        # What train_step calls: these, or their DistributedDataParallel wrappers (gancycle.ddp).
        self.train_nets: dict[str, torch.nn.Module] = dict(self.nets)
        # Each network's weights and gradients in one buffer: per-step dynamics in a few kernels.
        self.flat = {net: FlatParameters(self.nets[net].parameters()) for net in NETS}
        self.z_dim = int(config["model"]["z_dim"])
        self.pack = int(config["model"]["pack"])
        self.ema = EMA(self.G, config["ema"]["decay"])
        self.opts = {net: self._optimizer(self.nets[net]) for net in NETS}
        self.kinetic = {net: KineticEnergy(self.flat[net]) for net in NETS}
        self.thermostats = {
            net: Thermostat(self.opts[net], config["thermostat"][net], generator=self.generator)
            for net in NETS
            if config["thermostat"][net] > 0
        }
        # snapshots.max = 0: no snapshots (the ensemble stays empty; it keeps at least one)
        keep = config["snapshots"]["max"]
        self.snapshots = SnapshotEnsemble(max(keep, 1), self.run_dir / "snapshots")

        self.step = 0  # updates done
        self.lr_scale = 1.0  # lowered by each NaN rollback
        self.rollbacks = 0
        self.resumes = 0  # times this run was resumed (counted by :func:`train`)
        self.history: list[dict[str, Any]] = []
        self.window = RunningMeans()  # what happened since the last log
        self._build_rhythm()

        self.eval_z, self.eval_real = evaluation_draws(
            self.data, config["eval"]["samples"], self.z_dim, seed
        )
        self._classifier: Any = None
        self.classifier_accuracy: float | None = None  # images: on the held-out real tenth
        self._inception: Any = None
        self._writer: RunWriter | None = None
        self._purge_step: int | None = None  # set by restart_events

    # -- building blocks --------------------------------------------------------------------

    def _optimizer(self, net: torch.nn.Module) -> torch.optim.Optimizer:
        cfg = self.config["optim"]
        if cfg["name"] == "sgd":
            return torch.optim.SGD(net.parameters(), lr=0.0, momentum=cfg["beta1"])
        return torch.optim.Adam(net.parameters(), lr=0.0, betas=(cfg["beta1"], cfg["beta2"]))

    def _build_rhythm(self) -> None:
        """Drivers of the checked schedules and couplings (rebuilt when a rollback lowers the
        rates)."""
        cfg = self.config
        self.schedules = {net: self.checked.schedules[net] for net in NETS}
        if self.lr_scale != 1.0:  # after a NaN rollback: every rate lower, the clock as it was
            self.schedules = {net: s.scaled(self.lr_scale) for net, s in self.schedules.items()}
        self.drivers: dict[str, ScheduleDriver] = {}
        for net in NETS:
            reset = RESETS[cfg["reset"][net]]
            try:
                self.drivers[net] = drive_optimizer(
                    self.opts[net], self.schedules[net], reset=reset, name=net
                )
            except ValueError as e:
                raise ConfigError(f"reset.{net} = {cfg['reset'][net]!r}: {e}") from None
        if cfg["snapshots"]["max"] > 0:  # at each restart and the end of a schedule that ends
            snapshot = self._snapshot_hook()
            self.drivers["G"].on_restart(snapshot).on_end(snapshot)
        self.drivers["G"].on_restart(self._checkpoint_after_step)
        self.drivers["G"].on_end(self._checkpoint_after_step)
        # D's regularisers follow D's clock (its level: a rollback leaves it as it is); the
        # trainer reads the values from self.coupled.
        self.coupled = dict.fromkeys(COUPLED, 0.0)
        for name, coupling in self.checked.couplings.items():
            target = CallableTarget(lambda v, name=name: self.coupled.__setitem__(name, v), name)
            self.drivers["D"].bind(name, coupling, target)
        self._checkpoint_due = False

    def _snapshot_hook(self) -> Any:
        snapshot = self.snapshots.hook(self.G)

        def take_finite_snapshot(step: float, phase: Any) -> None:
            self.check_finite(int(step) - 1)  # never a snapshot of a diverged G
            snapshot(step, phase)

        return take_finite_snapshot

    def _checkpoint_after_step(self, step: float, phase: Any) -> None:
        self._checkpoint_due = True  # a snapshot was taken: keep the checkpoint in step with it

    def set_schedules(self, t: int) -> dict[str, float]:
        """Write the learning rates and coupled values of step ``t``; fire restart hooks."""
        return {**self.drivers["G"].set(t), **self.drivers["D"].set(t)}

    # -- one step ---------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the run's device (``amp = true``; CUDA or CPU)."""
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _shard(self, draw: torch.Tensor) -> torch.Tensor:
        """This process's rows of a draw for the whole batch: all of them here; one rank's
        share under data parallelism (:class:`gancycle.ddp.DataParallelTrainer`)."""
        return draw

    def _noise(self, batch: int) -> torch.Tensor:
        z = torch.randn(batch, self.z_dim, generator=self.generator, device=self.device)
        return self._shard(z)

    def _instance_noise(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (this process's rows of the batch) plus noise drawn for the whole batch."""
        std = self.coupled["instance_noise"]
        if std == 0.0:
            return x
        shape = (self.config["data"]["batch"], *x.shape[1:])
        noise = torch.randn(shape, generator=self.generator, device=self.device)
        return x + std * self._shard(noise)

    def _loss_value(self, loss: torch.Tensor) -> float:
        """The loss as logged and checked for NaN (data parallel: the mean over the ranks)."""
        return float(loss.detach())

    def _update(self, net: str, loss: torch.Tensor) -> None:
        """backward, (thermostat,) optimizer step; records the loss and, every
        ``dynamics.every`` steps, the gradient norm and the kinetic energy |Δθ|².

        Raises:
            Divergence: a non-finite loss (the update is not applied), or a non-finite gradient
                norm or kinetic energy on a measured step (it was).
        """
        value = self._loss_value(loss)
        if not math.isfinite(value):
            raise Divergence(self.step, f"loss/{net}", value)
        self.window.add(f"loss/{net}", value)
        opt, thermostat = self.opts[net], self.thermostats.get(net)
        measure = thermostat is not None or self.step % self.config["dynamics"]["every"] == 0
        self.flat[net].zero_grad()
        loss.backward()
        if thermostat is not None:
            self.window.add(f"dynamics/thermostat_sigma/{net}", thermostat.apply())
        if not measure:
            opt.step()
            return
        self.kinetic[net].before()
        opt.step()
        energy, norm = self.kinetic[net].after_with_grad_norm()
        # Read back anyway, so checking them is free. |Δθ|² is not finite when a weight was
        # not finite before or after the update: this also checks the parameters.
        for tag, measured in (("grad_norm", norm), ("kinetic_energy", energy)):
            if not math.isfinite(measured):
                raise Divergence(self.step, f"dynamics/{tag}/{net}", measured)
        self.window.add(f"dynamics/kinetic_energy/{net}", energy)
        self.window.add(f"dynamics/grad_norm/{net}", norm)

    def check_finite(self, step: int) -> None:
        """Raise :class:`Divergence` (tag ``parameters/<net>``) if a weight of G or D is NaN or
        Inf; ``step`` is the step whose update is blamed.

        One kernel per network (its weights are one buffer) and one read-back: the trainer
        calls it at each log and evaluation, before each checkpoint and snapshot, and at the end
        of a run.
        """
        finite = torch.stack([self.flat[net].data.isfinite().all() for net in NETS]).tolist()
        for net, ok in zip(NETS, finite, strict=True):
            if not ok:
                weights = self.flat[net].data
                raise Divergence(step, f"parameters/{net}", float(weights[~weights.isfinite()][0]))

    def train_step(self) -> None:
        """One generator update after ``loss.d_steps`` discriminator updates."""
        cfg = self.config
        batch, loss_name = cfg["data"]["batch"], cfg["loss"]["name"]
        gp_weight, d_steps = cfg["loss"]["gp_weight"], cfg["loss"]["d_steps"]
        G, D = self.train_nets["G"], self.train_nets["D"]
        pack, simultaneous = self.pack, cfg["loss"]["simultaneous"]
        with self._autocast():
            for _ in range(d_steps):
                real = self._shard(self.data.sample(batch, self.generator))
                real = self._instance_noise(real)
                fake = generate_in_packs(G, self._noise(batch), pack)  # graph kept for G
                real = pack_samples(real, pack)  # D scores packs of model.pack samples
                fake_in = pack_samples(self._instance_noise(fake.detach()), pack)
                real_score, fake_score = D(real), D(fake_in)
                loss_D = discriminator_loss(
                    loss_name, real_score, fake_score, self.coupled["label_smoothing"]
                )
                if gp_weight > 0:
                    packs = batch // pack  # one mixing weight per pack, drawn for the whole batch
                    alpha = self._shard(mixing_weights(packs, real.dim(), self.generator))
                    loss_D = loss_D + gp_weight * gradient_penalty(D, real, fake_in, alpha=alpha)
                if simultaneous:  # G's gradient at the D that scored this batch (PacGAN's)
                    self._update_g(fake, loss_name)
                self._update("D", loss_D)
                self.window.add("D/real", d_output(loss_name, real_score))
                self.window.add("D/fake", d_output(loss_name, fake_score))
            if not simultaneous:
                self._update_g(fake, loss_name)
        self.ema.update()

    def _update_g(self, fake: torch.Tensor, loss_name: str) -> None:
        fake_in = pack_samples(self._instance_noise(fake), self.pack)
        self._update("G", generator_loss(loss_name, self.train_nets["D"](fake_in)))

    # -- the loop ---------------------------------------------------------------------------

    def train(self, steps: int | None = None, progress: bool = True) -> dict[str, Any]:
        """Train until ``steps`` updates are done (default: ``config["steps"]``), then evaluate.

        See :meth:`advance` for what happens on the way. At the end the G cycle that ends with
        the run is snapshotted, G, its EMA and the snapshot ensemble evaluated, and a checkpoint
        written (its history ends with this evaluation). A divergence that stops the run
        restores the last checkpoint first, so the final metrics describe the state
        ``checkpoints/last.pt`` holds.

        Args:
            steps: train until this many updates are done.
            progress: a progress bar on stderr, if the config's ``progress`` allows it and
                stderr is a terminal (nothing is written into a log file).

        Returns:
            The final metrics (also in ``metrics.json``): per generator (``G``, ``ema``,
            ``ensemble`` when snapshots exist) the metrics of :func:`gancycle.metrics.evaluate`,
            plus ``steps`` (of the evaluated state), ``wall_s`` and ``steps_per_s`` (of the
            training loop, evaluations at the end excluded), ``rollbacks``, ``resumes`` and,
            after a divergence that stopped the run, ``diverged`` (see
            :meth:`Divergence.record`).
        """
        steps = self.config["steps"] if steps is None else steps
        self.begin()
        bar = tqdm(
            total=steps,
            initial=self.step,
            disable=None if progress else True,  # None: no bar unless stderr is a terminal
            desc=self.run_dir.name,
        )
        start_step, start_time = self.step, time.perf_counter()
        diverged = self.advance(steps, bar)
        bar.close()
        return self.finish(diverged, time.perf_counter() - start_time, self.step - start_step)

    def begin(self) -> None:
        """Before the first update of a fresh run: a checkpoint, the target of a rollback."""
        if self.step == 0 and not self.checkpoint_path.exists():
            self.save_checkpoint()

    def finish(self, diverged: Divergence | None, wall: float, ran: int) -> dict[str, Any]:
        """End the run after ``ran`` updates in ``wall`` seconds (see :meth:`train`): the last
        snapshot and checkpoint (or, after a divergence, back to the checkpoint), the final
        evaluation, ``metrics.json`` and hparams. Returns the final metrics."""
        if diverged is None:
            self.set_schedules(self.step)  # a cycle ending with the run is snapshotted too
        else:
            if self.window.sums:
                self._log(diverged.step)  # what led to the divergence stays in the events
            self._back_to_checkpoint()  # metrics.json describes what last.pt holds
        final = self.evaluate_and_log(final=True)
        # After the evaluation: a run extended by --resume keeps this end in its history.
        self.save_checkpoint()
        if diverged is None and self.window.sums and self.step > 0:
            self._log(self.step - 1)  # the last, partial window (still in the checkpoint)
        final.update(
            steps=self.step,
            wall_s=wall,
            steps_per_s=ran / wall if wall > 0 else 0.0,
            rollbacks=self.rollbacks,
            resumes=self.resumes,
        )
        if diverged is not None:
            final["diverged"] = diverged.record()
        self._write_metrics(final)
        self.writer.hparams(flatten(self.config), final["G"])
        self.writer.close()
        self._writer = None
        return final

    def advance(self, until: int, bar: Any = None) -> Divergence | None:
        """The training loop: run steps until ``until`` updates are done.

        Each step: learning rates and coupled values for step ``t`` (restart hooks fire here),
        then :meth:`train_step`. Scalars every ``log.every`` steps, an evaluation every
        ``eval.every`` steps (0: none here), a checkpoint every ``checkpoint.every`` steps and
        after each snapshot.

        A NaN or Inf (see :class:`Divergence`) stops the loop (``on_nan = "stop"``; returned)
        or rolls back to the last checkpoint with both learning-rate schedules scaled by
        ``rollback.factor`` (``on_nan = "rollback"``, at most ``rollback.max`` times). Losses
        are checked every step; gradient norms and update energies where the dynamics are
        measured (``dynamics.every``); parameters at each log and evaluation, before each
        checkpoint and snapshot, and at the last step, so a checkpoint never holds a diverged
        state.
        """
        while self.step < until:
            t = self.step
            try:
                self.set_schedules(t)
                self.train_step()
                due = self.due(t + 1, until)
                if any(due) or t + 1 == until:
                    self.check_finite(t)
            except Divergence as e:
                if not self.recover(e):
                    return e
            else:
                self.after_step(t, *due, bar=bar)
            if bar is not None:
                bar.update(self.step - bar.n)
        return None

    def due(self, done: int, until: int) -> tuple[bool, bool, bool]:
        """What is due once ``done`` updates are done on the way to ``until``: a log, an
        evaluation, a checkpoint (also after a snapshot)."""
        cfg = self.config
        eval_every, ckpt_every = cfg["eval"]["every"], cfg["checkpoint"]["every"]
        log_due = done % cfg["log"]["every"] == 0
        eval_due = bool(eval_every and done % eval_every == 0 and done < until)
        checkpoint_due = self._checkpoint_due or bool(ckpt_every and done % ckpt_every == 0)
        return log_due, eval_due, checkpoint_due

    def after_step(
        self, t: int, log_due: bool, eval_due: bool, checkpoint_due: bool, bar: Any = None
    ) -> None:
        """Step ``t``'s update is done and its state finite: count it; log, evaluate and write
        the checkpoint as :meth:`due` said."""
        self.step = t + 1
        if log_due:
            self._log(t, bar)
        if eval_due:
            self.evaluate_and_log()
        if checkpoint_due:
            self.save_checkpoint()

    def recover(self, divergence: Divergence) -> bool:
        """After ``divergence``: roll back (``on_nan = "rollback"`` and rollbacks left; returns
        true) or not (the run stops; returns false)."""
        cfg = self.config
        if cfg["on_nan"] != "rollback" or self.rollbacks >= cfg["rollback"]["max"]:
            return False
        self.rollback()
        message = f"divergence: {divergence}; rolled back to step {self.step}"
        tqdm.write(f"{message}, lr scale {self.lr_scale:g}", file=sys.stderr)
        return True

    @property
    def writer(self) -> RunWriter:
        """The run's event writer; the first one opened after :meth:`restart_events` purges."""
        if self._writer is None:
            self._writer = RunWriter(self.run_dir, purge_step=self._purge_step)
            self._writer.layout(CHARTS, "gancycle")
            self._purge_step = None
        return self._writer

    def restart_events(self) -> None:
        """Continue the events from this (restored) step: TensorBoard drops what earlier event
        files hold at this step and after, so a resumed or rolled-back run reads as one curve."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._purge_step = self.step

    def _log(self, t: int, bar: Any = None) -> None:
        """Learning rates and levels at step ``t``; means of everything else since the last log."""
        values = {**self.drivers["G"].values(t), **self.drivers["D"].values(t)}
        scalars = {f"lr/{net}": values[net] for net in NETS}
        for net in NETS:
            scalars[f"schedule/level/{net}"] = self.schedules[net].phase(t).level
        scalars["schedule/cycle"] = self.schedules["G"].phase(t).cycle
        for name in self.coupled:
            if name in values:
                scalars[f"hparam/{name}"] = values[name]
        scalars.update(self.window.pop_means())
        self.writer.scalars(scalars, t)
        if bar is not None:
            bar.set_postfix(
                lr_G=f"{values['G']:.2e}",
                lr_D=f"{values['D']:.2e}",
                loss_G=f"{scalars.get('loss/G', 0):.3f}",
                loss_D=f"{scalars.get('loss/D', 0):.3f}",
                refresh=False,
            )

    # -- sampling and evaluation ------------------------------------------------------------

    def sample(self, n: int, which: str = "G", seed: int = 0) -> torch.Tensor:
        """``n`` samples (on the CPU) from the trained generator, its EMA or the snapshot mixture.

        Points have shape (n, 2); images (n, C, H, W) in [-1, 1].
        """
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=generator)
        return self._sample_z(z.to(self.device), which, generator).cpu()

    def _sample_z(self, z: torch.Tensor, which: str, generator: torch.Generator) -> torch.Tensor:
        if which == "G":
            return generate(self.G, z)
        if which == "ema":
            return generate(self.ema.model, z)
        if which == "ensemble":
            return generate_mixture(self.G, self.snapshots.state_dicts, z, generator)
        raise ValueError(f"which = {which!r}: must be one of {' | '.join(WHICH)}")

    def _feature_nets(self) -> tuple[Any, Any]:
        if isinstance(self.data, ImageData) and self._classifier is None:
            self._classifier, accuracy = load_or_train_classifier(
                self.data,
                self.run_dir / "data" / "classifier.pt",
                self.config["eval"]["classifier_steps"],
                self.device,
                seed=self.config["seed"],
            )
            self.classifier_accuracy = accuracy
        weights = self.config["eval"]["inception_weights"]
        if isinstance(self.data, ImageData) and weights and self._inception is None:
            self._inception = InceptionFeatures(weights, self.device)
        return self._classifier, self._inception

    def evaluate(self, which: str = "G") -> dict[str, float]:
        """Metrics of one generator on ``eval.samples`` samples (fixed noise and real draw)."""
        classifier, inception = self._feature_nets()
        generator = torch.Generator().manual_seed(self.config["seed"] + 3)

        def sample(n: int) -> torch.Tensor:
            return self._sample_z(self.eval_z[:n].to(self.device), which, generator)

        with_prdc = self.config["eval"]["prdc"]
        return evaluate(sample, self.eval_real, self.data, classifier, inception, with_prdc)

    def evaluate_and_log(self, final: bool = False) -> dict[str, Any]:
        """Evaluate G and its EMA (and at the end the snapshot ensemble); log and record."""
        which = ["G", "ema"] + (["ensemble"] if final and len(self.snapshots) else [])
        result: dict[str, Any] = {name: self.evaluate(name) for name in which}
        scalars = {f"eval/{m}": v for m, v in result["G"].items()}
        scalars.update({f"eval/ema/{m}": v for m, v in result["ema"].items()})
        if "ensemble" in result:
            scalars.update({f"eval/ensemble/{m}": v for m, v in result["ensemble"].items()})
        self.writer.scalars(scalars, self.step)
        self._log_samples()
        if self.classifier_accuracy is not None:
            result["classifier_accuracy"] = self.classifier_accuracy
        self.history.append({"step": self.step, **result})
        self._write_metrics(None)
        return result

    def _log_samples(self) -> None:
        # Imported here: matplotlib and torchvision take seconds, and ranks of gancycle.ddp
        # other than 0 never plot.
        from gancycle.plots import image_grid, scatter_over_modes

        if isinstance(self.data, Mixture2D):
            points = generate(self.G, self.eval_z.to(self.device)).cpu()
            title = f"step {self.step}"
            fig = scatter_over_modes(points, self.data.centers, self.data.std, title)
            self.writer.figure("samples", fig, self.step)
        else:
            images = generate(self.G, self.eval_z[:64].to(self.device))
            self.writer.image("samples", image_grid(images), self.step)

    def _write_metrics(self, final: dict[str, Any] | None) -> None:
        path = self.run_dir / "metrics.json"
        atomic_write_json({"final": final, "history": self.history}, path)

    # -- checkpoints ------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, in types ``torch.load(weights_only=True)`` reads."""
        return {
            "step": self.step,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "ema": self.ema.model.state_dict(),
            "opt_G": self.opts["G"].state_dict(),
            "opt_D": self.opts["D"].state_dict(),
            "driver_G": self.drivers["G"].state_dict(),
            "driver_D": self.drivers["D"].state_dict(),
            "generator": self.generator.get_state(),
            "rng": rng_state(),
            "snapshots": self.snapshots.state_dict(),
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "resumes": self.resumes,
            "window": self.window.state_dict(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.ema.model.load_state_dict(state["ema"])
        for net in NETS:
            self.opts[net].load_state_dict(state[f"opt_{net}"])
        self.lr_scale, self.rollbacks = float(state["lr_scale"]), int(state["rollbacks"])
        self.resumes = int(state.get("resumes", 0))  # absent before resumes were counted
        self._build_rhythm()
        for net in NETS:
            self.drivers[net].load_state_dict(state[f"driver_{net}"])
        self._restore_generator(state["generator"])
        set_rng_state(state["rng"])
        self.snapshots.load_state_dict(state["snapshots"])
        self.window.load_state_dict(state["window"])
        self.history = list(state["history"])

    def _restore_generator(self, saved: torch.Tensor) -> None:
        """The training generator's state; a state of another device kind's generator (a run
        written on CUDA resumed on the CPU, or back: Philox against Mersenne Twister) cannot be
        restored, so the stream is seeded from it instead, the same way each time."""
        if saved.numel() == self.generator.get_state().numel():
            self.generator.set_state(saved)
            return
        seed = int.from_bytes(hashlib.sha256(saved.numpy().tobytes()).digest()[:8], "little")
        self.generator.manual_seed(seed)
        tqdm.write(
            f"resumed on {self.device.type}: the checkpoint's random stream is another device's; "
            "training goes on with a new stream seeded from it",
            file=sys.stderr,
        )

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/last.pt`` atomically."""
        self._checkpoint_due = False
        return atomic_torch_save(self.state_dict(), self.checkpoint_path)

    def load_checkpoint(self) -> None:
        """Restore ``checkpoints/last.pt`` (loaded with ``weights_only=True``).

        Raises:
            ConfigError: the file is damaged, or holds a state that does not fit this run's
                config (other network sizes, another kind of run).
        """
        path = self.checkpoint_path
        state = load_checkpoint(path, map_location="cpu")  # a damaged file: ConfigError
        checkpoint_step(state, path)
        try:
            self.load_state_dict(state)
        except MISFITS as e:
            raise checkpoint_misfit(path, e) from None

    def _back_to_checkpoint(self) -> None:
        """Restore the last checkpoint in a live run; its count of resumes stays."""
        resumes = self.resumes
        self.load_checkpoint()
        self.resumes = resumes

    def rollback(self) -> None:
        """Back to the last checkpoint, both lr schedules scaled by ``rollback.factor``."""
        rollbacks = self.rollbacks + 1
        scale = self.lr_scale * self.config["rollback"]["factor"]
        self._back_to_checkpoint()
        self.restart_events()
        self.rollbacks, self.lr_scale = rollbacks, scale
        cycles = {net: self.drivers[net].state_dict() for net in NETS}
        self._build_rhythm()
        for net in NETS:
            self.drivers[net].load_state_dict(cycles[net])
        self.save_checkpoint()

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        device: torch.device | str | None = None,
        config: dict[str, Any] | None = None,
    ) -> GanTrainer:
        """The trainer of an existing run folder, restored from its last checkpoint.

        ``config`` replaces the run's ``config.toml`` (e.g. with other evaluation settings).
        """
        run_dir = Path(run_dir)
        config = read_config(run_dir / "config.toml") if config is None else config
        if not isinstance(config, CheckedConfig):
            check_run_package(config, "gancycle", run_dir, "--run")
        trainer = cls(config, run_dir, device)
        trainer.load_checkpoint()
        return trainer


def train(
    config: dict[str, Any] | CheckedConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train a GAN run; the function behind ``gancycle-train``.

    The run holds its folder for its whole life (:func:`common.runs.hold_run_folder`): a second
    trainer on it, or a fresh run on a folder that holds one, is a :class:`ConfigError`.

    Args:
        config: the resolved config (whole, or only the keys it changes), or a checked one.
        run_dir: the run folder; its ``config.toml`` is (re)written with the full config.
        resume: continue from ``run_dir/checkpoints/last.pt``.
        progress: show a progress bar (default: the config's ``progress``).

    Returns:
        The final metrics (see :meth:`GanTrainer.train`).
    """
    if resume and not isinstance(config, CheckedConfig):
        check_run_package(config, "gancycle", run_dir, "--resume")
    checked = check_config(config)  # a bad key stops here, before the folder is made
    resolve_device(checked.config["device"])  # and a device this machine lacks
    check_single_run(checked.config)  # averaging and member offsets need a population
    with hold_run_folder(run_dir, resume):
        trainer = open_run(checked, run_dir, resume)
        show = trainer.config["progress"] if progress is None else progress
        return trainer.train(progress=show)


def open_run(
    checked: CheckedConfig,
    run_dir: str | Path,
    resume: bool,
    device: torch.device | str | None = None,
) -> GanTrainer:
    """The trainer of a run whose folder the caller holds: fresh, or restored from
    ``checkpoints/last.pt`` (one more resume counted); ``config.toml`` (re)written."""
    trainer = GanTrainer(checked, run_dir, device)
    if resume:
        trainer.load_checkpoint()
        check_resume_steps(run_dir, trainer.step, trainer.config["steps"])
        trainer.restart_events()
        trainer.resumes += 1
    save_config(trainer.config, Path(run_dir) / "config.toml")
    return trainer
