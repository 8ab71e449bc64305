"""Names a package exports but imports only on first use (PEP 562 module ``__getattr__``).

The top-level package and the model families' packages use it so that importing them
(a node registering its computations, ``import healthfed``) does not import what only a
researcher's session needs (scikit-learn, scipy, the trust report).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(
    package: str, names: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``names[name]`` and caches the value in
    ``namespace`` (the package's ``globals()``), so each name is imported once."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
