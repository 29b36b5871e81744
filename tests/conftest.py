"""Helpers shared by several test files (plain functions: ``from conftest import digits``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


def digits():
    """sklearn's 8x8 digits (1797, offline) as float inputs in [0, 1] and integer labels."""
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)


def run_main(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run a console script's ``main(argv)`` to its ``SystemExit``: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit code 2 and one ``error: ...`` line on stderr holding every needle, no traceback;
    returns the line."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


MIRROR = ['lr.G.kind="cosine_restarts"', 'lr.D.follow="G"', 'lr.D.mode="anti"']
"""``--set`` items for the rhythm the GAN tests check, whatever the shipped configs' default:
G on cosine restarts, D its mirror (follow G, anti-phase)."""

TINY_RING8 = [
    "model.hidden=16",
    "model.layers=2",
    "data.batch=32",
    *MIRROR,
    "lr.G.period=10",
    "eval.every=0",
    "eval.samples=200",
]
"""``--set`` items that make ring8 tiny: 10-step cycles of the mirror, 16-unit nets, a small
evaluation."""


def set_args(*items: str) -> list[str]:
    """``--set`` before each ``key=value`` item."""
    return [arg for item in items for arg in ("--set", item)]


@contextlib.contextmanager
def default_dtype(name: str) -> Iterator[None]:
    """torch's default dtype set to ``name`` ("float64", ...) inside, restored after."""
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, name))
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@pytest.fixture
def float64():
    """Modules and draws in float64, where a population and its single runs agree to rounding."""
    with default_dtype("float64"):
        yield


@pytest.fixture
def float32():
    with default_dtype("float32"):
        yield


def sent_difficulty(config, curriculum, step: int) -> float:
    """The difficulty an rlcycle run sends its environments after env step ``step``: the
    curriculum's one rollout ahead for an on-policy algorithm (rounded as sent)."""
    from rlcycle.algos import rollout_steps

    lead = rollout_steps(config["algo"], config["n_envs"], config.get(config["algo"], {}))
    return round(curriculum.difficulty(step + lead), 2)


def logged_difficulty(config, curriculum, step: int) -> float:
    """``curriculum/difficulty`` logged at the update of ``step``: the mean sent during the
    rollout it trained on (on-policy)."""
    import numpy as np

    from rlcycle.algos import rollout_steps

    n_envs = config["n_envs"]
    rollout = rollout_steps(config["algo"], n_envs, config.get(config["algo"], {}))
    return float(
        np.mean(
            [sent_difficulty(config, curriculum, t) for t in range(step - rollout, step, n_envs)]
        )
    )
