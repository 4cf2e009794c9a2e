"""The scheduler: which chunk goes to which node, and when a result counts.

Pure logic: no I/O, no threads, no clock (time arrives on events). One entry
point, `Scheduler.handle(*events) -> list[Instruction]`; nothing else mutates
it. The cluster turns agent replies into events and carries out the
instructions (send chunks, journal a result, cancel a losing copy).

- Credit: a node holds at most `workers x prefetch` chunks, or, when its chunks
  are short, enough of them for AHEAD_S of work a worker (so one round trip
  carries many); each result frees a credit, so fast nodes get more work
  without tuning.
- Exactly once: a result counts only from a node that holds the chunk, and only
  the first time; later copies are dropped and logged.
- Retries: a chunk that raises, dies or times out runs again, on a node where it
  has not failed yet when there is one, until `retries` is used up.
- Job mistakes: a chunk whose value does not fit the job file ("mistake",
  "refused") fails for good at once; once two nodes (or every node, when fewer
  have joined) report one, the job stops with that sentence rather than run
  every chunk into the same wall. One node alone cannot stop a job of several.
- Tail: once nothing is queued, idle credit re-runs chunks that have been out
  longer than usual on another node; the first result wins.
- chunk_size None ("auto"): chunks are cut as credit asks for them, sized from
  the measured time per item to take about `target_chunk_s`.
- Streaming (`streaming=True`, the Python API's jobs): no items up front; each
  `ChunkAdded` appends one chunk of the caller's size, and the job ends only
  after `InputClosed`, once everything added is done or failed for good.
"""

# No `from __future__ import annotations` here: typing.NamedTuple compiles every string annotation (~30 us a field).
import math
from collections import deque
from typing import Deque, Dict, FrozenSet, Iterable, List, Literal, NamedTuple, Optional, Set, Tuple, Union

__all__ = [
    "ChunkStateName", "Chunk", "NodeJoined", "NodeLost", "NodeDraining", "ChunkFinished", "ChunkFailed",
    "Tick", "JobCancelled", "MistakeFound", "ChunkAdded", "InputClosed", "ChunkOrder", "ChunkGivenUp",
    "SendChunks", "Journal", "Cancel", "JobEnded", "Event",
    "Instruction", "Scheduler", "InvalidTransition", "Failure", "NodeTally", "Attempt",
]

ChunkStateName = Literal["queued", "sent", "done", "failed", "cancelled"]


# -- events: what happened ---------------------------------------------------------

class NodeJoined(NamedTuple):
    """A node's agent is up with this many workers."""

    node: str
    workers: int
    t: float = 0.0


class NodeLost(NamedTuple):
    """A node went away; what it held goes back to the queue."""

    node: str
    reason: str = ""
    t: float = 0.0


class NodeDraining(NamedTuple):
    """The operator asked a node to finish what it holds and take nothing more."""

    node: str
    t: float = 0.0


class ChunkFinished(NamedTuple):
    """A node returned a chunk's value."""

    node: str
    chunk: int
    attempt: int
    result: bytes = b""
    seconds: float = 0.0
    t: float = 0.0
    worker: str = ""
    """Which of the node's workers ran it."""

    @classmethod
    def dummy(cls, chunk: int, node: str = "n1", attempt: int = 1, **kw: object) -> "ChunkFinished":
        return cls(node=node, chunk=chunk, attempt=attempt, **kw)  # type: ignore[arg-type]


class ChunkFailed(NamedTuple):
    """A chunk attempt raised ("error"), ran too long ("timeout"), lost its worker ("died"), or
    sent a value the job does not allow ("refused")."""

    node: str
    chunk: int
    attempt: int
    kind: str = "error"
    error: str = ""
    traceback: str = ""
    seconds: float = 0.0
    t: float = 0.0
    final: bool = False
    """Fails the chunk for good at once: it would fail the same way again (its copies are cancelled)."""
    detail: object = None
    """The exception's type and arguments as the node described them (nodeagent.wire.ErrorDetail), if any."""
    worker: str = ""
    """Which of the node's workers ran it."""

    @classmethod
    def dummy(cls, chunk: int, node: str = "n1", attempt: int = 1, **kw: object) -> "ChunkFailed":
        return cls(node=node, chunk=chunk, attempt=attempt, **kw)  # type: ignore[arg-type]


