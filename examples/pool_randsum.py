"""Pool.map summing random integers, moved onto the cluster by changing one line.

Before:  with multiprocessing.Pool() as pool: total = sum(pool.map(random_sum, range(SEEDS)))
After:   with connect() as cluster:           total = sum(cluster.map(random_sum, range(SEEDS)))

`random_sum` lives in this script's __main__, so it travels by value (cloudpickle).
Run: python examples/pool_randsum.py [inventory.toml [seeds]]   (200 seeds of 100,000 integers unless told)
"""

import random
import sys

from console import connect

SEEDS = 200
PER_SEED = 100_000


def random_sum(seed: int) -> int:
    """The sum of PER_SEED random integers in 0..999 drawn from a generator seeded with `seed`."""
    rng = random.Random(seed)
    return sum(rng.randrange(1000) for _ in range(PER_SEED))


if __name__ == "__main__":
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else SEEDS
    with connect(sys.argv[1] if len(sys.argv) > 1 else None, progress=True) as cluster:
        total = sum(cluster.map(random_sum, range(seeds)))
    print(f"sum of {seeds * PER_SEED:,} random integers: {total}")
