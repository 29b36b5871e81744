"""Progress over a study's runs: a bar on a terminal, one line per finished run in a log.

A study runs for hours, usually in the background with its stderr in a file; a bar redrawn
with carriage returns would make that file one long line. Off a terminal each finished run gets
a line of its own, with the count, the run's wall time and the time the rest will take at the
pace so far.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

from common.study.run import RunResult

__all__ = ["RunProgress", "duration"]


def duration(seconds: float) -> str:
    """``42 s``, ``7 min 05 s`` or ``3 h 02 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class RunProgress:
    """Reports runs as they finish.

    Args:
        name: the study's name, leading every line.
        total: runs in the study.
        done: runs already done before this start (skipped).
        enabled: report at all.
        stream: where to write (default stderr); a bar only if it is a terminal.
    """

    def __init__(
        self, name: str, total: int, done: int, enabled: bool = True, stream: TextIO | None = None
    ):
        self.name, self.total, self.count, self.enabled = name, total, done, enabled
        self.stream = sys.stderr if stream is None else stream
        self.began, self.finished, self.failed = time.monotonic(), 0, 0
        self.bar = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(total=total, initial=done, desc=name, unit="run", file=self.stream)

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, result: RunResult) -> None:
        """One more run finished (or failed)."""
        self.count += 1
        self.finished += 1
        if not result.ok:
            self.failed += 1
            last = result.error.splitlines()[-1] if result.error else ""
            self._write(f"failed: {result.run.name}: {last} ({result.run.dir}/error.txt)")
        if self.bar is not None:
            if self.failed:
                self.bar.set_postfix(failed=self.failed)
            self.bar.update(1)
        elif self.enabled:
            pace = (time.monotonic() - self.began) / self.finished
            left = self.total - self.count
            self._write(
                f"{self.name}: {self.count}/{self.total} runs; {result.run.name} "
                f"{'ok' if result.ok else 'failed'} in {duration(result.seconds)}"
                + (f"; about {duration(pace * left)} left" if left else "; all done")
            )

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
