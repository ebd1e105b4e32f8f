"""Human-readable byte sizes: ``50MB``, ``1.5GiB``, ``4096``."""

from __future__ import annotations

import re

from sonic.errors import SizeFormatError

_UNITS = {
    "": 1, "B": 1,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4,
    "K": 1024, "M": 1024**2, "G": 1024**3,
}
# ASCII digits only: str.isdigit/\d accept full-width and other scripts' digits ('５MB').
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$", re.ASCII)
MAX_SIZE = 10**15   # 1 PB: far beyond any input Sonic plans for; larger is a typo


def parse_size(text: str | int) -> int:
    """Parse ``text`` into bytes.

    Decimal units (KB, MB, GB) are powers of 1000 and binary units (KiB, MiB, GiB, or the
    bare K/M/G) powers of 1024, matching what ``ls`` and cloud price sheets print.
    """
    if isinstance(text, int):
        if text < 0:
            raise SizeFormatError(f"size must not be negative, got {text}")
        if text > MAX_SIZE:
            raise SizeFormatError(f"size {text} is larger than 1PB; give a realistic size such as 64MB")
        return text
    match = _SIZE_RE.match(text) if len(text) <= 64 else None
    if not match:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise SizeFormatError(f"cannot read size {shown!r}: write a number with an optional unit, e.g. 50MB or 1GiB")
    number, unit = match.groups()
    factor = _UNITS.get(unit.upper())
    if factor is None:
        raise SizeFormatError(f"unknown size unit {unit!r} in {text!r}: use B, KB, MB, GB, KiB, MiB or GiB")
    value = float(number) * factor
    if not value <= MAX_SIZE:  # also catches inf from a 400-digit number
        raise SizeFormatError(f"size {text!r} is larger than 1PB; give a realistic size such as 64MB")
    return int(value)


def parse_size_list(text: str) -> list[int]:
    """Parse a comma-separated list of sizes, e.g. ``1MB,4MB,16MB``."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise SizeFormatError(f"no sizes in {text!r}: give a comma-separated list such as 1MB,4MB,16MB")
    return [parse_size(p) for p in parts]


def format_size(n: float) -> str:
    """Format a byte count with binary units, e.g. ``52.4 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
