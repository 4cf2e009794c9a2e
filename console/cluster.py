"""The cluster: a backend that runs chunks, the current job, and the one lock over both.

`Cluster` feeds the job's scheduler the events a backend reports (`handle`),
routes what the scheduler says (a result to the job's journal, chunks and
cancels to the backend), ends the job, and builds the immutable snapshots
both UIs read. The job's own life (journal, values, status, results file) is
console/jobrun.py's; where chunks run is console/backends/'s (the agents on
the inventory's nodes by default). A clock thread ticks the scheduler (tail
re-runs) and the throughput meters.

Two failure domains, never mixed: a node's fault (link, agent, protocol) loses
that node's chunks back to the queue; the console's own fault (the journal or
results file cannot be written, the reducer raises, a broken invariant, any
exception of ours on any cluster thread) ends the job at once with one
sentence (`JobRun.console_error`, exit status 4), keeping what was journalled.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from console.backends import Backend
from console.backends.agents import AgentBackend
from console.errors import JobFileError, UsageError
from console.inventory import Inventory, Node, PackageSource
from console.jobrun import JobRun, ResultSink, check_not_running, prepare_job, prepare_stream
from console.jobspec import JobSpec, load_job
from console.scheduler import (
    Cancel, ChunkGivenUp, Event, Instruction, JobCancelled, JobEnded, Journal, MistakeFound, NodeLost, SendChunks,
    Tick,
)
from console.snapshot import ClusterSnapshot, FailureRecord
from nodeagent.cache import prune

if TYPE_CHECKING:
    from console.localnode import ServedHere

__all__ = ["Cluster", "NO_USABLE_NODE", "PREFETCH", "open_cluster"]

PREFETCH = 2
NO_USABLE_NODE = "no node is usable"
"""The results document's "reason" when every node failed before the job could finish."""


