"""Magma and SkipUpdate: random block masking of adaptive-optimizer updates.

Implements Joo et al. 2026, "On Surprising Effectiveness of Masking Updates in
Adaptive Optimizers" (arXiv 2602.15322) as wrappers around any torch optimizer.

The names below load on first use, so that ``magma.bases`` (plain names, no torch) can be
imported where torch never is: ``worker.contract``, which the service's API process reads.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from magma.components import COMPONENTS, classify, components
    from magma.magma import Magma
    from magma.masked import MaskedOptimizer
    from magma.optim import BatchedMuon, CAdamW, LaProp
    from magma.skip_update import SkipUpdate

__all__ = [
    "COMPONENTS",
    "BatchedMuon",
    "CAdamW",
    "LaProp",
    "Magma",
    "MaskedOptimizer",
    "SkipUpdate",
    "classify",
    "components",
]
__version__ = "0.1.0"

#: each exported name -> the module that defines it
_HOMES = {
    "COMPONENTS": "magma.components",
    "classify": "magma.components",
    "components": "magma.components",
    "Magma": "magma.magma",
    "MaskedOptimizer": "magma.masked",
    "BatchedMuon": "magma.optim",
    "CAdamW": "magma.optim",
    "LaProp": "magma.optim",
    "SkipUpdate": "magma.skip_update",
}


def __getattr__(name: str) -> Any:
    """An exported name (imported, then kept here), or a submodule (``magma.fused``)."""
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The import system binds each submodule on its package once loaded; an exported name
    that is also a submodule's (``components``) stays the exported function, as it was when
    this file imported everything up front."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _HOMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
