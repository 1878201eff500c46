"""Lazy package exports: a package names what it exports and from which module; that module is imported on first
use, so importing a light part of a package (a validator, a config reader) never pays for torch or diffusers."""

import importlib
from typing import Callable, Mapping


def lazy_exports(package: str, table: Mapping[str, str]) -> Callable[[str], object]:
    """The module-level `__getattr__` of `package`, resolving each name in `table` (name -> module) on demand."""

    def __getattr__(name: str):
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
