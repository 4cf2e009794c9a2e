"""What one chunk costs inside a worker, by the pool that feeds it: CPU per chunk, side by side.

The same `burn.spin` chunk (~50 ms) runs 120 times on 2 workers in each of these pools, one after another
in this process, the order rotated every repetition; each chunk times itself with `time.process_time()`
in its worker, and the median per repetition is kept. Prints the median of those over the repetitions,
with min and max, and each run's wall time. Where `console run` loses to Pool per chunk, this says
whether the workers' own CPU is what grows.

- pool: multiprocessing.Pool(2).map(chunksize=1), fork;
- pipes: two forked workers, a pipe each way per worker, the next task waiting in the worker's pipe, the
  replies waited for with multiprocessing.connection.wait in the main thread (the design of the agent's pool
  without its threads);
- handoff: the same, with the replies read by a second thread and handed to the main one under a
  Condition (the agent's manager thread and its serving thread);
- chunkpool: nodeagent.pool.ChunkPool itself, as the agent runs it (its workers forks of its forker,
  nodeagent/forker.py), every task queued up front.

    python3 bench/chunkcpu.py [--reps 12] [--pools pool,pipes,handoff,chunkpool]
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import pickle
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from burn import spin  # noqa: E402
from throughput import steps_for  # noqa: E402

CHUNKS = 120
WORKERS = 2
FORK = multiprocessing.get_context("fork")


def timed_spin(steps: int) -> float:
    """Spin, and return the CPU seconds it took in this worker."""
    started = time.process_time()
    spin(steps)
    return time.process_time() - started


def with_pool(steps: int) -> List[float]:
    with FORK.Pool(WORKERS) as pool:
        return pool.map(timed_spin, [steps] * CHUNKS, 1)


def _pipe_worker(inbox: Any, outbox: Any) -> None:
    while True:
        steps = inbox.recv()
        if steps is None:
            return
        outbox.send(timed_spin(steps))


def _start_pipe_workers() -> List[List[Any]]:
    """[process, task pipe, reply pipe, tasks held] per worker."""
    workers = []
    for _ in range(WORKERS):
        task_r, task_w = FORK.Pipe(duplex=False)
        reply_r, reply_w = FORK.Pipe(duplex=False)
        process = FORK.Process(target=_pipe_worker, args=(task_r, reply_w), daemon=True)
        process.start()
        task_r.close()
        reply_w.close()
        workers.append([process, task_w, reply_r, 0])
    return workers


def _stop_pipe_workers(workers: List[List[Any]]) -> None:
    for worker in workers:
        worker[1].send(None)
    for worker in workers:
        worker[0].join()


def with_pipes(steps: int, handoff: bool = False) -> List[float]:
    workers = _start_pipe_workers()
    sent = 0
    for worker in workers:
        for _ in range(2):  # one to run, one waiting in its pipe
            worker[1].send(steps)
            sent += 1
    by_pipe = {worker[2]: worker for worker in workers}
    replies: List[Any] = []
    arrived = threading.Condition()

    def read_replies() -> None:
        for _ in range(CHUNKS):
            conn = multiprocessing.connection.wait(list(by_pipe))[0]
            with arrived:
                replies.append((conn, conn.recv()))
                arrived.notify()

    if handoff:
        reader = threading.Thread(target=read_replies, daemon=True)
        reader.start()
    out: List[float] = []
    while len(out) < CHUNKS:
        if handoff:
            with arrived:
                while not replies:
                    arrived.wait(1.0)
                batch, replies[:] = list(replies), []
        else:
            batch = [(conn, conn.recv()) for conn in multiprocessing.connection.wait(list(by_pipe))]
        for conn, cpu in batch:
            out.append(cpu)
            if sent < CHUNKS:
                by_pipe[conn][1].send(steps)
                sent += 1
    _stop_pipe_workers(workers)
    return out


def with_chunkpool(steps: int) -> List[float]:
    from nodeagent.pool import ChunkPool, Task

    pool = ChunkPool(WORKERS)
    items = pickle.dumps([steps])
    pool.submit([Task(i, 1, "chunkcpu:timed_spin", "item", "list", (str(HERE),), items, 600.0)
                 for i in range(CHUNKS)])
    out: List[float] = []
    while len(out) < CHUNKS:
        for outcome in pool.take(1.0):
            out += pickle.loads(outcome.value)
    pool.close()
    return out


POOLS: Dict[str, Callable[[int], List[float]]] = {
    "pool": with_pool, "pipes": with_pipes, "handoff": lambda steps: with_pipes(steps, handoff=True),
    "chunkpool": with_chunkpool,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=12)
    parser.add_argument("--pools", default=",".join(POOLS))
    args = parser.parse_args()
    names = [name for name in args.pools.split(",") if name in POOLS]
    steps = steps_for(50)
    cpu: Dict[str, List[float]] = {name: [] for name in names}
    wall: Dict[str, List[float]] = {name: [] for name in names}
    print(f"{CHUNKS} chunks of {steps} steps on {WORKERS} workers, {args.reps} repetitions, order rotated")
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            started = time.perf_counter()
            per_chunk = POOLS[name](steps)
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(statistics.median(per_chunk))
    base = statistics.median(cpu[names[0]])
    for name in names:
        median = statistics.median(cpu[name])
        print(f"{name:10} CPU a chunk {median * 1000:.2f} ms ({min(cpu[name]) * 1000:.2f} to "
              f"{max(cpu[name]) * 1000:.2f}), {median / base:.3f} of {names[0]}'s; wall "
              f"{statistics.median(wall[name]):.3f} s")


if __name__ == "__main__":
    main()
