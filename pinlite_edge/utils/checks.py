"""Predicates the argument and config checks share (each caller words its own error).

``numpy=True`` also takes numpy integers / floats (arguments an app computes with numpy); without it only Python
``int`` / ``float`` pass (configs stored as JSON must hold plain values). A bool is never a number.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def is_whole(value: Any, low: float = -math.inf, high: float = math.inf, *, numpy: bool = False) -> bool:
    """``value`` is an integer (not a bool) in ``low..high``."""
    kind = numbers.Integral if numpy else int
    # numpy registers np.timedelta64 as an integer: a duration, not a count (and it raised in the comparison below)
    if not isinstance(value, kind) or isinstance(value, (bool, np.timedelta64)):
        return False
    return bool(low <= value <= high)


def is_finite_number(value: Any, *, numpy: bool = False) -> bool:
    """``value`` is a finite real number (not a bool)."""
    kinds = numbers.Real if numpy else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range (10**400)
        return False
