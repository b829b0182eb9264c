"""Name -> class registries for tricks and workloads, in the style of timm's model registry.

A decorator fills a private dict; names are listed and selected with fnmatch globs; third-party
packages add entries through an entry-point group (``harness.tricks``, ``harness.workloads``), so
a plugin needs no change to this project. Built-in plugins are the modules of the ``tricks`` and
``models`` packages, discovered by walking the package: adding a trick touches only its own file.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from harness.errors import UserError, unknown_name_error

T = TypeVar("T", bound=type)

LIST_HINT = "run 'python -m harness list' to see them all"


class Registry(Generic[T]):
    """A registry of plugin classes, each with a unique ``name`` class attribute."""

    def __init__(self, kind: str, package: str, entry_point_group: str) -> None:
        self.kind = kind
        self.package = package
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, cls: T) -> T:
        """Class decorator: add ``cls`` under ``cls.name``. Re-registering the same class is a no-op."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__} needs a non-empty string class attribute 'name'")
        existing = self._entries.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"{self.kind} {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
            )
        self._entries[name] = cls
        return cls

    def load(self) -> None:
        """Import the built-in plugin modules and the entry points, once."""
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")
        self.load_entry_points()

    def load_entry_points(self) -> None:
        """Register the classes that installed distributions declare in this registry's group."""
        for entry_point in entry_points(group=self.entry_point_group):
            try:
                cls = entry_point.load()
            except Exception as error:  # a broken plugin must say which one it is
                raise UserError(
                    f"the {self.kind} plugin {entry_point.name!r} ({entry_point.value}) failed to load: "
                    f"{type(error).__name__}: {error}"
                ) from error
            if getattr(cls, "name", None) != entry_point.name:
                raise UserError(
                    f"the {self.kind} plugin entry point {entry_point.name!r} points at "
                    f"{entry_point.value}, whose name is {getattr(cls, 'name', None)!r}; they must match"
                )
            self.register(cls)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching an fnmatch ``pattern``, sorted."""
        self.load()
        return sorted(name for name in self._entries if fnmatch.fnmatchcase(name, pattern))

    def get(self, name: str) -> T:
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_name_error(self.kind, name, self._entries, LIST_HINT) from None

    def select(self, selection: str) -> list[str]:
        """Expand a comma-separated selection of names and globs (``all``, ``grad-*``, ``a,b``).

        Order follows the selection; duplicates are dropped. A name or glob matching nothing is a
        :class:`UserError` naming it and the closest registered names.
        """
        self.load()
        chosen: list[str] = []
        for item in (part.strip() for part in selection.split(",")):
            if not item:
                continue
            if item == "all":
                matches = self.names()
            elif any(char in item for char in "*?["):
                matches = self.names(item)
                if not matches:
                    raise UserError(
                        f"no {self.kind} matches {item!r}; registered: {', '.join(self.names()) or '(none)'}"
                    )
            else:
                self.get(item)
                matches = [item]
            chosen.extend(name for name in matches if name not in chosen)
        return chosen
