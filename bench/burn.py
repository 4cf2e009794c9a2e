"""CPU-bound chunks for the benchmarks: `burn(items)` spins `sum(items)` loop steps."""

from typing import List


def spin(steps: int) -> int:
    """A tight pure-Python loop of `steps` steps."""
    acc = 0
    for i in range(steps):
        acc ^= i
    return acc


def burn(items: List[int]) -> int:
    """A chunk's work: spin through every item's steps."""
    return sum(spin(steps) for steps in items)


def square(x: int) -> int:
    """A trivial item, for measuring per-chunk overhead."""
    return x * x
