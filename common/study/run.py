"""One run of a study: its command line, its folder, whether it is done, and running it.

A run is a subprocess, the boundary that keeps ``common`` free of the research packages::

    <command> --config <base> --out <runs>/<study>/[<config>/]<arm>/seed<k> --seed <k>
              [--steps N] --set key=value ...

It runs in the study's working directory (the repository root, usually) with its output in the
run folder: ``stdout.log``, ``stderr.log``, ``study_run.json`` (the command line, exit code,
wall time and the code it ran: see :func:`code_version`) and, if it fails, ``error.txt`` (exit
code and the last lines of stderr). A run is *done* when its ``metrics.json`` holds every metric
of the study and its ``study_run.json`` (when present) records the same command line (but for
``--out``, so a runs folder may move); a complete one is never run twice. A run whose command
line changed is first compared by the config it builds (:mod:`common.study.stale`): the same
config, and its record takes the new command line; another, and it runs again.

A run that was cut off (its folder holds ``checkpoints/last.pt`` but no complete
``metrics.json``) continues from its checkpoint: the same command line with ``--resume <dir>``
in place of ``--out <dir>``, the project's CLI convention. A folder holding a run of another
command line (the arm changed) is renamed to ``<dir>.replaced-<time>`` and the run starts afresh.

On Linux a run ends with the study's process, even when that is SIGKILLed: the kernel sends the
run SIGTERM, so a restarted study never finds a run of the old one still writing its folder.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.runs import atomic_write, atomic_write_json, read_json
from common.study.spec import Study, StudyError, config_label

__all__ = [
    "RunSpec",
    "RunResult",
    "study_folder",
    "plan_runs",
    "get_path",
    "missing_metrics",
    "DoneRun",
    "read_done",
    "is_done",
    "names_another_command",
    "adopt_run",
    "resolve_command",
    "code_version",
    "prepare_run",
    "set_aside",
    "conclude_run",
    "execute_run",
]

ERROR_LINES = 20
"""Lines of stderr kept in ``error.txt`` and the summary."""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""Set for each run (unless already set) so parallel runs do not oversubscribe the cores."""


@dataclass(frozen=True)
class RunSpec:
    """One run: an arm of the study on one base config with one seed.

    Attributes:
        config: the base config as the study gives it (a shipped name or a TOML path).
        label: the config's short name (its folder when the study has several configs).
        arm: the arm's name.
        seed: the seed, 0 .. seeds-1.
        dir: the run folder, relative to the working directory unless the runs root is absolute.
        argv: the command line as written (the program not yet resolved to a path).
        metrics: dotted paths that ``metrics.json`` must hold for the run to be done.
    """

    config: str
    label: str
    arm: str
    seed: int
    dir: str
    argv: tuple[str, ...]
    metrics: tuple[str, ...]

    @property
    def name(self) -> str:
        """``<config>/<arm>/seed<k>``, how progress and error messages name the run."""
        return f"{self.label}/{self.arm}/seed{self.seed}"


@dataclass(frozen=True)
class RunResult:
    """What came of running a :class:`RunSpec`.

    Attributes:
        run: the run.
        ok: exit code 0 and a complete ``metrics.json``.
        returncode: the exit code (``None`` when the program could not be started).
        seconds: wall time in seconds.
        error: for a failed run, what went wrong: the last lines of its stderr, or why the
            program did not start or its ``metrics.json`` is incomplete; ``""`` otherwise.
    """

    run: RunSpec
    ok: bool
    returncode: int | None
    seconds: float
    error: str = ""


def study_folder(study: Study, runs_root: str | Path = "runs", steps: int | None = None) -> Path:
    """``<runs_root>/<study>``, or ``<runs_root>/<study>-steps<N>`` for a quick try.

    A run shortened with ``--steps`` goes to a folder of its own, so it can never be taken for
    (or overwrite) a run of the full study.
    """
    return Path(runs_root) / (study.name if steps is None else f"{study.name}-steps{steps}")


