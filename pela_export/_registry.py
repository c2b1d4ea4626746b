"""A tiny name → object registry, used for decompositions, rank allocators,
simplifiers, datasets and model recipes, so CLI choices come from one place."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import OptionError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; unknown names raise an :class:`OptionError` listing the choices."""

    def __init__(self, kind: str, flag: str | None = None) -> None:
        self.kind = kind
        self.flag = flag
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("svd")``. Re-registering a name is a programming error."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a throw-away entry); unknown names are a programming error."""
        del self._items[name]

    def find(self, name: str) -> T | None:
        """The entry of ``name``, or None (no error: for callers with a fallback)."""
        return self._items.get(name)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            fix = f"choose one of: {', '.join(self.names())}"
            if self.flag:
                fix = f"pass {self.flag} with one of: {', '.join(self.names())}"
            raise OptionError(f"unknown {self.kind} {name!r}", fix=fix) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
