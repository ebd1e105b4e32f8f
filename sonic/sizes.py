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
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Parse ``text`` into bytes.

    Decimal units (KB, MB, GB) are powers of 1000 and binary units (KiB, MiB, GiB, or the
    bare K/M/G) powers of 1024, matching what ``ls`` and cloud price sheets print.
    """
    if isinstance(text, int):
        if text < 0:
            raise SizeFormatError(f"size must not be negative, got {text}")
        return text
    match = _SIZE_RE.match(text)
    if not match:
        raise SizeFormatError(f"cannot read size {text!r}: write a number with an optional unit, e.g. 50MB or 1GiB")
    number, unit = match.groups()
    factor = _UNITS.get(unit.upper())
    if factor is None:
        raise SizeFormatError(f"unknown size unit {unit!r} in {text!r}: use B, KB, MB, GB, KiB, MiB or GiB")
    return int(float(number) * factor)


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