def plan_runs(
    study: Study,
    runs_root: str | Path = "runs",
    seeds: int | None = None,
    steps: int | None = None,
) -> list[RunSpec]:
    """Every run of the study, config by config, arm by arm, seed by seed.

    Args:
        study: the study.
        runs_root: folder that holds the study's folder.
        seeds: runs per arm (default: the study's ``seeds``), at least 1.
        steps: if given, ``--steps`` for every run (and a separate study folder).

    Raises:
        StudyError: ``seeds`` or ``steps`` below 1.
    """
    seeds = study.seeds if seeds is None else seeds
    if seeds < 1:
        raise StudyError(f"--seeds {seeds}: must be >= 1")
    if steps is not None and steps < 1:
        raise StudyError(f"--steps {steps}: must be >= 1")
    root = study_folder(study, runs_root, steps)
    program = tuple(shlex.split(study.command))
    several = len(study.configs) > 1
    runs = []
    for config, config_sets in study.configs.items():
        label = config_label(config)
        for arm, spec in study.arms.items():
            for seed in range(seeds):
                folder = (root / label if several else root) / arm / f"seed{seed}"
                argv = [*program, "--config", config, "--out", folder.as_posix()]
                argv += ["--seed", str(seed)]
                if steps is not None:
                    argv += ["--steps", str(steps)]
                for item in (*study.shared, *config_sets, *spec.sets_for(label)):
                    argv += ["--set", item]
                runs.append(
                    RunSpec(
                        config=config,
                        label=label,
                        arm=arm,
                        seed=seed,
                        dir=folder.as_posix(),
                        argv=tuple(argv),
                        metrics=study.required_paths(),
                    )
                )
    return runs


def get_path(data: Any, dotted: str) -> Any:
    """``data["a"]["b"][0]`` for ``"a.b.0"``: tables by key, lists by (negative) index.

    A table key that holds dots itself (``"eval/return/d=0.5"``) is matched whole: at each
    table the longest key that the rest of the path starts with is taken.

    Raises:
        KeyError: some part of the path is not there.
    """
    parts, value, i = dotted.split("."), data, 0
    while i < len(parts):
        if isinstance(value, dict):
            ends = [j for j in range(len(parts), i, -1) if ".".join(parts[i:j]) in value]
            if not ends:
                raise KeyError(dotted)
            value, i = value[".".join(parts[i : ends[0]])], ends[0]
        elif isinstance(value, list) and parts[i].lstrip("-").isdigit():
            index = int(parts[i])
            if not -len(value) <= index < len(value):
                raise KeyError(dotted)
            value, i = value[index], i + 1
        else:
            raise KeyError(dotted)
    return value


def missing_metrics(run_dir: str | Path, paths: tuple[str, ...]) -> list[str]:
    """The paths that ``<run_dir>/metrics.json`` lacks (all of them if it is missing)."""
    return _missing(read_json(Path(run_dir) / "metrics.json"), paths)


def _missing(metrics: Any, paths: tuple[str, ...]) -> list[str]:
    missing = []
    for path in paths:
        try:
            get_path(metrics, path)
        except KeyError:
            missing.append(path)
    return missing


@dataclass(frozen=True)
class DoneRun:
    """A finished run as its folder records it, read once for every part of a report.

    Attributes:
        run: the run.
        metrics: its ``metrics.json``.
        record: its ``study_run.json`` (``{}`` for a run from before studies wrote one).
    """

    run: RunSpec
    metrics: Any
    record: dict[str, Any]


def read_done(run: RunSpec, cwd: str | Path = ".") -> DoneRun | None:
    """The run's records if it is done (:func:`is_done`), else ``None``."""
    folder = Path(cwd) / run.dir
    metrics = read_json(folder / "metrics.json")
    if _missing(metrics, run.metrics):
        return None
    record = _study_record(folder)
    if not _same_command(record, run.argv, if_unrecorded=True):
        return None
    return DoneRun(run=run, metrics=metrics, record=record)


def is_done(run: RunSpec, cwd: str | Path = ".") -> bool:
    """Whether the run's ``metrics.json`` is complete and came from this command line."""
    return read_done(run, cwd) is not None


def names_another_command(run: RunSpec, cwd: str | Path = ".") -> bool:
    """Whether the run's ``study_run.json`` records a command line other than ``run.argv``."""
    return not _same_command(_study_record(Path(cwd) / run.dir), run.argv, if_unrecorded=True)


def adopt_run(run: RunSpec, cwd: str | Path = ".") -> None:
    """Record ``run.argv`` as the command line of a run that another one started, once
    :func:`~common.study.stale.compare_configs` found that both build the same config; the
    first stays as ``argv_at_start``."""
    folder = Path(cwd) / run.dir
    record = _study_record(folder)
    record.setdefault("argv_at_start", record.get("argv"))
    record["argv"] = list(run.argv)
    atomic_write_json(record, folder / "study_run.json")


def _study_record(folder: Path) -> dict[str, Any]:
    """The folder's ``study_run.json``, or ``{}`` if it has none (or a malformed one)."""
    record = read_json(folder / "study_run.json")
    return record if isinstance(record, dict) else {}


