"""Monte Carlo estimate of pi, reproducible: each item is a seed.

`hits(seed)` throws SAMPLES darts from a generator seeded with `seed` and
returns how many land in the quarter circle; `estimate` turns the summed hits
of a run into pi.
"""

import random

__all__ = ["SAMPLES", "hits", "estimate"]

SAMPLES = 200_000
"""Darts per item."""


def hits(seed: int) -> int:
    """Darts inside the unit quarter circle, out of SAMPLES."""
    rng = random.Random(seed)
    inside = 0
    for _ in range(SAMPLES):
        x, y = rng.random(), rng.random()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


def estimate(total_hits: int, seeds: int) -> float:
    """pi from the summed hits of `seeds` items."""
    return 4.0 * total_hits / (seeds * SAMPLES)
