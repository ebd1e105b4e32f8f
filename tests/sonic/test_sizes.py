"""Human-readable sizes (sonic.sizes)."""

from __future__ import annotations

import pytest

from sonic.errors import SizeFormatError, UserInputError
from sonic.sizes import format_size, parse_size, parse_size_list


@pytest.mark.parametrize("text,expected", [
    ("4096", 4096),
    ("0", 0),
    ("10B", 10),
    ("1KB", 1000),
    ("50MB", 50_000_000),
    ("2GB", 2_000_000_000),
    ("1TB", 10**12),
    ("1KiB", 1024),
    ("8MiB", 8 * 1024**2),
    ("1.5GiB", int(1.5 * 1024**3)),
    ("1TiB", 1024**4),
    ("1K", 1024),
    ("3M", 3 * 1024**2),
    ("2G", 2 * 1024**3),
    ("50mb", 50_000_000),
    ("4mib", 4 * 1024**2),
    ("  64 MB  ", 64_000_000),
    ("0.5KB", 500),
    ("1.5B", 1),
    (4096, 4096),
    (0, 0),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text,match", [
    ("50XB", "unknown size unit 'XB'"),
    ("12 parsecs", "unknown size unit"),
    ("", "cannot read size"),
    ("MB", "cannot read size"),
    ("-5MB", "cannot read size"),
    ("1e6", "cannot read size"),
    ("1.MB", "cannot read size"),
    ("5 M B", "cannot read size"),
    ("1,5MB", "cannot read size"),
    ("0x10", "cannot read size"),
    (-1, "must not be negative"),
])
def test_parse_size_errors(text, match):
    with pytest.raises(SizeFormatError) as exc:
        parse_size(text)
    assert match in str(exc.value)


def test_size_error_is_a_user_and_value_error():
    assert issubclass(SizeFormatError, UserInputError) and issubclass(SizeFormatError, ValueError)
    assert SizeFormatError.exit_code == 2
    with pytest.raises(SizeFormatError) as exc:
        parse_size("50XB")
    assert "50XB" in str(exc.value) and "MB" in str(exc.value)  # names the input and the valid units


def test_parse_size_list():
    assert parse_size_list("1MB,4MB,16MB") == [10**6, 4 * 10**6, 16 * 10**6]
    assert parse_size_list(" 1KiB , 2 ") == [1024, 2]
    assert parse_size_list("1MB,,2MB,") == [10**6, 2 * 10**6]


@pytest.mark.parametrize("text", ["", ",", " , "])
def test_parse_size_list_empty(text):
    with pytest.raises(SizeFormatError, match="no sizes"):
        parse_size_list(text)


def test_parse_size_list_bad_item():
    with pytest.raises(SizeFormatError, match="'2XB'"):
        parse_size_list("1MB,2XB")


@pytest.mark.parametrize("n,text", [
    (0, "0 B"),
    (1023, "1023 B"),
    (1024, "1.0 KiB"),
    (1536, "1.5 KiB"),
    (50 * 1024**2, "50.0 MiB"),
    (3 * 1024**3, "3.0 GiB"),
    (5 * 1024**4, "5120.0 GiB"),
])
def test_format_size(n, text):
    assert format_size(n) == text


def test_format_then_parse_round_trips_binary_units():
    for n in (1024, 4 * 1024**2, 7 * 1024**3):
        number, unit = format_size(n).split()
        assert parse_size(number + unit) == n
