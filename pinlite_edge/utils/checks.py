"""Predicates the argument and config checks share (each caller words its own error)."""
from __future__ import annotations

import math
from typing import Any


def is_whole(value: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    """``value`` is a Python ``int`` (not a bool) in ``low..high``; numpy integers are not (configs stored as JSON
    must hold plain ints)."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def is_finite_number(value: Any) -> bool:
    """``value`` is a finite Python ``int`` or ``float`` (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
