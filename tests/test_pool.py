"""The agent's process pool with real worker processes: forked by its forker, and multiprocessing's spawn.

Workers are killed, hang, exit and raise; each test asserts the exact outcome
of every chunk. Loops that wait are bounded in time.
"""

import os
import pickle
import signal
import threading
import time

import pytest

from helpers import FAULTY, wait_for
from nodeagent.forkerlink import ForkerLink
from nodeagent.pool import ChunkPool, Task

PATHS = (str(FAULTY.parent),)


def task(chunk, fn="faulty:square", items=(1, 2, 3), timeout=30.0, mode="item", combine="list"):
    return Task(chunk, 1, fn, mode, combine, PATHS, pickle.dumps(list(items)), timeout)


def drain(pool, count, limit=30.0):
    """Outcomes until `count` arrived or `limit` seconds passed."""
    got = []
    deadline = time.monotonic() + limit
    while len(got) < count and time.monotonic() < deadline:
        got += pool.take(0.2)
    return {o.chunk: o for o in got}


@pytest.fixture(params=[None, "spawn"], ids=["forked", "spawn"])
def pool(request, tmp_path, monkeypatch):
    monkeypatch.setenv("FAULT_DIR", str(tmp_path))
    p = ChunkPool(2, request.param)
    yield p
    p.close()


def test_chunks_run_and_fold(pool):
    pool.submit([task(0), task(1, combine="sum"), task(2, fn="faulty:chunk_squares", mode="chunk")])
    out = drain(pool, 3)
    assert pickle.loads(out[0].value) == [1, 4, 9]
    assert pickle.loads(out[1].value) == 14
    assert pickle.loads(out[2].value) == [1, 4, 9]
    assert all(o.status == "ok" for o in out.values())


def test_raise_is_reported_with_traceback(pool):
    pool.submit([task(0, fn="faulty:boom_on_13", items=(12, 13))])
    [outcome] = drain(pool, 1).values()
    assert outcome.status == "error"
    assert outcome.error == "ZeroDivisionError: division by zero"
    assert "boom_on_13" in outcome.traceback


def test_sigkilled_worker_fails_only_its_chunk_and_is_replaced(pool):
    """One worker is SIGKILLed mid-chunk: that chunk is "died", the other finishes, the pool goes on."""
    pool.submit([task(0, fn="faulty:slow_square", items=range(40)), task(1, fn="faulty:slow_square", items=range(4))])
    deadline = time.monotonic() + 10
    while pool.busy() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    victim = next(w for w in pool._workers if w.task is not None and w.task.chunk == 0)
    os.kill(victim.process.pid, signal.SIGKILL)
    out = drain(pool, 2)
    assert out[0].status == "died" and "killed by signal 9" in out[0].error
    assert out[1].status == "ok" and pickle.loads(out[1].value) == [0, 1, 4, 9]
    pool.submit([task(2)])
    assert drain(pool, 1)[2].status == "ok"
    assert pool.replaced == 1


def test_os_exit_in_a_chunk(pool):
    """os._exit(3) in the job: the chunk is reported "died" with the exit code; its retry runs."""
    pool.submit([task(0, fn="faulty:exit_once_on_5", items=(5,))])
    [outcome] = drain(pool, 1).values()
    assert outcome.status == "died" and "exited with code 3" in outcome.error
    pool.submit([task(1, fn="faulty:exit_once_on_5", items=(5,))])
    assert pickle.loads(drain(pool, 1)[1].value) == [25]


def _parent_of(pid):
    with open("/proc/%d/stat" % pid) as stat:
        return int(stat.read().rpartition(")")[2].split()[1])


def _gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"  # a zombie: dead, not reaped yet
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads parents from /proc (Linux)")
def test_the_exit_builtin_in_a_chunk_is_its_error(pool):
    """`exit(3)` in a chunk: SystemExit, reported as the chunk's error, in a forked worker (its forker started
    without `site`, which defines `exit`) as in a spawned one; not a NameError."""
    pool.submit([task(0, fn="faulty:calls_exit")])
    [outcome] = drain(pool, 1).values()
    assert (outcome.status, outcome.error) == ("error", "SystemExit: 3")


