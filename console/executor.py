"""The Python API: the cluster as a `concurrent.futures.Executor`, opened with `connect()` (console/api.py).

One engine with `console run`: `connect` opens the same `Cluster` (agents on
the inventory's nodes, or a Dask cluster) and starts one streaming job on it
(console/jobrun.py `prepare_stream`). Every `submit` and every chunk of a
`map` is one chunk of that job, run on the nodes by `nodeagent.calls`, so
credit, retries, timeouts, lost nodes and exactly-once counting are the
scheduler's, as for a job file.

The executor is the job's `ResultSink`. Values and failures arrive under the
cluster lock and only queue there; one delivery thread completes the futures
(their callbacks run in it, never under the lock) and feeds the running maps.
A map streams: it reads its input a chunk at a time, keeps a bounded window
of chunks out, and holds only the results the caller has not taken yet.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import BrokenExecutor, CancelledError, Executor, Future, InvalidStateError
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import (
    TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union,
)

from console.cluster import NO_USABLE_NODE, Cluster, open_cluster
from console.inventory import Inventory
from console.jobrun import JobRun
from console.jobspec import JobSpec
from console.remote import RemoteError, rebuild_exception
from console.scheduler import ChunkAdded, ChunkGivenUp, Failure, InputClosed
from console.shipping import Shipment, pickle_batch, ship
from console.snapshot import ClusterSnapshot

if TYPE_CHECKING:
    from console.localnode import ServedHere

__all__ = ["open_executor", "ClusterExecutor", "ClusterBroken"]

CALLS_FUNCTION = "nodeagent.calls:run_calls"
UNKNOWN_LENGTH_CHUNK = 65_536
"""The largest "auto" chunk of an input whose length is unknown (a generator)."""
WINDOW_CHUNKS = 16
"""A map keeps at least this many chunks out (or four per chunk the nodes can hold) before the caller takes
their results."""
FEED_EVERY_S = 0.1
"""How often the delivery thread feeds the maps when no result arrives (nodes joining add credit)."""

ChunkSize = Union[int, str]


class ClusterBroken(BrokenExecutor):
    """The cluster cannot run calls any more: no node is usable, or the console's own side failed."""


class _ApiJobSpec(JobSpec):
    """The streaming job's spec: its refused-type sentence points at connect(), not at a job file."""

    __slots__ = ()

    def refused_type(self, type_name: str, what: str) -> str:
        return (f"{what} holds a {type_name}, which this connect() does not allow; if that type is expected, pass "
                f"result_types=[\"{type_name}\"] to connect().")


class _Calls:
    """Each chunk's pickled calls and who waits for them, by first item index: the job's input."""

    source = "the Python API"

    def __init__(self) -> None:
        self.by_start: Dict[int, Tuple[bytes, Any]] = {}

    def slice(self, start: int, count: int) -> Optional[bytes]:
        """The chunk's calls for a node; None (the node does nothing) once nobody waits for them."""
        entry = self.by_start.get(start)
        if entry is None:
            return None
        batch, owner = entry
        if isinstance(owner, Future):
            if owner.cancelled():
                return None
            if not owner.running():
                try:
                    owner.set_running_or_notify_cancel()
                except RuntimeError:  # another copy of the chunk set it running first
                    pass
        return batch


class _MapChunk:
    """One chunk of a map: its item count, then its values or its exception."""

    __slots__ = ("run", "count", "start", "values", "error", "done")

    def __init__(self, run: Optional["_MapRun"], count: int) -> None:
        self.run = run
        self.count = count
        self.start = -1
        self.values: List[Any] = []
        self.error: Optional[BaseException] = None
        self.done = False


_STOP = object()


