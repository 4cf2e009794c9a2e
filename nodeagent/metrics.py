"""CPU per core, memory and load of this node, with psutil or without it.

psutil has no wheels for 32-bit Raspberry Pi OS and often fails to build there,
so when it is missing the agent reads /proc on Linux and GetSystemTimes /
GlobalMemoryStatusEx on Windows. `Sampler.sample()` returns a plain dict; its
"source" key says which was used. CPU figures are percentages since the
previous sample (the first sample has none).
"""

import importlib.util
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["Sampler"]


def _load() -> Optional[Tuple[float, float, float]]:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def _busy_percent(before: Any, after: Any) -> float:
    """CPU busy share between two psutil cpu_times samples of one core (or of all)."""

    def total(t: Any) -> float:
        return sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)

    def idle(t: Any) -> float:
        return t.idle + getattr(t, "iowait", 0.0)

    span = total(after) - total(before)
    return 100.0 * (span - (idle(after) - idle(before))) / span if span > 0 else 0.0


class _PsutilTimes:
    """Per-core CPU from psutil.cpu_times, with this object's own previous sample.

    psutil.cpu_percent(interval=None) keeps its previous sample per calling thread, and would read 0%
    whenever a thread calls for the first time; this object's figures do not depend on who asks.
    """

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._last = psutil.cpu_times(percpu=True)

    def cpu(self) -> Tuple[float, Optional[List[float]]]:
        now = self._psutil.cpu_times(percpu=True)
        per_core = [_busy_percent(t0, t1) for t0, t1 in zip(self._last, now)]
        self._last = now
        return (sum(per_core) / len(per_core) if per_core else 0.0), per_core

    def memory(self) -> Tuple[Optional[int], Optional[int]]:
        mem = self._psutil.virtual_memory()
        return mem.total - mem.available, mem.total


class _ProcStat:
    """Per-core CPU from /proc/stat and memory from /proc/meminfo (Linux)."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> List[Tuple[int, int]]:
        rows = []
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3:4].isdigit():
                    fields = [int(v) for v in line.split()[1:]]
                    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
                    rows.append((sum(fields[:8]), idle))
        return rows

    def cpu(self) -> Tuple[float, Optional[List[float]]]:
        now = self._read()
        per_core = []
        for (total, idle), (total0, idle0) in zip(now, self._last):
            span = total - total0
            per_core.append(100.0 * (span - (idle - idle0)) / span if span > 0 else 0.0)
        self._last = now
        return (sum(per_core) / len(per_core) if per_core else 0.0), per_core

    @staticmethod
    def memory() -> Tuple[Optional[int], Optional[int]]:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
        total = info.get("MemTotal")
        available = info.get("MemAvailable", info.get("MemFree"))
        if total is None or available is None:
            return None, total
        return total - available, total


class _WindowsTimes:
    """Whole-machine CPU from GetSystemTimes and memory from GlobalMemoryStatusEx."""

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes

        self._ctypes = ctypes
        self._wintypes = wintypes
        self._last = self._read()

    def _read(self) -> Tuple[int, int]:
        ft = self._wintypes.FILETIME
        idle, kernel, user = ft(), ft(), ft()
        self._ctypes.windll.kernel32.GetSystemTimes(
            self._ctypes.byref(idle), self._ctypes.byref(kernel), self._ctypes.byref(user)
        )

        def value(t: Any) -> int:
            return (t.dwHighDateTime << 32) | t.dwLowDateTime

        return value(kernel) + value(user), value(idle)

    def cpu(self) -> Tuple[float, Optional[List[float]]]:
        total, idle = self._read()
        span, idle_span = total - self._last[0], idle - self._last[1]
        self._last = (total, idle)
        return (100.0 * (span - idle_span) / span if span > 0 else 0.0), None

    def memory(self) -> Tuple[Optional[int], Optional[int]]:
        ctypes = self._ctypes

        class MemoryStatus(ctypes.Structure):
            _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong)] + [
                (name, ctypes.c_ulonglong)
                for name in ("total", "avail", "pagetotal", "pageavail", "virttotal", "virtavail", "extavail")
            ]

        status = MemoryStatus()
        status.dwLength = ctypes.sizeof(MemoryStatus)
        ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status))
        return status.total - status.avail, status.total


class Sampler:
    """Takes CPU and memory samples; keep one per agent so deltas make sense.

    Its reader (and psutil, 20 to 50 ms of a small machine's CPU to import) starts at the first sample, not
    with the agent: a job's start does not wait for it. That first sample has no CPU figures (no span yet)."""

    def __init__(self, force_fallback: bool = False) -> None:
        found = not force_fallback and importlib.util.find_spec("psutil") is not None
        self.source = "psutil" if found else "fallback"
        self._reader: Any = None
        self._started = False

    def _start(self) -> Any:
        if self.source == "psutil":
            try:
                return _PsutilTimes()
            except ImportError:  # found but broken (built for another Python): the fallback reports
                self.source = "fallback"
        if sys.platform.startswith("linux"):
            return _ProcStat()
        if os.name == "nt":
            return _WindowsTimes()
        return None

    def sample(self) -> Dict[str, Any]:
        """CPU per core and overall (%), memory used/total (bytes), load averages."""
        overall: Optional[float] = None
        per_core: Optional[List[float]] = None
        used: Optional[int] = None
        total: Optional[int] = None
        first = not self._started
        if first:
            self._started = True
            self._reader = self._start()
        if self._reader is not None:
            try:
                if not first:
                    overall, per_core = self._reader.cpu()
                used, total = self._reader.memory()
            except (OSError, ValueError):
                pass
        return {
            "source": self.source,
            "cpu_per_core": tuple(per_core) if per_core else None,
            "cpu_percent": overall,
            "mem_used": used,
            "mem_total": total,
            "load": _load(),
        }