def test_a_pools_workers_are_forks_of_its_one_forker_and_end_with_it(tmp_path, monkeypatch):
    """Both workers and the replacement of a killed one are children of one forker (an interpreter of its own,
    not the agent); SIGKILLing the forker ends its workers, their chunks are "died" with the reason, and a new
    forker forks their replacements, which run the next chunks; closing the pool ends forker and workers."""
    monkeypatch.setenv("FAULT_DIR", str(tmp_path))
    pool = ChunkPool(2)
    try:
        pool.submit([task(0), task(1)])
        assert {o.status for o in drain(pool, 2).values()} == {"ok"}
        workers = [w.process.pid for w in pool._workers]
        forker = pool._forker._popen.pid
        assert {_parent_of(pid) for pid in workers} == {forker} and _parent_of(forker) == os.getpid()
        os.kill(workers[0], signal.SIGKILL)
        assert wait_for(lambda: pool.replaced == 1, 10)
        assert _parent_of(pool._workers[0].process.pid) == forker

        pool.submit([task(chunk, fn="faulty:slow_square", items=range(40)) for chunk in (2, 3)])
        assert wait_for(lambda: pool.busy() == 2, 10)
        os.kill(forker, signal.SIGKILL)
        out = drain(pool, 2)
        assert {o.status for o in out.values()} == {"died"}
        assert {o.error for o in out.values()} == {
            "the worker process ended with the pool's forker process while running the chunk"}
        pool.submit([task(4), task(5)])
        assert {o.status for o in drain(pool, 2).values()} == {"ok"}
        new_forker = pool._forker._popen.pid
        assert new_forker != forker
        assert {_parent_of(w.process.pid) for w in pool._workers} == {new_forker}
        last = [w.process.pid for w in pool._workers] + [new_forker]
    finally:
        pool.close()
    assert wait_for(lambda: all(_gone(pid) for pid in last), 10)


def test_hung_chunk_times_out_and_its_worker_is_replaced(pool):
    pool.submit([task(0, fn="faulty:hang_once_on_7", items=(7,), timeout=1.0), task(1)])
    out = drain(pool, 2)
    assert out[0].status == "timeout" and "timeout of 1 s" in out[0].error
    assert out[1].status == "ok"
    pool.submit([task(2, fn="faulty:hang_once_on_7", items=(7,), timeout=5.0)])
    assert pickle.loads(drain(pool, 1)[2].value) == [49]


def test_cancel_drops_queued_and_running_chunks(pool):
    pool.submit([task(i, fn="faulty:slow_square", items=range(20)) for i in range(4)] + [task(9)])
    deadline = time.monotonic() + 10
    while pool.busy() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.cancel([0, 1, 2, 3])
    out = drain(pool, 1, limit=10)
    assert set(out) == {9}
    assert pool.take(0.5) == []


def test_wait_for_any_past_the_windows_handle_limit(monkeypatch):
    """Python before 3.13 on Windows waits on at most 63 handles: more are waited on in groups."""
    import multiprocessing

    from nodeagent import pool as pool_module

    monkeypatch.setattr(pool_module, "WINDOWS", True)
    monkeypatch.setattr(pool_module, "WINDOWS_WAIT_LIMIT", 3)
    calls = []
    real_wait = multiprocessing.connection.wait
    monkeypatch.setattr(multiprocessing.connection, "wait",
                        lambda objects, timeout=None: calls.append(len(objects)) or real_wait(objects, timeout))
    pipes = [multiprocessing.Pipe(duplex=False) for _ in range(8)]
    readers = [r for r, _ in pipes]
    started = time.monotonic()
    assert pool_module.wait_for_any(readers, 0.2) == []
    assert 0.2 <= time.monotonic() - started < 5
    assert max(calls) == 3
    pipes[7][1].send_bytes(b"x")
    assert pool_module.wait_for_any(readers, None) == [readers[7]]
    pipes[0][1].send_bytes(b"x")
    assert pool_module.wait_for_any(readers, 5) == [readers[0], readers[7]]


