"""Named registries: the models, data sets, criteria, optimisers and schedulers a configuration names. A user adds
their own with ``register(name, item)``; names match regardless of case, so a configuration's ``AdamW`` finds
``adamw``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A read-only mapping from lower-case names to items, extended only through ``register``; ``kind`` (such as
    'optimiser') names the registry in messages."""

    def __init__(self, kind: str, items: Mapping[str, T] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        for name, item in (items or {}).items():
            self.register(name, item)

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        """Make ``item`` available under ``name`` (ValueError if the name is taken, unless ``replace``); returns it,
        so that it can decorate a factory."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} is registered under a non-empty string name, got {name!r}.")
        key = name.lower()
        if key in self._items and not replace:
            raise ValueError(f"The {self.kind} name '{name}' is taken; pass replace=True to replace its {self.kind}.")
        self._items[key] = item
        return item

    def __getitem__(self, name: str) -> T:
        key = name.lower() if isinstance(name, str) else name
        if key not in self._items:
            raise KeyError(f"No {self.kind} is registered as {name!r}; registered: {sorted(self._items)} "
                           f"(add one with register(name, ...)).")
        return self._items[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
