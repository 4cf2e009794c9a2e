"""The cluster: one session thread per node, one scheduler per job, one lock.

`NodeSession` is the thin worker side of the scheduler: it brings its agent up
(through a launcher: local child process or SSH), turns agent replies into
scheduler events and carries out the scheduler's instructions for its node. It
decides nothing, but it checks what the node says: an outcome for a chunk the
node was never given, or anything the wire refuses (nodeagent/wire.py), fails
that node for good; a value holding a type the job does not allow fails that
chunk for good.

Two failure domains, never mixed: a node's fault (link, agent, protocol) loses
that node's chunks back to the queue; the console's own fault (the journal or
results file cannot be written, the reducer raises, a broken invariant, any
exception of ours on any cluster thread) ends the job at once with one
sentence (`JobRun.console_error`, exit status 4), keeping what was journalled.

`Cluster` holds the lock, routes instructions, writes the journal before a
result counts (a chunk is done once journalled, not before), and builds
immutable snapshots for the UIs.
A clock thread ticks the scheduler (tail re-runs) and the throughput meters.
"""

from __future__ import annotations

import pickle
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from console.agentlink import AgentLink, Progress, start_local_agent
from console.errors import ConsoleError, ConsoleFault, HostKeyError, UsageError
from console.inventory import Node
from console.jobcode import check_job_code, job_files
from console.journal import JournalWriter, journal_path, read_journal
from console.jobspec import JobSpec, load_job
from console.rates import RateMeter
from console.results import reduce_values, write_results
from console.scheduler import (
    Cancel, ChunkFailed, ChunkFinished, Event, Instruction, JobCancelled, JobEnded, Journal, NodeDraining,
    NodeJoined, NodeLost, Scheduler, SendChunks, Tick,
)
from console.snapshot import ChunkRecord, ClusterSnapshot, FailureRecord, JobSnapshot, NodeSnapshot
from nodeagent.wire import ChunkItems, ChunkOutcome, JobSettings, RefusedType, ValueDecoder, WireError

__all__ = ["Cluster", "NodeSession", "JobRun", "ChunkValue", "NO_USABLE_NODE"]


PREFETCH = 2
RECONNECT_ATTEMPTS = 3
COLLECT_WAIT_S = 0.2
METRICS_EVERY_S = 1.0
NO_USABLE_NODE = "no node is usable"
"""The results document's "reason" when every node failed before the job could finish."""
CLOSE_WAIT_S = 5.0
"""How long closing waits for the sessions in all; an agent left behind exits on its own."""


def launch_local(node: Node, session: Progress) -> AgentLink:
    """The local node: the agent is a child process of the console."""
    session.set_state("bootstrapping")
    return start_local_agent(node.python or sys.executable, session.log)


class ChunkValue(NamedTuple):
    """A chunk's value as the node sent it (for the journal) and as decoded (for the result)."""

    raw: bytes
    value: Any


@dataclass
class JobRun:
    """One job from start to results file."""

    spec: JobSpec
    scheduler: Scheduler
    journal: JournalWriter
    settings: JobSettings
    decoder: ValueDecoder
    """Decodes chunk values: plain data and the job's result_types only."""
    started: float
    generation: int
    custom_reduce: Optional[Callable[[List[Any]], Any]] = None
    values: Dict[int, Any] = field(default_factory=dict)
    """Decoded chunk values by first item index (unique across resumed runs, unlike chunk ids)."""
    resumed: int = 0
    journalled_by_node: Dict[str, List[int]] = field(default_factory=dict)
    """[chunks, items] journalled per node: what counts as done (the scheduler's tallies may count one
    the journal refused)."""
    ended: Optional[float] = None
    status: str = "running"
    reason: str = ""
    console_error: str = ""
    """Set when the console's own side ended the job: what failed, where, and what to do."""
    console_traceback: str = ""
    """The traceback, when that was a bug of ours."""
    done_event: threading.Event = field(default_factory=threading.Event)
    """Set when the scheduler says the job ended (or no node is usable)."""
    written: threading.Event = field(default_factory=threading.Event)
    """Set once the results file is written."""
    document: Optional[Dict[str, Any]] = None
    """The results document, once written."""
    rate: RateMeter = field(default_factory=RateMeter)

    @property
    def journalled_chunks(self) -> int:
        """Chunks of this run whose result is journalled."""
        return sum(chunks for chunks, _ in self.journalled_by_node.values())

    @property
    def journalled_items(self) -> int:
        """Items in those chunks."""
        return sum(items for _, items in self.journalled_by_node.values())


