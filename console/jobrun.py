"""A job's life, whatever runs its chunks: scheduler, journal, values, status, results file, snapshot.

`JobRun` is the one owner of a job's status. It is engine-independent: the
cluster (console/cluster.py) feeds its scheduler events from a backend
(console/backends/) and hands it the `Journal` instructions, under the
cluster's lock. A chunk counts as done once `record` has journalled it. The
console's own faults (journal, results file, reducer, our bugs) end the job
with `console_error`, never a node's fault. No threads here, no sockets.

A job file's run journals its values and writes a results file
(`prepare_job`); the Python API's streaming run (`prepare_stream`) hands each
value to a `ResultSink` instead, and has neither journal nor results file.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Protocol

from console.errors import ConsoleFault, UsageError
from console.format import answer
from console.inventory import PackageSource
from console.jobcode import check_job_code, job_files, raised_at
from console.journal import JournalWriter, journal_path, read_journal
from console.jobspec import JobSpec
from console.rates import History, RateMeter
from console.results import reduce_values, write_results
from console.scheduler import ChunkGivenUp, Journal, Scheduler
from console.snapshot import JobSnapshot
from nodeagent.wire import JobSettings, ValueDecoder

if TYPE_CHECKING:
    from console.packages import PackageResolver

__all__ = ["JobRun", "ChunkValue", "ResultSink", "prepare_job", "prepare_stream", "check_not_running"]


class ChunkValue(NamedTuple):
    """A chunk's value as the node sent it (for the journal) and as decoded (for the result)."""

    raw: bytes
    value: Any


class ResultSink(Protocol):
    """Where a streaming run's outcomes go (the Python API's executor); called under the cluster lock."""

    def finished(self, start: int, count: int, node: str, value: Any) -> None:
        """The chunk of items start .. start+count-1 is done on `node` with this (decoded) value."""

    def given_up(self, given_up: ChunkGivenUp) -> None:
        """The chunk failed for good."""

    def ended(self, run: "JobRun") -> None:
        """The run ended (its status, reason and console_error say how)."""


