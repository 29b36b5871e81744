"""Configs as TOML: one schema for each trainer, layered files, ``--set`` overrides, checks.

A config is a plain nested dict. A package declares its keys once, in a :class:`Schema` of
dotted names, each one of

- a :class:`Key`: a value with its default, its check and what it allows (:func:`integer`,
  :func:`number`, :func:`choice`, :func:`boolean`, :func:`string`, or any ``Key``);
- a :class:`ScheduleTable`: a learning-rate schedule spec (``[lr.G]``), whose keys
  :mod:`common.schedules` checks when :meth:`Schema.build_schedules` builds it;
- a :class:`Table`: a table whose own builder checks its keys (SB3 arguments, a curriculum).

A config is read in layers, each on the one below::

    the schema's defaults          (the package's default config)
    base = "ring8"                 (a shipped config, or a path relative to the file)
    the user's --config FILE       (only the keys it changes)
    --set key=value ...            (the value is TOML: 2e-4, true, [0, 1], "text"; a bare word
                                    that is not valid TOML is a string: reset.G=all)

Every layer is checked the same way: an unknown key is refused with the keys allowed at that
level, and an old key (the package's table of renames) with the name that replaced it. A
schedule table's keys change the one below, like any table's; a layer that gives ``kind`` or
``follow`` switches the schedule's form and keeps only the keys below that the new form accepts
(``--set lr.G.kind=constant`` drops the cosine's ``period``; ``kind`` on a ``follow`` table
drops ``follow`` and ``mode`` and keeps ``max`` and ``min``). After the last layer every
value is checked against its key, and the result is the full config (what a run's
``config.toml`` holds). A package's ``check_config`` then builds it: a
:class:`CheckedConfig` hands back the schedules (and couplings) it built, so nothing builds a
spec twice.

This module imports neither torch nor the research packages: command lines that only parse
arguments stay fast.
"""

from __future__ import annotations

import copy
import importlib.util
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w
import tomllib

if TYPE_CHECKING:
    from common.coupling import Coupled
    from common.schedules import Schedule

__all__ = [
    "MAX_SEED",
    "config_toml",
    "ConfigError",
    "Key",
    "Table",
    "ScheduleTable",
    "Schema",
    "CheckedConfig",
    "integer",
    "number",
    "choice",
    "boolean",
    "string",
    "shared_keys",
    "RESETS",
    "MAX_RATE",
    "flatten",
    "get",
    "shipped_configs",
    "load_config",
    "apply_overrides",
    "save_config",
    "read_config",
    "run_package",
    "check_run_package",
    "read_run_config",
]


class ConfigError(ValueError):
    """A bad config file, key or value; the message is one line naming it."""


# -- keys ------------------------------------------------------------------------------------

Check = Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Key:
    """One value of a config.

    Attributes:
        default: the value when no layer gives one.
        check: ``check(value)`` is true for an allowed value.
        allowed: what ``check`` allows, in words ("an integer >= 1"), for error messages.
    """

    default: Any
    check: Check
    allowed: str

    def validated(self, name: str, value: Any) -> Any:
        """``value`` if allowed (an integer for a float key becomes a float), else an error."""
        if not self.check(value):
            raise ConfigError(f"{name} = {value!r}: must be {self.allowed}")
        if isinstance(self.default, float) and _is_int(value):
            return float(value)
        return value


@dataclass(frozen=True)
class Table:
    """A table whose keys its own builder checks (e.g. SB3 arguments); layers merge into it.

    Attributes:
        default: the table when no layer gives one.
        what: what it holds, in words, for error messages.
    """

    default: Mapping[str, Any]
    what: str


@dataclass(frozen=True)
class ScheduleTable:
    """A schedule spec (see :func:`common.schedules.from_spec`), built by the schema.

    Attributes:
        default: the spec when no layer gives one.
        name: the built schedule's name in :attr:`CheckedConfig.schedules` (default: the last
            part of its dotted key: ``lr.G`` -> ``G``).
    """

    default: Mapping[str, Any]
    name: str | None = None


Node = Key | Table | ScheduleTable


def integer(default: int, lo: int, note: str = "", hi: int | None = None) -> Key:
    """An integer ``>= lo`` (and ``<= hi``); ``note`` says what a special value means
    ("0 = none")."""
    allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    return Key(
        default,
        lambda v: _is_int(v) and v >= lo and (hi is None or v <= hi),
        allowed + (f" ({note})" if note else ""),
    )


