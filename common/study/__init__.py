"""Studies: named arms (config overrides) × seeds, run locally or on Ray, with honest statistics.

A study file (:mod:`common.study.spec`) names a training command, one or several base configs,
the arms and the metrics. :func:`run_study` runs every arm with every seed as a normal run
folder under ``runs/<study>/`` (:mod:`common.study.run`), on a local process pool or as Ray
tasks (:mod:`common.study.backends`), skipping runs that are already done, and writes
``summary.json``, ``results.md`` and figures (:mod:`common.study.report`,
:mod:`common.study.figures`) with the statistics of :mod:`common.stats`.

    from common.study import find_study, run_study
    outcome = run_study(find_study("gan_rhythm"), seeds=3, steps=500)
"""

from common.study.run import RunResult, RunSpec, execute_run, is_done, plan_runs
from common.study.runner import StudyOutcome, run_study, write_report
from common.study.spec import (
    Area,
    Arm,
    Curve,
    Reach,
    Study,
    StudyError,
    View,
    find_study,
    known_studies,
    load_study,
)

__all__ = [
    "Arm",
    "Curve",
    "Reach",
    "Area",
    "View",
    "Study",
    "StudyError",
    "find_study",
    "known_studies",
    "load_study",
    "RunSpec",
    "RunResult",
    "plan_runs",
    "is_done",
    "execute_run",
    "StudyOutcome",
    "run_study",
    "write_report",
]