class NodeSession(threading.Thread):
    """One node's life: connect, serve the scheduler, reconnect when lost."""

    def __init__(self, cluster: "Cluster", node: Node) -> None:
        super().__init__(name=f"node-{node.name}", daemon=True)
        self.cluster = cluster
        self.node = node
        self.state = "pending"
        self.error: Optional[str] = None
        self.info: Dict[str, Any] = {}
        self.metrics: Dict[str, Any] = {}
        self.cpu_history: Deque[float] = deque(maxlen=60)
        self.log_lines: Deque[str] = deque(maxlen=200)
        self.outbox: Deque[Instruction] = deque()
        self.workers: Optional[int] = None
        self.draining = False
        """The operator drained this node: it gets no new chunks, even after a reconnect."""
        self.rate = RateMeter()
        self.stopping = threading.Event()
        self._link: Optional[AgentLink] = None
        self._generation = -1
        self._sent: Set[Tuple[int, int]] = set()
        """(chunk, attempt) given to the current agent and not answered yet."""

    # -- called from any thread ----------------------------------------------------

    def set_state(self, state: str, error: Optional[str] = None) -> None:
        """Move the node to a state the UIs show (under the cluster lock)."""
        with self.cluster.lock:
            self.state = state
            self.error = error

    def log(self, line: str) -> None:
        """Keep one line of the agent's log (its stderr) or of our own notes."""
        self.log_lines.append(line)

    def stop(self) -> None:
        """Ask the thread to end and the agent to exit."""
        self.stopping.set()

    # -- the thread ------------------------------------------------------------------

    def run(self) -> None:
        """Bring the agent up and serve; once the node has been up, a broken link is retried."""
        was_up = False
        attempt = 0
        while not self.stopping.is_set():
            try:
                self.set_state("connecting")
                self._link = self.cluster.launcher(self.node, self)
                self.info = self._link.hello()
                was_up, attempt = True, 0
                self.set_state("ready")
                self._serve()
            except NODE_FAULTS as exc:  # ConsoleError is a sentence already; the others a broken link or agent
                reason = str(exc) if isinstance(exc, ConsoleError) else f"{self.node.name}: {_describe(exc)}"
                self._drop(reason, graceful=not isinstance(exc, (TimeoutError, WireError)))
                if self.stopping.is_set():
                    break
                attempt += 1
                if isinstance(exc, WireError):  # a node that breaks the protocol is not asked again
                    self.set_state("failed", reason)
                    return
                if not was_up or isinstance(exc, HostKeyError) or attempt > RECONNECT_ATTEMPTS:
                    tail = f" (gave up after {attempt} attempts)" if was_up and attempt > 1 else ""
                    self.set_state("failed", reason + tail)
                    return
                self.set_state("lost", f"{reason} (reconnecting: attempt {attempt} of {RECONNECT_ATTEMPTS})")
                self.stopping.wait(min(2 ** (attempt - 1), 8))
            except Exception as exc:  # our own bug in this thread: the job ends, the node is not blamed
                self.cluster.console_fault(exc, f"the session of node {self.node.name}")
                self._drop("stopped: the console failed")
                self.set_state("pending")
                return
        self._drop("stopped")
        self.set_state("pending")

    def _drop(self, reason: str, graceful: bool = True) -> None:
        """Tell the scheduler the node is gone, and close what is left of the link."""
        link, self._link = self._link, None
        self._generation = -1
        self._sent.clear()
        self.cluster.node_lost(self.node.name, reason)
        if link is not None:
            link.close(graceful)

    def _serve(self) -> None:
        link = self._link
        assert link is not None
        next_metrics = 0.0
        while not self.stopping.is_set():
            self._join_job(link)
            self._flush(link)
            holding = self.cluster.holding(self.node.name)
            if holding:
                collected = link.collect(COLLECT_WAIT_S)
                self.metrics["busy"] = collected.busy
                if collected.outcomes:
                    self.cluster.handle(self._events(collected.outcomes))
            else:
                self.cluster.wake[self.node.name].wait(COLLECT_WAIT_S)
                self.cluster.wake[self.node.name].clear()
            now = time.monotonic()
            if now >= next_metrics:
                self._sample(link)
                next_metrics = now + METRICS_EVERY_S

    def _join_job(self, link: AgentLink) -> None:
        job = self.cluster.job
        if job is None or job.generation == self._generation or job.status != "running":
            return
        link.reply_limit = int(job.spec.max_reply_mb * 2 ** 20)
        self.workers = link.start_job(job.settings._replace(workers=self.node.workers))
        self._generation = job.generation
        self._sent.clear()
        now = time.monotonic()
        events: List[Event] = [NodeJoined(self.node.name, self.workers, now)]
        if self.draining:
            events.append(NodeDraining(self.node.name, now))
        self.cluster.handle(events)

    def _flush(self, link: AgentLink) -> None:
        job = self.cluster.job
        while self.outbox:
            instruction = self.outbox.popleft()
            if isinstance(instruction, Cancel):
                link.cancel(instruction.chunks)
            elif isinstance(instruction, SendChunks) and job is not None:
                source = job.spec.input
                self._sent.update((o.chunk, o.attempt) for o in instruction.chunks)
                link.submit([
                    ChunkItems(o.chunk, o.attempt, pickle.dumps(source.slice(o.start, o.count)))
                    for o in instruction.chunks
                ])

    def _events(self, outcomes: Sequence[ChunkOutcome]) -> List[Event]:
        """Scheduler events for the node's outcomes, each value decoded; WireError when the node lies."""
        job = self.cluster.job
        now = time.monotonic()
        name = self.node.name
        events: List[Event] = []
        for o in outcomes:
            if (o.chunk, o.attempt) not in self._sent:
                raise WireError(f"it sent an outcome for chunk {o.chunk} attempt {o.attempt}, which it was never "
                                "given (or had answered already)")
            self._sent.discard((o.chunk, o.attempt))
            if o.status != "ok":
                events.append(ChunkFailed(name, o.chunk, o.attempt, o.status, o.error, o.traceback, o.seconds, now))
                continue
            assert job is not None, "the node holds chunks of a job"
            try:
                value = ChunkValue(o.value, job.decoder.loads(o.value))
            except RefusedType as refused:
                events.append(ChunkFailed(name, o.chunk, o.attempt, "refused", job.spec.refused_type(
                    refused.name, f"chunk {o.chunk}'s value from {name}"), "", o.seconds, now, final=True))
                continue
            events.append(ChunkFinished(name, o.chunk, o.attempt, value, o.seconds, now))
        return events

    def _sample(self, link: AgentLink) -> None:
        sample = link.metrics()
        with self.cluster.lock:
            self.metrics.update(sample._asdict())
            if sample.cpu_percent is not None:
                self.cpu_history.append(sample.cpu_percent)