MAX_SEED = 2**32 - 1
"""The largest seed: a 32-bit one, as NumPy's global generator takes."""


def number(
    default: float, lo: float = -math.inf, hi: float = math.inf, hi_open: bool = False
) -> Key:
    """A finite number in ``[lo, hi]`` (``[lo, hi)`` with ``hi_open``)."""

    def ok(v: Any) -> bool:
        return _is_number(v) and (lo <= v < hi if hi_open else lo <= v <= hi)

    return Key(default, ok, f"a number in [{lo:g}, {hi:g}{')' if hi_open else ']'}")


def choice(default: str, options: Iterable[str]) -> Key:
    """One of ``options``."""
    options = tuple(options)
    return Key(
        default, lambda v: isinstance(v, str) and v in options, "one of " + " | ".join(options)
    )


def boolean(default: bool) -> Key:
    """``true`` or ``false``."""
    return Key(default, lambda v: isinstance(v, bool), "true or false")


def string(default: str) -> Key:
    """Any string."""
    return Key(default, lambda v: isinstance(v, str), "a string")


RESETS: dict[str, Any] = {
    "none": None,
    "momentum": True,
    "all": ("exp_avg", "exp_avg_sq", "step", "momentum_buffer"),
}
"""``[reset] <net>``: optimizer state zeroed at each of that network's restarts, as
:func:`common.torch_driver.drive_optimizer`'s ``reset``. ``momentum`` forgets the first moment
(Adam's ``exp_avg``, SGD's momentum buffer); ``all`` also Adam's second moment and step count,
so the next update is a fresh Adam start."""

DEVICES = ("auto", "cpu", "cuda")

MAX_RATE = 1e30
"""The largest learning rate a schedule may reach: a larger one overflows float32 updates
(Adam divides it by ``1 - beta1`` before it meets the float32 weights)."""


def shared_keys(
    *,
    nets: Iterable[str],
    steps: int,
    log_every: int,
    checkpoint_every: int,
    snapshots: int,
    seed: int = 0,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
    reset: str = "none",
) -> dict[str, Key]:
    """The keys both trainers share, with one meaning each (arguments: their defaults).

    ``seed``, ``steps``, ``device``, ``threads``, ``progress`` (a progress bar, silent when
    stderr is not a terminal), ``log.every``, ``checkpoint.every`` (0 = only at the end),
    ``snapshots.max`` (snapshots kept; 0 = none) and ``reset.<net>`` for each of ``nets``
    (none | momentum | all, see :data:`RESETS`).
    """
    keys = {
        "seed": integer(seed, 0, hi=MAX_SEED),
        "steps": integer(steps, 1),
        "device": choice(device, DEVICES),
        "threads": integer(threads, 0, "0 = torch's default"),
        "progress": boolean(progress),
        "log.every": integer(log_every, 1),
        "checkpoint.every": integer(checkpoint_every, 0, "0 = only at the end"),
        "snapshots.max": integer(snapshots, 0, "0 = none"),
    }
    keys.update({f"reset.{net}": choice(reset, RESETS) for net in nets})
    return keys


# -- the built config ------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedConfig:
    """A config that passed every check, and what checking it built.

    Attributes:
        config: the full config, defaults filled in (what ``config.toml`` holds).
        schedules: the built learning-rate schedules by name (GAN ``G``, ``D``; RL ``policy``).
        couplings: the built couplings that are enabled, by name.
        extras: anything else the package built (RL: ``{"curriculum": Curriculum}``).
    """

    config: dict[str, Any]
    schedules: dict[str, Schedule]
    couplings: dict[str, Coupled] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


# -- the schema ------------------------------------------------------------------------------


def _tree(keys: Mapping[str, Node]) -> dict[str, Any]:
    """The dotted names as nested dicts whose leaves are the nodes."""
    tree: dict[str, Any] = {}
    for dotted, node in keys.items():
        *parents, last = dotted.split(".")
        level = tree
        for part in parents:
            level = level.setdefault(part, {})
            if not isinstance(level, dict):
                raise ValueError(f"schema: {dotted} lies inside the key {part!r}")
        if last in level:
            raise ValueError(f"schema: {dotted} is declared twice, or as a key and a table")
        level[last] = node
    return tree