class Cluster:
    """A backend, the current job, and the one lock over both."""

    def __init__(self, nodes: Sequence[Node] = (), backend: Optional[Backend] = None,
                 packages: PackageSource = PackageSource()) -> None:
        self.nodes = tuple(nodes)
        self.packages = packages
        """Where the console's pip finds jobs' requirements (the inventory's [packages])."""
        self.lock = threading.RLock()
        self.backend: Backend = backend if backend is not None else AgentBackend(self.nodes)
        self.backend.attach(self)
        self.job: Optional[JobRun] = None
        self._generation = 0
        self._closed = threading.Event()
        self._clock = threading.Thread(target=self._tick, name="cluster-clock", daemon=True)
        self._clock.start()

    @property
    def sessions(self) -> Dict[str, Any]:
        """The agent backend's node sessions, by name (empty for other backends)."""
        return getattr(self.backend, "sessions", {})

    # -- ClusterControl ---------------------------------------------------------------

    def bootstrap(self, nodes: Optional[Sequence[str]] = None) -> None:
        """Bring up these nodes (all when None), or bring them up again."""
        self.backend.bootstrap(nodes)

    def reconnect(self, node: str) -> None:
        """Drop the node and bring it up again; its chunks go back to the queue."""
        self.backend.reconnect(node)

    def drain(self, node: str) -> None:
        """Let the node finish what it holds, then send it nothing more."""
        self.handle(self.backend.drain(node))

    def start_job(self, job: Any, resume: bool = False) -> JobRun:
        """Start a job (a JobSpec, or the path of a job file) on the cluster."""
        spec = job if isinstance(job, JobSpec) else load_job(Path(job))
        self._check_requires(spec)
        return self._start(prepare_job(spec, resume, self._next_generation(), PREFETCH, self.packages))

    def start_stream(self, spec: JobSpec, sink: ResultSink) -> JobRun:
        """Start a streaming job (the Python API's): chunks come with `ChunkAdded`, outcomes go to `sink`."""
        self._check_requires(spec)
        return self._start(prepare_stream(spec, self._next_generation(), PREFETCH, sink, self.packages))

    def _check_requires(self, spec: JobSpec) -> None:
        if spec.requires and not isinstance(self.backend, AgentBackend):
            raise JobFileError(f"{spec.path}: requires ships wheels to the console's own nodes; a Dask cluster's "
                               "workers import from their own environment: install the requirements there, or "
                               "run the job on the inventory's nodes.")

    def _next_generation(self) -> int:
        with self.lock:
            check_not_running(self.job)
            self._generation += 1
            return self._generation

    def _start(self, run: JobRun) -> JobRun:
        with self.lock:
            check_not_running(self.job)
            self.job = run
            self._route(run.scheduler.handle(Tick(time.monotonic())))
        threading.Thread(target=self._write_when_done, args=(run,), name="job-results", daemon=True).start()
        self.backend.job_started()
        return run

    def cancel_job(self) -> None:
        """Cancel the running job; its results file says "cancelled"."""
        self.handle([JobCancelled(time.monotonic())])

    def close(self) -> None:
        """Cancel a running job (its results file says so), stop the backend and the clock."""
        job = self.job
        if job is not None and job.running:
            self.cancel_job()
            job.written.wait(30)
        self._closed.set()
        self.backend.close()
        with self.lock:
            if self.job is not None and self.job.journal is not None:
                self.job.journal.close()

    # -- called by backend threads -------------------------------------------------

    def handle(self, events: Sequence[Event]) -> None:
        """Feed events to the job's scheduler and carry out what it says; a fault of ours ends the job."""
        with self.lock:
            job = self.job
            if job is None or not job.running:
                return
            try:
                self._route(job.scheduler.handle(*events))
            except Exception as exc:  # the journal, or a broken invariant: never the node's fault
                job.fault(exc, "the scheduler")

    def console_fault(self, exc: BaseException, where: str) -> None:
        """End the running job for a fault of the console's own side, with its sentence."""
        with self.lock:
            if self.job is not None:
                self.job.fault(exc, where)

    def node_lost(self, name: str, reason: str) -> None:
        """A node went away: its chunks go back to the queue."""
        self.handle([NodeLost(name, reason, time.monotonic())])

    def holding(self, name: str) -> int:
        """Chunks the node holds in the current job."""
        with self.lock:
            job = self.job
            if job is None or not job.running:
                return 0
            tally = job.scheduler.nodes.get(name)
            return len(tally.held) if tally is not None else 0

    def _route(self, instructions: List[Instruction]) -> None:
        job = self.job
        assert job is not None
        for instruction in instructions:
            if isinstance(instruction, Journal):
                mistake = job.record(instruction)
                if mistake:
                    self._route(job.scheduler.handle(MistakeFound(mistake, time.monotonic())))
            elif isinstance(instruction, SendChunks):
                if job.running:
                    self.backend.deliver(instruction)
            elif isinstance(instruction, Cancel):
                self.backend.deliver(instruction)
            elif isinstance(instruction, ChunkGivenUp):
                job.give_up(instruction)
            elif isinstance(instruction, JobEnded):
                job.end(instruction.status, mistake=instruction.mistake)

    def _tick(self) -> None:
        while not self._closed.wait(0.25):
            try:
                self._tick_once()
            except Exception as exc:  # a bug of ours: end the job rather than let the clock stop silently
                self.console_fault(exc, "the cluster clock")

    def _tick_once(self) -> None:
        now = time.monotonic()
        with self.lock:
            job = self.job
            self.backend.tick(now, job)
            if job is None or not job.running:
                return
            job.rate.update(now, job.journalled_items)
            if job.history.due(now - job.started):
                up = [n.cpu_percent for n in self.backend.snapshots(job)
                      if n.cpu_percent is not None and n.state in ("ready", "busy", "draining")]
                job.history.add(now - job.started, job.rate.rate(), sum(up) / len(up) if up else None)
            self.handle([Tick(now)])
            if job.running and self.backend.all_failed():
                job.end("failed", NO_USABLE_NODE)

    # -- results ------------------------------------------------------------------------

    def wait_job(self, timeout: Optional[float] = None) -> str:
        """Block until the current job ends and its results file is written; its status."""
        job = self.job
        if job is None:
            raise UsageError("no job was started.")
        job.written.wait(timeout)
        return job.status

    def _write_when_done(self, job: JobRun) -> None:
        """Write the results file once the job ends, outside the lock (reducing may take a while)."""
        job.done_event.wait()
        document: Dict[str, Any] = {"job": job.spec.name, "status": "failed"}
        try:
            with self.lock:
                document = job.document_under_lock(self.backend.node_errors())
                values = dict(job.values)
            job.reduce_into(document, values)
        except Exception as exc:  # a bug of ours while building the document
            import traceback

            job.console_error = (f"internal error while writing the results: {type(exc).__name__}: {exc}. "
                                 "This is a bug in the console.")
            job.console_traceback = traceback.format_exc()
        job.write_results(document)

    # -- snapshots -------------------------------------------------------------------

    def snapshot(self) -> ClusterSnapshot:
        """A new immutable picture of everything, taken under the lock."""
        with self.lock:
            job = self.job
            nodes = self.backend.snapshots(job)
            if job is None:
                return ClusterSnapshot(t=time.time(), nodes=nodes)
            wall_minus_monotonic = time.time() - time.monotonic()  # events carry monotonic times
            failures = tuple(
                FailureRecord(f.chunk, f.node, f.error.splitlines()[0] if f.error else f.kind, f.traceback,
                              f.attempt, f.final, f.t + wall_minus_monotonic) for f in job.scheduler.failures
            )
            return ClusterSnapshot(t=time.time(), nodes=nodes, job=job.snapshot(), failures=failures)


CONSOLE_CACHE = (("packages", "nodes"), ("dask-code-",), "console.pruned")
"""`prune`'s arguments for what the console keeps in this machine's cache, pruned as agents prune theirs: resolved
wheels per platform, what nodes were found to be, the Dask workers' code; and the stamp of the console's last
pass (apart from the agents', which prune other entries)."""


def open_cluster(inventory: Inventory, engine: Optional[str] = None, served: Optional[ServedHere] = None) -> Cluster:
    """The cluster of the inventory's nodes (`served`: the local ones this process serves itself), or of the Dask
    cluster that `engine` or its [engine] names; what the console keeps in its cache and has not used for 30 days
    goes meanwhile."""
    threading.Thread(target=prune, args=CONSOLE_CACHE, name="cache", daemon=True).start()
    engine = engine or inventory.engine
    if not engine:
        return Cluster(inventory.nodes, backend=AgentBackend(inventory.nodes, served), packages=inventory.packages)
    if not engine.startswith(("dask://", "tcp://", "tls://")):
        raise UsageError(f"engine {engine!r}: give a Dask scheduler as dask://host:8786 (or tcp://host:8786).")
    from console.backends.dask import DaskBackend

    return Cluster(backend=DaskBackend(engine))
