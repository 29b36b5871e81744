"""Timing side by side in one process: two arms in alternating chunks, and the schedule core
against torch's own scheduler."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from common.schedules import from_spec
from common.torch_driver import drive_optimizer

__all__ = ["timed", "compare_in_chunks", "per_call_us", "bench_schedules"]

SPEC = {"kind": "cosine_restarts", "max": 0.1, "min": 1e-4, "period": 10, "period_mult": 2}


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Seconds ``fn()`` takes, with the device's queue drained before and after (CUDA)."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def compare_in_chunks(
    baseline: Callable[[], object],
    contender: Callable[[], object],
    turns: int,
    work: float,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Time ``turns`` chunks of each arm, alternating, so load on the machine hits both alike.

    Args:
        baseline, contender: each runs one chunk of ``work`` units (steps, member-steps).
        turns: chunks per arm.
        work: units in one chunk.
        device: whose queue :func:`timed` drains.

    Returns:
        ``baseline_per_s`` and ``contender_per_s`` (units per second over all chunks), ``ratio``
        (contender's throughput over the baseline's) and ``chunk_ratio_median`` (the median of
        the per-chunk ratios, robust to load spikes).
    """
    base_times, times = [], []
    for _ in range(turns):
        base_times.append(timed(baseline, device))
        times.append(timed(contender, device))
    return {
        "baseline_per_s": work * turns / sum(base_times),
        "contender_per_s": work * turns / sum(times),
        "ratio": sum(base_times) / sum(times),
        "chunk_ratio_median": statistics.median(
            b / t for b, t in zip(base_times, times, strict=True)
        ),
    }


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    """Microseconds per call of ``fn`` over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def bench_schedules(calls: int = 50_000, repeats: int = 5) -> dict[str, float]:
    """Best-of-``repeats`` microseconds per step for each contender, measured interleaved.

    - ``torch_step``: ``CosineAnnealingWarmRestarts.step()`` (T_0=10, T_mult=2);
    - ``driver_step``: our driver's ``step()`` on the same optimizer (sets the lr, checks the
      clock for a restart);
    - ``value@10`` / ``value@1e9``: one ``value(t)`` at small and huge steps.
    """
    param = torch.nn.Parameter(torch.zeros(1))
    opt_torch = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt_torch, T_0=10, T_mult=2, eta_min=1e-4
    )
    opt_ours = torch.optim.SGD([param], lr=0.1)
    schedule = from_spec(SPEC)
    driver = drive_optimizer(opt_ours, schedule)
    big = [10**9]

    def value_big() -> float:
        big[0] += 1
        return schedule.value(big[0])

    small = [10]

    def value_small() -> float:
        small[0] = 10 + (small[0] + 1) % 7
        return schedule.value(small[0])

    far = drive_optimizer(opt_ours, from_spec(SPEC))
    far.step_count = 10**9

    contenders = {
        "torch_step": sched.step,
        "driver_step": driver.step,
        "driver_step@1e9": far.step,
        "value@10": value_small,
        "value@1e9": value_big,
    }
    best = {name: float("inf") for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            best[name] = min(best[name], per_call_us(fn, calls))
    best["ratio"] = best["driver_step"] / best["torch_step"]
    return best
