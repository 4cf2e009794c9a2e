"""The multiprocessing-managers example (a job queue of numbers, factorised in chunks) on the cluster.

No manager, no port, no authkey: each chunk of numbers is one `submit`, results
come back through `as_completed`. `factors` comes from the project's jobs
package, which the nodes already have, so it travels by name.
Run: python examples/managers_factorize.py [inventory.toml]
"""

import sys
from concurrent.futures import as_completed
from typing import Dict, List, Sequence

from console import connect
from jobs.factorize import factors

NUMBERS = range(999_999_999_999, 1_000_000_001_999, 2)
CHUNK = 43


def factorize_chunk(numbers: Sequence[int]) -> Dict[int, List[int]]:
    """{n: its prime factors} for one chunk of the job queue."""
    return {n: factors(n) for n in numbers}


if __name__ == "__main__":
    found: Dict[int, List[int]] = {}
    with connect(sys.argv[1] if len(sys.argv) > 1 else None, progress=True) as cluster:
        futures = [cluster.submit(factorize_chunk, NUMBERS[i:i + CHUNK]) for i in range(0, len(NUMBERS), CHUNK)]
        for future in as_completed(futures):
            found.update(future.result())
    primes = sorted(n for n, f in found.items() if f == [n])
    print(f"factorised {len(found)} numbers; {len(primes)} primes, the largest {primes[-1] if primes else None}")
