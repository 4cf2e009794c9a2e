"""Immutable pictures of the cluster, taken under its lock and read by the UIs.

`Cluster.snapshot()` builds a new `ClusterSnapshot` each call: named tuples
holding tuples, never a live object (named tuples, not frozen dataclasses: a
frozen dataclass costs ~2 ms of the console's start to define, five of them on
the path of every `console run`). The dashboard and the headless
printer each pull one on their own timer, so the UI cost does not grow with the
chunk rate. Missing values are `None` and render as "n/a".
Pure data, no I/O; imported by cluster, headless and tui.
"""

# No `from __future__ import annotations` here: typing.NamedTuple compiles every string annotation (~30 us a field).
from typing import Literal, NamedTuple, Optional, Tuple

__all__ = [
    "NodeState",
    "JobStatus",
    "ChunkRecord",
    "FailureRecord",
    "NodeSnapshot",
    "JobSnapshot",
    "ClusterSnapshot",
    "NA",
    "fmt",
]

NodeState = Literal[
    "pending", "connecting", "bootstrapping", "ready", "busy", "draining", "lost", "failed"
]
JobStatus = Literal["idle", "running", "ok", "failed", "cancelled"]

NA = "n/a"


def fmt(value: object, spec: str = "", suffix: str = "") -> str:
    """Format `value` with `spec`, or "n/a" when it is None."""
    if value is None:
        return NA
    return f"{value:{spec}}{suffix}"


class ChunkRecord(NamedTuple):
    """One chunk a node finished or failed, for the node screen."""

    chunk: int
    """Chunk id (its index in the job)."""
    items: int
    """Items in the chunk."""
    seconds: float
    """Time the chunk took on its worker."""
    outcome: Literal["done", "failed", "timeout", "duplicate"]
    """What became of it."""


class FailureRecord(NamedTuple):
    """A chunk attempt that failed, with the node's own traceback."""

    chunk: int
    """Chunk id."""
    node: str
    """Node the attempt ran on."""
    error: str
    """One line: the exception type and message, or what killed the worker."""
    traceback: str
    """The full remote traceback (empty when the worker died or timed out)."""
    attempt: int
    """1 for the first run of the chunk, 2 for its first retry, ..."""
    final: bool
    """True when the chunk will not be retried again."""
    t: float
    """Wall-clock time of the failure."""


class NodeSnapshot(NamedTuple):
    """One node as the console sees it at snapshot time."""

    name: str
    """Name from the inventory."""
    transport: Literal["local", "ssh"]
    """How the console reaches the node."""
    address: Optional[str]
    """host:port for SSH nodes, None for the local node."""
    tags: Tuple[str, ...]
    """Tags from the inventory."""
    state: NodeState
    """Where the node is in its life."""
    error: Optional[str] = None
    """Why the node is lost or failed, as one sentence."""
    losses: int = 0
    """Times the node was lost since the console started (each reconnect attempt that fails counts)."""
    last_loss: Optional[str] = None
    """Why it was lost the last time."""
    os: Optional[str] = None
    """"linux", "windows", "darwin", ... once probed."""
    arch: Optional[str] = None
    """CPU architecture (x86_64, aarch64, armv7l) once probed."""
    python: Optional[str] = None
    """Python version on the node."""
    cores: Optional[int] = None
    """Logical CPUs on the node."""
    workers: Optional[int] = None
    """Worker processes in the node's pool."""
    workers_busy: int = 0
    """Workers running a chunk right now."""
    cpu_percent: Optional[float] = None
    """Whole-node CPU use, 0-100."""
    cpu_per_core: Optional[Tuple[float, ...]] = None
    """CPU use of each core, 0-100."""
    cpu_history: Tuple[float, ...] = ()
    """Whole-node CPU samples over the last minute, oldest first."""
    mem_percent: Optional[float] = None
    """Memory in use, 0-100."""
    mem_used: Optional[int] = None
    """Bytes of memory in use."""
    mem_total: Optional[int] = None
    """Bytes of memory in all."""
    load: Optional[Tuple[float, float, float]] = None
    """1, 5 and 15 minute load averages, where the OS has them."""
    metrics_source: Optional[str] = None
    """"psutil" or "fallback" (no psutil on the node)."""
    in_flight: int = 0
    """Chunks sent to the node and not yet answered."""
    chunks_done: int = 0
    """Chunks whose result from this node counted."""
    items_done: int = 0
    """Items in those chunks."""
    errors: int = 0
    """Chunk attempts that failed on this node."""
    items_per_s: float = 0.0
    """Recent throughput of the node."""
    busy_seconds: float = 0.0
    """Summed worker time of the node's counted chunks."""
    recent_chunks: Tuple[ChunkRecord, ...] = ()
    """The node's last chunks, newest last."""
    log: Tuple[str, ...] = ()
    """The agent's last log lines (its stderr), newest last."""
    packages: str = ""
    """The running job's requirements on this node: the wheels it imports ("numpy 2.0.2"), or why it sits the
    job out; "" when the job requires nothing."""


class JobSnapshot(NamedTuple):
    """The running or last job."""

    name: str
    """Job name from the job file."""
    status: JobStatus
    """"running", then "ok", "failed" or "cancelled"."""
    items_total: Optional[int]
    """Items in the job, when known."""
    items_done: int
    """Items whose chunk counted."""
    chunks_total: Optional[int]
    """Chunks in the job, when known."""
    chunks_queued: int
    """Chunks waiting for a node."""
    chunks_in_flight: int
    """Chunks on a node now."""
    chunks_done: int
    """Chunks whose result counted."""
    chunks_failed: int
    """Chunks that failed for good."""
    elapsed_s: float
    """Seconds since the job started (frozen once it ends)."""
    items_per_s: float
    """Recent job throughput."""
    eta_s: Optional[float]
    """Seconds left at the recent rate, None when unknown."""
    output_path: Optional[str] = None
    """Where the results file is written."""
    error: Optional[str] = None
    """Why the console's own side stopped the job (disk full, reducer raised, ...), when it did."""
    answer: Optional[str] = None
    """The job's result for people (console/format.py `answer`), once its results file is written."""
    history: Tuple[Tuple[float, float, Optional[float]], ...] = ()
    """(seconds since the start, items/s, mean CPU % of the nodes up) over the job's life, for its chart."""


class ClusterSnapshot(NamedTuple):
    """Everything the UIs show, at one instant."""

    t: float
    """Wall-clock time the snapshot was taken."""
    nodes: Tuple[NodeSnapshot, ...]
    """Every inventory node, in inventory order."""
    job: Optional[JobSnapshot] = None
    """The running or last job, None before the first."""
    failures: Tuple[FailureRecord, ...] = ()
    """Chunk failures of the job, oldest first (bounded)."""

    @property
    def nodes_up(self) -> int:
        """Nodes that can take chunks now."""
        return sum(1 for n in self.nodes if n.state in ("ready", "busy", "draining"))
