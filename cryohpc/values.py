"""Typed values from Python objects or command-line text, shared by job params and
cluster lanes' custom variables."""

from __future__ import annotations

import math
from typing import Any

from .text import check_line

INT64 = (-(2**63), 2**63 - 1)
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_scalar(kind: str, value: Any) -> Any:
    """``value`` as an int, float, bool or str (``kind``); any other kind is a str.

    Raises:
        ValueError: saying why the value does not fit (a bool is neither an int nor a
            float here; ints are 64-bit; floats are finite; text is one line).
    """
    invalid = ValueError(f"{value!r} is not a valid {kind}")
    if kind == "int":
        if isinstance(value, bool) or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
            raise invalid
        try:
            out = int(value)
        except (TypeError, ValueError):
            raise invalid from None
        if not INT64[0] <= out <= INT64[1]:
            raise ValueError(f"{value!r} is outside the 64-bit integer range")
        return out
    if kind == "float":
        if isinstance(value, bool):
            raise invalid
        try:
            out = float(value)
        except (TypeError, ValueError, OverflowError):
            raise invalid from None
        if not math.isfinite(out):
            raise ValueError(f"{value!r} is not a finite number")
        return out
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise invalid
    return check_line(str(value), "the value")
