"""Where a study's runs execute: a local pool of processes, or Ray tasks.

Both backends take runs and yield a :class:`~common.study.run.RunResult` as each run ends, in
the order they end. A run that fails is a result like any other; only an interrupt (Ctrl-C)
stops a backend, and it stops the runs it started.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from common.study.run import RunResult, RunSpec, execute_run
from common.study.spec import StudyError

__all__ = ["BACKENDS", "default_workers", "run_local", "run_ray"]

BACKENDS = ("local", "ray")


def default_workers() -> int:
    """The machine's cores (:func:`os.cpu_count`), at least 1."""
    return os.cpu_count() or 1


def run_local(
    runs: Sequence[RunSpec], cwd: str | Path = ".", workers: int | None = None
) -> Iterator[RunResult]:
    """Run at most ``workers`` runs at a time on this machine (default: one per core).

    Each run is its own process; a thread per worker waits on it. Each run gets
    ``cores // workers`` (at least 1) BLAS / OpenMP threads.

    Raises:
        StudyError: ``workers`` below 1.
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise StudyError(f"--workers {workers}: must be >= 1")
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
    pending = {task.remote(run, cwd, 1): run for run in runs}
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
