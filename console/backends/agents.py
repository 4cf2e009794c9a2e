"""Where chunks run by default: the inventory's nodes, one agent each, over SSH or pipes.

`AgentBackend` keeps one `NodeSession` thread per node. A session is the thin
worker side of the scheduler: it brings its agent up (through a launcher:
local child process or SSH), turns agent replies into scheduler events for
the cluster and carries out the scheduler's instructions for its node. It
decides nothing, but it checks what the node says: an outcome for a chunk the
node was never given, or anything the wire refuses (nodeagent/wire.py), fails
that node for good; a value holding a type the job does not allow fails that
chunk for good. Link and agent faults lose the node (reconnected up to three
times); any other exception in a session is the console's own bug and ends
the job (console/cluster.py), never blaming the node.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Sequence, Set, Tuple

from console.agentlink import AgentLink, Answer, Progress
from console.errors import ConsoleError, HostKeyError, NodeBusy, UsageError
from console.inventory import Node
from console.jobrun import ChunkValue, JobRun
from console.rates import RateMeter
from console.scheduler import (
    Cancel, ChunkFailed, ChunkFinished, Event, Instruction, NodeDraining, NodeJoined, SendChunks,
)
from console.snapshot import ChunkRecord, NodeSnapshot
from nodeagent.wire import ChunkItems, ChunkOutcome, MetricsSample, RefusedType, WireError, decode_error_detail

if TYPE_CHECKING:
    import concurrent.futures

    from console.cluster import Cluster
    from console.localnode import ServedHere
    from console.packages import Wheel

__all__ = ["AgentBackend", "NodeSession", "launch_local"]

RECONNECT_ATTEMPTS = 3
COLLECT_WAIT_S = 0.2
METRICS_EVERY_S = 1.0
"""How often a node's metrics are taken: on its exchange while it works, by a call of their own while idle."""
CLOSE_WAIT_S = 5.0
"""How long closing waits for the sessions in all; an agent left behind exits on its own."""
STUCK_GRACE_S = 15.0
"""Past twice the chunk timeout, how much longer a held chunk may go without an outcome before its node's
agent is taken for stuck."""


def launch_local(node: Node, session: Progress) -> AgentLink:
    """The local node's agent as a child process of the console."""
    session.set_state("bootstrapping")
    from console.rpyclink import start_local_agent

    return start_local_agent(node.python or sys.executable, session.log, node.workers or os.cpu_count() or 1)


