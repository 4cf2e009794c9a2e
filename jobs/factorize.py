"""Naive trial-division factorisation: the classic multiprocessing-managers example.

`factorize(n)` returns `{n: [prime factors]}` so that reduce = "merge" gathers
one dict for the whole job.
"""

from typing import Dict, List

__all__ = ["factors", "factorize"]


def factors(n: int) -> List[int]:
    """Prime factors of n in ascending order, by trial division."""
    found = []
    while n % 2 == 0 and n > 1:
        found.append(2)
        n //= 2
    d = 3
    while d * d <= n:
        while n % d == 0:
            found.append(d)
            n //= d
        d += 2
    if n > 1:
        found.append(n)
    return found


def factorize(n: int) -> Dict[int, List[int]]:
    """One item's result: {n: its prime factors}."""
    return {n: factors(n)}
