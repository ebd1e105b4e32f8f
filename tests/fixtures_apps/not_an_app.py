"""Attributes that are not sonic Apps."""

APP = 42


def needs_args(x, y):
    return x + y
