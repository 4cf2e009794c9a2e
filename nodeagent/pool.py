"""The agent's process pool: run chunks, time them out, survive dying workers.

`multiprocessing.Pool` hangs when a worker is SIGKILLed and
`ProcessPoolExecutor` breaks as a whole, so this pool keeps one pipe per
worker and watches each process's sentinel: a worker that dies fails only the
chunk it held and is replaced; a chunk past its timeout has its worker killed.
One manager thread owns the workers; callers only queue tasks and take outcomes.
"""

import os
import pickle
import select
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, List, NamedTuple, Optional, Sequence, Tuple

from nodeagent.forkerlink import ForkedWorker, ForkerLink, readable
from nodeagent.wire import ChunkOutcome
from nodeagent.worker import PipeEnds, worker_main

__all__ = ["Task", "ChunkPool", "default_start_method", "wait_for_any"]

WINDOWS = os.name == "nt"
WINDOWS_WAIT_LIMIT = 63 if sys.version_info < (3, 13) else None
"""WaitForMultipleObjects takes at most 64 handles; Python before 3.13 refuses more than 63 at once."""
SLICE_S = 0.05
"""When handles must be waited on in groups, how long the first group is waited on before the others are polled."""


class Task(NamedTuple):
    """One chunk attempt to run."""

    chunk: int
    attempt: int
    fn_ref: str
    mode: str
    combine: str
    paths: tuple
    items: bytes
    timeout: float


def default_start_method() -> str:
    """spawn everywhere: Windows has nothing else, fork would hand the workers the
    agent's protocol fds and locks held by its threads, and forkserver listens on a
    named unix socket, which anyone on the node could connect to. On POSIX the pool's
    forker forks each worker (nodeagent/forker.py), not multiprocessing."""
    return "spawn"


PIPELINE_BELOW_S = 0.5
"""A worker whose last chunk ran shorter than this gets its next task while it still runs one: the task waits
in its pipe, so it starts the moment the other ends. Handing it over after the reply took 0.5 ms a chunk here
(the agent's thread woken on busy cores), 1 % of 50 ms chunks, while `multiprocessing.Pool`'s workers read
their next task at once. A long chunk gains nothing by it and would keep its successor from an idle worker."""
PIPELINE_AHEAD_S = 0.02
"""More than one task waits in a worker's pipe only while they add up to this much of its work (by its last
chunk's time): a worker of millisecond chunks then runs a burst of them for each time the agent's threads are
woken, where one task at a time cost two wake-ups a chunk (on a machine with a hundred agents, each on cold
caches); at a job's tail a pipe holds back at most this much work from an idle worker."""
PIPELINE_MAX_BYTES = 4096
"""Bytes that may wait in a worker's pipe: the write must not block while the worker runs a chunk (a pipe
holds 64 KB on Linux, multiprocessing's Windows pipes 8 KB)."""


