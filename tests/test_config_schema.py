"""The schema mechanism both trainers declare their configs with: keys, layers, renames, builds."""

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.config import (
    MAX_RATE,
    CheckedConfig,
    ConfigError,
    ScheduleTable,
    Schema,
    Table,
    apply_overrides,
    boolean,
    choice,
    flatten,
    integer,
    number,
    read_config,
    save_config,
    shared_keys,
)
from common.schedules import from_spec

SPEC = {"kind": "cosine_restarts", "max": 1e-3, "min": 1e-5, "period": 100}

TOY = Schema(
    "common",
    {
        **shared_keys(nets=("G", "D"), steps=1000, log_every=10, checkpoint_every=0, snapshots=5),
        "model.arch": choice("mlp", ("mlp", "dcgan")),
        "model.hidden": integer(64, 1),
        "optim.beta1": number(0.5, 0, 1, hi_open=True),
        "amp": boolean(False),
        "lr.G": ScheduleTable(SPEC),
        "lr.D": ScheduleTable({**SPEC, "offset": 0.5}),
        "ppo": Table({"n_steps": 32}, "PPO arguments"),
    },
    renames={"log_every": "log.every", "restart.max_snapshots": "snapshots.max (0 = none)"},
)


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# -- defaults and checks ---------------------------------------------------------------------


def test_a_partial_config_is_filled_with_the_defaults_and_checked():
    config = TOY.check({"model": {"hidden": 128}, "optim": {"beta1": 0}})
    assert config["model"] == {"arch": "mlp", "hidden": 128}
    assert config["optim"]["beta1"] == 0.0 and isinstance(config["optim"]["beta1"], float)
    assert config["snapshots"] == {"max": 5} and config["progress"] is True
    assert config["reset"] == {"G": "none", "D": "none"}
    assert TOY.check({}) == TOY.defaults()
    assert TOY.check(config) == config  # a full config checks to itself


@pytest.mark.parametrize(
    ("layer", "words"),
    [
        ({"model": {"hidden": 0}}, ["model.hidden = 0", "an integer >= 1"]),
        ({"model": {"arch": "resnet"}}, ["model.arch = 'resnet'", "mlp | dcgan"]),
        ({"optim": {"beta1": 1.0}}, ["optim.beta1 = 1.0", "[0, 1)"]),
        ({"amp": 1}, ["amp = 1", "true or false"]),
        ({"seed": 2**64}, ["seed = 18446744073709551616", "an integer in [0, 4294967295]"]),
        ({"seed": -1}, ["seed = -1", "an integer in [0, 4294967295]"]),
        ({"snapshots": {"max": -1}}, ["snapshots.max", ">= 0 (0 = none)"]),
        ({"reset": {"G": "moments"}}, ["reset.G", "none | momentum | all"]),
        ({"bogus_key": 3}, ["bogus_key: unknown key", "allowed here: seed, steps"]),
        ({"model": {"hiden": 3}}, ["model.hiden: unknown key", "allowed here: arch, hidden"]),
        ({"model": 3}, ["model: is a table", "arch, hidden"]),
        ({"amp": {"on": True}}, ["amp.on: amp is a value, not a table"]),
        ({"log_every": 5}, ["log_every: an old key; now log.every"]),
        ({"restart": {"max_snapshots": 2}}, ["restart.max_snapshots: an old key", "snapshots.max"]),
        ({"ppo": 3}, ["ppo = 3: must be a table (PPO arguments)"]),
        ({"lr": {"G": {"max": {"x": 1}}}}, ["lr.G.max: lr.G is a schedule table"]),
    ],
)
def test_bad_keys_and_values_are_one_line_naming_the_key(layer, words):
    with pytest.raises(ConfigError) as err:
        TOY.check(layer)
    message = one_line(err)
    assert all(w in message for w in words), message