def test_wait_for_any_on_posix_returns_the_ready_objects_in_order():
    """One poll over connections and raw fds: the ready ones in the order given, [] at the timeout."""
    import multiprocessing

    from nodeagent.pool import wait_for_any

    pipes = [multiprocessing.Pipe(duplex=False) for _ in range(3)]
    raw_r, raw_w = os.pipe()
    waitables = [r for r, _ in pipes] + [raw_r]
    assert wait_for_any(waitables, 0.05) == []
    pipes[2][1].send_bytes(b"x")
    os.write(raw_w, b"x")
    pipes[0][1].send_bytes(b"x")
    assert wait_for_any(waitables, None) == [pipes[0][0], pipes[2][0], raw_r]
    pipes[1][1].close()  # a broken pipe is ready too: its reader sees the end
    assert pipes[1][0] in wait_for_any(waitables, 5)
    for fd in (raw_r, raw_w):
        os.close(fd)


def test_a_failing_manager_thread_is_reported_not_silent(monkeypatch):
    """A bug in the pool's own thread reaches on_failure with its traceback (the agent then exits)."""
    import threading

    failures = []
    reported = threading.Event()

    def broken(self):
        raise RuntimeError("bookkeeping broke")

    monkeypatch.setattr(ChunkPool, "_assign", broken)
    pool = ChunkPool(1, "spawn", on_failure=lambda trace: (failures.append(trace), reported.set()))
    try:
        assert reported.wait(10)
    finally:
        pool.close()
    assert "RuntimeError: bookkeeping broke" in failures[0]


def test_outcomes_linger_while_the_queue_is_full_and_not_at_the_tail(pool):
    """While half the workers still have a next task queued, one take carries several outcomes; with nothing
    queued (the tail) an outcome is answered at once, not after the linger; from a deep queue (12 tasks on 2
    workers) the outcomes come once about half of it has run, while the other half keeps the workers busy."""
    slow = dict(fn="faulty:slow_square")
    pool.submit([task(0, items=(2,)), task(1, items=range(20), **slow), task(2, items=(3,), **slow),
                 task(3, items=range(20), **slow)])
    first = pool.take(30, linger=30)  # chunk 0 is quick; chunk 2, on its worker next, ends well before chunk 1
    assert sorted(o.chunk for o in first) == [0, 2]
    assert sorted(drain(pool, 2)) == [1, 3]
    pool.submit([task(4)])
    started = time.monotonic()
    assert [o.chunk for o in pool.take(30, linger=60)] == [4]
    assert time.monotonic() - started < 30, "the tail's outcome waited for the linger"
    pool.submit([task(c, items=(c,), **slow) for c in range(10, 22)])  # a deep queue, as short chunks get
    taken = sorted(o.chunk for o in pool.take(30, linger=30))  # neither at the first outcome nor at the last
    assert 4 <= len(taken) <= 8 and taken == list(range(10, 10 + len(taken))), taken


def _warm(pool, limit=30.0):
    """Run quick chunks until every worker's last one took under 2 ms (a worker whose last chunk was short takes
    its next task into its pipe; a worker's first chunk imports the job's module, and on a busy machine may
    take longer)."""
    deadline = time.monotonic() + limit
    chunk = 1000
    while any(w.last_s is None or w.last_s > 0.002 for w in pool._workers) and time.monotonic() < deadline:
        pool.submit([task(chunk + i, items=(1,)) for i in range(pool.size)])
        drain(pool, pool.size)
        chunk += pool.size
    assert all(w.last_s is not None for w in pool._workers)