def _schedule_keys(spec: Mapping[str, Any]) -> str:
    return ", ".join(spec) or "none yet"


class Schema:
    """Every key of one package's config: defaults, checks, renames; layers; schedules.

    Args:
        package: the package whose ``configs/`` folder holds the shipped configs.
        keys: dotted name -> :class:`Key`, :class:`Table` or :class:`ScheduleTable`.
        renames: old dotted name -> what replaced it, in words ("log.every",
            "snapshots.max (0 = none)"); a layer that gives an old key is refused with it.
    """

    def __init__(
        self, package: str, keys: Mapping[str, Node], renames: Mapping[str, str] | None = None
    ) -> None:
        self.package = package
        self.keys = dict(keys)
        self.renames = dict(renames or {})
        self.tree = _tree(self.keys)

    # -- layers ---------------------------------------------------------------------------

    def defaults(self) -> dict[str, Any]:
        """The config no layer changed: every key at its default."""
        out: dict[str, Any] = {}
        for dotted, node in self.keys.items():
            *parents, last = dotted.split(".")
            level = out
            for part in parents:
                level = level.setdefault(part, {})
            level[last] = copy.deepcopy(
                dict(node.default) if isinstance(node, (Table, ScheduleTable)) else node.default
            )
        return out

    def merge(
        self,
        config: dict[str, Any],
        layer: Mapping[str, Any],
        source: str = "",
    ) -> dict[str, Any]:
        """Lay ``layer`` (a partial config) on ``config`` in place and return ``config``.

        ``source`` starts every message (``"my.toml: "``, ``"--set "``). A schedule table that
        gives ``kind`` or ``follow`` keeps only the keys below that its new form accepts.

        Raises:
            ConfigError: an unknown or renamed key, a value where a table belongs or the other
                way round; one line naming the key.
        """
        self._merge(config, layer, self.tree, (), source)
        return config

    def _merge(
        self,
        config: dict[str, Any],
        layer: Mapping[str, Any],
        level: dict[str, Any],
        where: tuple[str, ...],
        source: str,
    ) -> None:
        for key, value in layer.items():
            path = (*where, key)
            dotted = ".".join(path)
            self._refuse_renamed(path, value, source)
            node = level.get(key)
            if node is None:
                raise ConfigError(
                    f"{source}{dotted}: unknown key; allowed here: {', '.join(level)}"
                )
            if isinstance(node, dict):
                if not isinstance(value, Mapping):
                    raise ConfigError(
                        f"{source}{dotted}: is a table; set one of its keys: {', '.join(node)}"
                    )
                self._merge(config.setdefault(key, {}), value, node, path, source)
            elif isinstance(node, ScheduleTable):
                self._merge_schedule(config, key, value, dotted, source)
            elif isinstance(node, Table):
                if not isinstance(value, Mapping):
                    raise ConfigError(
                        f"{source}{dotted} = {value!r}: must be a table ({node.what})"
                    )
                config[key] = _deep_merged(config.get(key, {}), value)
            else:
                if isinstance(value, Mapping) and not isinstance(node.default, Mapping):
                    inner = next(iter(value), "")
                    raise ConfigError(
                        f"{source}{dotted}.{inner}: {dotted} is a value, not a table "
                        f"(it must be {node.allowed})"
                    )
                config[key] = copy.deepcopy(value)

    def _refuse_renamed(self, path: tuple[str, ...], value: Any, source: str) -> None:
        dotted = ".".join(path)
        if dotted in self.renames:
            raise ConfigError(f"{source}{dotted}: an old key; now {self.renames[dotted]}")
        if isinstance(value, Mapping):  # an old table: name the first old key inside
            for inner in value:
                inner_dotted = f"{dotted}.{inner}"
                if inner_dotted in self.renames and _lookup(self.tree, path) is None:
                    raise ConfigError(
                        f"{source}{inner_dotted}: an old key; now {self.renames[inner_dotted]}"
                    )

    def _merge_schedule(
        self,
        config: dict[str, Any],
        key: str,
        value: Any,
        dotted: str,
        source: str,
    ) -> None:
        below = config.get(key, {})
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{source}{dotted}: is a schedule table; set one of its keys: "
                f"{_schedule_keys(below)}"
            )
        for inner, v in value.items():
            if isinstance(v, Mapping):
                raise ConfigError(
                    f"{source}{dotted}.{inner}: {dotted} is a schedule table, not a table of "
                    f"schedules; its keys: {_schedule_keys(below)} (e.g. {dotted}.max=...)"
                )
        accepted = _form_keys(value)
        kept = {k: v for k, v in below.items() if accepted is None or k in accepted}
        config[key] = {**kept, **copy.deepcopy(dict(value))}

    def set(self, config: dict[str, Any], sets: Iterable[str]) -> dict[str, Any]:
        """Apply ``--set dotted.key=value`` items in place and return ``config``."""
        for item in sets:
            key, value = _parse_item(item)
            *parents, last = key.split(".")
            layer: dict[str, Any] = {last: value}
            for part in reversed(parents):
                layer = {part: layer}
            self.merge(config, layer, "--set ")
        return config

    # -- files ----------------------------------------------------------------------------

    def read_layers(self, name_or_path: str) -> list[tuple[str, dict[str, Any]]]:
        """The layers of a config, bottom first: ``(source, table)``, ``base`` followed.

        ``name_or_path`` is a shipped config or a TOML file; a file's ``base`` names a shipped
        config or a path relative to that file.
        """
        source, table = _open_config(name_or_path, self.package, None)
        layers = [(source, table)]
        while "base" in table:
            base = table.pop("base")
            if not isinstance(base, str) or not base:
                raise ConfigError(f"{source}: base = {base!r}: must be a config name or path")
            folder = None if source.startswith("<") else Path(source).parent
            source, table = _open_config(base, self.package, folder, referrer=source)
            if any(source == seen for seen, _ in layers):
                raise ConfigError(f"{layers[-1][0]}: base = {base!r}: a loop of bases")
            layers.append((source, table))
        return layers[::-1]

    def load(self, name_or_path: str, sets: Iterable[str] = ()) -> dict[str, Any]:
        """A config by name or path, layered on the defaults, ``sets`` applied, checked."""
        config = self.defaults()
        for source, table in self.read_layers(name_or_path):
            self.merge(config, table, f"{source}: ")
        self.set(config, sets)
        return self.check(config)

    # -- checks and building --------------------------------------------------------------

    def check(self, config: Mapping[str, Any], source: str = "") -> dict[str, Any]:
        """The full config: ``config`` (whole or partial) on the defaults, every key checked.

        Raises:
            ConfigError: an unknown or renamed key, or a value its key does not allow.
        """
        out = self.merge(self.defaults(), config, source)
        for dotted, node in self.keys.items():
            *parents, last = dotted.split(".")
            level = out
            for part in parents:
                level = level[part]
            if isinstance(node, Key):
                level[last] = node.validated(dotted, level[last])
            elif isinstance(node, ScheduleTable):
                _check_rates(level[last], dotted)
        return out

    def build_schedules(self, config: Mapping[str, Any]) -> dict[str, Schedule]:
        """Build every schedule table of a checked config, by name.

        Tables under one parent (``lr.G``, ``lr.D``) are built together, so one may follow
        another.

        Raises:
            ConfigError: a spec :mod:`common.schedules` refuses; the message names the key.
        """
        groups: dict[tuple[str, ...], dict[str, ScheduleTable]] = {}
        for dotted, node in self.keys.items():
            if isinstance(node, ScheduleTable):
                *parents, last = dotted.split(".")
                groups.setdefault(tuple(parents), {})[last] = node
        built: dict[str, Schedule] = {}
        for parents, nodes in groups.items():
            specs = {last: get(config, ".".join((*parents, last))) for last in nodes}
            schedules = _build_specs(specs, ".".join(parents))
            for last, node in nodes.items():
                built[node.name or last] = schedules[last]
        return built

    def checked(self, config: Mapping[str, Any]) -> CheckedConfig:
        """:meth:`check`, then :meth:`build_schedules`: the config and its schedules."""
        full = self.check(config)
        return CheckedConfig(config=full, schedules=self.build_schedules(full))


