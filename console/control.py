"""What the dashboard may ask of the cluster: the `ClusterControl` protocol.

The Textual app takes any object with these methods, so its tests can feed it
canned snapshots (`tests/snapshot_apps/`) while `console ui` feeds it the real
`Cluster`. Every method returns at once; the work happens on cluster threads.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence

from console.snapshot import ClusterSnapshot

__all__ = ["ClusterControl"]


class ClusterControl(Protocol):
    """The cluster as the dashboard sees it."""

    def snapshot(self) -> ClusterSnapshot:
        """A fresh immutable picture of the cluster."""

    def bootstrap(self, nodes: Optional[Sequence[str]] = None) -> None:
        """(Re)connect and start the agent on these nodes, or on all when None."""

    def start_job(self, job_path: str) -> None:
        """Start the job in this job file; raises `ConsoleError` for a bad file or a job already running."""

    def cancel_job(self) -> None:
        """Stop sending chunks, cancel those in flight, end the job as "cancelled"."""

    def drain(self, node: str) -> None:
        """Let the node finish what it holds and send it nothing more."""

    def reconnect(self, node: str) -> None:
        """Drop the node's session and bring it up again; its chunks go back to the queue."""

    def close(self) -> None:
        """Stop every agent and thread."""
