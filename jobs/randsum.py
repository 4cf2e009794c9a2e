"""The sum of N random integers, reproducible: each chunk seeds its own generator.

`chunk_sum(seeds)` gets a chunk's items (chunk seeds) and returns the sum of
`PER_SEED` random integers drawn from each seed, so the answer does not depend
on how chunks land on nodes. `expected(seeds)` computes the same thing directly.
"""

import random
from typing import Iterable, List

__all__ = ["PER_SEED", "chunk_sum", "seed_sum", "expected"]

PER_SEED = 100_000
"""Random integers drawn per item (per seed)."""


def seed_sum(seed: int) -> int:
    """Sum of PER_SEED integers in 0..999 drawn from a generator seeded with `seed`."""
    rng = random.Random(seed)
    return sum(rng.randrange(1000) for _ in range(PER_SEED))


def chunk_sum(seeds: List[int]) -> int:
    """A chunk's value: the sum over its seeds (chunk_function, reduce = "sum")."""
    return sum(seed_sum(seed) for seed in seeds)


def expected(seeds: Iterable[int]) -> int:
    """The job's answer computed in one process."""
    return sum(seed_sum(seed) for seed in seeds)