def test_schedules_are_built_once_and_a_huge_rate_is_refused():
    checked = TOY.checked({"lr": {"G": {"max": 2e-3}}})
    assert isinstance(checked, CheckedConfig) and set(checked.schedules) == {"G", "D"}
    assert checked.schedules["G"] == from_spec({**SPEC, "max": 2e-3})
    assert checked.schedules["D"].spec()["offset"] == 0.5
    assert checked.couplings == {} and checked.extras == {}
    with pytest.raises(ConfigError) as err:
        TOY.checked({"lr": {"G": {"max": 3e38}}})
    assert f"lr.G.max = 3e+38: must be <= {MAX_RATE:g}" in one_line(err)
    assert "overflows float32" in str(err.value)
    with pytest.raises(ConfigError, match=r"lr\.D\.maxx: unknown key for kind"):
        TOY.checked({"lr": {"D": {"maxx": 1}}})


def test_a_top_level_schedule_is_named_as_declared():
    schema = Schema("common", {"lr": ScheduleTable(SPEC, name="policy")})
    assert set(schema.checked({}).schedules) == {"policy"}
    with pytest.raises(ConfigError, match=r"lr\.period = -1"):
        schema.checked({"lr": {"period": -1}})


# -- --set -----------------------------------------------------------------------------------


