"""What the console may ask of a node, whatever carries the asking: a narrow surface over plain bytes and ints.

Every method takes and returns bytes, str or numbers; the messages inside are
nodeagent/wire.py's types, encoded there, so no list or dict ever crosses as a
netref. One call carries a batch of chunks, one reply many outcomes. An agent
process serves it over RPyC (nodeagent/service.py); `console run` calls its
local node's `Agent` directly, in its own process (console/localnode.py).
Called by the console's node session (console/backends/agents.py).
"""

import _socket
import os
import pickle
import shutil
import sys
import threading
import time
from typing import Callable, Dict, Optional

from nodeagent.cache import cache_dir, content_hash, mark_used
from nodeagent.metrics import Sampler
from nodeagent.forkerlink import ForkerLink
from nodeagent.pool import ChunkPool, Task, default_start_method
from nodeagent.stdio import describe_threads, log
from nodeagent.wheels import missing, store_part, wheel_dir, wheel_tags
from nodeagent.wire import PROTOCOL_VERSION, ChunkItems, Collected, JobSettings, MetricsSample, NodeInfo, encode

__all__ = ["Agent", "describe_node", "pool_failed"]


WARM_AGAIN_S = 1.0
"""How long after a job ends the agent starts fresh workers for the next one."""


def pool_failed(trace: str) -> None:
    """The pool's manager thread failed: say why and exit, so the console reconnects a fresh agent (an agent
    process's answer; the console's own local node is told otherwise)."""
    log("the chunk pool failed, exiting:\n" + trace.rstrip())
    os._exit(70)