class Tick(NamedTuple):
    """Time passed; lets the tail re-run slow chunks."""

    t: float


class JobCancelled(NamedTuple):
    """The operator cancelled the job."""

    t: float = 0.0


class MistakeFound(NamedTuple):
    """The console found a job mistake itself (its reducer refuses the first value): stop the job."""

    sentence: str
    t: float = 0.0


class ChunkAdded(NamedTuple):
    """A streaming job got one more chunk of `count` items (numbered after the ones before)."""

    count: int
    t: float = 0.0


class InputClosed(NamedTuple):
    """A streaming job gets no more chunks: it ends once those it has are done or failed."""

    t: float = 0.0


Event = Union[NodeJoined, NodeLost, NodeDraining, ChunkFinished, ChunkFailed, Tick, JobCancelled, MistakeFound,
              ChunkAdded, InputClosed]


# -- instructions: what to do ---------------------------------------------------------

class ChunkOrder(NamedTuple):
    """One chunk attempt to run: items start .. start+count-1."""

    chunk: int
    attempt: int
    start: int
    count: int


class SendChunks(NamedTuple):
    """Send these chunks to the node, in one call."""

    node: str
    chunks: Tuple[ChunkOrder, ...]


class Journal(NamedTuple):
    """Record this result as final, before it counts."""

    chunk: int
    start: int
    count: int
    node: str
    result: bytes


class Cancel(NamedTuple):
    """Tell the node to drop these chunks (the losing copies, or a cancelled job)."""

    node: str
    chunks: Tuple[int, ...]


class JobEnded(NamedTuple):
    """Every chunk is done or failed for good, the job was cancelled, or a job mistake stopped it."""

    status: Literal["ok", "failed", "cancelled"]
    mistake: str = ""
    """The sentence of the job mistake that stopped the job, if one did."""


class ChunkGivenUp(NamedTuple):
    """A chunk failed for good; `failure` is its last attempt."""

    chunk: int
    start: int
    count: int
    failure: "Failure"


Instruction = Union[SendChunks, Journal, Cancel, JobEnded, ChunkGivenUp]


# -- state -----------------------------------------------------------------------------

MISTAKES = ("mistake", "refused")
"""ChunkFailed kinds that are the job's own mistake: the same on every node, every time."""
AHEAD_S = 0.02
"""Work kept out for each worker of a node whose chunks are short: more than `prefetch` chunks, enough of them
for this long, so that one round trip carries many chunks and the node's workers never wait on one."""
MOST_AHEAD = 32
"""Chunks a worker holds at most, however short they are."""
TAIL_SHARE = 0.05
"""An "auto" chunk at the job's tail holds at least this share of `target_chunk_s`'s work (25 ms of 0.5 s)."""


def _running(average: float, sample: float) -> float:
    """One step of a running average the scheduler keeps (0: none yet, the sample is taken as it is)."""
    return 0.8 * average + 0.2 * sample if average else float(sample)


class InvalidTransition(RuntimeError):
    """A chunk was asked to move where the table does not allow: a scheduler bug."""


_NO_NODES: FrozenSet[str] = frozenset()
"""Shared by every chunk that has not failed (each `frozenset()` is an object of its own, 216 bytes)."""


class Chunk:
    """One slice of the job's items and where it stands. Slotted, and with no set of its own until an attempt
    fails: a job may hold a million of them (some 300 bytes each)."""

    __slots__ = ("id", "start", "count", "state", "failures", "holders", "failed_on")

    def __init__(self, id: int, start: int, count: int) -> None:
        self.id = id
        self.start = start
        self.count = count
        self.state: ChunkStateName = "queued"
        self.failures = 0
        """Failed attempts so far; the next attempt's number is failures + 1."""
        self.holders: Dict[str, float] = {}
        """Nodes running a copy now, with the time each copy was sent."""
        self.failed_on: FrozenSet[str] = _NO_NODES
        """Nodes where an attempt of this chunk failed."""

    @property
    def attempt(self) -> int:
        return self.failures + 1

    def __repr__(self) -> str:
        return f"Chunk({self.id}, items {self.start}+{self.count}, {self.state}, attempt {self.attempt})"