class _Worker:
    __slots__ = ("slot", "process", "inbox", "conn", "tasks", "sizes", "started", "last_s", "stopped")

    def __init__(self, slot: int, process: Any, inbox: Any, conn: Any) -> None:
        self.slot = slot
        """Its place in the pool, kept by the worker that replaces it (a lane of the job's timeline)."""
        self.process = process
        self.inbox = inbox
        """Where the agent writes the worker's chunks."""
        self.conn = conn
        """Where the worker's replies arrive."""
        self.tasks: Deque[Task] = deque()
        """Sent to it, in order: the first runs, the others wait in its pipe."""
        self.sizes: Deque[int] = deque()
        """The bytes each of `tasks` took in its pipe (`sent`, `ended` and `forget` keep the two in step)."""
        self.started = 0.0
        """When the first of `tasks` started (as the agent saw it)."""
        self.last_s: Optional[float] = None
        """How long its last chunk ran."""
        self.stopped = False
        """Its process killed and its fds closed, once (`close` may meet the manager thread replacing it)."""

    @property
    def task(self) -> Optional[Task]:
        """The task it is running, if any."""
        return self.tasks[0] if self.tasks else None

    def sent(self, task: Task, size: int) -> None:
        """`task`, of `size` bytes, is written to its pipe now."""
        if not self.tasks:
            self.started = time.monotonic()
        self.tasks.append(task)
        self.sizes.append(size)

    def ended(self) -> Task:
        """The task it was running is over (the next in its pipe, if any, runs now): that task."""
        self.sizes.popleft()
        return self.tasks.popleft()

    def forget(self) -> None:
        """Nothing sent to it is its any more (it is being replaced)."""
        self.tasks.clear()
        self.sizes.clear()

    def may_take_next(self, size: int) -> bool:
        """Whether a task of `size` bytes may wait in its pipe behind those it has: one behind a short chunk,
        more while they come to PIPELINE_AHEAD_S of its work, all within PIPELINE_MAX_BYTES."""
        waiting = len(self.tasks) - 1
        return (waiting >= 0 and self.last_s is not None and self.last_s < PIPELINE_BELOW_S
                and sum(self.sizes) - self.sizes[0] + size <= PIPELINE_MAX_BYTES
                and (waiting == 0 or (waiting + 1) * self.last_s <= PIPELINE_AHEAD_S))

    def order(self) -> Tuple[int, float]:
        """Of workers that may take a task, the first has the fewest, then the chunk that should end first."""
        return len(self.tasks), self.started + (self.last_s or 0.0)