def _build_specs(specs: Mapping[str, Mapping[str, Any]], where: str) -> dict[str, Schedule]:
    from common.schedules import build_schedules

    try:
        return build_schedules(specs, where)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _form_keys(layer: Mapping[str, Any]) -> frozenset[str] | None:
    """The keys a schedule table's new form accepts, when ``layer`` gives ``kind`` or
    ``follow``; ``None`` when it keeps its form (or names a kind that does not exist, which
    :func:`common.schedules.from_spec` reports)."""
    from common.schedules import FOLLOW_KEYS, KINDS

    if "follow" in layer:
        return FOLLOW_KEYS
    kind = layer.get("kind")
    return KINDS[kind] if isinstance(kind, str) and kind in KINDS else None


def _check_rates(spec: Any, where: str) -> None:
    """Every rate of a schedule spec (``max``, ``min``, ``start``, nested parts) below
    :data:`MAX_RATE`."""
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            name = f"{where}.{key}"
            if key in ("max", "min", "start") and _is_number(value) and value > MAX_RATE:
                raise ConfigError(
                    f"{name} = {value!r}: must be <= {MAX_RATE:g} "
                    "(a larger learning rate overflows float32 updates)"
                )
            _check_rates(value, name)
    elif isinstance(spec, list):
        for i, value in enumerate(spec):
            _check_rates(value, f"{where}[{i}]")