class Failure(NamedTuple):
    """A failed chunk attempt, kept for the failures panel and the output file."""

    chunk: int
    node: str
    attempt: int
    kind: str
    error: str
    traceback: str
    final: bool
    t: float
    detail: object = None
    """As on ChunkFailed."""


class Attempt(NamedTuple):
    """One chunk attempt for the job's timeline: where it ran, from when to when (the events' clock), and
    what became of it ("done", "duplicate", a ChunkFailed kind, "lost", "cancelled")."""

    chunk: int
    attempt: int
    node: str
    worker: str
    start: float
    end: float
    outcome: str


class NodeTally:
    """One node's credit and what it has done."""

    def __init__(self, name: str, workers: int, capacity: int, last_heard: float = 0.0) -> None:
        self.name = name
        self.workers = workers
        self.capacity = capacity
        self.held: Set[int] = set()
        self.alive = True
        self.draining = False
        self.chunks_done = 0
        self.items_done = 0
        self.busy_seconds = 0.0
        self.errors = 0
        self.recent: Deque[Tuple[int, int, float, str]] = deque(maxlen=50)
        """(chunk, items, seconds, outcome) of the node's last chunks."""
        self.chunk_s = 0.0
        self.chunk_items = 0.0
        """Running averages of the node's chunk seconds and items (0 until one finished)."""
        self.last_heard = last_heard
        """When the node last answered a chunk (or joined): a node still answering gets to the chunks it
        queues."""

    def is_short(self, items: int) -> bool:
        """A chunk of `items` would take this node under AHEAD_S, by what its chunks have taken so far."""
        return bool(self.chunk_items) and items * self.chunk_s / self.chunk_items < AHEAD_S

    @property
    def credit(self) -> int:
        if not self.alive or self.draining:
            return 0
        return max(self.capacity - len(self.held), 0)


_ALLOWED: Dict[Tuple[str, str], str] = {
    ("queued", "sent"): "dispatched to a node",
    ("sent", "sent"): "a copy added or removed while another copy runs",
    ("sent", "done"): "first result counted",
    ("sent", "queued"): "back to the queue after a failure or a lost node",
    ("sent", "failed"): "failed for good",
    ("queued", "cancelled"): "job cancelled, or stopped by a job mistake",
    ("sent", "cancelled"): "job cancelled, or stopped by a job mistake",
}
"""Every legal move of a chunk; anything else raises InvalidTransition."""


