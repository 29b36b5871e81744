"""Where a study's runs execute: a local pool of processes, Ray tasks, or populations.

The backends take runs and yield a :class:`~common.study.run.RunResult` as each run ends, in
the order they end. A run that fails is a result like any other; only an interrupt (Ctrl-C)
stops a backend, and it stops the runs it started.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from common.runs import atomic_write_json
from common.study.run import (
    RunResult,
    RunSpec,
    code_version,
    conclude_run,
    execute_run,
    missing_metrics,
    prepare_run,
    start_process,
)
from common.study.spec import StudyError

__all__ = ["BACKENDS", "default_workers", "run_local", "run_ray", "run_population"]

BACKENDS = ("local", "ray", "population")

POPULATION_SIZE = 64
"""Most runs trained as one population by default (``--population-size``)."""


def default_workers() -> int:
    """The machine's cores (:func:`os.cpu_count`), at least 1."""
    return os.cpu_count() or 1


def check_workers(workers: int | None) -> None:
    """Refuse ``--workers`` below 1 (``None``: one per core)."""
    if workers is not None and workers < 1:
        raise StudyError(f"--workers {workers}: must be >= 1")


def run_local(
    runs: Sequence[RunSpec], cwd: str | Path = ".", workers: int | None = None
) -> Iterator[RunResult]:
    """Run at most ``workers`` runs at a time on this machine (default: one per core).

    Each run is its own process; a thread per worker waits on it. Each run gets
    ``cores // workers`` (at least 1) BLAS / OpenMP threads.

    Raises:
        StudyError: ``workers`` below 1.
    """
    check_workers(workers)
    workers = default_workers() if workers is None else workers
    return _local_results(runs, cwd, workers, threads=max(1, default_workers() // workers))


def _local_results(
    runs: Sequence[RunSpec], cwd: str | Path, workers: int, threads: int
) -> Iterator[RunResult]:
    live: set[subprocess.Popen[bytes]] = set()
    lock = threading.Lock()
    stopping = threading.Event()

    def start(run: RunSpec) -> RunResult:
        def track(process: subprocess.Popen[bytes]) -> None:
            with lock:
                live.add(process)
                if stopping.is_set():  # started while the pool was being stopped
                    process.terminate()

        return execute_run(run, cwd, threads, on_start=track)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="study-run")
    try:
        pending = {pool.submit(start, run) for run in runs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    except BaseException:  # Ctrl-C, or the consumer stopped: start nothing new, stop the rest
        pool.shutdown(wait=False, cancel_futures=True)
        with lock:
            stopping.set()
            for process in live:
                if process.poll() is None:
                    process.terminate()
        raise
    finally:
        pool.shutdown(wait=True)


def run_ray(
    runs: Sequence[RunSpec], cwd: str | Path = ".", address: str | None = None
) -> Iterator[RunResult]:
    """Run each run as a Ray task with ``num_cpus=1``.

    Uses the Ray instance this process already joined, if any; otherwise ``ray.init(address)``
    joins the cluster at ``address`` (e.g. ``ray://head:10001`` or ``auto``), or without one
    starts a local Ray instance, and shuts it down at the end. The cluster's nodes must see the
    working directory at the same path (a shared file system) with cyclelab installed.

    Raises:
        StudyError: Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise StudyError("--backend ray: Ray is not installed; pip install cyclelab[ray]") from None
    return _ray_results(ray, runs, cwd, address)


def _ray_results(
    ray: Any, runs: Sequence[RunSpec], cwd: str | Path, address: str | None
) -> Iterator[RunResult]:
    owned = not ray.is_initialized()
    if owned:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    cwd = str(Path(cwd).resolve())
    task = ray.remote(num_cpus=1)(execute_run)
    pending = {task.remote(run, cwd, 1, backend="ray"): run for run in runs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as e:  # the task itself died, e.g. its node was lost
                message = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
                result = RunResult(run=run, ok=False, returncode=None, seconds=0.0, error=message)
            yield result
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if owned:
            ray.shutdown()


def run_population(
    runs: Sequence[RunSpec],
    program: str,
    folder: str | Path,
    cwd: str | Path = ".",
    size: int = POPULATION_SIZE,
) -> Iterator[RunResult]:
    """Hand every run to ``program``, which trains them as populations in one process.

    ``common`` knows no trainer: the study file names the program (its ``population`` key),
    which is called as ``<program> --plan <folder>/population/plan.json --population-size N
    --threads C`` (C: the cores the local pool would use). The plan is ``{"runs": [{"argv":
    [...]}, ...]}``: each run's own command line, with ``--resume`` for a run that was cut off,
    as the local backend would start it. The program
    packs the runs it can train together into populations of at most ``size``, writes each
    run's folder as the run's own command would, and exits 0 when every run succeeded. Its
    output goes to ``<folder>/population/stdout.log`` and ``stderr.log``; each run is then
    judged as the local backend judges it (a complete ``metrics.json``), in plan order.

    Raises:
        StudyError: ``size`` below 1.
    """
    if size < 1:
        raise StudyError(f"--population-size {size}: must be >= 1")
    return _population_results(runs, shlex.split(program), Path(folder), cwd, size)


def _population_results(
    runs: Sequence[RunSpec], program: list[str], folder: Path, cwd: str | Path, size: int
) -> Iterator[RunResult]:
    if not runs:
        return
    logs = Path(cwd) / folder / "population"
    logs.mkdir(parents=True, exist_ok=True)
    code = code_version(cwd)  # one process starts them all: one version
    prepared = [prepare_run(run, cwd, code, backend="population") for run in runs]
    plan = logs / "plan.json"
    atomic_write_json({"runs": [{"argv": argv} for argv, _ in prepared]}, plan)
    argv = [*program, "--plan", str(plan.resolve()), "--population-size", str(size)]
    argv += ["--threads", str(default_workers())]  # one process: every core, as the pool uses
    start = time.perf_counter()
    returncode: int | None = None
    error = ""
    try:
        with open(logs / "stdout.log", "wb") as out, open(logs / "stderr.log", "wb") as err:
            process = start_process(argv, cwd, out, err, threads=default_workers())
            try:
                returncode = process.wait()
            except BaseException:  # Ctrl-C: the populations stop with the study
                process.terminate()
                process.wait()
                raise
    except OSError as e:
        error = f"could not start {program[0]!r}: {e.strerror or e}"
    seconds = time.perf_counter() - start
    for run, (_, record) in zip(runs, prepared, strict=True):
        # Judged by its own folder: the program exits non-zero when any of its runs failed.
        code = returncode
        if code is not None and not missing_metrics(Path(cwd) / run.dir, run.metrics):
            code = 0
        yield conclude_run(run, cwd, record, code, seconds, logs / "stderr.log", error)
