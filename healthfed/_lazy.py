"""Names a package exports but imports only on first use (PEP 562 module ``__getattr__``).

The top-level package and the model families' packages use it so that importing them
(a node registering its computations, ``import healthfed``) does not import what only a
researcher's session needs (scikit-learn, scipy, the trust report).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["imported_on_call", "lazy_getattr"]


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


def imported_on_call(module: str, name: str) -> Callable[..., Any]:
    """``module.name`` as a function that imports ``module`` when first called.

    A computation registers its aggregator side (``combine``) this way when that side
    needs what a node does not (pandas result tables): a node registering the
    computation never calls it, so never imports it.
    """
    target: list[Callable[..., Any]] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        if not target:
            target.append(getattr(importlib.import_module(module), name))
        return target[0](*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__module__ = module
    call.__doc__ = f"{module}.{name}, imported on first call."
    return call
