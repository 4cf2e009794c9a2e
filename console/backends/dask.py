"""An existing Dask cluster as the backend: one task per chunk, placed by Dask on the workers it has.

The job's scheduler sees the whole Dask cluster as one node, "dask", whose
pool is all the cluster's threads: credit keeps threads x prefetch chunks
submitted, so a huge job is never submitted at once, and retries, tail
re-runs, the journal, --resume and the results file are the same as on the
agents. Each attempt is a task with a deterministic key; results are gathered
with `as_completed` (each future once) and decoded with the job's
ValueDecoder. Dask has no task timeout: a task out longer than the job's
timeout is cancelled here and reported like an agent's timeout (Dask cannot
stop a task already running; its thread runs on until the function returns).
A task's clock starts once fewer tasks than the cluster has threads were
submitted before it and are still out: roughly when a thread takes it.
A worker lost mid-chunk is Dask's to reschedule; a chunk that keeps killing
workers ends in KilledWorker and fails with that reason.

The job's code reaches the workers with `upload_file`: the agent bundle
(nodeagent and the jobs package) and a zip of the job's files; the task
function itself travels by value. Dask unpickles what its workers send, so a
Dask cluster is trusted the way the console trusts itself.
Needs the optional extra: pip install -e ".[dask]".
"""

from __future__ import annotations

import io
import pickle
import socket
import tempfile
import threading
import time
import urllib.parse
import uuid
import zipfile
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Sequence, Tuple

from console.atomicfile import write_atomically
from console.bundle import bundle
from console.errors import UsageError
from console.jobrun import ChunkValue, JobRun
from console.scheduler import Cancel, ChunkFailed, ChunkFinished, Event, NodeDraining, NodeJoined, SendChunks
from console.snapshot import NodeSnapshot
from nodeagent.cache import cache_dir, content_hash, mark_used
from nodeagent.wire import RefusedType, decode_error_detail

if TYPE_CHECKING:
    from console.cluster import Cluster

__all__ = ["DaskBackend", "DASK_NODE", "dask_address"]

DASK_NODE = "dask"
"""The one node the job's scheduler sees."""
CONNECT_TIMEOUT_S = 10.0
POLL_S = 0.05
"""The longest the backend's loop sleeps; a finished task or a new instruction wakes it at once."""
INFO_EVERY_S = 1.0


def _probe(address: str) -> None:
    """Connect to a tcp:// address once, so that nothing listening there (refused), no route to it or no
    answer within CONNECT_TIMEOUT_S raises OSError at once: Client retries a refused connection until its
    timeout, so a wrong port took that long to be said."""
    parts = urllib.parse.urlsplit(address)
    if parts.scheme == "tcp" and parts.hostname and parts.port:
        socket.create_connection((parts.hostname, parts.port), timeout=CONNECT_TIMEOUT_S).close()


def _code_zip() -> Path:
    """The agent bundle's code without its __main__.py, rpyc and cloudpickle (upload_file imports every
    top-level module it holds; the workers have their own cloudpickle)."""
    digest, data = bundle()
    path = Path(cache_dir()) / f"dask-code-{digest}.zip"
    if not path.exists():
        source = zipfile.ZipFile(io.BytesIO(data))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as code:
            for info in source.infolist():
                if info.filename != "__main__.py" and not info.filename.startswith(("rpyc/", "cloudpickle/")):
                    code.writestr(info, source.read(info))
        write_atomically(path, out.getvalue())
    else:
        mark_used((str(path),))
    return path


