"""One check for a numeric setting: finite, in range, whole where it counts updates (torch-free)."""

import math

from .errors import UserInputError


def check_number(
    key: str,
    value,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    whole: bool = False,
    where: str = "",
) -> None:
    """Raise `UserInputError` naming `key` (prefixed by `where`) unless `value` is a finite number in range."""
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserInputError(f"{prefix}{key} must be a finite number, got {value!r}")
    if whole and int(value) != value:
        raise UserInputError(f"{prefix}{key} must be a whole number, got {value!r}")
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UserInputError(f"{prefix}{key} must be in {bounds}, got {value!r}")