class Scheduler:
    """Chunk queue, per-node credit, retries and exactly-once counting for one job."""

    def __init__(self, total_items: int, chunk_size: Optional[int] = None, retries: int = 2,
                 prefetch: int = 2, done_ranges: Iterable[Tuple[int, int]] = (),
                 target_chunk_s: float = 0.5, max_log: int = 20000, max_failures: int = 1000,
                 max_attempts: int = 100_000,
                 streaming: bool = False, stop_on_mistake: bool = True) -> None:
        self.total_items = total_items
        self.streaming = streaming
        self.stop_on_mistake = stop_on_mistake
        self._mistaken_by: Set[str] = set()
        """Nodes that reported a job mistake."""
        self.chunk_size = chunk_size
        self.retries = retries
        self.prefetch = prefetch
        self.target_chunk_s = target_chunk_s
        self.chunks: Dict[int, Chunk] = {}
        """The chunks cut so far; a streaming job (the Python API's, which may run for days) drops each one once
        it is done, failed for good or cancelled, keeping only `_settled` counts."""
        self._settled: Dict[str, int] = {"done": 0, "failed": 0, "cancelled": 0}
        self._settled_items = 0
        self.nodes: Dict[str, NodeTally] = {}
        self.queue: Deque[int] = deque()
        self.failures: Deque[Failure] = deque(maxlen=max_failures)
        self.attempts: List[Attempt] = []
        """Every chunk attempt that ended, in the order they ended (the first `max_attempts`)."""
        self.max_attempts = max_attempts
        self.log: Deque[Tuple[int, str, str, str, str, float]] = deque(maxlen=max_log)
        self.status: Literal["running", "ok", "failed", "cancelled"] = "running"
        self.items_done = 0
        self.counts: Dict[str, int] = {"queued": 0, "sent": 0, "done": 0, "failed": 0, "cancelled": 0}
        self.resumed_items = 0
        self._done_ranges = sorted((s, s + c) for s, c in done_ranges)
        for start, stop in self._done_ranges:
            self.resumed_items += stop - start
        self._cursor = 0
        self._next_id = 0
        self._created_all = False
        self._recent_seconds = 0.0
        self._recent_items = 0.0
        """Running averages of a finished chunk's seconds and items (0 until one is measured): their ratio is
        the seconds an item takes."""
        self._chunk_seconds: Deque[float] = deque(maxlen=200)
        self._auto_size = 1
        self._hungry: Dict[str, None] = {}
        """Nodes that may have free credit, in the order they freed it (a dict as an ordered set)."""
        self._idle: Dict[str, None] = {}
        """Nodes with free credit and nothing to take: looked at again when work comes back (a requeued or
        added chunk) or time passes (a Tick: the tail may have grown slow), not on every event."""
        self._sent: Set[int] = set()
        """Chunks in state "sent"."""
        self._tail: Dict[int, float] = {}
        """Sent chunks with one copy out, with since when, oldest first: what the tail may copy (read from the
        oldest, only as far as it is slow, so a tail costs the same with 3 nodes as with 10,000)."""
        self._skip_done()

    # -- the one entry point --------------------------------------------------------

    def handle(self, *events: Event) -> List[Instruction]:
        """Apply events in order; return what the cluster must do."""
        out: List[Instruction] = []
        now = 0.0
        for event in events:
            now = getattr(event, "t", now)
            if self.status != "running" and not isinstance(event, (NodeJoined, NodeLost, NodeDraining)):
                continue
            getattr(self, "_on_" + type(event).__name__)(event, out)
        if self.status == "running":
            self._dispatch(now, out)
            self._check_end(out)
        return out

    # -- event handlers ----------------------------------------------------------------

    def _on_NodeJoined(self, ev: NodeJoined, out: List[Instruction]) -> None:
        old = self.nodes.get(ev.node)
        if old is not None and old.alive:
            self._lose(old, ev.t, "rejoined")
        tally = NodeTally(ev.node, ev.workers, ev.workers * self.prefetch, last_heard=ev.t)
        self._hungry[ev.node] = None
        if old is not None:
            tally.chunks_done, tally.items_done = old.chunks_done, old.items_done
            tally.busy_seconds, tally.errors = old.busy_seconds, old.errors
        self.nodes[ev.node] = tally

    def _on_NodeLost(self, ev: NodeLost, out: List[Instruction]) -> None:
        tally = self.nodes.get(ev.node)
        if tally is not None and tally.alive:
            self._lose(tally, ev.t, ev.reason or "node lost")

    def _on_NodeDraining(self, ev: NodeDraining, out: List[Instruction]) -> None:
        tally = self.nodes.get(ev.node)
        if tally is not None:
            tally.draining = True

    def _on_ChunkFinished(self, ev: ChunkFinished, out: List[Instruction]) -> None:
        chunk = self.chunks.get(ev.chunk)
        tally = self.nodes.get(ev.node)
        if tally is not None:
            tally.last_heard = ev.t
        if (chunk is not None and chunk.state == "done") or (chunk is None and self.streaming
                                                             and 0 <= ev.chunk < self._next_id):
            self._record(ev.chunk, "dropped", ev.node, ev.t, "duplicate result")
            return
        if chunk is None or tally is None or chunk.holders.get(ev.node) is None or ev.chunk not in tally.held:
            self._record(ev.chunk, "dropped", ev.node, ev.t, "result from a node that does not hold it")
            return
        if ev.attempt != chunk.attempt:
            self._record(ev.chunk, "dropped", ev.node, ev.t, f"result of stale attempt {ev.attempt}")
            return
        self._attempt(chunk, ev.node, ev.worker, max(chunk.holders.pop(ev.node), ev.t - ev.seconds), ev.t, "done")
        self._free(tally, chunk.id)
        losers = tuple(chunk.holders)
        for other in losers:
            self._free(self.nodes[other], chunk.id)
            self.nodes[other].recent.append((chunk.id, chunk.count, 0.0, "duplicate"))
            self._attempt(chunk, other, "", chunk.holders[other], ev.t, "duplicate")
            out.append(Cancel(other, (chunk.id,)))
        chunk.holders.clear()
        out.append(Journal(chunk.id, chunk.start, chunk.count, ev.node, ev.result))
        self._transition(chunk, "done", "ChunkFinished", ev.node, ev.t)
        self.items_done += chunk.count
        tally.chunks_done += 1
        tally.items_done += chunk.count
        tally.busy_seconds += ev.seconds
        tally.recent.append((chunk.id, chunk.count, ev.seconds, "done"))
        tally.chunk_s, tally.chunk_items = _running(tally.chunk_s, ev.seconds), _running(tally.chunk_items, chunk.count)
        self._fit_capacity(tally)
        self._chunk_seconds.append(ev.seconds)
        if chunk.count:
            self._measured(ev.seconds, chunk.count)

    def _on_ChunkFailed(self, ev: ChunkFailed, out: List[Instruction]) -> None:
        chunk = self.chunks.get(ev.chunk)
        tally = self.nodes.get(ev.node)
        if tally is not None:
            tally.last_heard = ev.t
        if chunk is None or tally is None or chunk.state != "sent" or ev.node not in chunk.holders:
            self._record(ev.chunk, "dropped", ev.node, ev.t, "failure from a node that does not hold it")
            return
        if ev.attempt != chunk.attempt:
            self._record(ev.chunk, "dropped", ev.node, ev.t, f"failure of stale attempt {ev.attempt}")
            return
        self._attempt(chunk, ev.node, ev.worker, max(chunk.holders.pop(ev.node), ev.t - ev.seconds), ev.t, ev.kind)
        self._free(tally, chunk.id)
        tally.errors += 1
        tally.recent.append((chunk.id, chunk.count, ev.seconds, "timeout" if ev.kind == "timeout" else "failed"))
        chunk.failed_on |= {ev.node}
        if ev.final:
            for other in tuple(chunk.holders):
                self._free(self.nodes[other], chunk.id)
                self._attempt(chunk, other, "", chunk.holders[other], ev.t, "cancelled")
                out.append(Cancel(other, (chunk.id,)))
            chunk.holders.clear()
        if chunk.holders:
            self.failures.append(Failure(chunk.id, ev.node, ev.attempt, ev.kind, ev.error, ev.traceback, False, ev.t,
                                         ev.detail))
            self._transition(chunk, "sent", "ChunkFailed", ev.node, ev.t)
            return
        chunk.failures += 1
        final = ev.final or chunk.failures > self.retries
        failure = Failure(chunk.id, ev.node, ev.attempt, ev.kind, ev.error, ev.traceback, final, ev.t, ev.detail)
        self.failures.append(failure)
        if final:
            self._transition(chunk, "failed", "ChunkFailed", ev.node, ev.t)
            out.append(ChunkGivenUp(chunk.id, chunk.start, chunk.count, failure))
            if ev.kind in MISTAKES and self.stop_on_mistake:
                self._mistaken_by.add(ev.node)
                if len(self._mistaken_by) >= min(2, len(self.nodes)):
                    self._stop("failed", ev.t, out, ev.error)
        else:
            self._transition(chunk, "queued", "ChunkFailed", ev.node, ev.t)
            self.queue.appendleft(chunk.id)
            self._wake_idle()

    def _on_Tick(self, ev: Tick, out: List[Instruction]) -> None:
        """Idle nodes are offered work again (the tail may have grown slow); `handle` dispatches after it."""
        self._wake_idle()

    def _wake_idle(self) -> None:
        """Offer work to the idle nodes again, first: they have waited longest."""
        if self._idle:
            self._idle.update(self._hungry)
            self._hungry, self._idle = self._idle, {}

    def _on_ChunkAdded(self, ev: ChunkAdded, out: List[Instruction]) -> None:
        if not self.streaming or self._created_all:
            raise InvalidTransition("a chunk was added to a job that is not streaming, or whose input is closed")
        chunk = Chunk(self._next_id, self.total_items, ev.count)
        self._next_id += 1
        self.chunks[chunk.id] = chunk
        self.counts["queued"] += 1
        self.queue.append(chunk.id)
        self.total_items += ev.count
        self._cursor = self.total_items
        self._wake_idle()

    def _on_InputClosed(self, ev: InputClosed, out: List[Instruction]) -> None:
        self._created_all = True

    def _on_JobCancelled(self, ev: JobCancelled, out: List[Instruction]) -> None:
        self._stop("cancelled", ev.t, out)

    def _on_MistakeFound(self, ev: MistakeFound, out: List[Instruction]) -> None:
        self._stop("failed", ev.t, out, ev.sentence)

    def _stop(self, status: Literal["failed", "cancelled"], t: float, out: List[Instruction],
              mistake: str = "") -> None:
        """End the job now: what is queued or out is cancelled (the nodes are told), nothing more is cut."""
        by_node: Dict[str, List[int]] = {}
        for chunk in list(self.chunks.values()):  # a streaming job drops each chunk it cancels
            if chunk.state in ("queued", "sent"):
                for node, sent in chunk.holders.items():
                    by_node.setdefault(node, []).append(chunk.id)
                    self.nodes[node].held.discard(chunk.id)
                    self._attempt(chunk, node, "", sent, t, "cancelled")
                chunk.holders.clear()
                self._transition(chunk, "cancelled", "JobCancelled" if status == "cancelled" else "JobStopped",
                                 "", t)
        self.queue.clear()
        self._created_all = True
        out.extend(Cancel(node, tuple(ids)) for node, ids in by_node.items())
        self.status = status
        out.append(JobEnded(status, mistake))

    # -- internals ------------------------------------------------------------------

    def _lose(self, tally: NodeTally, t: float, reason: str) -> None:
        tally.alive = False
        for chunk_id in sorted(tally.held, reverse=True):
            chunk = self.chunks[chunk_id]
            sent = chunk.holders.pop(tally.name, None)
            if sent is not None:
                self._attempt(chunk, tally.name, "", sent, t, "lost")
            if chunk.state == "sent" and not chunk.holders:
                self._transition(chunk, "queued", "NodeLost", tally.name, t)
                self.queue.appendleft(chunk_id)
                self._wake_idle()
            elif chunk.state == "sent":
                self._transition(chunk, "sent", "NodeLost", tally.name, t)
        tally.held.clear()

    def _transition(self, chunk: Chunk, finish: ChunkStateName, event: str, node: str, t: float) -> None:
        start = chunk.state
        if (start, finish) not in _ALLOWED:
            raise InvalidTransition(
                f"chunk {chunk.id}: {start} -> {finish} on {event} from {node or 'console'} is not allowed; "
                f"its story: {self.story(chunk.id)}"
            )
        self.log.append((chunk.id, start, finish, event, node, t))
        self.counts[start] -= 1
        self.counts[finish] += 1
        chunk.state = finish
        if finish != "sent":
            self._sent.discard(chunk.id)
            self._tail.pop(chunk.id, None)
            if self.streaming and finish in self._settled:
                del self.chunks[chunk.id]
                self._settled[finish] += 1
                self._settled_items += chunk.count if finish == "done" else 0
            return
        self._sent.add(chunk.id)
        if len(chunk.holders) == 1:
            self._tail.setdefault(chunk.id, t)
        else:
            self._tail.pop(chunk.id, None)

    def _attempt(self, chunk: Chunk, node: str, worker: str, start: float, end: float, outcome: str) -> None:
        if len(self.attempts) < self.max_attempts:
            self.attempts.append(Attempt(chunk.id, chunk.attempt, node, worker, start, end, outcome))

    def _record(self, chunk: int, what: str, node: str, t: float, why: str) -> None:
        self.log.append((chunk, what, what, why, node, t))

    def _skip_done(self) -> None:
        """Move the cursor past items already journalled by an earlier run."""
        for start, stop in self._done_ranges:
            if start <= self._cursor < stop:
                self._cursor = stop
        if self._cursor >= self.total_items and not self.streaming:
            self._created_all = True

    def _measured(self, seconds: float, items: int) -> None:
        """Seconds per item, from running averages of seconds and of items rather than of their ratio: a big
        chunk weighs by its items, so the first chunks (one item, its time mostly the worker's start on the
        job's code) stop counting once chunks have grown, and sizes reach the target in a few steps."""
        self._recent_seconds = _running(self._recent_seconds, seconds)
        self._recent_items = _running(self._recent_items, items)

    def _next_size(self) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        return self.auto_chunk_size(self.total_items - self._cursor)

    def auto_chunk_size(self, remaining: Optional[int], largest: int = 1_000_000) -> int:
        """Items for the next "auto" chunk: doubling from 1 until a chunk time is measured, then about
        `target_chunk_s` of work, and no more than a share of the `remaining` items (when known) that
        leaves every worker some, down to TAIL_SHARE of the target's work (finer, the tail would take a
        round trip for every few items)."""
        if not self._recent_items:
            size = self._auto_size
            self._auto_size = min(self._auto_size * 2, 64)
            return min(size, largest)
        per_item = max(self._recent_seconds / self._recent_items, 1e-7)
        size = int(self.target_chunk_s / per_item)
        if remaining is not None:
            workers = sum(t.workers for t in self.nodes.values() if t.alive) or 1
            finest = int(TAIL_SHARE * self.target_chunk_s / per_item)
            size = min(size, max(math.ceil(remaining / (2 * workers)), finest))
        return max(1, min(size, largest))

    @property
    def capacity(self) -> int:
        """Chunks the live nodes can hold at once."""
        return sum(t.capacity for t in self.nodes.values() if t.alive and not t.draining)

    @property
    def long_capacity(self) -> int:
        """Chunks the live nodes hold at once when they are long (`prefetch` a worker): all an "auto" chunk
        gets, however short the chunks before it were."""
        return sum(t.workers * self.prefetch for t in self.nodes.values() if t.alive and not t.draining)

    def _new_chunk(self) -> Optional[Chunk]:
        if self._created_all or self.streaming:
            return None
        stop = min(self._cursor + self._next_size(), self.total_items)
        for start, _ in self._done_ranges:
            if self._cursor < start < stop:
                stop = start
        chunk = Chunk(self._next_id, self._cursor, stop - self._cursor)
        self._next_id += 1
        self.chunks[chunk.id] = chunk
        self.counts["queued"] += 1
        self._cursor = stop
        self._skip_done()
        return chunk

    def _dispatch(self, now: float, out: List[Instruction]) -> None:
        """Fill the credit of the nodes that freed some; only they are looked at, so an event
        costs the same with 3 nodes as with 300."""
        for name in list(self._hungry):
            tally = self.nodes[name]
            credit = tally.credit
            orders: List[ChunkOrder] = []
            skipped: List[int] = []
            base = tally.workers * self.prefetch
            while credit > 0:
                chunk = self._take_for(tally, skipped)
                if chunk is None:
                    break
                if len(tally.held) >= base and not tally.is_short(chunk.count):  # credit past `prefetch` is
                    self.queue.appendleft(chunk.id)  # for short chunks only (an "auto" one is long once cut)
                    break
                self._send(chunk, tally, now, orders)
                credit -= 1
            self.queue.extendleft(reversed(skipped))
            if credit > 0 and not self.queue and self._cursor >= self.total_items:
                credit -= self._rerun_tail(tally, credit, now, orders)
            del self._hungry[name]
            if credit > 0:
                self._idle[name] = None
            if orders:
                out.append(SendChunks(tally.name, tuple(orders)))

    def _take_for(self, tally: NodeTally, skipped: List[int]) -> Optional[Chunk]:
        while self.queue:
            chunk = self.chunks[self.queue.popleft()]
            if tally.name in chunk.failed_on and any(
                t.alive and not t.draining and t.name not in chunk.failed_on
                for t in self.nodes.values() if t is not tally
            ):
                skipped.append(chunk.id)
                continue
            return chunk
        return self._new_chunk()

    def _send(self, chunk: Chunk, tally: NodeTally, now: float, orders: List[ChunkOrder]) -> None:
        chunk.holders[tally.name] = now
        tally.held.add(chunk.id)
        self._transition(chunk, "sent", "SendChunks", tally.name, now)
        orders.append(ChunkOrder(chunk.id, chunk.attempt, chunk.start, chunk.count))

    def _fit_capacity(self, tally: NodeTally) -> None:
        """A node's credit: `prefetch` chunks a worker, or enough for AHEAD_S of its work when its chunks are
        shorter (up to MOST_AHEAD); never below what it holds, so it shrinks as the node answers."""
        per_worker = self.prefetch
        if tally.chunk_s < AHEAD_S:
            per_worker = max(per_worker, min(MOST_AHEAD, 1 + math.ceil(AHEAD_S / max(tally.chunk_s, 1e-6))))
        tally.capacity = max(tally.workers * per_worker, len(tally.held))

    def _free(self, tally: NodeTally, chunk_id: int) -> None:
        """The node no longer holds the chunk: it has credit to fill."""
        tally.held.discard(chunk_id)
        self._hungry[tally.name] = None

    def _rerun_tail(self, tally: NodeTally, credit: int, now: float, orders: List[ChunkOrder]) -> int:
        """Give the node copies of chunks out with one copy for much longer than usual, oldest first, that it
        has not held or failed, held by nodes that have not answered a chunk for as long: a node still
        answering works through what it queued (a hundred nodes sharing a few cores each queue a while of
        short chunks), and a copy would only take a core from it; how many it took."""
        if not self._chunk_seconds:
            return 0
        slow_after = max(2 * sorted(self._chunk_seconds)[len(self._chunk_seconds) // 2], 0.5)
        taken: List[Chunk] = []
        for chunk_id, since in self._tail.items():
            if now - since <= slow_after or len(taken) == credit:
                break
            chunk = self.chunks[chunk_id]
            (holder,) = chunk.holders
            if holder != tally.name and tally.name not in chunk.failed_on and \
                    now - self.nodes[holder].last_heard > slow_after:
                taken.append(chunk)
        for chunk in taken:
            self._send(chunk, tally, now, orders)
        return len(taken)

    def _check_end(self, out: List[Instruction]) -> None:
        if self._created_all and self.counts["queued"] == 0 and self.counts["sent"] == 0:
            self.status = "failed" if self.counts["failed"] else "ok"
            out.append(JobEnded(self.status))

    # -- reading ----------------------------------------------------------------------

    @property
    def chunks_total(self) -> Optional[int]:
        """Chunks in the job once all are cut (always known for a fixed chunk_size)."""
        if self._created_all:
            return len(self.chunks)
        if self.chunk_size is not None:
            remaining = self.total_items - self._cursor - sum(
                max(0, stop - max(start, self._cursor)) for start, stop in self._done_ranges
            )
            return len(self.chunks) + math.ceil(max(remaining, 0) / self.chunk_size)
        return None

    @property
    def queued(self) -> int:
        """Chunks waiting for a node (cut or not yet cut, when known)."""
        total = self.chunks_total
        if total is None:
            return self.counts["queued"]
        return total - len(self.chunks) + self.counts["queued"]

    def story(self, chunk_id: int) -> List[Tuple[int, str, str, str, str, float]]:
        """Every logged move of one chunk, oldest first."""
        return [entry for entry in self.log if entry[0] == chunk_id]

    def validate(self) -> None:
        """Check the invariants; raise AssertionError naming the first one broken."""
        by_state: Dict[str, int] = {s: self._settled.get(s, 0) for s in self.counts}
        for chunk in self.chunks.values():
            by_state[chunk.state] += 1
            if chunk.state == "sent":
                assert chunk.holders, f"chunk {chunk.id} is sent but no node holds it"
            else:
                assert not chunk.holders, f"chunk {chunk.id} is {chunk.state} but held by {chunk.holders}"
            for node in chunk.holders:
                assert chunk.id in self.nodes[node].held, f"chunk {chunk.id} not in {node}'s held set"
        assert by_state == self.counts, f"state counts {self.counts} != recount {by_state}"
        assert sorted(self.queue) == sorted(c.id for c in self.chunks.values() if c.state == "queued"), \
            "queue does not match the queued chunks"
        assert self._sent == {c.id for c in self.chunks.values() if c.state == "sent"}, "sent set is stale"
        assert set(self._tail) == {c.id for c in self.chunks.values() if c.state == "sent" and len(c.holders) == 1}, \
            "tail candidates are stale"
        for tally in self.nodes.values():
            assert 0 <= len(tally.held) <= tally.capacity, f"{tally.name} holds {len(tally.held)} chunks"
            assert tally.credit == 0 or tally.name in self._hungry or tally.name in self._idle \
                or self.status != "running", f"{tally.name} has credit {tally.credit} but is not offered work"
            assert tally.alive or not tally.held, f"lost node {tally.name} still holds chunks"
        done_items = self._settled_items + sum(c.count for c in self.chunks.values() if c.state == "done")
        assert done_items == self.items_done, f"items_done {self.items_done} != {done_items}"