def store_job_files(files: Dict[str, bytes]) -> str:
    """Write the job's files under their content hash (once); the directory to import them from."""
    target = os.path.join(cache_dir(), "jobs", content_hash(files))
    if os.path.isdir(target):
        mark_used((target,))
        return target
    staging = "%s.%d.part" % (target, os.getpid())
    for name, data in files.items():
        path = os.path.join(staging, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    os.makedirs(staging, exist_ok=True)
    try:
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not os.path.isdir(target):
            raise
    return target


def _machine() -> str:
    """platform.machine(), without importing platform where os.uname() has it (~5 ms of an agent's start)."""
    if hasattr(os, "uname"):
        return os.uname().machine
    import platform

    return platform.machine()


def describe_node(sampler: Sampler) -> NodeInfo:
    """Who this node is: the handshake's answer."""
    abi, platform_tag = wheel_tags()
    return NodeInfo(
        protocol=PROTOCOL_VERSION,
        hostname=_socket.gethostname(),  # socket.py's: ~3 ms of the console's start
        os=sys.platform if sys.platform != "win32" else "windows",
        arch=_machine(),
        python=sys.version.split()[0],  # what platform.python_version() reads
        cores=os.cpu_count() or 1,
        pid=os.getpid(),
        metrics=sampler.source,
        start_method=default_start_method(),
        abi=abi,
        platform=platform_tag,
    )


class Agent:
    """A node's side of the console's calls: its job, its pool of workers, its metrics."""

    def __init__(self, force_fallback_metrics: bool = False, warm_pool: Optional[ChunkPool] = None,
                 forker: Optional[ForkerLink] = None, log: Callable[[str], None] = log,
                 on_pool_failure: Callable[[str], None] = pool_failed) -> None:
        """`forker`: the agent's, which every pool of its jobs forks its workers from (None: each starts one).
        `log` takes each line of the node's log; `on_pool_failure` a pool's traceback when its manager failed."""
        self._log = log
        self._on_pool_failure = on_pool_failure
        self._sampler = Sampler(force_fallback=force_fallback_metrics)
        self._sampler_lock = threading.Lock()
        self._pool: Optional[ChunkPool] = None
        self._warm: Optional[ChunkPool] = warm_pool
        """Workers started with the agent, for its first job (fresh: no job's code imported yet)."""
        self._forker = forker
        self._job: Optional[JobSettings] = None
        self._jobs = 0
        """Jobs started so far."""
        self._closing = False
        """The console is gone: no fresh workers start."""
        self._paths: tuple = ()
        self._lock = threading.Lock()
        self.last_call = time.monotonic()
        """When the console last called; the agent's watchdog exits after a long silence."""
        self.silence_exit_s = 60.0
        """Silence after which the agent takes the console for gone (set by hello)."""

    def in_use(self) -> tuple:
        """The cache entries the current job imports from (its files and wheels)."""
        return self._paths

    def close(self) -> None:
        """The console is gone: close the pools and the forker, start none again."""
        self._closing = True
        self._close_pool()
        with self._lock:
            forker, self._forker = self._forker, None
        if forker is not None:
            forker.close()

    def _close_pool(self) -> None:
        with self._lock:
            pools, self._pool, self._warm = (self._pool, self._warm), None, None
        for pool in pools:
            if pool is not None:
                pool.close()

    def _warm_again(self, workers: int, jobs: int) -> None:
        """Start fresh workers for the next job, unless a job has started since or the agent is closing. Not
        after the forker was killed: a forker dies with the thread that started it (PR_SET_PDEATHSIG), and this
        one, a timer's, ends at once; the next job's start replaces it."""
        def wanted() -> bool:
            return not self._closing and self._jobs == jobs and self._pool is None and self._warm is None

        if not wanted() or (self._forker is not None and not self._forker.alive()):
            return
        pool: Optional[ChunkPool] = ChunkPool(workers, on_failure=self._on_pool_failure, forker=self._live_forker())
        with self._lock:
            if wanted():
                self._warm, pool = pool, None
        if pool is not None:
            pool.close()
        else:
            self._log("%d fresh workers started for the next job" % workers)

    def _live_forker(self) -> Optional[ForkerLink]:
        """The agent's forker for a new pool; a new one in its place if it was killed (its workers went with it)."""
        with self._lock:
            if self._forker is not None and not self._forker.alive():
                self._forker.close()
                self._forker = self._forker.again()
            return self._forker

    def hello(self, console_protocol: int, silence_exit_s: float = 60.0) -> bytes:
        """Describe the node; the console refuses the agent when protocols differ."""
        self.last_call = time.monotonic()
        self.silence_exit_s = max(float(silence_exit_s), 1.0)
        info = describe_node(self._sampler)
        if console_protocol != PROTOCOL_VERSION:
            self._log("console speaks protocol %s, this agent %s" % (console_protocol, PROTOCOL_VERSION))
        return encode(info)

    def start_job(self, job: bytes) -> int:
        """Take a job's pickled JobSettings, store its files, start a fresh pool for it; returns the pool size."""
        self.last_call = time.monotonic()
        settings = JobSettings(*pickle.loads(job))
        paths = (store_job_files(settings.files),) + tuple(wheel_dir(d) for d in settings.wheels)
        absent = missing(settings.wheels)
        if absent:
            raise RuntimeError("start_job before its wheels %s" % ", ".join(absent))
        mark_used(paths)
        workers = settings.workers or os.cpu_count() or 1
        with self._lock:
            warm, self._warm = self._warm, None
            self._jobs += 1
        self._close_pool()
        if warm is not None and warm.size == workers:
            pool = warm
        else:
            if warm is not None:
                warm.close()
            pool = ChunkPool(workers, on_failure=self._on_pool_failure, forker=self._live_forker())
        with self._lock:
            self._job, self._paths, self._pool = settings, paths, pool
        self._log("job %r: %d workers, function %s" % (settings.name, workers, settings.fn))
        return workers

    def end_job(self) -> None:
        """The job is over: its workers go, and fresh ones of its size start WARM_AGAIN_S later for the next job
        (by then a `console run` has closed the link; a dashboard's next job finds them up)."""
        self.last_call = time.monotonic()
        with self._lock:
            pool, self._pool, self._job = self._pool, None, None
        if pool is None:
            return
        pool.close()
        timer = threading.Timer(WARM_AGAIN_S, self._warm_again, (pool.size, self._jobs))
        timer.daemon = True
        timer.start()

    def add_files(self, files: bytes) -> None:
        """Store more of the running job's files (pickled {relative path: content}) for the chunks after this."""
        self.last_call = time.monotonic()
        path = store_job_files(pickle.loads(files))
        with self._lock:
            if path not in self._paths:
                self._paths = (path,) + self._paths
        self._log("job %r: %s added to its files" % (self._job.name if self._job else "", path))

    def missing_wheels(self, digests: tuple) -> bytes:
        """Which of these wheels (SHA-256 digests) this node has not got yet."""
        self.last_call = time.monotonic()
        return encode(tuple(missing(tuple(digests))))

    def put_wheel(self, digest: str, offset: int, data: bytes, last: bool) -> None:
        """One part of a wheel's file; the last one unpacks it (nodeagent/wheels.py)."""
        self.last_call = time.monotonic()
        store_part(str(digest), int(offset), bytes(data), bool(last))
        if last:
            self._log("wheel %s stored" % digest[:16])

    def exchange(self, batch: bytes, wait: float, metrics: bool = False) -> bytes:
        """Queue a pickled batch of ChunkItems (b"" for none), then return Collected: the outcomes finished
        since the last call, waiting up to `wait` s for one, and the node's MetricsSample if `metrics`. One
        round trip per chunk in the steady state."""
        self.last_call = time.monotonic()
        pool, job, paths = self._pool, self._job, self._paths
        if batch:
            if pool is None or job is None:
                raise RuntimeError("chunks before start_job")
            pool.submit([
                Task(order.chunk, order.attempt, job.fn, job.mode, job.combine, paths, order.items, job.timeout)
                for order in map(ChunkItems._make, pickle.loads(batch))
            ])
        if pool is None:
            time.sleep(min(wait, 0.05))
            return encode(Collected((), 0, 0, self._metrics() if metrics else None))
        outcomes = pool.take(wait, linger=wait)
        for outcome in outcomes:
            if outcome.status != "ok":
                self._log("chunk %d attempt %d: %s" % (outcome.chunk, outcome.attempt, outcome.error))
        return encode(Collected(tuple(outcomes), pool.busy(), pool.queued(), self._metrics() if metrics else None))

    def metrics(self) -> bytes:
        """A MetricsSample: CPU per core, memory and load since the previous call."""
        self.last_call = time.monotonic()
        return encode(self._metrics())

    def _metrics(self) -> MetricsSample:
        with self._sampler_lock:
            sample = self._sampler.sample()
        pool = self._pool
        return MetricsSample(busy=pool.busy() if pool is not None else 0, **sample)

    def cancel(self, chunks: tuple) -> None:
        """Drop these chunks, killing the workers that run them."""
        self.last_call = time.monotonic()
        pool = self._pool
        if pool is not None:
            pool.cancel(tuple(chunks))

    def report_state(self) -> None:
        """Write every thread's innermost frames and the pool's state to the log: the console asks when it takes
        the agent for stuck, so the node's log tells why."""
        self.last_call = time.monotonic()
        pool = self._pool
        self._log("state asked for: pool %s; the threads are at:" % (pool.describe() if pool is not None else "none"))
        for line in describe_threads():
            self._log("  " + line)
