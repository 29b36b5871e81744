"""A small real trainer for the study tests: softmax regression on the digits, in NumPy.

It follows the project's CLI convention (``--config NAME|PATH --out DIR --seed K --steps N
--set key=value``, ``--resume DIR``, ``--check``, ``--print-config``) and writes
``<out>/config.toml``, ``<out>/checkpoints/last.pt`` (at each evaluation) and
``<out>/metrics.json``::

    {"final": {"accuracy": ..., "loss": ...}, "history": [{"step": ..., "accuracy": ...}, ...]}

A config file may hold a ``[schedule]`` table (any :mod:`common.schedules` spec): the
learning rate of step ``t`` (0-based) is then ``lr`` times its value at ``t``.

The seed picks the train/test split and the initial weights; a resumed run ends exactly as an
uninterrupted one. ``--set fail=true`` makes the run fail on purpose after training starts. If
``STUDY_FIXTURE_LOG`` is set, each run appends its folder to that file, so tests can count the
runs that actually executed; if ``STUDY_FIXTURE_KILL_AT`` is set, a run kills itself (SIGKILL)
right after its checkpoint at that step, as a machine going down would.

Reads the digits from the CSV that scikit-learn ships (the same file ``load_digits`` reads),
without importing scikit-learn: a run takes a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
import tomli_w

from common.config import ConfigError, apply_overrides, read_config
from common.schedules import from_spec

DEFAULTS = {
    "seed": 0,
    "steps": 60,  # full-batch gradient steps
    "lr": 0.5,
    "l2": 1e-4,
    "eval_every": 20,  # steps between history entries
    "test_fraction": 0.3,
    "fail": False,  # raise mid-training, for failure-isolation tests
}


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8×8 digits as features in [0, 1] and labels 0..9."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1] / 16.0, data[:, -1].astype(int)


def softmax_loss(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax regression and its gradient in ``w``."""
    logits = x @ w
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
    p[np.arange(len(y)), y] -= 1.0
    return float(loss), x.T @ p / len(y)


def evaluate(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    loss, _ = softmax_loss(w, x, y)
    return {"accuracy": float(np.mean(np.argmax(x @ w, axis=1) == y)), "loss": loss}


def write_json(obj: object, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def train(config: dict, out: Path, resume: bool = False) -> dict:
    rng = np.random.default_rng(config["seed"])
    x, y = load_digits()
    x = np.hstack([x, np.ones((len(x), 1))])  # bias feature
    order = rng.permutation(len(y))
    n_test = int(config["test_fraction"] * len(y))
    test, fit = order[:n_test], order[n_test:]
    w = rng.normal(0.0, 0.01, size=(x.shape[1], 10))
    history, start = [], 0
    checkpoint = out / "checkpoints" / "last.pt"
    if resume:
        with np.load(checkpoint, allow_pickle=False) as state:
            w, start = state["w"], int(state["step"])
            history = json.loads(str(state["history"]))
    kill_at = int(os.environ.get("STUDY_FIXTURE_KILL_AT", "0"))
    schedule = from_spec(config["schedule"], "schedule") if "schedule" in config else None
    for step in range(start + 1, config["steps"] + 1):
        _, grad = softmax_loss(w, x[fit], y[fit])
        rate = config["lr"] * (schedule.value(step - 1) if schedule else 1.0)
        w -= rate * (grad + config["l2"] * w)
        if config["fail"] and step == config["steps"] // 2:
            raise RuntimeError("failing on purpose (fail = true)")
        if step % config["eval_every"] == 0 or step == config["steps"]:
            history.append({"step": step, **evaluate(w, x[test], y[test])})
            checkpoint.parent.mkdir(exist_ok=True)
            with open(checkpoint, "wb") as f:
                np.savez(f, w=w, step=step, history=json.dumps(history))
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
    metrics = {"final": evaluate(w, x[test], y[test]), "history": history}
    write_json(metrics, out / "metrics.json")
    return metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="digits", help="digits, or a TOML file")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--resume", type=Path)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--check", action="store_true", help="check the config, train nothing")
    parser.add_argument("--print-config", action="store_true", help="the config as TOML, no run")
    args = parser.parse_args()
    if (args.out is None) == (args.resume is None):
        print("error: give --out DIR or --resume DIR", file=sys.stderr)
        return 2
    try:
        if args.resume is not None:
            config = read_config(args.resume / "config.toml")
        else:
            config = dict(DEFAULTS) if args.config == "digits" else read_config(args.config)
        apply_overrides(config, args.sets)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"ok: {args.config}")
        return 0
    for key in ("seed", "steps"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.print_config:
        print(tomli_w.dumps(config), end="")
        return 0
    args.out = args.out or args.resume
    if args.resume is None and (args.out / "checkpoints" / "last.pt").exists():
        print(
            f"error: --out {args.out}: already holds a run; continue it with --resume",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if os.environ.get("STUDY_FIXTURE_LOG"):
        with open(os.environ["STUDY_FIXTURE_LOG"], "a") as log:
            log.write(f"{args.out.as_posix()}\n")
    (args.out / "config.toml").write_text(tomli_w.dumps(config))
    train(config, args.out, resume=args.resume is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
