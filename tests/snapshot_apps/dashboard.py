"""A `FakeControl` (records calls, serves canned snapshots) and `build_app()` with a stepping clock.

Used by `tests/test_tui_pilot.py` and `tests/test_tui_snapshots.py`; it
implements `ClusterControl` and nothing more, so the app under test can only
use what the real cluster offers.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from console.snapshot import ClusterSnapshot
from console.tui.app import ConsoleApp

from .canned import SNAPSHOT


class FakeControl:
    """A `ClusterControl` whose snapshot is whatever the test sets, and which logs each call."""

    def __init__(self, snapshot: ClusterSnapshot = SNAPSHOT) -> None:
        self.current = snapshot
        """What `snapshot()` returns next."""
        self.calls: List[Tuple[str, tuple]] = []
        """(method, args) of every call but `snapshot()`, in order."""
        self.errors: Dict[str, Exception] = {}
        """Method name -> exception that method raises."""

    def _record(self, method: str, *args: object) -> None:
        self.calls.append((method, args))
        if method in self.errors:
            raise self.errors[method]

    def snapshot(self) -> ClusterSnapshot:
        if "snapshot" in self.errors:
            raise self.errors["snapshot"]
        return self.current

    def bootstrap(self, nodes: Optional[Sequence[str]] = None) -> None:
        self._record("bootstrap", nodes)

    def start_job(self, job_path: str) -> None:
        self._record("start_job", job_path)

    def cancel_job(self) -> None:
        self._record("cancel_job")

    def drain(self, node: str) -> None:
        self._record("drain", node)

    def reconnect(self, node: str) -> None:
        self._record("reconnect", node)

    def close(self) -> None:
        self._record("close")


class SteppingClock:
    """A clock that moves one second each time it is read: deterministic, and every poll
    is a second after the last, so the node table redraws on every poll."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def build_app(control: Optional[FakeControl] = None, job_path: Optional[str] = None) -> ConsoleApp:
    """The dashboard on canned data, with a stepping clock and a slow poll timer."""
    control = control or FakeControl()
    return ConsoleApp(control, job_path=job_path, clock=SteppingClock(), poll_interval=60.0)