NODE_FAULTS = (EOFError, TimeoutError, OSError, ConsoleError, WireError)
"""What a link or an agent raises; any other exception in a session is the console's own bug."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, WireError):
        return f"the node broke the protocol: {exc}; it gets no more chunks (its chunks go to the other nodes)"
    if isinstance(exc, EOFError):
        return "the agent's stream closed (agent or link gone)"
    if isinstance(exc, TimeoutError):
        return "no answer from the agent within the call timeout"
    return f"{type(exc).__name__}: {exc}"


class Cluster:
    """All node sessions, the current job, and the one lock over both."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = tuple(nodes)
        self.lock = threading.RLock()
        self.sessions: Dict[str, NodeSession] = {}
        self.wake: Dict[str, threading.Event] = {n.name: threading.Event() for n in self.nodes}
        self.job: Optional[JobRun] = None
        self._generation = 0
        self._closed = threading.Event()
        self._clock = threading.Thread(target=self._tick, name="cluster-clock", daemon=True)
        self._clock.start()

    @staticmethod
    def launcher(node: Node, session: Progress) -> AgentLink:
        """Bring up one node's agent by its transport."""
        if node.transport == "local":
            return launch_local(node, session)
        from console.bootstrap import launch_ssh  # paramiko loads only when a node needs it

        return launch_ssh(node, session)

    # -- ClusterControl ---------------------------------------------------------------

    def bootstrap(self, nodes: Optional[Sequence[str]] = None) -> None:
        """Start (or restart) the sessions of these nodes, all when None."""
        for node in self.nodes:
            if nodes is None or node.name in nodes:
                self._start_session(node)

    def reconnect(self, node: str) -> None:
        """Drop the node's session and start a new one."""
        self.bootstrap([node])

    def drain(self, node: str) -> None:
        """Let the node finish what it holds, then send it nothing more."""
        if node not in self.wake:
            raise UsageError(f"no node named {node!r}.")
        session = self.sessions.get(node)
        if session is not None:
            session.draining = True
        self.handle([NodeDraining(node, time.monotonic())])

    def start_job(self, job: Any, resume: bool = False) -> JobRun:
        """Start a job (a JobSpec, or the path of a job file) on the cluster."""
        spec = job if isinstance(job, JobSpec) else load_job(Path(job))
        custom = check_job_code(spec)
        with self.lock:
            if self.job is not None and self.job.status == "running":
                raise UsageError(f"job {self.job.spec.name!r} is still running; cancel it first.")
        path = journal_path(spec.output)
        decoder = ValueDecoder(spec.result_types)
        entries = read_journal(path, spec, decoder) if resume else []
        scheduler = Scheduler(len(spec.input), spec.chunk_size, spec.retries, PREFETCH,
                              done_ranges=[(e.start, e.count) for e in entries])
        settings = JobSettings(spec.name, spec.function, spec.mode, spec.combine, job_files(spec), spec.timeout,
                               None)
        with self.lock:
            self._generation += 1
            run = JobRun(spec, scheduler, JournalWriter(path, spec.fingerprint(), resume), settings, decoder,
                         time.monotonic(), self._generation, custom, resumed=len(entries))
            for entry in entries:
                run.values[entry.start] = entry.value
            self.job = run
            self._route(scheduler.handle(Tick(time.monotonic())))
        threading.Thread(target=self._write_when_done, args=(run,), name="job-results", daemon=True).start()
        for event in self.wake.values():
            event.set()
        return run

    def cancel_job(self) -> None:
        """Cancel the running job; its results file says "cancelled"."""
        self.handle([JobCancelled(time.monotonic())])

    def close(self) -> None:
        """Cancel a running job (its results file says so), stop every session and the clock."""
        job = self.job
        if job is not None and job.status == "running":
            self.cancel_job()
            job.written.wait(30)
        self._closed.set()
        sessions = list(self.sessions.values())
        for session in sessions:
            session.stop()
            self.wake[session.node.name].set()
        deadline = time.monotonic() + CLOSE_WAIT_S
        for session in sessions:
            session.join(max(deadline - time.monotonic(), 0.1))
        with self.lock:
            if self.job is not None:
                self.job.journal.close()

    # -- called by session threads -------------------------------------------------

    def handle(self, events: Sequence[Event]) -> None:
        """Feed events to the job's scheduler and carry out what it says; a fault of ours ends the job."""
        with self.lock:
            job = self.job
            if job is None or job.status != "running":
                return
            try:
                self._route(job.scheduler.handle(*events))
            except Exception as exc:  # the journal, or a broken invariant: never the node's fault
                self.console_fault(exc, "the scheduler")

    def console_fault(self, exc: BaseException, where: str) -> None:
        """End the running job for a fault of the console's own side, with its sentence."""
        with self.lock:
            job = self.job
            if job is None or job.status != "running":
                return
            if isinstance(exc, ConsoleFault):
                job.console_error = str(exc)
            else:
                job.console_error = (f"internal error in {where}: {type(exc).__name__}: {exc}. This is a bug in the "
                                     "console (the traceback follows); every chunk journalled so far is kept, so "
                                     "--resume continues the job.")
                job.console_traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self._end_job(job, "failed")

    def node_lost(self, name: str, reason: str) -> None:
        """A session's agent went away: its chunks go back to the queue."""
        self.handle([NodeLost(name, reason, time.monotonic())])

    def holding(self, name: str) -> int:
        """Chunks the node holds in the current job."""
        with self.lock:
            job = self.job
            if job is None or job.status != "running":
                return 0
            tally = job.scheduler.nodes.get(name)
            return len(tally.held) if tally is not None else 0

    def _route(self, instructions: List[Instruction]) -> None:
        job = self.job
        assert job is not None
        for instruction in instructions:
            if isinstance(instruction, Journal):
                job.journal.write(instruction.chunk, instruction.start, instruction.count,
                                  instruction.node, instruction.result.raw)
                job.values[instruction.start] = instruction.result.value
                tally = job.journalled_by_node.setdefault(instruction.node, [0, 0])
                tally[0] += 1
                tally[1] += instruction.count
            elif isinstance(instruction, (SendChunks, Cancel)):
                session = self.sessions.get(instruction.node)
                if session is not None:
                    session.outbox.append(instruction)
                    self.wake[instruction.node].set()
            elif isinstance(instruction, JobEnded):
                self._end_job(job, instruction.status)

    def _end_job(self, job: JobRun, status: str, reason: str = "") -> None:
        job.status = status
        job.reason = reason
        job.ended = time.monotonic()
        job.journal.close()
        job.done_event.set()

    def _start_session(self, node: Node) -> None:
        """Start the node's session; an existing one is stopped first, off the caller's thread
        (the dashboard calls this and must not wait for a session to wind down)."""
        old = self.sessions.get(node.name)
        if old is None:
            self._register(NodeSession(self, node))
            return
        threading.Thread(target=self._replace_session, args=(old,), name=f"restart-{node.name}",
                         daemon=True).start()

    def _replace_session(self, old: NodeSession) -> None:
        old.stop()
        self.wake[old.node.name].set()
        old.join(CLOSE_WAIT_S * 2)
        if not self._closed.is_set():
            self._register(NodeSession(self, old.node))

    def _register(self, session: NodeSession) -> None:
        with self.lock:
            self.sessions[session.node.name] = session
        session.start()

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
            for session in self.sessions.values():
                session.rate.update(now, job.journalled_by_node.get(session.node.name, (0, 0))[1] if job else 0)
            if job is None or job.status != "running":
                return
            job.rate.update(now, job.journalled_items)
            self.handle([Tick(now)])
            if job.status == "running" and self.sessions and all(s.state == "failed" for s in self.sessions.values()):
                self._end_job(job, "failed", NO_USABLE_NODE)

    # -- results ------------------------------------------------------------------------

    def wait_job(self, timeout: Optional[float] = None) -> str:
        """Block until the current job ends and its results file is written; its status."""
        job = self.job
        if job is None:
            raise UsageError("no job was started.")
        job.written.wait(timeout)
        return job.status

    def _write_when_done(self, job: JobRun) -> None:
        """Write the results file once the job ends, outside the lock (reducing may take a while).

        Whatever happens here, `written` is set: nobody waits forever on a results file."""
        job.done_event.wait()
        document: Dict[str, Any] = {"job": job.spec.name, "status": "failed"}
        try:
            document = self.job_document(job)
            write_results(job.spec.output, document)
        except OSError as exc:
            cause = f"{job.console_error} " if job.console_error else ""
            job.console_error = document["console_error"] = cause + (
                f"cannot write the results file {job.spec.output} ({exc.strerror or exc}); make room or fix the "
                f"directory, then run the job again with --resume: the journal {job.journal.path} holds every "
                "finished chunk.")
        except Exception as exc:  # a bug of ours while building the document
            job.console_error = document["console_error"] = f"internal error while writing the results: " \
                                                            f"{type(exc).__name__}: {exc}. This is a bug in the console."
            job.console_traceback = traceback.format_exc()
        finally:
            job.document = document
            job.written.set()

    def job_document(self, job: JobRun) -> Dict[str, Any]:
        """The results file's content for a job."""
        with self.lock:
            scheduler = job.scheduler
            status = job.status
            values = dict(job.values)
            failures = [f for f in scheduler.failures if f.final]
            elapsed = (job.ended or time.monotonic()) - job.started
            nodes = {
                name: {"chunks": job.journalled_by_node.get(name, (0, 0))[0],
                       "items": job.journalled_by_node.get(name, (0, 0))[1], "busy_seconds": round(t.busy_seconds, 3)}
                for name, t in scheduler.nodes.items()
            }
            node_errors = {name: session.error for name, session in self.sessions.items()
                           if session.state == "failed" and session.error}
        document: Dict[str, Any] = {"job": job.spec.name, "status": status}
        result: Any = None
        if status in ("ok", "failed") and values and not job.console_error:
            try:
                result = reduce_values(job.spec.reduce, values, job.custom_reduce)
            except Exception as exc:  # the job's reducer raised: the console's side, not a node's
                document["status"] = "failed"
                where = traceback.extract_tb(exc.__traceback__)[-1]
                job.console_error = (
                    f"the reducer {job.spec.reduce} of {job.spec.path} raised {type(exc).__name__}: {exc} "
                    f"({where.filename}:{where.lineno}); fix it, then run the job again with --resume: every "
                    "chunk is journalled, so only the reducing runs again.")
        document.update({
            "result": result,
            "chunks": {"total": _plus(scheduler.chunks_total, job.resumed),
                       "done": job.journalled_chunks + job.resumed, "failed": scheduler.counts["failed"]},
            "items": {"total": scheduler.total_items, "done": job.journalled_items + scheduler.resumed_items},
            "nodes": nodes,
            "failures": [{"chunk": f.chunk, "node": f.node, "attempt": f.attempt, "error": f.error,
                          "traceback": f.traceback} for f in failures],
            "retried_attempts": sum(1 for f in scheduler.failures if not f.final),
            "resumed_chunks": job.resumed,
            "elapsed_s": round(elapsed, 3),
        })
        if node_errors:
            document["node_errors"] = node_errors
        if job.console_error:
            document["console_error"] = job.console_error
        if job.reason:
            document["reason"] = job.reason
        return document

    # -- snapshots -------------------------------------------------------------------

    def snapshot(self) -> ClusterSnapshot:
        """A new immutable picture of everything, taken under the lock."""
        with self.lock:
            job = self.job
            scheduler = job.scheduler if job is not None else None
            nodes = tuple(self._node_snapshot(node, scheduler) for node in self.nodes)
            failures: Tuple[FailureRecord, ...] = ()
            job_snap: Optional[JobSnapshot] = None
            if job is not None and scheduler is not None:
                wall_minus_monotonic = time.time() - time.monotonic()  # events carry monotonic times
                failures = tuple(
                    FailureRecord(f.chunk, f.node, f.error.splitlines()[0] if f.error else f.kind, f.traceback,
                                  f.attempt, f.final, f.t + wall_minus_monotonic) for f in scheduler.failures
                )
                job_snap = self._job_snapshot(job, scheduler)
            return ClusterSnapshot(t=time.time(), nodes=nodes, job=job_snap, failures=failures)

    def _job_snapshot(self, job: JobRun, scheduler: Scheduler) -> JobSnapshot:
        elapsed = (job.ended or time.monotonic()) - job.started
        done_items = job.journalled_items + scheduler.resumed_items
        rate = job.rate.rate() if job.status == "running" else (job.journalled_items / elapsed if elapsed else 0.0)
        left = scheduler.total_items - done_items
        eta = left / rate if rate > 0 and job.status == "running" else (0.0 if left == 0 else None)
        return JobSnapshot(
            name=job.spec.name, status=job.status,  # type: ignore[arg-type]
            items_total=scheduler.total_items, items_done=done_items,
            chunks_total=_plus(scheduler.chunks_total, job.resumed),
            chunks_queued=scheduler.queued, chunks_in_flight=scheduler.counts["sent"],
            chunks_done=job.journalled_chunks + job.resumed, chunks_failed=scheduler.counts["failed"],
            elapsed_s=elapsed, items_per_s=rate, eta_s=eta, output_path=str(job.spec.output),
            error=job.console_error or None,
        )

    def _node_snapshot(self, node: Node, scheduler: Optional[Scheduler]) -> NodeSnapshot:
        session = self.sessions.get(node.name)
        tally = scheduler.nodes.get(node.name) if scheduler is not None else None
        if session is None:
            return NodeSnapshot(name=node.name, transport=node.transport, address=node.address,
                                tags=node.tags, state="pending")
        info, metrics = session.info, session.metrics
        job = self.job
        journalled = job.journalled_by_node.get(node.name, (0, 0)) if job is not None else (0, 0)
        load = metrics.get("load")
        state = session.state
        if state in ("ready", "busy"):
            state = "draining" if session.draining else "busy" if tally is not None and tally.held else "ready"
        return NodeSnapshot(
            name=node.name, transport=node.transport, address=node.address, tags=node.tags,
            state=state, error=session.error,  # type: ignore[arg-type]
            os=info.get("os"), arch=info.get("arch"), python=info.get("python"), cores=info.get("cores"),
            workers=session.workers or node.workers or info.get("cores"), workers_busy=metrics.get("busy", 0),
            cpu_percent=metrics.get("cpu_percent"), cpu_per_core=metrics.get("cpu_per_core"),
            cpu_history=tuple(session.cpu_history), mem_percent=_percent(metrics),
            mem_used=metrics.get("mem_used"), mem_total=metrics.get("mem_total"),
            load=tuple(load) if load else None, metrics_source=metrics.get("source"),  # type: ignore[arg-type]
            in_flight=len(tally.held) if tally else 0,
            chunks_done=journalled[0], items_done=journalled[1],
            errors=tally.errors if tally else 0, items_per_s=session.rate.rate(),
            busy_seconds=tally.busy_seconds if tally else 0.0,
            recent_chunks=tuple(ChunkRecord(*r) for r in tally.recent) if tally else (),  # type: ignore[arg-type]
            log=tuple(session.log_lines)[-50:],
        )


def _plus(total: Optional[int], resumed: int) -> Optional[int]:
    """A chunk total that counts the chunks resumed from the journal (None stays unknown)."""
    return None if total is None else total + resumed


def _percent(metrics: Dict[str, Any]) -> Optional[float]:
    used, total = metrics.get("mem_used"), metrics.get("mem_total")
    if used is None or not total:
        return None
    return 100.0 * used / total
