"""Typed values from Python objects or command-line text, shared by job params and
cluster lanes' custom variables."""

from __future__ import annotations

from typing import Any

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_scalar(kind: str, value: Any) -> Any:
    """``value`` as an int, float, bool or str (``kind``); any other kind is a str.

    Raises:
        ValueError: the value does not fit (a bool is neither an int nor a float here).
    """
    if kind == "int":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(value)
    return str(value)
