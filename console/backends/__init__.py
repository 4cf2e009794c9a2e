"""Where chunks run, behind one small interface (`Backend`); the job's life is console/jobrun.py's.

A backend reports scheduler events to the cluster (`Cluster.handle`) from its
own threads and receives the scheduler's `SendChunks` and `Cancel` through
`deliver`, under the cluster's lock, where it must not block. agents.py runs
chunks on the inventory's nodes, one agent each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Protocol, Sequence, Tuple

from console.scheduler import Event
from console.snapshot import NodeSnapshot

if TYPE_CHECKING:
    from console.cluster import Cluster
    from console.jobrun import JobRun

__all__ = ["Backend"]


class Backend(Protocol):
    """What the cluster needs of whatever runs the chunks."""

    def attach(self, cluster: "Cluster") -> None:
        """The cluster to report events to; called once, before anything else."""

    def bootstrap(self, nodes: Optional[Sequence[str]] = None) -> None:
        """Bring these nodes (all when None) up, or up again."""

    def reconnect(self, node: str) -> None:
        """Drop the node and bring it up again; its chunks go back to the queue."""

    def drain(self, node: str) -> List[Event]:
        """Mark the node drained; the events that tell the scheduler."""

    def deliver(self, instruction: Any) -> None:
        """Carry out a SendChunks or Cancel for one node, without blocking (called under the cluster lock)."""

    def job_started(self) -> None:
        """A job started: join it."""

    def tick(self, now: float, job: Optional["JobRun"]) -> None:
        """A quarter second passed (under the cluster lock)."""

    def all_failed(self) -> bool:
        """No node can ever run a chunk again."""

    def node_errors(self) -> Dict[str, str]:
        """Why each failed node failed, by name."""

    def snapshots(self, job: Optional["JobRun"]) -> Tuple[NodeSnapshot, ...]:
        """Every node as the UIs show it (under the cluster lock)."""

    def close(self) -> None:
        """Stop everything the backend started."""