class JobRun:
    """One job from start to results file."""

    def __init__(self, spec: JobSpec, scheduler: Scheduler, journal: Optional[JournalWriter], settings: JobSettings,
                 decoder: ValueDecoder, started: float, generation: int,
                 custom_reduce: Optional[Callable[[List[Any]], Any]] = None, resumed: int = 0,
                 sink: Optional[ResultSink] = None, packages: Optional[PackageResolver] = None) -> None:
        self.spec = spec
        self.scheduler = scheduler
        self.journal = journal
        """None for a streaming run, which keeps no journal."""
        self.settings = settings
        self.decoder = decoder
        """Decodes chunk values: plain data and the job's result_types only."""
        self.started = started
        self.generation = generation
        self.custom_reduce = custom_reduce
        self.values: Dict[int, Any] = {}
        """Decoded chunk values by first item index (unique across resumed runs, unlike chunk ids)."""
        self.resumed = resumed
        self.journalled_by_node: Dict[str, List[int]] = {}
        """[chunks, items] journalled per node: what counts as done (the scheduler's tallies may count one
        the journal refused)."""
        self.ended: Optional[float] = None
        self.status = "running"
        self.reason = ""
        self.mistake = ""
        """Set when a job mistake stopped the job (its function and its job file disagree): the sentence."""
        self.console_error = ""
        """Set when the console's own side ended the job: what failed, where, and what to do."""
        self.console_traceback = ""
        """The traceback, when that was a bug of ours."""
        self.done_event = threading.Event()
        """Set when the job ended (the scheduler said so, it was cancelled, or the console failed)."""
        self.written = threading.Event()
        """Set once the results file is written (or could not be)."""
        self.document: Optional[Dict[str, Any]] = None
        """The results document, once written."""
        self.answer: Optional[str] = None
        """Its result as people read it, once written (formatted once, shown by every view)."""
        self.rate = RateMeter()
        self.history = History()
        self._reducer_tried = False
        self.sink = sink
        """A streaming run's outcomes go here rather than to the journal and `values`."""
        self.extra_files: List[Dict[str, bytes]] = []
        """Files added to the running job (the Python API's modules), in order; each node gets them before the
        chunks sent after them."""
        self.packages = packages
        """Resolves the job's requirements per node platform (None: the job requires nothing)."""
        self.packages_by_node: Dict[str, Dict[str, Any]] = {}
        """What each node imports the requirements from: {"wheels": ["numpy 2.0.2"], "sent": wheels uploaded}."""

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def journalled_chunks(self) -> int:
        """Chunks of this run whose result is journalled."""
        return sum(chunks for chunks, _ in self.journalled_by_node.values())

    @property
    def journalled_items(self) -> int:
        """Items in those chunks."""
        return sum(items for _, items in self.journalled_by_node.values())

    def record(self, done: Journal) -> str:
        """Journal a chunk's result; from now on it counts. ConsoleFault when the journal cannot be written.

        The first value is tried on a custom reducer at once: a reducer that refuses it is a job mistake
        (its sentence is returned) found before the cluster spends the whole job on it."""
        value: ChunkValue = done.result
        if self.sink is not None:
            self.sink.finished(done.start, done.count, done.node, value.value)
        else:
            assert self.journal is not None, "a job file's run has a journal"
            self.journal.write(done.chunk, done.start, done.count, done.node, value.raw)
            self.values[done.start] = value.value
        tally = self.journalled_by_node.setdefault(done.node, [0, 0])
        tally[0] += 1
        tally[1] += done.count
        if self.custom_reduce is not None and not self._reducer_tried:
            self._reducer_tried = True
            return self._try_reducer(done, value.value)
        return ""

    def _try_reducer(self, done: Journal, value: Any) -> str:
        try:
            self.custom_reduce([value])  # type: ignore[misc]
        except Exception as exc:  # the job's reducer and its function disagree
            where = raised_at(exc)
            item = self.spec.input.slice(done.start, 1)
            return (f"{self.spec.path}: [job] reduce {self.spec.reduce} raised {type(exc).__name__}: {exc} "
                    f"({where.filename}:{where.lineno}) on its first value, chunk {done.chunk}'s (a "
                    f"{type(value).__name__}, from item {item[0] if item else None!r} on) that {self.spec.function} "
                    "returned; make the reducer take a list of such values (one per chunk, in item order), then "
                    "run the job again with --resume.")
        return ""

    def give_up(self, given_up: ChunkGivenUp) -> None:
        """A chunk failed for good (the scheduler keeps the failure; a streaming run's sink hears of it)."""
        if self.sink is not None:
            self.sink.given_up(given_up)

    def add_files(self, files: Dict[str, bytes]) -> None:
        """Ship more files with the running job, before any chunk that needs them (caller holds the lock)."""
        self.extra_files.append(files)

    def end(self, status: str, reason: str = "", mistake: str = "") -> None:
        """The job is over: close the journal, wake whoever waits."""
        self.status = status
        self.reason = reason
        self.mistake = mistake
        self.ended = time.monotonic()
        if self.journal is not None:
            self.journal.close()
        if self.sink is not None:
            self.sink.ended(self)
        self.done_event.set()

    def fault(self, exc: BaseException, where: str) -> None:
        """End the job for a fault of the console's own side, with its sentence (and our traceback for a bug)."""
        if not self.running:
            return
        if isinstance(exc, ConsoleFault):
            self.console_error = str(exc)
        else:
            self.console_error = (f"internal error in {where}: {type(exc).__name__}: {exc}. This is a bug in the "
                                  "console (the traceback follows); every chunk journalled so far is kept, so "
                                  "--resume continues the job.")
            import traceback

            self.console_traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.end("failed")

    def document_under_lock(self, node_errors: Mapping[str, str]) -> Dict[str, Any]:
        """The results file's content, except the result itself; the caller holds the cluster lock."""
        scheduler = self.scheduler
        elapsed = (self.ended or time.monotonic()) - self.started
        document: Dict[str, Any] = {"job": self.spec.name, "status": self.status, "result": None}
        document.update({
            "chunks": {"total": _plus(scheduler.chunks_total, self.resumed),
                       "done": self.journalled_chunks + self.resumed, "failed": scheduler.counts["failed"]},
            "items": {"total": scheduler.total_items, "done": self.journalled_items + scheduler.resumed_items},
            "nodes": {name: {"chunks": self.journalled_by_node.get(name, (0, 0))[0],
                             "items": self.journalled_by_node.get(name, (0, 0))[1],
                             "busy_seconds": round(t.busy_seconds, 3)}
                      for name, t in scheduler.nodes.items()},
            "failures": [{"chunk": f.chunk, "node": f.node, "attempt": f.attempt, "error": f.error,
                          "traceback": f.traceback} for f in scheduler.failures if f.final],
            "retried_attempts": sum(1 for f in scheduler.failures if not f.final),
            "attempts": [{"chunk": a.chunk, "attempt": a.attempt, "node": a.node, "worker": a.worker,
                          "start_s": round(a.start - self.started, 4), "end_s": round(a.end - self.started, 4),
                          "outcome": a.outcome} for a in scheduler.attempts],
            "resumed_chunks": self.resumed,
            "elapsed_s": round(elapsed, 3),
        })
        if node_errors:
            document["node_errors"] = dict(node_errors)
        if self.packages_by_node:
            document["packages"] = dict(self.packages_by_node)
        if self.reason:
            document["reason"] = self.reason
        if self.mistake:
            document["mistake"] = self.mistake
        return document

    def reduce_into(self, document: Dict[str, Any], values: Mapping[int, Any]) -> None:
        """Fold the chunk values into the document's result; a raising reducer is the console's fault."""
        if document["status"] not in ("ok", "failed") or not values or self.console_error or self.mistake:
            return
        try:
            document["result"] = reduce_values(self.spec.reduce, values, self.custom_reduce)
        except Exception as exc:  # the job's reducer raised: the console's side, not a node's
            where = raised_at(exc)
            document["status"] = "failed"
            self.console_error = (
                f"the reducer {self.spec.reduce} of {self.spec.path} raised {type(exc).__name__}: {exc} "
                f"({where.filename}:{where.lineno}); fix it, then run the job again with --resume: every "
                "chunk is journalled, so only the reducing runs again.")

    def write_results(self, document: Dict[str, Any]) -> None:
        """Write the results file; whatever happens, `written` is set, so nobody waits forever."""
        try:
            if self.console_error:
                document["console_error"] = self.console_error
            if self.spec.output is not None:
                write_results(self.spec.output, document)
        except OSError as exc:
            cause = f"{self.console_error} " if self.console_error else ""
            self.console_error = document["console_error"] = cause + (
                f"cannot write the results file {self.spec.output} ({exc.strerror or exc}); make room or fix the "
                f"directory, then run the job again with --resume: the journal {self.journal.path} holds every "
                "finished chunk.")
        finally:
            if document.get("result") is not None:
                self.answer = answer(document["result"], str(self.spec.output) if self.spec.output else None)
            self.document = document
            self.written.set()

    def snapshot(self) -> JobSnapshot:
        """The job as the UIs show it; the caller holds the cluster lock."""
        scheduler = self.scheduler
        elapsed = (self.ended or time.monotonic()) - self.started
        done_items = self.journalled_items + scheduler.resumed_items
        rate = self.rate.rate() if self.running else (self.journalled_items / elapsed if elapsed else 0.0)
        left = scheduler.total_items - done_items
        eta = left / rate if rate > 0 and self.running else (0.0 if left == 0 else None)
        return JobSnapshot(
            name=self.spec.name, status=self.status,  # type: ignore[arg-type]
            items_total=scheduler.total_items, items_done=done_items,
            chunks_total=_plus(scheduler.chunks_total, self.resumed),
            chunks_queued=scheduler.queued, chunks_in_flight=scheduler.counts["sent"],
            chunks_done=self.journalled_chunks + self.resumed, chunks_failed=scheduler.counts["failed"],
            elapsed_s=elapsed, items_per_s=rate, eta_s=eta,
            output_path=str(self.spec.output) if self.spec.output else None,
            error=self.console_error or None, answer=self.answer, history=tuple(self.history.samples),
        )


