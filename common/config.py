"""Configs as TOML: load a shipped or user file, apply ``--set key=value`` overrides, save.

A config is a plain nested dict. Overrides use dotted keys (``lr.G.max=2e-4``); the value is
parsed as a TOML value (``2e-4``, ``true``, ``[0, 0.5, 1]``, ``"text"``), and a bare word that is
not valid TOML is taken as a string (``curriculum.mode=anti``). An override may only change a key
the config already has, with a value of the same type, except inside a schedule table (a table
with a ``kind`` key), where :func:`common.schedules.from_spec` validates the keys later.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

__all__ = [
    "ConfigError",
    "shipped_configs",
    "load_config",
    "apply_overrides",
    "save_config",
    "read_config",
]


class ConfigError(ValueError):
    """A bad config file, key or value; the message is one line naming it."""


def shipped_configs(package: str) -> list[str]:
    """Names of the TOML configs shipped in ``<package>/configs/``."""
    folder = resources.files(package) / "configs"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


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


def load_config(name_or_path: str, package: str) -> dict[str, Any]:
    """A config shipped in ``<package>/configs/<NAME>.toml``, or any TOML file by path."""
    names = shipped_configs(package)
    if name_or_path in names:
        with (resources.files(package) / "configs" / f"{name_or_path}.toml").open("rb") as f:
            return tomllib.load(f)
    if name_or_path.endswith(".toml") or os.sep in name_or_path or Path(name_or_path).exists():
        return read_config(name_or_path)
    raise ConfigError(
        f"--config {name_or_path!r}: not a shipped config ({', '.join(names)}) nor a TOML file"
    )


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _same_type(old: Any, new: Any) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, (int, float)):
        return isinstance(new, (int, float))
    return isinstance(new, type(old))


def apply_overrides(config: dict[str, Any], sets: Iterable[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides in place and return the config.

    Raises:
        ConfigError: a malformed override, an unknown key (the message lists the allowed keys at
            that level) or a value of the wrong type.
    """
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. lr.max=3e-4")
        key, text = (s.strip() for s in item.split("=", 1))
        parts = key.split(".")
        table = config
        for depth, part in enumerate(parts[:-1]):
            child = table.get(part)
            if not isinstance(child, dict):
                at = ".".join(parts[: depth + 1])
                allowed = ", ".join(k for k, v in table.items() if isinstance(v, dict))
                raise ConfigError(f"--set {key}: no table {at!r}; tables here: {allowed or 'none'}")
            table = child
        last, value = parts[-1], _parse_value(text)
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


def save_config(config: dict[str, Any], path: str | Path) -> None:
    """Write ``config`` as TOML atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            tomli_w.dump(config, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
