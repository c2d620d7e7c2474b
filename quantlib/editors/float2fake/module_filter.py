"""Which modules a conversion rule applies to: by type, by name pattern, by explicit names, minus an exclude list."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModuleFilter:
    """Selects a module when every given criterion holds: its type is one of ``types``, its qualified name matches
    ``name_regex`` (``re.fullmatch``), it is one of ``names``; and it is not in ``exclude``. Empty criteria hold."""

    types: tuple[type[nn.Module], ...] = ()
    name_regex: str | None = None
    names: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __call__(self, name: str, module: nn.Module) -> bool:
        if self.types and not isinstance(module, self.types):
            return False
        if self.name_regex is not None and re.fullmatch(self.name_regex, name) is None:
            return False
        if self.names and name not in self.names:
            return False
        return name not in self.exclude