def _upload_files(client: Any, files: Dict[str, bytes]) -> None:
    """Give every Dask worker these job files ({relative path: content}), as one zip on its path."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in sorted(files.items()):
            zipped.writestr(name, data)
    _upload(client, f"job-{content_hash(files)}", archive.getvalue())


def _upload(client: Any, stem: str, data: bytes) -> None:
    """Give every Dask worker this zip under a name of its own: a worker writing a zip over one it imported
    from before can be read half-written, and its next import of an upload then fails with a KeyError from
    zipimport's cache (the failure of dask/distributed#8708; seen once here, a test's second connection)."""
    with tempfile.TemporaryDirectory(prefix="console-upload-") as directory:
        path = Path(directory) / f"{stem}-{uuid.uuid4().hex[:12]}.zip"
        path.write_bytes(data)
        client.upload_file(str(path))


def dask_address(engine: str) -> str:
    """"dask://host:8786" or "tcp://host:8786" -> the scheduler address for Client."""
    if engine.startswith("dask://"):
        return "tcp://" + engine[len("dask://"):]
    if "://" in engine:
        return engine
    return "tcp://" + engine


class DaskBackend:
    """The chunks of the current job as tasks on a Dask cluster."""

    def __init__(self, address: str) -> None:
        self.address = dask_address(address)
        self.cluster: Optional["Cluster"] = None
        self.state = "pending"
        self.error: Optional[str] = None
        self.workers: Dict[str, Dict[str, Any]] = {}
        """The scheduler's view of each worker, refreshed every second: address -> info."""
        self.done_by_worker: Dict[str, List[float]] = {}
        """[chunks, items, seconds] each Dask worker ran and the journal took, by worker name."""
        self.log_lines: Deque[str] = deque(maxlen=200)
        self.outbox: Deque[Any] = deque()
        self.draining = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._futures: Dict[str, Tuple[int, int, int]] = {}
        """Task key -> (chunk, attempt, items), in the order the tasks were submitted."""
        self._clock_from: Dict[str, float] = {}
        """Task key -> when its timeout clock started (see the module docstring)."""
        self._by_chunk: Dict[int, Any] = {}
        self._generation = -1
        self._files_sent = 0
        """How many of the job's extra_files the workers have."""

    # -- Backend ------------------------------------------------------------------------

    def attach(self, cluster: "Cluster") -> None:
        self.cluster = cluster

    def bootstrap(self, nodes: Optional[Sequence[str]] = None) -> None:
        """Connect to the scheduler (again) on a thread of its own."""
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._wake.set()
            self._thread.join(CONNECT_TIMEOUT_S)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dask-backend", daemon=True)
        self._thread.start()

    def reconnect(self, node: str) -> None:
        self.bootstrap()

    def drain(self, node: str) -> List[Event]:
        if node != DASK_NODE and node not in self._worker_names():
            raise UsageError(f"no node named {node!r}.")
        self.draining = True
        return [NodeDraining(DASK_NODE, time.monotonic())]

    def deliver(self, instruction: Any) -> None:
        self.outbox.append(instruction)
        self._wake.set()

    def job_started(self) -> None:
        self._wake.set()

    def tick(self, now: float, job: Optional[JobRun]) -> None:
        pass

    def all_failed(self) -> bool:
        return self.state == "failed"

    def node_errors(self) -> Dict[str, str]:
        return {DASK_NODE: self.error} if self.state == "failed" and self.error else {}

    def snapshots(self, job: Optional[JobRun]) -> Tuple[NodeSnapshot, ...]:
        if not self.workers or self.state != "ready":
            return (NodeSnapshot(name=DASK_NODE, transport="dask", address=self.address, tags=(),
                                 state=self.state, error=self.error, log=tuple(self.log_lines)[-50:]),)  # type: ignore[arg-type]
        return tuple(self._worker_snapshot(address, info) for address, info in sorted(self.workers.items()))

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(CONNECT_TIMEOUT_S)

    # -- the backend's thread ---------------------------------------------------------------

    def _run(self) -> None:
        assert self.cluster is not None, "attach the backend to a cluster first"
        client = None
        self.error = None
        self._generation = -1
        try:
            self.state = "connecting"
            client = self._connect()
            self.state = "ready"
            self.log_lines.append(f"connected to {self.address}: {len(self.workers)} worker(s)")
            self._serve(client)
        except Exception as exc:  # the cluster could not be reached or used: the "node" fails with the reason
            self.error = self.error or f"dask ({self.address}): {type(exc).__name__}: {exc}"
            self.state = "failed"
        finally:
            self.cluster.node_lost(DASK_NODE, self.error or "disconnected from the Dask cluster")
            if client is not None:
                for future in list(self._by_chunk.values()):
                    future.cancel()
                client.close()
            if self.state != "failed":
                self.state = "pending"

    def _connect(self) -> Any:
        try:
            from distributed import Client
        except ImportError:
            self.error = ("the Dask engine needs dask.distributed, an optional extra: pip install -e \".[dask]\" "
                          "(or pip install \"dask[distributed]\").")
            raise
        try:
            _probe(self.address)
            client = Client(self.address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            self.error = (f"dask ({self.address}): cannot reach the scheduler ({exc}); start one with "
                          "'dask scheduler' and workers with 'dask worker ADDRESS', or check the address.")
            raise
        try:
            client.get_versions(check=True)
        except Exception as exc:  # distributed raises ValueError on a mismatch; say so in one sentence
            client.close()
            self.error = (f"dask ({self.address}): the cluster's versions do not match this console's "
                          f"({str(exc).splitlines()[0]}); install the same dask and distributed everywhere.")
            raise
        import cloudpickle

        from console.backends import dask_task

        cloudpickle.register_pickle_by_value(dask_task)
        code = _code_zip()
        _upload(client, code.stem, code.read_bytes())
        self._refresh(client)
        return client

    def _serve(self, client: Any) -> None:
        from distributed import as_completed

        gathered = as_completed(loop=client.loop)
        next_info = 0.0
        while not self._stop.is_set():
            self._join_job(client)
            self._flush(client, gathered)
            if gathered.has_ready():
                self.cluster.handle(self._events(gathered.next_batch(block=False)))
            self._expire()
            now = time.monotonic()
            if now >= next_info:
                self._refresh(client)
                next_info = now + INFO_EVERY_S
            self._wake.wait(POLL_S)
            self._wake.clear()

    def _refresh(self, client: Any) -> None:
        self.workers = dict(client.scheduler_info().get("workers", {}))

    def _threads(self) -> int:
        return sum(int(info.get("nthreads", 1)) for info in self.workers.values()) or 1

    def _worker_names(self) -> List[str]:
        return [str(info.get("name", address)) for address, info in self.workers.items()]

    def _join_job(self, client: Any) -> None:
        job = self.cluster.job
        if job is None or job.generation == self._generation or not job.running:
            return
        self._generation = job.generation
        self._futures.clear()
        self._clock_from.clear()
        self._by_chunk.clear()
        self.done_by_worker.clear()
        self._files_sent = 0
        if job.settings.files:
            _upload_files(client, job.settings.files)
        now = time.monotonic()
        events: List[Event] = [NodeJoined(DASK_NODE, self._threads(), now)]
        if self.draining:
            events.append(NodeDraining(DASK_NODE, now))
        self.cluster.handle(events)

    def _flush(self, client: Any, gathered: Any) -> None:
        from console.backends.dask_task import run_chunk_task

        job = self.cluster.job
        while self.outbox:
            instruction = self.outbox.popleft()
            if isinstance(instruction, Cancel):
                for chunk in instruction.chunks:
                    future = self._by_chunk.pop(chunk, None)
                    if future is not None:
                        self._futures.pop(future.key, None)
                        self._clock_from.pop(future.key, None)
                        future.cancel()
            elif isinstance(instruction, SendChunks) and job is not None:
                while self._files_sent < len(job.extra_files):  # files added before these chunks were
                    _upload_files(client, job.extra_files[self._files_sent])
                    self._files_sent += 1
                settings = job.settings
                for order in instruction.chunks:
                    key = f"chunk-{job.spec.fingerprint()}-{job.generation}-{order.chunk}-{order.attempt}"
                    items = pickle.dumps(job.spec.input.slice(order.start, order.count))
                    future = client.submit(run_chunk_task, settings.fn, settings.mode, settings.combine, (),
                                           items, key=key, pure=False, retries=0)
                    self._futures[key] = (order.chunk, order.attempt, order.count)
                    self._by_chunk[order.chunk] = future
                    gathered.add(future)
                    future.add_done_callback(self._finished)

    def _finished(self, future: Any) -> None:
        """Called in the client's thread when a task ends: gather at once rather than at the next poll."""
        self._wake.set()

    def _events(self, futures: Sequence[Any]) -> List[Event]:
        job = self.cluster.job
        now = time.monotonic()
        events: List[Event] = []
        for future in futures:
            known = self._futures.pop(future.key, None)
            self._clock_from.pop(future.key, None)
            if known is None or job is None:
                continue  # cancelled, timed out or of an earlier job: its answer does not count
            chunk, attempt, count = known
            self._by_chunk.pop(chunk, None)
            if future.status == "cancelled":
                continue
            if future.status == "error":
                exc = future.exception()
                kind = "died" if type(exc).__name__ == "KilledWorker" else "error"
                error = (f"the chunk kept killing Dask workers ({exc})" if kind == "died"
                         else f"{type(exc).__name__}: {exc}")
                events.append(ChunkFailed(DASK_NODE, chunk, attempt, kind, error, "", 0.0, now))
                continue
            status, raw, error, tb, seconds, worker = future.result()
            if status == "mistake":
                events.append(ChunkFailed(DASK_NODE, chunk, attempt, "mistake", f"{job.spec.path}: {error}", "",
                                          seconds, now, final=True, worker=str(worker)))
                continue
            if status != "ok":
                events.append(ChunkFailed(DASK_NODE, chunk, attempt, "error", error, tb, seconds, now,
                                          detail=decode_error_detail(raw), worker=str(worker)))
                continue
            try:
                value = ChunkValue(raw, job.decoder.loads(raw))
            except RefusedType as refused:
                events.append(ChunkFailed(DASK_NODE, chunk, attempt, "refused", job.spec.refused_type(
                    refused.name, f"chunk {chunk}'s value from Dask worker {worker}"), "", seconds, now, final=True,
                    worker=str(worker)))
                continue
            tally = self.done_by_worker.setdefault(worker, [0, 0, 0.0])
            tally[0] += 1
            tally[1] += count
            tally[2] += seconds
            events.append(ChunkFinished(DASK_NODE, chunk, attempt, value, seconds, now, str(worker)))
        return events

    def _expire(self) -> None:
        job = self.cluster.job
        if job is None or not self._futures:
            return
        now = time.monotonic()
        for key in list(self._futures)[:self._threads()]:
            self._clock_from.setdefault(key, now)
        late = [(key, known) for key, known in self._futures.items()
                if now - self._clock_from.get(key, now) > job.spec.timeout]
        events: List[Event] = []
        for key, (chunk, attempt, _) in late:
            del self._futures[key]
            del self._clock_from[key]
            future = self._by_chunk.pop(chunk, None)
            if future is not None:
                future.cancel()
            events.append(ChunkFailed(DASK_NODE, chunk, attempt, "timeout",
                                      f"the chunk ran past its timeout of {job.spec.timeout:g} s (its Dask task "
                                      "was cancelled)", "", job.spec.timeout, now))
        if events:
            self.cluster.handle(events)

    def _worker_snapshot(self, address: str, info: Dict[str, Any]) -> NodeSnapshot:
        metrics = info.get("metrics", {})
        name = str(info.get("name", address))
        done = self.done_by_worker.get(name, [0, 0, 0.0])
        memory, limit = metrics.get("memory"), info.get("memory_limit")
        busy = int(metrics.get("executing", 0) or 0)
        return NodeSnapshot(
            name=name, transport="dask", address=address, tags=(),
            state="draining" if self.draining else "busy" if busy else "ready",  # type: ignore[arg-type]
            os=None, arch=None, python=None, cores=int(info.get("nthreads", 1)),
            workers=int(info.get("nthreads", 1)), workers_busy=busy,
            cpu_percent=metrics.get("cpu"), mem_used=memory, mem_total=limit,
            mem_percent=100.0 * memory / limit if memory is not None and limit else None,
            metrics_source="dask", chunks_done=int(done[0]), items_done=int(done[1]), busy_seconds=done[2],
            log=tuple(self.log_lines)[-50:],
        )
