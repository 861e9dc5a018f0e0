"""Non-finite numbers at the storage's edges: SQL's float columns and JSON hold no NaN or
infinity, so a number is kept as a finite float or as None.

One rule for what the storage writes (``studies.storage.repository``) and what the
records read back (``studies.records``). Standard library only, so either side imports it
without pulling in SQLAlchemy or torch.
"""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite int or float; None for anything else
    (None, NaN, an infinity, a value that is not a number)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with its non-finite floats as None (a JSON document has no NaN/Infinity)."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()
    }
