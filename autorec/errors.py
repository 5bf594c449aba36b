"""Exceptions shared across autorec."""
from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data: the message names the file, line/column or value at fault."""
