"""Monte Carlo estimate of pi, reproducible: each item is a seed.

`hits(seed)` throws SAMPLES darts from a generator seeded with `seed` and
returns how many land in the quarter circle; `estimate` turns the summed hits
of a run into pi, and `pi`, the job's reducer, gives the answer with its
standard error.
"""

import math
import random
from typing import Dict, List

__all__ = ["SAMPLES", "hits", "estimate", "pi"]

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


def pi(chunks: List[List[int]]) -> Dict[str, float]:
    """The job's answer (reduce = "jobs.montecarlo:pi"): pi from every dart thrown, with its standard error."""
    inside = sum(sum(chunk) for chunk in chunks)
    darts = SAMPLES * sum(len(chunk) for chunk in chunks)
    share = inside / darts
    return {"pi": 4.0 * share, "standard_error": 4.0 * math.sqrt(share * (1.0 - share) / darts)}
