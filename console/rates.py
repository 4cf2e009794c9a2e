"""Throughput over a sliding window, fed with (time, running total) samples.

Pure: the caller passes the time. Used by the cluster's clock thread for the
job's and each node's items/s; the UIs read the figures from snapshots.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Tuple

__all__ = ["RateMeter"]


class RateMeter:
    """Items per second over the last `window` seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: Deque[Tuple[float, int]] = deque()

    def update(self, t: float, total: int) -> None:
        """Record the running total at time t."""
        self._samples.append((t, total))
        while len(self._samples) > 2 and t - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def rate(self) -> float:
        """Items per second between the oldest and newest sample in the window."""
        if len(self._samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