def test_set_checks_keys_like_a_file():
    config = TOY.set(
        TOY.defaults(), ["model.hidden=128", "lr.G.kind=triangular", "amp=true", "reset.G=all"]
    )
    assert config["lr"]["G"] == {**SPEC, "kind": "triangular"}  # --set changes one key
    assert config["model"]["hidden"] == 128 and config["amp"] is True
    assert config["reset"]["G"] == "all"  # a bare word is a string
    with pytest.raises(ConfigError) as err:
        TOY.set(TOY.defaults(), ["bogus_key=3"])
    assert one_line(err).startswith("--set bogus_key: unknown key; allowed here: seed, steps")
    with pytest.raises(ConfigError, match="--set log_every: an old key; now log.every"):
        TOY.set(TOY.defaults(), ["log_every=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        TOY.set(TOY.defaults(), ["seed"])
    assert apply_overrides(TOY.defaults(), ["seed=3"], TOY)["seed"] == 3


def test_kind_or_follow_switches_a_schedules_form_keeping_what_it_accepts():
    config = TOY.set(TOY.defaults(), ["lr.G.kind=constant"])
    assert config["lr"]["G"] == {"kind": "constant", "max": 1e-3, "min": 1e-5}  # no period
    mirror = TOY.set(TOY.defaults(), ['lr.D.follow="G"', "lr.D.mode=anti"])
    assert mirror["lr"]["D"] == {"follow": "G", "mode": "anti", "max": 1e-3, "min": 1e-5}
    inline = TOY.set(TOY.defaults(), ['lr.D={follow = "G", mode = "anti"}'])
    assert inline == mirror
    shift = TOY.set(
        copy.deepcopy(mirror), ["lr.D.kind=cosine_restarts", "lr.D.period=100", "lr.D.offset=0.5"]
    )
    assert shift == TOY.defaults()  # back to the shift, max and min kept
    schedules = TOY.checked(mirror).schedules
    G, D = (schedules[n].values(range(300)) for n in "GD")
    assert np.corrcoef(G, D)[0, 1] == pytest.approx(-1.0)  # the follow form: a true mirror


def test_set_into_a_single_schedule_says_it_is_a_schedule_table():
    """rlcycle-train --set lr.G.max=1 said "no table 'lr.G'; tables here: none"."""
    schema = Schema("common", {"lr": ScheduleTable(SPEC, name="policy")})
    with pytest.raises(ConfigError) as err:
        schema.set(schema.defaults(), ["lr.G.max=1"])
    message = one_line(err)
    assert "lr is a schedule table" in message and "kind, max, min, period" in message
    # the schema-less path (a config as its file gives it) says the same
    config = {"lr": dict(SPEC), "seed": 0}
    with pytest.raises(ConfigError) as err:
        apply_overrides(config, ["lr.G.max=1"])
    message = one_line(err)
    assert "lr is a schedule table" in message and "kind, max, min, period" in message


# -- files and layers ------------------------------------------------------------------------


def test_a_user_file_holds_only_what_it_changes(tmp_path):
    (tmp_path / "mine.toml").write_text('seed = 3\n[model]\narch = "dcgan"\n')
    config = TOY.load(str(tmp_path / "mine.toml"), ["model.hidden=32"])
    assert config == {
        **TOY.defaults(),
        "seed": 3,
        "model": {"arch": "dcgan", "hidden": 32},
    }


def test_layers_follow_base_relative_to_the_file(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.toml").write_text(
        'steps = 50\n[lr.D]\nkind = "constant"\nmax = 1e-4\n[ppo]\nn_steps = 64\ngamma = 0.9\n'
    )
    (tmp_path / "run.toml").write_text(
        'base = "shared/base.toml"\nseed = 2\n[lr.D]\nmax = 2e-4\n[ppo]\nn_steps = 16\n'
    )
    config = TOY.load(str(tmp_path / "run.toml"))
    assert (config["steps"], config["seed"]) == (50, 2)
    # a layer naming kind switches the form: the keys constant does not accept are gone
    assert config["lr"]["D"] == {"kind": "constant", "max": 2e-4, "min": 1e-5}
    assert config["ppo"] == {"n_steps": 16, "gamma": 0.9}  # tables merge key by key
    assert TOY.checked(config).schedules["D"].value(7) == 2e-4


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("bogus_key = 3\n", ["mine.toml: bogus_key: unknown key; allowed here: seed"]),
        ("[model]\nhiden = 3\n", ["mine.toml: model.hiden: unknown key", "arch, hidden"]),
        ("log_every = 3\n", ["mine.toml: log_every: an old key; now log.every"]),
        ('base = "nothere.toml"\n', ["mine.toml: base = 'nothere.toml'", "nor a file"]),
        ('base = "mine.toml"\n', ["base = 'mine.toml': a loop of bases"]),
        ("base = 3\n", ["mine.toml: base = 3: must be a config name or path"]),
        ("seed = \n", ["mine.toml: not valid TOML"]),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_the_key(tmp_path, text, words):
    (tmp_path / "mine.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        TOY.load(str(tmp_path / "mine.toml"))
    message = one_line(err)
    assert all(w in message for w in words), message


def test_save_config_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "run" / "config.toml"
    save_config(TOY.defaults(), path)
    assert read_config(path) == TOY.defaults()
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temp file left
    with pytest.raises(TypeError):  # not TOML-able: the previous file stays whole
        save_config({"bad": object()}, path)
    assert read_config(path) == TOY.defaults()


def test_flatten_gives_dotted_scalars():
    flat = flatten({"seed": 1, "lr": {"G": {"max": 1e-3}}, "eval": {"grid": [0, 1]}})
    assert flat == {"seed": 1, "lr.G.max": 1e-3, "eval.grid": "[0, 1]"}
    assert flatten(TOY.defaults(), only=["seed", "lr.D"]) == {
        "seed": 0,
        **{f"lr.D.{k}": v for k, v in {**SPEC, "offset": 0.5}.items()},
    }


def test_a_bad_schema_is_refused_when_declared():
    with pytest.raises(ValueError, match="a.b lies inside the key 'a'"):
        Schema("common", {"a": integer(0, 0), "a.b": integer(0, 0)})
    with pytest.raises(ValueError, match="a is declared twice, or as a key and a table"):
        Schema("common", {"a.b": integer(0, 0), "a": integer(0, 0)})


def test_config_and_cli_modules_import_no_torch():
    code = "import common.cli, common.config, sys; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_shipped_config_is_read_without_importing_its_package():
    """``common`` finds ``<package>/configs`` without running the package's ``__init__``
    (rlcycle's imports gymnasium): reading a config costs no research package."""
    code = (
        "import sys; from common.config import load_config, shipped_configs; "
        "config = load_config('cartpole', 'rlcycle'); names = shipped_configs('gancycle'); "
        "print(config['env']['id'], 'ring8' in names, "
        "sorted(m for m in ('rlcycle', 'gancycle', 'gymnasium') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1]
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "rlcycle/CartPole-v1 True []"