class NodeSession(threading.Thread):
    """One node's life: connect, serve the scheduler, reconnect when lost."""

    def __init__(self, backend: AgentBackend, node: Node) -> None:
        super().__init__(name=f"node-{node.name}", daemon=True)
        assert backend.cluster is not None, "attach the backend to a cluster first"
        self.backend = backend
        self.cluster: "Cluster" = backend.cluster
        self.node = node
        self.state = "pending"
        self.error: Optional[str] = None
        self.losses = 0
        """Times the node was lost; `last_loss` says why the last time (a view that samples states may miss a
        "lost" that lasted less than its period)."""
        self.last_loss: Optional[str] = None
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
        self.stop_reason = "stopped"
        """What the scheduler is told when the session stops on request."""
        self.packages = ""
        """The job's requirements on this node: the wheels it imports them from, or why it sits the job out."""
        self.sat_out: Optional[Tuple[int, str]] = None
        """(job generation, sentence) when no wheels fit this node's platform for that job."""
        self._link: Optional[AgentLink] = None
        self._generation = -1
        self._pool_job: Optional[JobRun] = None
        """The job the agent runs a pool for, until it is told the job is over."""
        self._starting: Optional[Answer] = None
        """The agent's answer to the job's start, until read (see AgentLink.start_job_unanswered)."""
        self._files_sent = 0
        """How many of the job's extra_files this agent has."""
        self._sent: Set[Tuple[int, int]] = set()
        """(chunk, attempt) given to the current agent and not answered yet."""

    # -- called from any thread ----------------------------------------------------

    def set_state(self, state: str, error: Optional[str] = None) -> None:
        """Move the node to a state the UIs show (under the cluster lock)."""
        with self.cluster.lock:
            self.state = state
            self.error = error
            if state == "lost":
                self.losses += 1
                self.last_loss = error

    def log(self, line: str) -> None:
        """Keep one line of the agent's log (its stderr) or of our own notes."""
        self.log_lines.append(line)

    def report_state(self) -> None:
        """Ask the agent to log its threads and pool (best effort: it may be past answering)."""
        link = self._link
        if link is not None:
            try:
                link.report_state()
                time.sleep(0.5)  # let its log lines arrive before the link closes
            except Exception as exc:  # a stuck agent may not answer: that is worth a line too
                self.log(f"the agent did not report its state: {type(exc).__name__}: {exc}")

    def stop(self, reason: str = "stopped") -> None:
        """Ask the thread to end and the agent to exit."""
        self.stop_reason = reason
        self.stopping.set()
        self.backend.wake[self.node.name].set()

    # -- the thread ------------------------------------------------------------------

    def run(self) -> None:
        """Bring the agent up and serve; once the node has been up, a broken link is retried."""
        was_up = False
        attempt = 0
        while not self.stopping.is_set():
            try:
                self.set_state("connecting")
                self._link = self.backend.launcher(self.node, self)
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
                slow = isinstance(exc, (NodeBusy, TimeoutError))  # reached, but busy: it (or we) may answer next time
                if not (was_up or slow) or isinstance(exc, HostKeyError) or attempt > RECONNECT_ATTEMPTS:
                    tail = f" (gave up after {attempt} attempts)" if attempt > 1 else ""
                    self.set_state("failed", reason + tail)
                    return
                if was_up:
                    self.set_state("lost", f"{reason} (reconnecting: attempt {attempt} of {RECONNECT_ATTEMPTS})")
                else:
                    self.set_state("connecting", f"{reason} (trying again: attempt {attempt} of "
                                                 f"{RECONNECT_ATTEMPTS})")
                self.stopping.wait(min(2 ** (attempt - 1), 8))
            except Exception as exc:  # our own bug in this thread: the job ends, the node is not blamed
                self.cluster.console_fault(exc, f"the session of node {self.node.name}")
                self._drop("stopped: the console failed")
                self.set_state("pending")
                return
        self._drop(self.stop_reason)
        self.set_state("pending")

    def _drop(self, reason: str, graceful: bool = True) -> None:
        """Tell the scheduler the node is gone, and close what is left of the link.

        Instructions still queued for the old link go too, after the scheduler has taken the node's chunks back
        (it sends a lost node none): resent on the next link, they would run a chunk twice under one attempt
        number, which the node's second answer turns into a protocol violation."""
        link, self._link = self._link, None
        self._generation = -1
        self._pool_job = None
        self._starting = None
        self._sent.clear()
        self.cluster.node_lost(self.node.name, reason)
        self.outbox.clear()
        if link is not None:
            link.close(graceful)

    def _serve(self) -> None:
        link = self._link
        assert link is not None
        # The node's first metrics sample starts the agent's sampler (psutil's import): a node that starts with
        # a job running is asked one interval in, not in the job's first exchange.
        job = self.cluster.job
        next_metrics = time.monotonic() + METRICS_EVERY_S if job is not None and job.running else 0.0
        while not self.stopping.is_set():
            self._join_job(link)
            self._leave_ended_job(link)
            batch = self._flush(link)
            metrics_due = time.monotonic() >= next_metrics
            if metrics_due:
                next_metrics = time.monotonic() + METRICS_EVERY_S
            if batch or self.cluster.holding(self.node.name):
                collected = link.exchange(batch, COLLECT_WAIT_S, metrics=metrics_due)
                self._check_started(link)
                self.metrics["busy"] = collected.busy
                if collected.outcomes:
                    self.cluster.handle(self._events(collected.outcomes))
                if collected.metrics is not None:
                    self._take_metrics(collected.metrics)
            else:  # idle: woken for work, a job, a stop; else up for the next metrics call
                if metrics_due:
                    self._sample(link)
                    self._check_started(link)
                self.backend.wake[self.node.name].wait(max(next_metrics - time.monotonic(), 0.0))
                self.backend.wake[self.node.name].clear()

    def _join_job(self, link: AgentLink) -> None:
        job = self.cluster.job
        if job is None or job.generation == self._generation or job.status != "running":
            return
        self._generation = job.generation
        wheels = self._stage_packages(link, job)
        if wheels is None:
            return
        link.reply_limit = int(job.spec.max_reply_mb * 2 ** 20)
        self._check_started(link)  # the last job's: answered before the calls that ended it
        self._starting = link.start_job_unanswered(job.settings._replace(workers=self.node.workers, wheels=wheels))
        self.workers = self.node.workers or self.info["cores"]  # what the agent takes: the inventory's, or its cores
        self._pool_job = job
        self._files_sent = 0
        self._sent.clear()
        now = time.monotonic()
        events: List[Event] = [NodeJoined(self.node.name, self.workers, now)]
        if self.draining:
            events.append(NodeDraining(self.node.name, now))
        self.cluster.handle(events)

    def _check_started(self, link: AgentLink) -> None:
        """Read the agent's answer to the job's start, in now that a later call was answered; WireError unless it
        started the pool this session counted on."""
        if self._starting is None:
            return
        answer, self._starting = self._starting, None
        workers = link.started(answer)
        if workers != self.workers:
            raise WireError(f"it started the job with {workers} workers, where it has {self.workers}")

    def _leave_ended_job(self, link: AgentLink) -> None:
        """The job this agent's pool runs is over and no other has started: the agent readies fresh workers for
        the next one (the dashboard's next run starts on them instead of spawning its own)."""
        job = self._pool_job
        if job is not None and not job.running and job is self.cluster.job:
            self._pool_job = None
            link.end_job()

    def _stage_packages(self, link: AgentLink, job: JobRun) -> Optional[Tuple[str, ...]]:
        """The digests of the job's wheels for this node, sent to it first where it lacks them; None when no
        set of wheels fits its platform: it sits this job out, saying why."""
        self.sat_out = None
        if job.packages is None:
            self.packages = ""
            return ()
        self.set_state("bootstrapping")  # until its wheels are there: pip may take a while
        try:
            wheels = self._resolve_wheels(link, job)
            if wheels is None:
                return None
            sent = link.stage_wheels([(w.digest, w.file) for w in wheels], self.log)
        finally:
            self.set_state("ready")
        self.packages = ", ".join(w.project for w in wheels)
        with self.cluster.lock:
            job.packages_by_node[self.node.name] = {"wheels": [w.project for w in wheels], "sent": sent}
        return tuple(w.digest for w in wheels)

    def _resolve_wheels(self, link: AgentLink, job: JobRun) -> Optional[Tuple[Wheel, ...]]:
        """The job's wheels for this node's platform, the agent hearing from the console while pip works; None
        when none fit (the node sits the job out) or the job or session ended meanwhile."""
        assert job.packages is not None, "the job has requirements"
        import concurrent.futures  # here only: with the logging it imports, ~13 ms of every start

        from console.packages import PackagesUnavailable, node_platform  # loaded by the job's PackageResolver

        platform = node_platform(self.info)
        self.log(f"wheels of {', '.join(job.spec.requires)} for {platform.describe()}")
        resolving = concurrent.futures.Future()  # type: ignore[var-annotated]
        threading.Thread(target=_settle, args=(resolving, job.packages.wheels_for, platform),
                         name=f"packages-{self.node.name}", daemon=True).start()
        try:
            while not (self.stopping.is_set() or not job.running):
                try:
                    return resolving.result(timeout=METRICS_EVERY_S * 5)
                except concurrent.futures.TimeoutError:
                    self._sample(link)
        except PackagesUnavailable as exc:
            self.sat_out = (job.generation, f"{self.node.name}: {exc}.")
            self.packages = self.sat_out[1]
            self.log(self.sat_out[1])
        return None

    def _flush(self, link: AgentLink) -> List[ChunkItems]:
        """Carry out the queued instructions: cancels and the job's new files at once; the chunks to send
        are returned, for the next exchange."""
        job = self.cluster.job
        batch: List[ChunkItems] = []
        while self.outbox:
            instruction = self.outbox.popleft()
            if isinstance(instruction, Cancel):
                link.cancel(instruction.chunks)
                if batch:  # a chunk cancelled before it was sent is not sent
                    batch = [order for order in batch if order.chunk not in instruction.chunks]
            elif isinstance(instruction, SendChunks) and job is not None:
                while self._files_sent < len(job.extra_files):  # files added before these chunks were
                    link.add_files(job.extra_files[self._files_sent])
                    self._files_sent += 1
                source = job.spec.input
                self._sent.update((o.chunk, o.attempt) for o in instruction.chunks)
                batch.extend(ChunkItems(o.chunk, o.attempt, pickle.dumps(source.slice(o.start, o.count)))
                             for o in instruction.chunks)
        return batch

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
            if o.status == "mistake":
                assert job is not None, "the node holds chunks of a job"
                events.append(ChunkFailed(name, o.chunk, o.attempt, "mistake", f"{job.spec.path}: {o.error}", "",
                                          o.seconds, now, final=True, worker=o.worker))
                continue
            if o.status != "ok":
                detail = decode_error_detail(o.value)
                events.append(ChunkFailed(name, o.chunk, o.attempt, o.status, o.error, o.traceback, o.seconds, now,
                                          detail=detail, worker=o.worker))
                if detail is not None and detail.type in IMPORT_ERRORS and job is not None and job.packages:
                    events += self._sit_out_unimportable(job, o.error, now)
                continue
            assert job is not None, "the node holds chunks of a job"
            try:
                value = ChunkValue(o.value, job.decoder.loads(o.value))
            except RefusedType as refused:
                events.append(ChunkFailed(name, o.chunk, o.attempt, "refused", job.spec.refused_type(
                    refused.name, f"chunk {o.chunk}'s value from {name}"), "", o.seconds, now, final=True,
                    worker=o.worker))
                continue
            events.append(ChunkFinished(name, o.chunk, o.attempt, value, o.seconds, now, o.worker))
        return events

    def _sit_out_unimportable(self, job: JobRun, error: str, now: float) -> List[Event]:
        """A chunk of a job with requirements could not import something here: every chunk would fail the same
        way on this node (a system library the wheels do not carry), so it takes no more of the job's chunks."""
        if self.sits_out_of(job):
            return []
        from console.packages import node_platform  # a job with requirements: loaded by its PackageResolver

        sentence = (f"{self.node.name}: the job's code does not import on its {node_platform(self.info).describe()} "
                    f"({error}); it sits this job out. Wheels carry what pip ships, not system libraries: install "
                    f"what is missing on {self.node.name}, or add the missing package to the job's requires")
        self.sat_out = (job.generation, sentence)
        self.packages = sentence
        self.log(sentence)
        return [NodeDraining(self.node.name, now)]

    def sits_out_of(self, job: JobRun) -> bool:
        """This node takes no part in `job` (no wheels fit it, or what the job imports does not import here)."""
        return self.sat_out is not None and self.sat_out[0] == job.generation

    def _sample(self, link: AgentLink) -> None:
        self._take_metrics(link.metrics())

    def _take_metrics(self, sample: MetricsSample) -> None:
        with self.cluster.lock:
            self.metrics.update(sample._asdict())
            if sample.cpu_percent is not None:
                self.cpu_history.append(sample.cpu_percent)


