"""Every point-of-sale system the bridge knows: one line each.

Adding a POS is one new folder under `bridge/adapters/` plus one line here.
Extra adapters (a retailer's own, or the test suite's in-memory one) can be loaded with
`POSBRIDGE_EXTRA_ADAPTERS=package.module:Class,...` without touching this file.
"""

from __future__ import annotations

import importlib
from typing import Any

from bridge.adapters.base import Adapter

ADAPTERS: dict[str, str] = {
    "square": "bridge.adapters.square:SquareAdapter",
    "fieldpine": "bridge.adapters.fieldpine:FieldpineAdapter",
    "loyverse": "bridge.adapters.loyverse:LoyverseAdapter",
    "onsite": "bridge.adapters.onsite:OnSiteAdapter",
    "lsone": "bridge.adapters.lsone:LSOneAdapter",
}


def load_object(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def load_class(path: str) -> type[Adapter]:
    cls = load_object(path)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError(f"{path} is not an Adapter subclass")
    return cls


def available(extra: list[str] | tuple[str, ...] = ()) -> dict[str, type[Adapter]]:
    """Name → adapter class for the built-in adapters and any extra ones."""
    classes = {name: load_class(path) for name, path in ADAPTERS.items()}
    for path in extra:
        cls = load_class(path)
        classes[cls.name] = cls
    return classes