class ClusterExecutor(Executor):
    """The cluster's nodes as a `concurrent.futures.Executor`; made by `connect()`.

    `submit`, `map`, `shutdown`, `with`, `as_completed` and `wait` behave as with a process pool; `map`
    streams and takes `chunksize="auto"`; `imap_unordered` yields in completion order. A call that raises on
    a node raises the same exception type here, with the node's traceback as its `__cause__`."""

    def __init__(self, cluster: Cluster, *, name: str, retries: int, chunk_timeout: float,
                 result_types: Sequence[str], max_reply_mb: float, progress: bool,
                 requires: Sequence[str] = ()) -> None:
        self._cluster = cluster
        self._calls = _Calls()
        self._deliveries: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._shipments: Dict[Any, Shipment] = {}
        self._files_shipped: Set[str] = set()
        self._modules: Set[str] = set()
        """Modules whose exception classes may be raised again here: those the shipped functions came from."""
        self._maps: Set[_MapRun] = set()
        self._closing = False
        self._broken: Optional[str] = None
        self._fed = threading.Event()
        self._stopped = threading.Event()
        self._finish_lock = threading.Lock()
        spec = _ApiJobSpec(
            path=Path(f"{name} (connect())"), name=name, function=CALLS_FUNCTION, mode="chunk", files=(),
            chunk_size=None, retries=retries, timeout=chunk_timeout, reduce="list",
            input=self._calls,  # type: ignore[arg-type]
            output=None, result_types=tuple(result_types), max_reply_mb=max_reply_mb,  # type: ignore[arg-type]
            requires=tuple(requires))
        self._run: JobRun = cluster.start_stream(spec, self)
        cluster.bootstrap()
        self._delivery = threading.Thread(target=self._deliver, name="api-delivery", daemon=True)
        self._delivery.start()
        self._watcher: Optional[threading.Thread] = None
        if progress:
            self._watcher = _start_watching(cluster, self._stopped)

    # -- concurrent.futures.Executor ----------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run fn(*args, **kwargs) on a node; a Future of its result."""
        shipment = self._ship(fn)
        batch = pickle_batch(shipment, "call", [(args, kwargs)])
        future: Future = Future()
        self._add(shipment, batch, 1, future)
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: Optional[float] = None,
            chunksize: ChunkSize = "auto") -> Iterator[Any]:
        """fn over the items (zipped, as the built-in map), results in input order.

        `chunksize` is items per chunk, or "auto": sized from the measured time per item to about half a
        second of work. `timeout` counts from this call, as with `Executor.map`. The input is read as chunks
        go out and results are held only until taken, so a huge input or an endless generator is fine."""
        return _MapRun(self, fn, iterables, chunksize, timeout, ordered=True).results()

    def imap_unordered(self, fn: Callable[..., Any], iterable: Iterable[Any], chunksize: ChunkSize = "auto",
                       timeout: Optional[float] = None) -> Iterator[Any]:
        """fn over the items, results as their chunks finish (as `multiprocessing.Pool.imap_unordered`)."""
        return _MapRun(self, fn, (iterable,), chunksize, timeout, ordered=False).results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Finish (or with cancel_futures, stop) the work and the cluster's agents.

        wait=True returns once every submitted call and every map's input is done and the agents are stopped;
        cancel_futures=True cancels what has not finished, stopping the calls running on the nodes too."""
        with self._cluster.lock:
            self._closing = True
        if cancel_futures:
            self._cluster.cancel_job()
        if wait and threading.current_thread() is not self._delivery:
            self._finish()
        else:  # not waiting, or called from a future's callback, which runs in the delivery thread
            threading.Thread(target=self._finish, name="api-shutdown", daemon=True).start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.shutdown(wait=True, cancel_futures=exc_type is not None)
        return False

    def snapshot(self) -> ClusterSnapshot:
        """The cluster now (nodes, progress, failures), as the dashboard sees it."""
        return self._cluster.snapshot()

    # -- adding work ------------------------------------------------------------------------

    def _ship(self, fn: Callable[..., Any]) -> Shipment:
        try:
            shipment = self._shipments.get(fn)
        except TypeError:  # an unhashable callable
            return ship(fn)
        if shipment is None:
            if len(self._shipments) > 256:
                self._shipments.clear()
            shipment = self._shipments[fn] = ship(fn)
        return shipment

    def _add(self, shipment: Shipment, batch: bytes, count: int, owner: Any, feeding: bool = False) -> int:
        """Queue one chunk of calls; its first item index. A map goes on feeding while the executor shuts down."""
        with self._cluster.lock:
            if self._broken:
                raise ClusterBroken(self._broken)
            if self._closing and not feeding:
                raise RuntimeError("cannot schedule new calls after shutdown")
            if shipment.files and shipment.files_digest not in self._files_shipped:
                self._run.add_files(shipment.files)
                self._files_shipped.add(shipment.files_digest)
            self._modules.update(shipment.modules)
            start = self._run.scheduler.total_items
            self._calls.by_start[start] = (batch, owner)
            self._cluster.handle([ChunkAdded(count, time.monotonic())])
            return start

    def _withdraw(self, chunks: Iterable[_MapChunk]) -> None:
        """Nobody waits for these chunks any more: a node given one does nothing."""
        with self._cluster.lock:
            for chunk in chunks:
                entry = self._calls.by_start.get(chunk.start)
                if entry is not None and entry[1] is chunk:
                    del self._calls.by_start[chunk.start]

    def _capacity(self, auto: bool) -> int:
        """Chunks the nodes hold at once: for "auto" chunks (long once sized), `prefetch` a worker."""
        with self._cluster.lock:
            scheduler = self._run.scheduler
            return max(2, scheduler.long_capacity if auto else scheduler.capacity)

    def _auto_size(self, remaining: Optional[int]) -> int:
        with self._cluster.lock:
            largest = UNKNOWN_LENGTH_CHUNK if remaining is None else 1_000_000
            return self._run.scheduler.auto_chunk_size(remaining, largest)

    # -- ResultSink: called under the cluster lock, so they only queue ----------------------

    def finished(self, start: int, count: int, node: str, value: Any) -> None:
        entry = self._calls.by_start.pop(start, None)
        if entry is not None:
            self._deliveries.put((self._finished, entry[1], count, node, value))

    def given_up(self, given_up: ChunkGivenUp) -> None:
        entry = self._calls.by_start.pop(given_up.start, None)
        if entry is not None:
            self._deliveries.put((self._given_up, entry[1], given_up.failure))

    def ended(self, run: JobRun) -> None:
        owners = [owner for _, owner in self._calls.by_start.values()]
        self._calls.by_start.clear()
        if run.status == "cancelled":
            error: BaseException = CancelledError()
        else:
            self._broken = self._broken_reason(run)
            error = ClusterBroken(self._broken)
        self._deliveries.put((self._ended, owners, error))

    def _broken_reason(self, run: JobRun) -> str:
        if run.console_error:
            return run.console_error
        if run.reason == NO_USABLE_NODE:
            errors = self._cluster.backend.node_errors()
            detail = "; ".join(error if error.startswith(name) else f"{name}: {error}"
                               for name, error in errors.items())
            return f"no node of the cluster is usable{': ' + detail if detail else ''}."
        return "the cluster was shut down."

    # -- the delivery thread ------------------------------------------------------------------

    def _deliver(self) -> None:
        while True:
            try:
                item = self._deliveries.get(timeout=FEED_EVERY_S)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            try:
                if item is not None:
                    item[0](*item[1:])
                with self._cluster.lock:
                    runs = list(self._maps)
                for run in runs:
                    run.fill()
            except Exception as exc:  # a bug of ours: end the job with its sentence rather than hang the caller
                self._cluster.console_fault(exc, "the Python API's delivery thread")
            self._fed.set()

    def _finished(self, owner: Any, count: int, node: str, value: Any) -> None:
        if type(value) is list and len(value) == count:
            self._settle(owner, value, None)
        elif not (isinstance(owner, Future) and owner.cancelled()):
            self._settle(owner, None, RemoteError(
                f"node {node} sent a value that is not the {count} result(s) of its chunk", node, "malformed"))

    def _given_up(self, owner: Any, failure: Failure) -> None:
        self._settle(owner, None, rebuild_exception(failure, frozenset(self._modules)))

    def _ended(self, owners: List[Any], error: BaseException) -> None:
        for owner in owners:
            self._settle(owner, None, error)

    @staticmethod
    def _settle(owner: Any, values: Optional[List[Any]], error: Optional[BaseException]) -> None:
        if isinstance(owner, _MapChunk):
            if owner.run is not None:
                owner.run.arrived(owner, values or [], error)
            return
        if owner.done():
            return
        try:
            if isinstance(error, CancelledError) and owner.cancel():
                return
            if error is not None:
                owner.set_exception(error)
            else:
                owner.set_result(values[0] if values else None)
        except InvalidStateError:  # the caller cancelled it meanwhile
            pass

    # -- shutting down ------------------------------------------------------------------------

    def _finish(self) -> None:
        """Feed the maps to their end, close the job's input, wait for its end, stop the cluster."""
        with self._finish_lock:
            if self._stopped.is_set():
                return
            while self._run.running:
                with self._cluster.lock:
                    if not any(run.feeding for run in self._maps):
                        self._cluster.handle([InputClosed(time.monotonic())])
                        break
                self._fed.wait(FEED_EVERY_S)
                self._fed.clear()
            self._run.written.wait()
            self._deliveries.put(_STOP)
            self._delivery.join()
            self._stopped.set()
            if self._watcher is not None:
                self._watcher.join()
            self._cluster.close()