def prepare_job(spec: JobSpec, resume: bool, generation: int, prefetch: int,
                packages: PackageSource = PackageSource()) -> JobRun:
    """Check the job's code, read its journal on --resume, and set up its scheduler and journal; `packages`
    is where the job's requirements come from."""
    custom = check_job_code(spec)
    path = journal_path(spec.output)
    decoder = ValueDecoder(spec.result_types)
    entries = read_journal(path, spec, decoder) if resume else []
    scheduler = Scheduler(len(spec.input), spec.chunk_size, spec.retries, prefetch,
                          done_ranges=[(e.start, e.count) for e in entries])
    settings = JobSettings(spec.name, spec.function, spec.mode, spec.combine, job_files(spec), spec.timeout, None)
    run = JobRun(spec, scheduler, JournalWriter(path, spec.fingerprint(), resume), settings, decoder,
                 time.monotonic(), generation, custom, resumed=len(entries),
                 packages=_resolver(spec, packages))
    for entry in entries:
        run.values[entry.start] = entry.value
    return run


def prepare_stream(spec: JobSpec, generation: int, prefetch: int, sink: ResultSink,
                   packages: PackageSource = PackageSource()) -> JobRun:
    """A streaming run for the Python API: chunks are added as the user submits work, values go to `sink`."""
    scheduler = Scheduler(0, None, spec.retries, prefetch, streaming=True, stop_on_mistake=False)
    settings = JobSettings(spec.name, spec.function, spec.mode, spec.combine, {}, spec.timeout, None)
    return JobRun(spec, scheduler, None, settings, ValueDecoder(spec.result_types), time.monotonic(), generation,
                  sink=sink, packages=_resolver(spec, packages))


def _plus(total: Optional[int], resumed: int) -> Optional[int]:
    """A chunk total that counts the chunks resumed from the journal (None stays unknown)."""
    return None if total is None else total + resumed


def _resolver(spec: JobSpec, packages: PackageSource) -> Optional[PackageResolver]:
    """The job's wheels per node platform; None (and console.packages not even imported) when it requires
    nothing."""
    if not spec.requires:
        return None
    from console.packages import PackageResolver

    return PackageResolver(spec.requires, packages)


def check_not_running(job: Optional[JobRun]) -> None:
    """Refuse a second job while one runs."""
    if job is not None and job.running:
        raise UsageError(f"job {job.spec.name!r} is still running; cancel it first.")