def _each_worker_holds_two(pool):
    """Every worker runs a task and has the next one waiting in its pipe (polled briefly: the state lasts a
    chunk)."""
    return wait_for(lambda: sorted(len(w.tasks) for w in pool._workers) == [2] * pool.size, 10, interval=0.005)


def test_a_worker_of_short_chunks_has_its_next_task_waiting_in_its_pipe(pool):
    """Each worker runs one short chunk with the next already sent, so it starts that one the moment the
    other ends, as multiprocessing.Pool's workers do; all four come back."""
    _warm(pool)
    pool.submit([task(c, fn="faulty:slow_square", items=range(4)) for c in range(4)])
    assert _each_worker_holds_two(pool)
    assert pool.busy() == 2 and pool.queued() == 2
    out = drain(pool, 4)
    assert sorted(out) == [0, 1, 2, 3] and all(o.status == "ok" for o in out.values())


def test_a_worker_whose_chunks_are_long_gets_one_task_at_a_time(pool):
    """A chunk of 0.5 s or more keeps its successor in the queue, for whichever worker frees first."""
    pool.submit([task(0, fn="faulty:slow_square", items=range(12))])  # 0.6 s: the worker's last chunk is long
    drain(pool, 1)
    long_ran = next(w for w in pool._workers if w.last_s is not None)
    pool.submit([task(c, fn="faulty:slow_square", items=range(12)) for c in range(1, 5)])
    assert wait_for(lambda: pool.busy() == 2, 10, interval=0.005)
    assert len(long_ran.tasks) == 1
    assert sorted(drain(pool, 4)) == [1, 2, 3, 4]


def test_the_task_waiting_in_a_killed_workers_pipe_runs_on_its_replacement(pool):
    """SIGKILL a worker that runs one chunk and holds the next: the running one "died", the waiting one was
    never started and runs on the new worker."""
    _warm(pool)
    slow = dict(fn="faulty:slow_square", items=range(40))
    pool.submit([task(0, **slow), task(1, **slow), task(2), task(3)])
    assert _each_worker_holds_two(pool)
    victim = next(w for w in pool._workers if w.task.chunk == 0)
    waiting = victim.tasks[1].chunk
    os.kill(victim.process.pid, signal.SIGKILL)
    out = drain(pool, 4)
    assert out[0].status == "died"
    assert out[waiting].status == "ok" and pickle.loads(out[waiting].value) == [1, 4, 9]
    assert pool.replaced == 1


def test_a_cancelled_task_waiting_in_a_pipe_is_dropped_and_its_worker_kept(pool):
    """Cancelling a short chunk that waits in a worker's pipe costs no worker: it runs, its outcome is
    dropped."""
    _warm(pool)
    slow = dict(fn="faulty:slow_square", items=range(10))
    pool.submit([task(0, **slow), task(1, **slow), task(2), task(3)])
    assert _each_worker_holds_two(pool)
    pool.cancel([2])
    out = drain(pool, 3)
    assert sorted(out) == [0, 1, 3]
    assert pool.take(0.5) == [] and pool.replaced == 0


def test_a_worker_of_millisecond_chunks_holds_a_burst_of_tasks_in_its_pipe(pool):
    """After chunks of a millisecond, up to 20 ms of them wait in each worker's pipe (the agent's threads are
    woken once a burst, not twice a chunk), spread evenly; every one comes back. The burst's chunks take 0.2 s
    each, so the spread is there to see for that long (a busy machine once kept the check from looking within
    the 50 ms of one-item chunks)."""
    _warm(pool)
    pool.submit([task(c, fn="faulty:slow_square", items=(c,) * 4) for c in range(12)])
    assert wait_for(lambda: sorted(len(w.tasks) for w in pool._workers) == [6, 6], 10, interval=0.005)
    out = drain(pool, 12)
    assert sorted(out) == list(range(12)) and all(pickle.loads(out[c].value) == [c * c] * 4 for c in out)