def _same_command(
    record: dict[str, Any], argv: tuple[str, ...] | list[str], *, if_unrecorded: bool
) -> bool:
    """Whether ``record`` names ``argv`` as its command line, but for ``--out``.

    ``if_unrecorded`` answers for a record without a (well-formed) command line: a finished
    run from before records were kept counts as done, but a cut-off one is not resumed.
    """
    recorded = record.get("argv")
    if not isinstance(recorded, list):
        return if_unrecorded
    return _without_out(recorded) == _without_out(argv)


def _without_out(argv: tuple[str, ...] | list[str]) -> list[str]:
    """The command line without the run folder, so a moved runs root is not a new command."""
    argv = list(argv)
    for i, arg in enumerate(argv[:-1]):
        if arg == "--out":
            argv[i + 1] = "<out>"
    return argv


def resolve_command(argv: tuple[str, ...] | list[str]) -> list[str]:
    """The command line with its program made runnable on this machine.

    ``python`` / ``python3`` become this interpreter (:data:`sys.executable`); a bare program
    name is looked up on ``PATH``, then beside this interpreter (a virtual environment's
    console entry points, e.g. ``gancycle-train``, when the environment is not activated).
    """
    argv = list(argv)
    program = argv[0]
    if program in ("python", "python3"):
        argv[0] = sys.executable
    elif os.sep not in program:
        beside = Path(sys.executable).parent / program
        found = shutil.which(program) or (str(beside) if beside.is_file() else None)
        if found is not None:
            argv[0] = found
    return argv


PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: the signal a process gets when the thread that started it ends."""


def _ends_with_this_process() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGTERM a run when this process dies, even by SIGKILL.

    So a killed study leaves no trainer running beside the ones a restarted study starts. On
    Linux only (elsewhere ``None``: runs end at a normal stop, as the backends stop them). The
    signal follows the starting *thread*, which waits for the run anyway. ``prctl`` is looked
    up before the fork: the child only calls it.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the study died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


def _continue_or_set_aside(run: RunSpec, folder: Path, record: dict[str, Any]) -> list[str]:
    """The command line that runs ``run`` in ``folder``, given what the folder already holds
    (``record``: its ``study_run.json``).

    A run that was cut off (a checkpoint, no complete metrics) of this same command line is
    resumed; a run of another command line is moved aside, so that nothing is lost.
    """
    argv = list(run.argv)
    if not (folder / "checkpoints" / "last.pt").is_file():
        return argv
    if _same_command(record, argv, if_unrecorded=False) and "--out" in argv[:-1]:
        argv[argv.index("--out")] = "--resume"
        return argv
    set_aside(folder)
    return argv


def set_aside(folder: Path) -> Path:
    """Rename a run folder to ``<folder>.replaced-<time>``, so a new run starts there and
    nothing is lost; the new name."""
    aside = folder.with_name(f"{folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.rename(aside)
    return aside


def _tail(path: Path, lines: int = ERROR_LINES) -> str:
    """The last non-empty lines of a log (progress bars' carriage returns split lines)."""
    try:
        text = path.read_bytes()[-64_000:].decode(errors="replace")
    except OSError:
        return ""
    kept = [line.rstrip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
    return "\n".join(kept[-lines:])


def _exit(returncode: int | None) -> str:
    if returncode is None:
        return "not started"
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"


def code_version(cwd: str | Path = ".") -> dict[str, Any] | None:
    """The code a run started in ``cwd`` imports: ``{"commit": <HEAD's hash>, "py_changed":
    <tracked .py files differ from it>}``, or ``None`` outside a git work tree.

    A study that runs over several sittings may run its seeds with different code; the report
    counts the runs of each version (:func:`common.study.report.summarize`), and
    ``git diff <a> <b> -- '*.py'`` shows what changed. Only tracked Python files count as
    changes: configs reach a run through its ``config.toml``, which the study compares anyway.
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no", "--", "*.py")
    if commit is None or changes is None:
        return None
    return {"commit": commit.strip(), "py_changed": bool(changes.strip())}


def prepare_run(
    run: RunSpec,
    cwd: str | Path = ".",
    code: dict[str, Any] | None = None,
    backend: str = "local",
) -> tuple[list[str], dict[str, Any]]:
    """Ready ``run``'s folder to run now; the command line to run and its ``study_run.json``.

    A cut-off run of the same command line resumes (``--resume``), a run of another is moved
    aside; stale ``metrics.json`` and ``error.txt`` are removed; ``study_run.json`` records the
    command line, the start, the backend that runs it (``local``, ``ray``, ``population``:
    a population member matches its single run only to rounding) and the code
    (:func:`code_version`); a run resumed with other code than it started with keeps the first
    as ``code_at_start``. ``code`` is the :func:`code_version` to record, for a caller that
    starts many runs at once (``None``: ask git here).
    """
    folder = Path(cwd) / run.dir
    earlier = _study_record(folder)
    argv = _continue_or_set_aside(run, folder, earlier)
    resumed = argv != list(run.argv)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", "error.txt"):
        (folder / stale).unlink(missing_ok=True)
    record: dict[str, Any] = {
        "argv": list(run.argv),
        "started": time.strftime("%FT%T%z"),
        "backend": backend,
    }
    code = code_version(cwd) if code is None else code
    if code is not None:
        record["code"] = code
    if resumed:
        record["resumed"] = True
        if "argv_at_start" in earlier:
            record["argv_at_start"] = earlier["argv_at_start"]
        first = earlier.get("code_at_start", earlier.get("code"))
        if first is not None and first != code:  # trained partly with other code
            record["code_at_start"] = first
    atomic_write_json(record, folder / "study_run.json")
    return argv, record


def conclude_run(
    run: RunSpec,
    cwd: str | Path,
    record: dict[str, Any],
    returncode: int | None,
    seconds: float,
    stderr: Path,
    error: str = "",
) -> RunResult:
    """The result of ``run`` after its program ended with ``returncode`` (``None``: it did not
    start, ``error`` says why); ``study_run.json`` completed, ``error.txt`` if it failed (the
    last lines of ``stderr``, or what ``metrics.json`` lacks)."""
    folder = Path(cwd) / run.dir
    if returncode is not None:
        missing = missing_metrics(folder, run.metrics)
        if returncode != 0:
            error = _tail(stderr) or f"{_exit(returncode)}, no stderr"
        elif missing:
            error = f"exited 0 but {run.dir}/metrics.json lacks {', '.join(missing)}"
    record.update(returncode=returncode, seconds=round(seconds, 3), ok=not error)
    atomic_write_json(record, folder / "study_run.json")
    if error:
        text = f"{run.name}: {_exit(returncode)}\n{error}\n"
        atomic_write(folder / "error.txt", lambda f: f.write(text.encode()))
    return RunResult(run=run, ok=not error, returncode=returncode, seconds=seconds, error=error)


def thread_environment(threads: int) -> dict[str, str]:
    """This process's environment with ``OMP_NUM_THREADS`` etc. set to ``threads`` (unless
    already set)."""
    env = dict(os.environ)
    for variable in THREAD_VARIABLES:
        env.setdefault(variable, str(threads))
    return env


def start_process(
    argv: list[str], cwd: str | Path, stdout: Any, stderr: Any, threads: int
) -> subprocess.Popen[bytes]:
    """Start a study's program (a run, or a population of runs) that ends with this process."""
    return subprocess.Popen(
        resolve_command(argv),
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        env=thread_environment(threads),
        preexec_fn=_ends_with_this_process(),
    )


def execute_run(
    run: RunSpec,
    cwd: str | Path = ".",
    threads: int = 1,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
    backend: str = "local",
) -> RunResult:
    """Run one run to its end; never raises for a failing run, returns its error instead.

    Args:
        run: the run.
        cwd: working directory of the run (relative run folders and config paths start here).
        threads: value of ``OMP_NUM_THREADS`` etc. for the run, unless the caller's environment
            sets them already.
        on_start: called with the process once it started (the local backend keeps it so that
            an interrupted study can stop its runs).
        backend: the backend's name, for ``study_run.json`` (:func:`prepare_run`).
    """
    folder = Path(cwd) / run.dir
    argv, record = prepare_run(run, cwd, backend=backend)
    start = time.perf_counter()
    returncode: int | None = None
    error = ""
    try:
        with open(folder / "stdout.log", "wb") as out, open(folder / "stderr.log", "wb") as err:
            process = start_process(argv, cwd, out, err, threads)
            if on_start is not None:
                on_start(process)
            returncode = process.wait()
    except OSError as e:  # the program is missing or not executable
        error = f"could not start {run.argv[0]!r}: {e.strerror or e}"
    seconds = time.perf_counter() - start
    return conclude_run(run, cwd, record, returncode, seconds, folder / "stderr.log", error)