class _MapRun:
    """One map's input, chunks and results."""

    def __init__(self, executor: ClusterExecutor, fn: Callable[..., Any], iterables: Sequence[Iterable[Any]],
                 chunksize: ChunkSize, timeout: Optional[float], ordered: bool) -> None:
        if chunksize != "auto" and (isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError(f'chunksize must be a positive integer or "auto", not {chunksize!r}')
        self.executor = executor
        self.shipment = executor._ship(fn)
        self.chunksize = chunksize
        self.ordered = ordered
        self.spread = "one" if len(iterables) == 1 else "many"
        self.source: Iterator[Any] = iter(iterables[0]) if len(iterables) == 1 else zip(*iterables)
        self.length = _length(iterables)
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.waiting: Deque[_MapChunk] = deque()
        """Chunks whose results the caller has not taken: all of them in order (ordered), the finished ones
        (unordered)."""
        self.out: Set[_MapChunk] = set()
        """Chunks not finished yet."""
        self.added = 0
        self.exhausted = False
        self.closed = False
        with executor._cluster.lock:
            if executor._closing:
                raise RuntimeError("cannot schedule new calls after shutdown")
            executor._maps.add(self)
        self.fill()

    @property
    def feeding(self) -> bool:
        """More input to send."""
        return not (self.exhausted or self.closed)

    def fill(self) -> None:
        """Send chunks while the window has room (any thread)."""
        with self.lock:
            while self.feeding and self._wants_more():
                self._send_one()

    def _wants_more(self) -> bool:
        capacity = self.executor._capacity(self.chunksize == "auto")
        if len(self.out) >= capacity:
            return False
        outstanding = len(self.waiting) + (0 if self.ordered else len(self.out))
        return self.executor._closing or outstanding < max(WINDOW_CHUNKS, 4 * capacity)

    def _send_one(self) -> None:
        if self.chunksize == "auto":
            size = self.executor._auto_size(None if self.length is None else self.length - self.added)
        else:
            size = int(self.chunksize)
        chunk: Optional[_MapChunk] = None
        try:
            items = list(itertools.islice(self.source, size))
            if not items:
                self._stop_feeding()
                return
            batch = pickle_batch(self.shipment, self.spread, items)
            chunk = _MapChunk(self, len(items))
            chunk.start = self.executor._add(self.shipment, batch, len(items), chunk, feeding=True)
        except Exception as exc:  # the input raised, an item cannot be pickled, or the cluster is gone
            failed = _MapChunk(None, 0)
            failed.error, failed.done = exc, True
            self.waiting.append(failed)
            self._stop_feeding()
            self.changed.notify_all()
            return
        self.added += chunk.count
        self.out.add(chunk)
        if self.ordered:
            self.waiting.append(chunk)

    def _stop_feeding(self) -> None:
        self.exhausted = True
        with self.executor._cluster.lock:
            self.executor._maps.discard(self)

    def arrived(self, chunk: _MapChunk, values: List[Any], error: Optional[BaseException]) -> None:
        """A chunk's values or exception (the delivery thread)."""
        with self.lock:
            if chunk not in self.out:
                return
            self.out.discard(chunk)
            chunk.values, chunk.error, chunk.done = values, error, True
            if not self.ordered:
                self.waiting.append(chunk)
            self.changed.notify_all()

    def results(self) -> Iterator[Any]:
        """The results, as the caller takes them; closing early withdraws the chunks still out."""
        try:
            while True:
                chunk = self._next_chunk()
                if chunk is None:
                    return
                if chunk.error is not None:
                    raise chunk.error
                values, chunk.values = chunk.values, []
                yield from values
        finally:
            self.close()

    def _next_chunk(self) -> Optional[_MapChunk]:
        with self.lock:
            while True:
                if self.waiting and self.waiting[0].done:
                    return self.waiting.popleft()
                if self.exhausted and not self.out and not self.waiting:
                    return None
                while self.feeding and self._wants_more():
                    self._send_one()
                wait = 1.0
                if self.deadline is not None:
                    wait = self.deadline - time.monotonic()
                    if wait <= 0:
                        raise FuturesTimeout("map's results did not come within its timeout")
                self.changed.wait(min(wait, 1.0))

    def close(self) -> None:
        """Stop feeding and let the chunks still out go."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            withdrawn = list(self.out)
            self.out.clear()
        with self.executor._cluster.lock:
            self.executor._maps.discard(self)
        self.executor._withdraw(withdrawn)


def _length(iterables: Sequence[Iterable[Any]]) -> Optional[int]:
    """The number of items when every input knows its length (zip stops at the shortest)."""
    try:
        return min(len(i) for i in iterables)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _start_watching(cluster: Cluster, stopped: threading.Event) -> Optional[threading.Thread]:
    """The live view of `console run` on the terminal, until `stopped`; nothing when not a terminal."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console

    from console.liveview import LiveView

    thread = threading.Thread(target=LiveView(Console(stderr=True)).watch, args=(cluster.snapshot, stopped.wait),
                              name="api-progress", daemon=True)
    thread.start()
    return thread


def open_executor(inventory: Inventory, engine: Optional[str], served: Optional[ServedHere] = None,
                  **settings: Any) -> ClusterExecutor:
    """The executor on the inventory's cluster (or the Dask cluster `engine` names; `served`: the local nodes this
    process serves itself): what `connect()` (console/api.py) returns once it has checked its arguments.
    `settings` are ClusterExecutor's."""
    cluster = open_cluster(inventory, engine, served)
    script = sys.argv[0] if sys.argv else ""
    name = Path(script).stem if script not in ("", "-c", "-m") else "python"
    try:
        return ClusterExecutor(cluster, name=name or "python", **settings)
    except BaseException:
        cluster.close()
        raise