def test_the_tasks_waiting_in_a_pipe_stay_within_its_byte_bound(pool):
    """Big tasks wait one at a time behind a short chunk: two would pass PIPELINE_MAX_BYTES, and a write to a
    full pipe would block the manager."""
    _warm(pool)
    slow = dict(fn="faulty:slow_square", items=range(20))  # 1 s
    big = dict(fn="faulty:chunk_squares", mode="chunk", items=[7] * 1200)  # 2.4 KB pickled
    pool.submit([task(0, **slow), task(1, **slow)] + [task(c, **big) for c in range(2, 5)])
    assert _each_worker_holds_two(pool)
    assert pool.queued() == 3 and len(pool._pending) == 1
    out = drain(pool, 5)
    assert sorted(out) == list(range(5)) and all(o.status == "ok" for o in out.values())


def test_a_fresh_workers_pipe_ends_frame_messages_as_multiprocessing_does():
    """PipeEnds (a forked worker's side) and multiprocessing's Connection (a spawned worker's agent side) read
    each other's messages, one larger than a pipe holds at once too; PipeEnds reads a closed pipe as EOFError,
    closes its fds once, and raises OSError when used after."""
    import threading
    from multiprocessing.connection import Connection

    from nodeagent.worker import PipeEnds

    task_r, task_w = os.pipe()
    reply_r, reply_w = os.pipe()
    agent_out, agent_in = Connection(task_w, readable=False), Connection(reply_r, writable=False)
    ends = PipeEnds(task_r, reply_w)
    big = ("chunk", list(range(100_000)))  # ~500 KB pickled: several reads of a 64 KB pipe
    writer = threading.Thread(target=lambda: (agent_out.send_bytes(pickle.dumps(big)),
                                              agent_out.send_bytes(pickle.dumps("small")), agent_out.close()))
    writer.start()
    assert ends.recv() == big
    assert ends.recv() == "small"
    with pytest.raises(EOFError):
        ends.recv()
    writer.join(10)
    replier = threading.Thread(target=ends.send, args=(big,))
    replier.start()
    assert agent_in.recv() == big
    replier.join(10)
    ends.close()  # its fds are its own: closed once, by it
    ends.close()
    with pytest.raises(OSError):
        ends.send("after close")
    agent_in.close()


def test_a_worker_is_stopped_once_whoever_gets_there_first(pool):
    """`close` may meet the manager thread replacing the same worker: its second stop does nothing (closing its
    fds again would raise, or close files that have taken their numbers since)."""
    pool.submit([task(0)])
    assert drain(pool, 1)[0].status == "ok"
    worker = pool._workers[0]
    pid = worker.process.pid
    pool._stop_worker(worker)
    pool._stop_worker(worker)
    assert worker.stopped and wait_for(lambda: _gone(pid), 10)


def test_one_thread_waiting_on_the_forker_holds_up_no_other():
    """A thread waiting for one worker's end (its join) leaves the forker's link free: another thread kills a
    second worker and learns its exit code while the first still waits; the first returns once its own ends.
    (The link alone: a pool's manager would replace the killed workers and forget their exit codes.)"""
    link = ForkerLink()
    ours = []
    try:
        workers = []
        for _ in range(2):  # idle workers: nothing is ever written to their task pipes
            task_r, task_w = os.pipe()
            reply_r, reply_w = os.pipe()
            workers.append(link.spawn(task_r, reply_w))
            os.close(task_r)
            os.close(reply_w)
            ours += [task_w, reply_r]
        first, second = workers
        assert first.pid and second.pid
        waiting = threading.Thread(target=first.join, args=(60,))
        waiting.start()
        assert wait_for(lambda: link._reading, 10)
        second.kill()
        second.join(30)
        assert second.exitcode == -signal.SIGKILL and waiting.is_alive()
        first.kill()
        waiting.join(30)
        assert not waiting.is_alive() and first.exitcode == -signal.SIGKILL
    finally:
        link.close()
        for fd in ours:
            os.close(fd)
