"""Functions the Python API tests run on the nodes: a user's module next to the caller, shipped as source.

It imports nothing of the console's (a node has only the agent's bundle).
"""

import os
import time
from fractions import Fraction


class OddItem(Exception):
    """A user's exception whose __init__ takes other arguments than it passes to Exception."""

    def __init__(self, item: int) -> None:
        super().__init__(f"item {item} is odd")
        self.item = item


def square(x: int) -> int:
    return x * x


def add(x: int, y: int) -> int:
    return x + y


def reject_odd(x: int) -> int:
    if x % 2:
        raise OddItem(x)
    return x


def slow(x: float) -> float:
    time.sleep(x)
    return x


def half(x: int) -> Fraction:
    return Fraction(x, 2)


def die(x: int) -> None:
    os._exit(3)


def tiny_scaled(x):
    """x times the VALUE of the tinypkg wheel the call was shipped with (tests/test_packages.py)."""
    import tinypkg

    return tinypkg.scaled(x)
