"""Checks shared by the YAML configurations (``quantlib train``, ``quantlib pow2``): each refuses a bad key or value
with a ConfigError naming the file, the key, the value and what is allowed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file, the key, the value and the fix."""


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping at the top of the YAML file ``path``; ConfigError if it cannot be read or is not a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"Cannot read configuration '{path}': {error}") from error
    return mapping(data, str(path), "the file")


def mapping(value: object, where: str, key: str) -> dict[str, Any]:
    """``value`` if it is a mapping, else ConfigError naming ``key``."""
    require(isinstance(value, dict), where, key, value, "a mapping of keys to values")
    return value


def keys(data: Mapping[str, Any], allowed: set[str], where: str, prefix: str) -> None:
    """ConfigError naming every key of ``data`` (shown after ``prefix``) that is not in ``allowed``."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {[prefix + k for k in unknown]}; allowed here: "
                          f"{sorted(prefix + k for k in allowed)}.")


def require(condition: bool, where: str, key: str, value: object, allowed: str) -> None:
    """ConfigError naming ``key``, ``value`` and what is ``allowed`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"{where}: key '{key}' has value {value!r}; allowed: {allowed}.")


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: object) -> bool:
    """Whether ``value`` is an integer >= 1 (not a bool)."""
    return is_int(value) and value >= 1


def positive_number(value: object) -> bool:
    """Whether ``value`` is a number > 0 (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