def _settle(future: concurrent.futures.Future[Any], call: Any, *args: Any) -> None:
    """Run `call(*args)` into `future` (on a thread of its own)."""
    try:
        future.set_result(call(*args))
    except BaseException as exc:  # whatever it raised is the waiter's to handle
        future.set_exception(exc)


IMPORT_ERRORS = ("builtins:ImportError", "builtins:ModuleNotFoundError")
"""A chunk's exception types that say the node lacks something the job imports."""

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


class AgentBackend:
    """The inventory's nodes, one session thread each; the cluster routes their instructions here."""

    def __init__(self, nodes: Sequence[Node], served: Optional[ServedHere] = None) -> None:
        """`served`: the local nodes this process serves itself (`console run`'s, console/localnode.py)."""
        self.nodes = tuple(nodes)
        self.served = served
        self.sessions: Dict[str, NodeSession] = {}
        self.wake: Dict[str, threading.Event] = {n.name: threading.Event() for n in self.nodes}
        self._unsticking: Set[str] = set()
        """Nodes being reconnected because their agent is stuck (until their new session starts)."""
        self.cluster: Optional["Cluster"] = None
        self._closed = threading.Event()

    def attach(self, cluster: "Cluster") -> None:
        """The cluster the sessions report to."""
        self.cluster = cluster

    def launcher(self, node: Node, session: Progress) -> AgentLink:
        """Bring up one node's agent: in this process, or by its transport."""
        if self.served is not None and self.served.serves(node):
            return self.served.launch(node, session)
        if node.transport == "local":
            return launch_local(node, session)
        from console.bootstrap import launch_ssh  # paramiko loads only when a node needs it

        return launch_ssh(node, session)

    def bootstrap(self, nodes: Optional[Sequence[str]] = None) -> None:
        """Start (or restart) the sessions of these nodes, all when None."""
        if not all(self.served is not None and self.served.serves(node) for node in self.nodes):
            import console.rpyclink  # noqa: F401  (rpyc on this thread before any session's: see rpyc_without_ssl)
        for node in self.nodes:
            if nodes is None or node.name in nodes:
                self._start_session(node)

    def reconnect(self, node: str) -> None:
        """Drop the node's session and start a new one."""
        self.bootstrap([node])

    def drain(self, node: str) -> List[Event]:
        """Mark the node drained; the events to tell the scheduler."""
        if node not in self.wake:
            raise UsageError(f"no node named {node!r}.")
        session = self.sessions.get(node)
        if session is not None:
            session.draining = True
        return [NodeDraining(node, time.monotonic())]

    def deliver(self, instruction: Any) -> None:
        """A SendChunks or Cancel for one node: queue it on its session (called under the cluster lock)."""
        session = self.sessions.get(instruction.node)
        if session is not None:
            session.outbox.append(instruction)
            self.wake[instruction.node].set()

    def job_started(self) -> None:
        """Wake every session to join the new job."""
        for event in self.wake.values():
            event.set()

    def tick(self, now: float, job: Optional[JobRun]) -> None:
        """Update the nodes' throughput meters, and reconnect a node whose agent is stuck (under the cluster
        lock)."""
        for session in self.sessions.values():
            session.rate.update(now, job.journalled_by_node.get(session.node.name, (0, 0))[1] if job else 0)
        if job is not None and job.running:
            self._unstick(now, job)

    def _unstick(self, now: float, job: JobRun) -> None:
        """A chunk waits at most one chunk timeout in the agent's queue and runs at most one more, the agent
        killing it then: a chunk held far past that means the agent itself is wedged (its pool stopped, its
        machine swapping), so the node is reconnected and its chunks go back to the queue."""
        limit = 2 * job.spec.timeout + STUCK_GRACE_S
        for name, tally in job.scheduler.nodes.items():
            if not tally.alive or not tally.held or name in self._unsticking or name not in self.sessions:
                continue
            oldest = min(job.scheduler.chunks[c].holders.get(name, now) for c in tally.held)
            if now - oldest > limit:
                self._unsticking.add(name)
                reason = (f"{name}: no outcome for {now - oldest:.0f} s, past twice the chunk timeout of "
                          f"{job.spec.timeout:g} s: its agent is stuck; reconnecting")
                self.sessions[name].log(reason)
                self._start_session(self.sessions[name].node, reason)

    def all_failed(self) -> bool:
        """Every node failed for good, or sits the current job out (no wheels fit it): the job cannot finish."""
        return bool(self.sessions) and all(s.state == "failed" or self._sits_out(s) for s in self.sessions.values())

    def node_errors(self) -> Dict[str, str]:
        """Why each failed node failed, or sits the current job out."""
        errors = {name: s.error for name, s in self.sessions.items() if s.state == "failed" and s.error}
        errors.update((name, s.sat_out[1]) for name, s in self.sessions.items()  # type: ignore[index]
                      if self._sits_out(s) and name not in errors)
        return errors

    def _sits_out(self, session: NodeSession) -> bool:
        job = self.cluster.job if self.cluster is not None else None
        return job is not None and session.sits_out_of(job)

    def snapshots(self, job: Optional[JobRun]) -> Tuple[NodeSnapshot, ...]:
        """Every node as the UIs show it (under the cluster lock)."""
        return tuple(self._node_snapshot(node, job) for node in self.nodes)

    def close(self) -> None:
        """Stop every session; wait a little for them to end."""
        self._closed.set()
        sessions = list(self.sessions.values())
        for session in sessions:
            session.stop()
        deadline = time.monotonic() + CLOSE_WAIT_S
        for session in sessions:
            session.join(max(deadline - time.monotonic(), 0.1))
        if self.served is not None:
            self.served.close()

    def _start_session(self, node: Node, reason: str = "stopped") -> None:
        """Start the node's session; an existing one is stopped first (telling the scheduler `reason`), off the
        caller's thread (the dashboard calls this and must not wait for a session to wind down)."""
        old = self.sessions.get(node.name)
        if old is None:
            self._register(NodeSession(self, node))
            return
        threading.Thread(target=self._replace_session, args=(old, reason), name=f"restart-{node.name}",
                         daemon=True).start()

    def _replace_session(self, old: NodeSession, reason: str) -> None:
        if old.node.name in self._unsticking:
            old.report_state()
        old.stop(reason)
        old.join(CLOSE_WAIT_S * 2)
        if not self._closed.is_set():
            self._register(NodeSession(self, old.node))

    def _register(self, session: NodeSession) -> None:
        assert self.cluster is not None, "attach the backend to a cluster first"
        with self.cluster.lock:
            self.sessions[session.node.name] = session
            self._unsticking.discard(session.node.name)
        session.start()

    def _node_snapshot(self, node: Node, job: Optional[JobRun]) -> NodeSnapshot:
        session = self.sessions.get(node.name)
        tally = job.scheduler.nodes.get(node.name) if job is not None else None
        if session is None:
            return NodeSnapshot(name=node.name, transport=node.transport, address=node.address,
                                tags=node.tags, state="pending")
        info, metrics = session.info, session.metrics
        journalled = job.journalled_by_node.get(node.name, (0, 0)) if job is not None else (0, 0)
        load = metrics.get("load")
        state = session.state
        if state in ("ready", "busy"):
            state = "draining" if session.draining else "busy" if tally is not None and tally.held else "ready"
        return NodeSnapshot(
            name=node.name, transport=node.transport, address=node.address, tags=node.tags,
            state=state, error=session.error,  # type: ignore[arg-type]
            losses=session.losses, last_loss=session.last_loss,
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
            packages=session.packages if job is not None and job.packages is not None else "",
        )


def _percent(metrics: Dict[str, Any]) -> Optional[float]:
    used, total = metrics.get("mem_used"), metrics.get("mem_total")
    if used is None or not total:
        return None
    return 100.0 * used / total