def _lookup(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _deep_merged(below: Mapping[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(below))
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def get(config: Mapping[str, Any], dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; a missing key is a :class:`ConfigError`."""
    node: Any = config
    for depth, part in enumerate(dotted.split(".")):
        if not isinstance(node, Mapping) or part not in node:
            where = ".".join(dotted.split(".")[:depth]) or "the top level"
            raise ConfigError(f"{dotted}: missing from the config (no {part!r} in {where})")
        node = node[part]
    return node


def flatten(config: Mapping[str, Any], only: Iterable[str] | None = None) -> dict[str, Any]:
    """Hyperparameters for TensorBoard: ``{"lr.G.max": 1e-3, ...}``, scalars only.

    Lists and other values become their text. ``only`` keeps the keys equal to or under the
    given dotted names (``["seed", "lr", "reset.policy"]``); default: every key.
    """
    out: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, f"{name}.")
            else:
                out[name] = value if isinstance(value, (bool, int, float, str)) else str(value)

    walk(config, "")
    if only is None:
        return out
    keep = tuple(only)
    return {k: v for k, v in out.items() if any(k == p or k.startswith(f"{p}.") for p in keep)}


# -- files -----------------------------------------------------------------------------------


_RUN_MARKS = {"gancycle": ("model", "data"), "rlcycle": ("algo", "env")}
"""Top-level keys that only a config of that package has."""


def run_package(config: Mapping[str, Any]) -> str | None:
    """Which package wrote a run's ``config.toml``: ``gancycle``, ``rlcycle`` or None."""
    for package, marks in _RUN_MARKS.items():
        if all(key in config for key in marks):
            return package
    return None


def check_run_package(
    config: Mapping[str, Any], package: str, run_dir: str | Path, option: str
) -> None:
    """Name another package's run folder as such, rather than the keys its config lacks.

    Raises:
        ConfigError: ``config`` (a run's ``config.toml``) was written by another package.
    """
    other = run_package(config)
    if other is not None and other != package:
        article = "an" if other[0] in "aeiour" else "a"
        raise ConfigError(
            f"{option} {run_dir}: {article} {other} run, not a {package} one; use {other}-eval "
            f"or {other}-train --resume"
        )


def read_run_config(run_dir: str | Path, package: str, option: str) -> dict[str, Any]:
    """The ``config.toml`` of the ``package`` run in ``run_dir``; ``option`` names it in errors.

    Raises:
        ConfigError: no config there, one without the ``steps`` and ``seed`` every run's
            config holds (emptied or cut short: filling in defaults would be another run), or
            the folder holds another package's run.
    """
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise ConfigError(f"{option} {run_dir}: no config.toml there; not a run folder")
    config = read_config(path)
    check_run_package(config, package, run_dir, option)
    missing = [key for key in ("steps", "seed") if key not in config]
    if missing:
        raise ConfigError(
            f"{path}: not a whole run config (no {' or '.join(missing)}); was it emptied or "
            "cut short? Restore it, or start a new run"
        )
    return config


def package_folders(package: str, name: str) -> list[Path]:
    """The ``<package>/<name>`` folders of an installed package (none if it is not installed).

    Found with :func:`importlib.util.find_spec`, which locates a top-level package without
    running its ``__init__`` (``rlcycle``'s imports gymnasium), so ``common`` stays free of the
    research packages.
    """
    spec = importlib.util.find_spec(package)
    locations = (spec.submodule_search_locations or []) if spec else []
    return [Path(place) / name for place in locations if (Path(place) / name).is_dir()]


def shipped_configs(package: str) -> list[str]:
    """Names of the TOML configs shipped in ``<package>/configs/``."""
    names = {
        path.stem
        for folder in package_folders(package, "configs")
        for path in folder.glob("*.toml")
    }
    return sorted(names)


def read_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML (not UTF-8 text: {e.reason})") from None


def _open_config(
    name: str, package: str, folder: Path | None, referrer: str = ""
) -> tuple[str, dict[str, Any]]:
    """``(source, table)`` of a shipped config by name, or of a file (relative to
    ``folder`` when given)."""
    names = shipped_configs(package)
    if name in names:
        shipped = next(
            folder / f"{name}.toml"
            for folder in package_folders(package, "configs")
            if (folder / f"{name}.toml").is_file()
        )
        return f"{package}/configs/{name}.toml", read_config(shipped)
    path = folder / name if folder is not None else Path(name)
    if path.is_file():
        return str(path), read_config(path)
    if referrer:
        raise ConfigError(
            f"{referrer}: base = {name!r}: not a shipped config ({', '.join(names)}) "
            f"nor a file {path}"
        )
    raise ConfigError(
        f"--config {name!r}: not a shipped config ({', '.join(names)}) nor a TOML file"
    )


def load_config(name_or_path: str, package: str) -> dict[str, Any]:
    """A config file as written: shipped in ``<package>/configs/<NAME>.toml``, or by path.

    No layers, no defaults: :meth:`Schema.load` gives the config a run trains with.
    """
    return _open_config(name_or_path, package, None)[1]


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _parse_item(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. seed=1")
    key, text = (s.strip() for s in item.split("=", 1))
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected a dotted key, e.g. seed=1")
    return key, _parse_value(text)


def _same_type(old: Any, new: Any) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, (int, float)):
        return isinstance(new, (int, float))
    return isinstance(new, type(old))


def apply_overrides(
    config: dict[str, Any], sets: Iterable[str], schema: Schema | None = None
) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides in place and return the config.

    With a ``schema`` the keys are the schema's (:meth:`Schema.set`). Without one, an override
    may only change a key the config has, with a value of the same type, except inside a
    schedule table (a table with a ``kind`` key), whose keys ``from_spec`` checks later.

    Raises:
        ConfigError: a malformed override, an unknown key (the message lists the allowed keys at
            that level) or a value of the wrong type.
    """
    if schema is not None:
        return schema.set(config, sets)
    for item in sets:
        key, value = _parse_item(item)
        text = item.split("=", 1)[1].strip()
        parts = key.split(".")
        table = config
        for depth, part in enumerate(parts[:-1]):
            at = ".".join(parts[: depth + 1])
            if "kind" in table:
                here = ".".join(parts[:depth])
                raise ConfigError(
                    f"--set {key}: {here} is a schedule table, not a table of schedules; its "
                    f"keys: {', '.join(table)} (e.g. {here}.max=...)"
                )
            child = table.get(part)
            if not isinstance(child, dict):
                allowed = ", ".join(k for k, v in table.items() if isinstance(v, dict))
                raise ConfigError(f"--set {key}: no table {at!r}; tables here: {allowed or 'none'}")
            table = child
        last = parts[-1]
        if last not in table:
            if "kind" in table:  # a schedule spec: from_spec checks its keys
                table[last] = value
                continue
            raise ConfigError(f"--set {key}: unknown key; allowed here: {', '.join(table)}")
        old = table[last]
        if isinstance(old, dict):
            raise ConfigError(f"--set {key}: is a table; set one of its keys: {', '.join(old)}")
        if not _same_type(old, value):
            raise ConfigError(
                f"--set {key}={text}: expected {type(old).__name__} like {old!r}, "
                f"got {type(value).__name__}"
            )
        table[last] = float(value) if isinstance(old, float) else value
    return config


def config_toml(config: Mapping[str, Any]) -> str:
    """``config`` as the TOML text a run's ``config.toml`` holds."""
    return tomli_w.dumps(dict(config))


def save_config(config: Mapping[str, Any], path: str | Path) -> None:
    """Write ``config`` as TOML atomically (:func:`common.runs.atomic_write`)."""
    from common.runs import atomic_write  # torch: imported only when a run is written

    data = config_toml(config).encode()
    atomic_write(path, lambda f: f.write(data))
