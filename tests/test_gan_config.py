"""gancycle's config: the schema, layered user files, the shared vocabulary, built schedules."""

import json

import pytest
from conftest import assert_one_line_error as one_line_error
from conftest import run_main
from conftest import set_args as sets

from common.config import ConfigError, get, load_config, shipped_configs
from gancycle.cli import train_main
from gancycle.settings import SCHEMA, check_config

FAST = ["--steps", "5", "--device", "cpu", "--no-progress"]
TINY = ["model.hidden=16", "model.layers=2", "data.batch=32", "eval.samples=200"]


def call(argv, capsys) -> tuple[int, str, str]:
    return run_main(train_main, argv, capsys)


def test_a_three_line_user_config_trains_on_the_defaults(tmp_path, capsys):
    """It failed with "model.arch: missing from the config"."""
    mine = tmp_path / "mine.toml"
    mine.write_text("seed = 3\n[model]\nhidden = 16\n")
    out = tmp_path / "run"
    code, _, err = call(["--config", str(mine), "--out", str(out), *FAST, *sets(*TINY)], capsys)
    assert code == 0, err
    saved = load_config(str(out / "config.toml"), "gancycle")
    assert saved["seed"] == 3 and saved["model"]["hidden"] == 16
    assert saved == SCHEMA.load(str(mine), [*TINY, "steps=5", "device=cpu", "progress=false"])
    assert json.loads((out / "metrics.json").read_text())["final"]["steps"] == 5


def test_a_layered_user_config_on_a_shipped_base(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text('base = "grid25"\n[lr.G]\nmax = 3e-4\n')
    config = SCHEMA.load(str(mine))
    grid25 = SCHEMA.load("grid25")
    assert config["lr"]["G"] == {**grid25["lr"]["G"], "max": 3e-4}
    assert {**config, "lr": grid25["lr"]} == grid25


def test_an_unknown_key_in_a_copy_of_ring8_is_refused(tmp_path, capsys):
    """A copy of ring8.toml with bogus_key = 3 ran as if nothing were wrong."""
    mine = tmp_path / "ring8_copy.toml"
    mine.write_text("bogus_key = 3\n" + _shipped_text("ring8"))
    code, _, err = call(["--config", str(mine), "--out", str(tmp_path / "r"), *FAST], capsys)
    one_line_error(code, err, "ring8_copy.toml", "bogus_key: unknown key", "allowed here: seed")
    assert not (tmp_path / "r").exists()


def _shipped_text(name: str) -> str:
    from importlib import resources

    return (resources.files("gancycle") / "configs" / f"{name}.toml").read_text()


def test_a_learning_rate_that_overflows_float32_is_refused(tmp_path, capsys):
    """--set lr.G.max=3e38 crashed inside Adam."""
    argv = ["--out", str(tmp_path / "r"), *FAST, *sets(*TINY, "lr.G.max=3e38")]
    code, _, err = call(argv, capsys)
    one_line_error(code, err, "lr.G.max = 3e+38", "<= 1e+30", "overflows float32")


def test_the_defaults_are_the_default_config_ring8():
    assert SCHEMA.defaults() == SCHEMA.load("ring8")


MLP_ONLY = ("hidden", "layers", "g_hidden", "g_layers", "d_hidden", "d_layers")
MLP_ONLY += ("g_batchnorm", "d_maxout", "init_std")


def _as_written(name: str) -> dict:
    """A shipped config as its files write it: a layered one on its base (no defaults)."""
    raw: dict = {}
    for source, table in SCHEMA.read_layers(name):
        SCHEMA.merge(raw, table, f"{source}: ")
    return raw


@pytest.mark.parametrize("name", shipped_configs("gancycle"))
def test_every_shipped_config_lists_every_key_and_checks(name):
    raw = _as_written(name)
    for dotted in SCHEMA.keys:
        if dotted in ("data.fake_size", "data.channels", "data.image_size"):
            continue  # the fake data set's keys
        if dotted in {f"model.{k}" for k in MLP_ONLY} and raw["model"]["arch"] != "mlp":
            continue
        if dotted == "model.width" and raw["model"]["arch"] != "dcgan":
            continue
        get(raw, dotted)  # a shipped config documents every key it uses
    checked = check_config(raw)
    assert set(checked.schedules) == {"G", "D"}


def test_check_config_builds_schedules_and_enabled_couplings_once():
    checked = check_config({"instance_noise": {"enabled": True, "hi": 0.05}})
    assert set(checked.couplings) == {"instance_noise"}
    noise = checked.couplings["instance_noise"]
    assert noise.clock is checked.schedules["D"]  # on D's clock, the built one
    assert noise.value(0) == pytest.approx(0.05 * (1 - checked.schedules["D"].phase(0).level))
    assert check_config({}).couplings == {}


@pytest.mark.parametrize(
    ("layer", "words"),
    [
        ({"snapshots": {"max": -1}}, ["snapshots.max = -1", ">= 0 (0 = none)"]),
        ({"checkpoint": {"every": -1}}, ["checkpoint.every", "0 = only at the end"]),
        ({"progress": "yes"}, ["progress = 'yes'", "true or false"]),
        ({"label_smoothing": {"hi": 1.0}}, ["label_smoothing.hi", "[0, 1)"]),
        ({"lr": {"X": {"max": 1.0}}}, ["lr.X: unknown key; allowed here: G, D"]),
    ],
)
def test_bad_values_name_their_key(layer, words):
    with pytest.raises(ConfigError) as err:
        check_config(layer)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_no_snapshots_and_checkpoints_only_at_the_end(tmp_path):
    from gancycle.trainer import train

    config = SCHEMA.load(
        "ring8",
        [
            *TINY,
            "steps=25",
            "device=cpu",
            "eval.every=0",
            "lr.G.period=10",
            "snapshots.max=0",
            "checkpoint.every=0",
            "progress=false",
        ],
    )
    metrics = train(config, tmp_path)
    assert metrics["steps"] == 25 and "ensemble" not in metrics
    assert not list((tmp_path / "snapshots").glob("*.pt"))


README_EXAMPLE = """\
base = "ring8"        # a shipped config, or a path relative to this file
steps = 2000
lr.G.period = 2000    # the annealing cosine over the shorter run; D still follows G
lr.G.max = 3e-4       # G peaks lower; D keeps its range, 1e-3 to 1e-5
"""


def test_the_readme_layered_example_checks(tmp_path, capsys):
    mine = tmp_path / "mine.toml"
    mine.write_text(README_EXAMPLE)
    code, out, err = call(["--config", str(mine), "--check"], capsys)
    assert code == 0, err
    assert out == f"ok: {mine}: 2000 steps; schedules G (cosine), D (follow G); couplings none\n"
    ring8 = SCHEMA.load("ring8")
    config = SCHEMA.load(str(mine))
    assert config == {
        **ring8,
        "steps": 2000,
        "lr": {**ring8["lr"], "G": {**ring8["lr"]["G"], "period": 2000, "max": 3e-4}},
    }
