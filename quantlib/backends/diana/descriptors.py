"""Core descriptors: a YAML file mapping layer names to the core each runs on, ANALOG or DIGITAL.

    layer1.0.conv1: ANALOG
    layer1.0.conv2: DIGITAL

Layers the file does not name stay digital. Every problem (unreadable file, YAML syntax, a name that is not a layer,
a core that is not ANALOG or DIGITAL) raises DescriptorError naming the file, the line or layer, and what to do.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from quantlib.atomic_files import write_atomically
from quantlib.backends.diana.hardware_rules import Core, Finding
from quantlib.errors import QuantlibError

CORES: dict[str, Core] = {"ANALOG": "analog", "DIGITAL": "digital"}


class DescriptorError(QuantlibError):
    """A core-descriptor file cannot be used."""


def load_descriptors(path: str | os.PathLike, layers: Iterable[str]) -> dict[str, Core]:
    """The core of every layer the file at ``path`` names; ``layers`` are the model's convertible layer names."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DescriptorError(f"Cannot read descriptor file '{path}': {exc.strerror or exc}.") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise DescriptorError(f"Descriptor file '{path}' is not valid YAML{where}: "
                              f"{getattr(exc, 'problem', exc)}.") from exc
    return parse_descriptors(data, layers, f"Descriptor file '{path}'")


def parse_descriptors(data: object, layers: Iterable[str], source: str = "Descriptors") -> dict[str, Core]:
    """The core of every layer ``data`` (a mapping layer name -> ANALOG / DIGITAL, or None) names; ``source`` says
    where it came from in messages."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise DescriptorError(f"{source} must map layer names to ANALOG or DIGITAL, got a {type(data).__name__}.")
    known = list(layers)
    cores: dict[str, Core] = {}
    for name, value in data.items():
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise DescriptorError(f"{source} names layer '{name}', which the model does not have.{hint} A template "
                                  f"written by DianaModule.describe() lists every layer.")
        core = CORES.get(str(value).upper()) if isinstance(value, str) else None
        if core is None:
            raise DescriptorError(f"{source}: layer '{name}' has core {value!r}; allowed: {' or '.join(CORES)}.")
        cores[str(name)] = core
    return cores


def write_template(path: str | os.PathLike, layers: Mapping[str, tuple[Core, list[Finding]]]) -> Path:
    """Write a descriptor file listing every layer with a proposed core and, as comments, why a layer cannot be
    analog. The file is written to a temporary name and renamed into place."""
    lines = ["# quantlib core descriptors: layer name -> ANALOG or DIGITAL (layers not listed stay DIGITAL).", ""]
    for name, (core, findings) in layers.items():
        for finding in findings:
            lines.append(f"# {finding}")
        lines.append(f"{name}: {core.upper()}")
    return write_atomically(path, "\n".join(lines) + "\n")
