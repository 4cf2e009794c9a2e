"""Prime counting in ranges: each item is the start of a block of numbers.

`count_primes(start)` counts the primes in [start, start + BLOCK) by trial
division by odd numbers, a deliberately CPU-bound step.
"""

__all__ = ["BLOCK", "is_prime", "count_primes"]

BLOCK = 10_000
"""Numbers per item."""


def is_prime(n: int) -> bool:
    """Trial division."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    d = 3
    while d * d <= n:
        if n % d == 0:
            return False
        d += 2
    return True


def count_primes(start: int) -> int:
    """Primes in [start, start + BLOCK)."""
    return sum(1 for n in range(start, start + BLOCK) if is_prime(n))
