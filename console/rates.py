"""Throughput over a sliding window, and a job's history of figures in bounded memory.

Pure: the caller passes the time. Used by the cluster's clock thread for the
job's and each node's items/s and the job's chart; the UIs read the figures
from snapshots.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, List, Optional, Tuple

__all__ = ["RateMeter", "History"]


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


class History:
    """(seconds, items/s, cpu %) samples over a whole job: one every `every` seconds until `size` are held,
    then every other one is dropped and the interval doubles, so a long job still fits, start to end."""

    def __init__(self, size: int = 240, every: float = 1.0) -> None:
        self.size = size
        self.every = every
        self.samples: List[Tuple[float, float, Optional[float]]] = []

    def due(self, t: float) -> bool:
        """Whether a sample taken at `t` would be kept."""
        return not self.samples or t - self.samples[-1][0] >= self.every

    def add(self, t: float, rate: float, cpu: Optional[float]) -> None:
        if not self.due(t):
            return
        self.samples.append((t, rate, cpu))
        if len(self.samples) > self.size:
            self.samples = self.samples[::2]
            self.every *= 2