class ChunkPool:
    """A fixed number of worker processes fed from one queue of tasks."""

    def __init__(self, workers: int, start_method: Optional[str] = None,
                 on_failure: Optional[Callable[[str], None]] = None, forker: Optional[ForkerLink] = None) -> None:
        """`on_failure(traceback)` is called if the manager thread itself fails (a bug of ours):
        the agent exits on it, so the console sees a lost node instead of chunks that never end.

        `start_method` names a multiprocessing start method to start the workers with instead of the
        agent's own way (forked by the pool's forker on POSIX, multiprocessing's spawn on Windows).

        `forker`: the agent's, shared by its pools (a job's pool then starts in milliseconds); without one the
        pool starts its own, and closes it with itself."""
        self.size = workers
        self._on_failure = on_failure
        self._owns_forker = forker is None
        self._forker = forker or (ForkerLink() if start_method is None and not WINDOWS else None)
        self._ctx: Any = None
        """multiprocessing's context, where it starts the workers (Windows, or `start_method`); imported only
        then, since the forker's workers and the POSIX pool's pipes need none of it (~5 ms of an agent's start)."""
        if self._forker is None:
            import multiprocessing

            self._ctx = multiprocessing.get_context(start_method or default_start_method())
        self._lock = threading.Lock()
        self._done_cond = threading.Condition(self._lock)
        self._pending: Deque[Task] = deque()
        self._cancelled: set = set()
        self._unwanted: set = set()
        """Cancelled chunks already in a worker's pipe: they run (a worker is worth more), their outcome is
        dropped."""
        self._outcomes: List[ChunkOutcome] = []
        self._answer = False
        """An outcome arrived that a waiting `take` should return now: the manager wakes it before it blocks."""
        self._head: Optional[Tuple[Task, bytes]] = None
        """The first pending task and its message for a worker's pipe, kept while no worker may take it."""
        self._closed = False
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False) if WINDOWS else (_pipe(),) * 2
        self._workers: List[_Worker] = [self._start_worker(slot) for slot in range(workers)]
        self.replaced = 0
        self._thread = threading.Thread(target=self._manage, name="pool-manager", daemon=True)
        self._thread.start()

    # -- the callers' side ------------------------------------------------------

    def submit(self, tasks: Sequence[Task]) -> None:
        """Queue tasks; they start as workers free up. The manager is woken only when a worker can take one
        now (idle, or its pipe free for the next short chunk): a busy one's reply wakes it anyway, and it hands
        out the queue's next task then (the steady state)."""
        if not tasks:
            return
        with self._lock:
            self._pending.extend(tasks)
            ready = any(not w.tasks or w.may_take_next(len(tasks[0].items)) for w in self._workers)
        if ready:
            self._wake()

    def cancel(self, chunks: Sequence[int]) -> None:
        """Forget these chunks: drop them from the queue, kill workers running them."""
        with self._lock:
            self._cancelled.update(chunks)
        self._wake()

    def take(self, wait: float, linger: float = 0.0) -> List[ChunkOutcome]:
        """Outcomes finished so far, waiting up to `wait` seconds for the first one.

        Then, for up to `linger` seconds more, later outcomes are waited for too while at least half the
        workers still have a next task queued and no fewer tasks are queued than outcomes wait: one reply carries
        several outcomes (a wake-up of the agent and of the console for each chunk costs the busy workers'
        cores), and the queue is refilled before a worker runs short. A pool whose queue is low (one worker,
        the job's tail) answers at once."""
        with self._done_cond:
            if not self._outcomes and wait > 0:
                self._done_cond.wait(wait)
            if self._outcomes and linger > 0:
                deadline = time.monotonic() + linger
                while self._worth_waiting() and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._done_cond.wait(left)
            outcomes, self._outcomes = self._outcomes, []
            return outcomes

    def _worth_waiting(self) -> bool:
        """Whether the queue holds enough that the outcomes may wait for more (under the lock): tasks no idle
        worker is about to take, for half the workers, and no fewer of them than outcomes waiting."""
        later = self.queued() - sum(1 for w in self._workers if not w.tasks)
        return 2 * later >= self.size and later >= len(self._outcomes)

    def busy(self) -> int:
        """Workers running a chunk now."""
        return sum(1 for w in self._workers if w.task is not None)

    def queued(self) -> int:
        """Tasks not started: waiting in the queue or in a worker's pipe."""
        return len(self._pending) + sum(len(w.tasks) - 1 for w in self._workers if w.tasks)

    def describe(self) -> str:
        """One line on the pool's state, for the log of an agent taken for stuck."""
        with self._lock:
            workers = ", ".join("%d: pid %s %s%s" % (
                w.slot, w.process.pid, "alive" if w.process.is_alive() else "dead",
                " running chunk %d for %.0f s, %d more sent" % (w.tasks[0].chunk, time.monotonic() - w.started,
                                                                 len(w.tasks) - 1) if w.tasks else " idle")
                for w in self._workers)
            return "manager %s, %d queued, %d outcomes unsent; workers %s" % (
                "alive" if self._thread.is_alive() else "DEAD", len(self._pending), len(self._outcomes), workers)

    def close(self) -> None:
        """Kill every worker and stop the manager thread."""
        self._closed = True
        self._wake()
        self._thread.join(5)
        if self._forker is not None and self._owns_forker:
            self._forker.close()  # it kills the workers it forked
        for worker in self._workers:  # all at once, then each waited for
            if worker.process.is_alive():
                worker.process.kill()
        for worker in self._workers:
            self._stop_worker(worker)

    # -- the manager thread -----------------------------------------------------

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"")
        except OSError:
            pass

    def _start_worker(self, slot: int) -> _Worker:
        # Two one-way pipes, not Pipe(duplex=True): that one is a socketpair.
        if self._forker is None:
            task_r, task_w = self._ctx.Pipe(duplex=False)
            reply_r, reply_w = self._ctx.Pipe(duplex=False)
            process: Any = self._ctx.Process(target=worker_main, args=(task_r, reply_w), daemon=True)
            process.start()
            task_r.close()
            reply_w.close()
            return _Worker(slot, process, task_w, reply_r)
        if not self._forker.alive():  # killed, say: its workers went with it, and a new one forks theirs
            if self._owns_forker:
                self._forker.close()
            self._forker, self._owns_forker = self._forker.again(), True
        task_fd, ours_w = os.pipe()
        ours_r, reply_fd = os.pipe()
        ends = PipeEnds(ours_r, ours_w)  # replies read, tasks written
        try:
            process = self._forker.spawn(task_fd, reply_fd)
        except BaseException:
            ends.close()
            raise
        finally:
            os.close(task_fd)
            os.close(reply_fd)
        return _Worker(slot, process, ends, ends)

    def _stop_worker(self, worker: _Worker) -> None:
        with self._lock:
            if worker.stopped:
                return
            worker.stopped = True
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(2)
        if isinstance(worker.process, ForkedWorker):
            worker.process.close()  # its sentinel (multiprocessing's Process closes its own when collected)
        worker.inbox.close()
        worker.conn.close()

    def _replace(self, worker: _Worker) -> None:
        """A new worker in this one's place; the tasks sent to it that it never started are first in line."""
        self._wake_taker()  # starting a worker may take seconds (spawn, Windows): outcomes do not wait for it
        self._stop_worker(worker)
        with self._lock:
            self._pending.extendleft(reversed([t for t in worker.tasks if t.chunk not in self._unwanted]))
            self._unwanted.difference_update(t.chunk for t in worker.tasks)
        worker.forget()
        self._workers[self._workers.index(worker)] = self._start_worker(worker.slot)
        self.replaced += 1

    def _finish(self, worker: _Worker, status: str, value: bytes = b"", error: str = "",
                tb: str = "", seconds: Optional[float] = None) -> None:
        if not worker.tasks:
            return
        task = worker.ended()
        now = time.monotonic()
        if seconds is None:
            seconds = now - worker.started
        worker.started, worker.last_s = now, seconds  # the next task in its pipe, if any, runs from now
        with self._done_cond:
            if task.chunk in self._unwanted:
                self._unwanted.discard(task.chunk)
                return
            if task.chunk in self._cancelled:
                return
            self._outcomes.append(ChunkOutcome(task.chunk, task.attempt, status, value, error, tb, seconds,
                                               str(worker.slot)))
            if len(self._outcomes) == 1 or not self._worth_waiting():  # a `take` lingering for more sleeps on:
                self._answer = True  # each wake-up of it would take a busy worker's core a while

    def _manage(self) -> None:
        try:
            self._manage_until_closed()
        except Exception:
            if self._on_failure is None:
                raise
            import traceback

            self._on_failure(traceback.format_exc())

    def _manage_until_closed(self) -> None:
        while not self._closed:
            self._apply_cancels()
            self._assign()
            busy = [w for w in self._workers if w.task is not None]
            now = time.monotonic()
            timeout = min((w.started + w.task.timeout - now for w in busy), default=None)
            waitables: List[Any] = [self._wake_r]
            if WINDOWS:  # every reply pipe: a dead worker's breaks; sentinels too would double the handles
                waitables += [w.conn for w in self._workers]
            else:
                waitables += [w.conn for w in busy]
                waitables += [w.process.sentinel for w in self._workers]
            self._wake_taker()
            ready = wait_for_any(waitables, None if timeout is None else max(timeout, 0))
            if self._wake_r in ready:
                while _has_data(self._wake_r):
                    self._wake_r.recv_bytes()
            self._collect(ready)
            self._expire()
        self._wake_taker()

    def _wake_taker(self) -> None:
        """Wake a waiting `take` if an outcome asked for it, just before this thread blocks: woken earlier, the
        taker would find the GIL held by this thread and sleep again until it is released."""
        if self._answer:
            with self._done_cond:
                self._answer = False
                self._done_cond.notify_all()

    def _apply_cancels(self) -> None:
        with self._lock:
            if not self._cancelled:
                return
            cancelled, self._cancelled = self._cancelled, set()
            self._pending = deque(t for t in self._pending if t.chunk not in cancelled)
            victims = [w for w in self._workers if w.tasks and w.tasks[0].chunk in cancelled]
            self._unwanted.update(t.chunk for w in self._workers for t in list(w.tasks)[1:] if t.chunk in cancelled)
        for worker in victims:
            worker.ended()
            self._replace(worker)

    def _assign(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                task = self._pending[0]
                if self._head is None or self._head[0] is not task:  # a task no worker could take stays first
                    self._head = (task, _message(task))
                message = self._head[1]
                worker = self._taker(len(message))
                if worker is None:
                    return
                self._pending.popleft()
            worker.sent(task, len(message))
            try:
                worker.inbox.send_bytes(message)
            except (OSError, EOFError):
                self._died(worker)

    def _taker(self, size: int) -> Optional[_Worker]:
        """The worker to send a task of `size` bytes to: an idle one, else of those whose pipe may hold it the
        one holding fewest, then the one whose chunk should end first (at a job's tail the last tasks go where
        they start soonest); None if none may."""
        waiting = []
        for worker in self._workers:
            if not worker.tasks:
                return worker
            if worker.may_take_next(size):
                waiting.append(worker)
        return min(waiting, key=_Worker.order, default=None)

    def _collect(self, ready: List[Any]) -> None:
        for worker in list(self._workers):
            if worker.task is not None and worker.conn in ready:
                try:  # every reply there: a worker of short chunks may have sent several
                    while True:
                        status, value, error, tb, seconds = worker.conn.recv()
                        self._finish(worker, status, value, error, tb, seconds)
                        if not worker.tasks or not _has_data(worker.conn):
                            break
                except (EOFError, OSError):
                    self._died(worker)
            elif worker.conn in ready:  # an idle worker never writes: its pipe broke
                self._died(worker)
            elif worker.process.sentinel in ready and not worker.process.is_alive():
                self._died(worker)

    def _died(self, worker: _Worker) -> None:
        worker.process.join(1)
        code = worker.process.exitcode
        if code is None:  # a forked worker whose forker went first
            how = "ended with the pool's forker process"
        else:
            how = "was killed by signal %d" % -code if code < 0 else "exited with code %d" % code
        self._finish(worker, "died", error="the worker process %s while running the chunk" % how)
        self._replace(worker)

    def _expire(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            task = worker.task
            if task is not None and now - worker.started >= task.timeout:
                self._finish(worker, "timeout", error="the chunk ran past its timeout of %g s" % task.timeout)
                self._replace(worker)


def _message(task: Task) -> bytes:
    """What a worker reads from its pipe for `task` (worker_main's `inbox.recv()`)."""
    return pickle.dumps((task.fn_ref, task.mode, task.combine, task.paths, task.items), pickle.HIGHEST_PROTOCOL)


def _pipe() -> PipeEnds:
    """A pipe's two ends as one PipeEnds: what is written to it is read from it."""
    return PipeEnds(*os.pipe())


def _has_data(conn: Any) -> bool:
    """`conn.poll()`: on POSIX without the selector multiprocessing builds for each call (the manager asks after
    every reply)."""
    return conn.poll() if WINDOWS else readable(conn.fileno(), 0.0)


def wait_for_any(objects: List[Any], timeout: Optional[float]) -> List[Any]:
    """`multiprocessing.connection.wait`: on POSIX one `poll` (multiprocessing's builds a selector of Python
    objects each call, the manager's loop calls it for every reply), on Windows also for more handles than it
    waits on at once.

    Past the limit the first group (the pool's wake pipe is in it) is waited on for a
    short slice, then the others are polled, until one is ready or the timeout passes.
    """
    if not WINDOWS:
        poller = select.poll()
        by_fd = {}
        for obj in objects:
            fd = obj if isinstance(obj, int) else obj.fileno()
            by_fd[fd] = obj
            poller.register(fd, select.POLLIN)
        return [by_fd[fd] for fd, _ in poller.poll(None if timeout is None else timeout * 1000)]
    from multiprocessing.connection import wait

    limit = WINDOWS_WAIT_LIMIT
    if limit is None or len(objects) <= limit:
        return wait(objects, timeout)
    groups = [objects[i:i + limit] for i in range(0, len(objects), limit)]
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        ready = wait(groups[0], SLICE_S if left is None else min(SLICE_S, left))
        for group in groups[1:]:
            ready += wait(group, 0)
        if ready or (deadline is not None and time.monotonic() >= deadline):
            return ready
