"""A population whose members are runs: each writes the run folder its single run would write.

:func:`train_population` trains N gancycle configs as one :class:`~gancycle.population.Population`
and gives each member a normal run folder (``config.toml``, TensorBoard events, ``metrics.json``,
``checkpoints/last.pt``, ``snapshots/cycle_<k>.pt``), so ``gancycle-sample``, ``gancycle-eval``
and ``gancycle-train --resume`` read it as a single run's.

Nothing of the single trainer is copied: each member has a :class:`~gancycle.trainer.GanTrainer`
of its own config and folder, its *shell*, whose pieces do the run-folder work (logging,
evaluation, snapshots, checkpoints, rollback, the end of the run). The shell's networks and
optimizers hold the member's state only when those pieces need it: the population's rows are
copied into the shell before an evaluation, a snapshot, a checkpoint and the end
(:meth:`MemberRun.pull`), and a restored shell is copied back into the rows after a resume or
a rollback (:meth:`MemberRun.push`). The training itself is the population's batched step.

Per member, as :meth:`GanTrainer.advance` does for one run: logs, evaluations and checkpoints at
its own steps; a NaN or Inf stops it (``on_nan = "stop"``: its folder then describes its last
checkpoint) or rolls it back to its last checkpoint with lowered rates (``on_nan =
"rollback"``); the others go on. Members end at their own ``steps``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import _get_scalar_dtype

from common.config import CheckedConfig, ConfigError, get
from common.runs import final_metrics, hold_run_folder, torch_threads
from gancycle.averaging import resolve_offsets
from gancycle.population import NETS, SHARED, Population, member_problem
from gancycle.settings import check_config
from gancycle.trainer import Divergence, GanTrainer, open_run

__all__ = ["MemberRun", "PopulationRun", "train_population", "ended_run", "pack_populations"]


def ended_run(run_dir: str | Path, steps: int) -> dict[str, Any] | None:
    """The final metrics of the run in ``run_dir`` if it ended: it did its ``steps`` or stopped
    at a divergence. ``None`` for a run cut off, or one to continue to more steps."""
    final = final_metrics(run_dir)
    if final is not None and (final.get("steps", 0) >= steps or "diverged" in final):
        return final
    return None


class MemberRun:
    """Member ``k`` of ``population`` and the single-run trainer of its folder (its shell).

    Attributes:
        trainer: the shell (:class:`GanTrainer` of the member's config and folder).
        until: the member's ``steps``.
        started: its step when this session began (for ``steps_per_s``).
        final: its final metrics once it ended.
    """

    def __init__(self, population: Population, k: int, trainer: GanTrainer) -> None:
        self.population, self.k, self.trainer = population, k, trainer
        self.member = population.members[k]
        self.until = int(trainer.config["steps"])
        self.started = trainer.step
        self.final: dict[str, Any] | None = None
        self.push()  # a fresh shell holds what the rows hold already; a resumed one, its own

    # -- copying state between the rows and the shell ---------------------------------------

    def pull_nets(self) -> None:
        """The member's G, D and EMA weights into the shell."""
        state = self.population.member_state(self.k)
        self.trainer.G.load_state_dict(state["G"])
        self.trainer.D.load_state_dict(state["D"])
        self.trainer.ema.model.load_state_dict(state["ema"])

    def pull(self) -> None:
        """Everything of the member a checkpoint holds into the shell: weights, optimizer
        state and learning rates, clock, random stream, step."""
        self.pull_nets()
        for net in NETS:
            self._pull_optimizer(net)
            self.trainer.drivers[net].load_state_dict(self.member.drivers[net].state_dict())
        self.trainer.generator.set_state(self.member.generator.get_state())
        self.trainer.coupled.update(self.member.coupled)
        self.trainer.step = self.member.step

    def _pull_optimizer(self, net: str) -> None:
        """The member's rows of the batched optimizer as ``torch.optim``'s own state."""
        opt, batched = self.trainer.opts[net], self.population.opts[net]
        stack = self.population.nets[net].stack
        group = opt.param_groups[0]
        group["lr"] = self.member.lr.get(net, group["lr"])
        opt.state.clear()
        if self.member.step == 0 or not group.get("momentum", 1):
            return  # torch makes its state at the first update; SGD keeps none without momentum
        rows = {
            key: stack.member_state_dict(self.k, buffers[0])
            for key, buffers in batched.state.items()
            if key != "step"
        }
        for name, param in self.trainer.nets[net].named_parameters():
            state = {key: rows[key][name] for key in batched.state if key != "step"}
            if "step" in batched.state:
                count = float(batched.state["step"][0][self.k])
                state["step"] = torch.tensor(count, dtype=_get_scalar_dtype())
            opt.state[param] = state

    def push(self) -> None:
        """The shell's state (a restored checkpoint) into the member's rows and clock."""
        population, k, trainer = self.population, self.k, self.trainer
        # weights and BatchNorm's running statistics (a DCGAN G; an MLP G with g_batchnorm)
        population.G.load_member_state_dict(k, trainer.G.state_dict())
        population.D.load_member_state_dict(k, trainer.D.state_dict())
        population.G.stack.load_member(k, trainer.ema.model.state_dict(), population.ema)
        for net in NETS:
            self._push_optimizer(net)
        population.set_member_schedules(k, trainer.schedules)  # scaled after a rollback
        for net in NETS:
            self.member.drivers[net].load_state_dict(trainer.drivers[net].state_dict())
        self.member.generator.set_state(trainer.generator.get_state())
        self.member.step = trainer.step
        self.member.diverged = None
        population.stopped[k] = False
        self._hook()

    @torch.no_grad()
    def _push_optimizer(self, net: str) -> None:
        opt, batched = self.trainer.opts[net], self.population.opts[net]
        stack = self.population.nets[net].stack
        params = dict(self.trainer.nets[net].named_parameters())
        for key, buffers in batched.state.items():
            if key == "step":
                first = opt.state.get(next(iter(params.values())), {})
                buffers[0][self.k] = float(first.get("step", 0.0))
                continue
            values = {name: opt.state.get(p, {}).get(key) for name, p in params.items()}
            values = {
                name: torch.zeros_like(params[name]) if value is None else value
                for name, value in values.items()
            }
            stack.load_member(self.k, values, buffers[0])

    # -- the clock's hooks ------------------------------------------------------------------

    def _hook(self) -> None:
        """The single trainer's hooks on G's clock: a snapshot at each restart and end (of the
        member's weights, copied into the shell first), then a checkpoint after the step."""
        trainer, driver = self.trainer, self.member.drivers["G"]
        if trainer.config["snapshots"]["max"] > 0:
            snapshot = trainer._snapshot_hook()

            def take_snapshot(step: float, phase: Any) -> None:
                self.pull_nets()
                snapshot(step, phase)

            driver.on_restart(take_snapshot).on_end(take_snapshot)
        driver.on_restart(trainer._checkpoint_after_step).on_end(trainer._checkpoint_after_step)

    # -- the end ----------------------------------------------------------------------------

    def finish(self, diverged: Divergence | None, wall: float) -> dict[str, Any]:
        """End the member's run as the single trainer ends it; its final metrics."""
        if diverged is None:
            self.pull()
        self.final = self.trainer.finish(diverged, wall, self.trainer.step - self.started)
        self.population.stopped[self.k] = True
        return self.final


class PopulationRun:
    """The loop of :func:`train_population`: one batched step for the running members, then
    each member's bookkeeping as :meth:`GanTrainer.advance` does it."""

    def __init__(self, population: Population, runs: list[MemberRun]) -> None:
        self.population, self.runs = population, runs
        self.every = torch.tensor([r.trainer.config["dynamics"]["every"] for r in runs])
        self.start = time.perf_counter()

    def running(self) -> list[MemberRun]:
        return [run for run in self.runs if run.final is None]

    def train(self) -> None:
        for run in self.running():
            if run.member.step >= run.until:  # cut off after its last checkpoint
                run.finish(None, time.perf_counter() - self.start)
        while running := self.running():
            self.step(running)

    def step(self, running: list[MemberRun]) -> None:
        population = self.population
        failed: dict[int, Divergence] = {}
        for run in running:
            try:
                population.set_member_clock(run.k, run.member.step)
            except Divergence as e:  # a snapshot found G or D not finite
                failed[run.k] = e
        training = [run for run in running if run.k not in failed]
        population.stopped.fill_(True)
        population.stopped[[run.k for run in training]] = False
        steps = torch.tensor([run.member.step for run in self.runs])
        population.measure = (steps % self.every == 0).to(population.device)
        population.apply_clock()
        population.records.clear()
        population.train_step()
        records = [(tag, values.tolist()) for tag, values in population.records]
        finite = self._finite_parameters()
        for run in training:
            t = run.member.step
            if run.member.diverged is not None:
                failed[run.k] = run.member.diverged
                continue
            self._record(run, records)
            due = run.trainer.due(t + 1, run.until)
            if any(due) or t + 1 == run.until:
                bad = self._not_finite(run.k, finite, t)
                if bad is not None:
                    failed[run.k] = bad
                    continue
            run.member.step = t + 1
            if due[1] or due[2]:  # an evaluation or a checkpoint: the shell holds the member
                run.pull()
            run.trainer.after_step(t, *due)
            if run.member.step == run.until:
                run.finish(None, time.perf_counter() - self.start)
        for run in running:
            if run.k in failed:
                self._recover(run, failed[run.k])

    def _record(self, run: MemberRun, records: list[tuple[str, list[float]]]) -> None:
        """The member's values of this step into its shell's window (means at the next log)."""
        measured = run.member.step % run.trainer.config["dynamics"]["every"] == 0
        for tag, values in records:
            if measured or not tag.startswith("dynamics/"):
                run.trainer.window.add(tag, values[run.k])

    def _finite_parameters(self) -> dict[str, torch.Tensor]:
        return {net: self.population.nets[net].data.isfinite().all(1) for net in NETS}

    def _not_finite(self, k: int, finite: Mapping[str, torch.Tensor], t: int) -> Divergence | None:
        """As :meth:`GanTrainer.check_finite`: the first network of member ``k`` holding a
        NaN/Inf weight."""
        for net in NETS:
            if not bool(finite[net][k]):
                weights = self.population.nets[net].data[k]
                return Divergence(t, f"parameters/{net}", float(weights[~weights.isfinite()][0]))
        return None

    def _recover(self, run: MemberRun, divergence: Divergence) -> None:
        """Roll the member back (into its rows again) or end its run, as its config says."""
        run.member.diverged = divergence
        if run.trainer.recover(divergence):
            run.push()
        else:
            run.finish(divergence, time.perf_counter() - self.start)


def train_population(
    configs: Sequence[Mapping[str, Any] | CheckedConfig],
    run_dirs: Sequence[str | Path],
    resume: bool | Sequence[bool] = False,
    device: torch.device | str | None = None,
    threads: int = 0,
) -> list[dict[str, Any]]:
    """Train ``configs`` as one population, member ``k`` writing run folder ``run_dirs[k]``.

    Each folder ends as ``gancycle-train`` would leave it for that config (see the module
    docstring); the members must share :data:`gancycle.population.SHARED`.

    Args:
        configs: one gancycle config per member (whole, only the keys it changes, or checked).
        run_dirs: one run folder per member, held for the whole population's life.
        resume: continue each member (or, one flag per member, those that are true) from its
            ``checkpoints/last.pt``; a member whose run ended (see :func:`ended_run`) is not
            trained again, one whose config asks for more steps goes on (as ``gancycle-train
            --resume --steps``).
        device: overrides member 0's ``device``.
        threads: torch CPU threads while the population trains (0: the members' ``threads``,
            as a single run would use). A member's ``threads`` is one run's share of the
            cores; a population is all the runs at once, so a study gives it all of them.

    Returns:
        Each member's final metrics (a member that had ended: those of its ``metrics.json``).

    Raises:
        ConfigError: a bad config, members that cannot share a population, a folder held by
            another trainer, or (fresh) holding a run already.
    """
    if len(configs) != len(run_dirs):
        raise ConfigError(f"population: {len(configs)} configs but {len(run_dirs)} run folders")
    flags = [resume] * len(configs) if isinstance(resume, bool) else list(resume)
    if len(flags) != len(configs):
        raise ConfigError(f"population: {len(configs)} configs but {len(flags)} resume flags")
    # Offsets over the whole population, before members that ended are set aside: each
    # member's folder then holds the schedules it runs.
    checked = resolve_offsets([check_config(config) for config in configs])
    finals: dict[int, dict[str, Any]] = {}
    for k, (run_dir, again) in enumerate(zip(run_dirs, flags, strict=True)):
        ended = ended_run(run_dir, checked[k].config["steps"]) if again else None
        if ended is not None:
            finals[k] = ended
    todo = [k for k in range(len(configs)) if k not in finals]
    if todo:
        population = Population([checked[k] for k in todo], device=device)
        with contextlib.ExitStack() as stack:
            runs = []
            for row, k in enumerate(todo):
                stack.enter_context(hold_run_folder(run_dirs[k], flags[k]))
                trainer = open_run(checked[k], run_dirs[k], flags[k], population.device)
                runs.append(MemberRun(population, row, trainer))
            for run in runs:
                run.trainer.begin()
            with torch_threads(threads):
                PopulationRun(population, runs).train()
        for run in runs:
            assert run.final is not None
            finals[todo[run.k]] = run.final
    return [finals[k] for k in range(len(configs))]


def pack_populations(
    configs: Sequence[CheckedConfig], size: int, families: Sequence[str] | None = None
) -> tuple[list[list[int]], list[int]]:
    """Group configs that can train as one population: those sharing
    :data:`~gancycle.population.SHARED` and the device, at most ``size`` per group, in order.

    Members that interact (``population.average_every`` > 0 or ``population.offsets``) must
    also share their family (``families[k]``, e.g. a study arm's folder: its seeds), so that an
    arm's seeds average with each other and with no other arm's, and a family is never split.

    Returns:
        The groups (indices into ``configs``), and the configs no population takes yet (see
        :func:`~gancycle.population.member_problem`), to train alone.

    Raises:
        ConfigError: an interacting family larger than ``size``.
    """
    groups: dict[str, list[list[int]]] = {}
    alone = []
    for k, checked in enumerate(configs):
        config = checked.config
        if member_problem(config) is not None:
            alone.append(k)
            continue
        key = [get(config, name) for name in SHARED] + [config["device"]]
        table = config["population"]
        interacting = table["average_every"] > 0 or table["offsets"] != "none"
        if interacting:
            key.append(families[k] if families is not None else "")
        chunks = groups.setdefault(repr(key), [[]])
        if len(chunks[-1]) == size:
            if interacting:
                raise ConfigError(
                    f"--population-size {size}: a population that averages or offsets its "
                    f"members cannot be split, and {families[k] if families else 'it'} has more"
                )
            chunks.append([])
        chunks[-1].append(k)
    return [chunk for chunks in groups.values() for chunk in chunks], alone
