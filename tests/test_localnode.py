"""The local node served in the console's own process (`console run`'s, console/localnode.py), with a real
forker and real workers: its log, a pool that fails, and what it leaves behind."""

import os
from pathlib import Path

import psutil
import pytest

from console import forkerahead, localnode
from console.backends.agents import AgentBackend
from console.cluster import Cluster
from console.inventory import Inventory, Node
from console.jobspec import load_job
from helpers import results, wait_for, write_job
from nodeagent.forker import FORKER_NAME, WORKER_NAME
from nodeagent.pool import ChunkPool


@pytest.fixture
def served():
    """The local node "local", served in this process as `console run` serves it."""
    node = Node("local", transport="local", workers=2)
    here = localnode.start(Inventory(Path("inventory.toml"), (node,)))
    yield node, here
    here.close()


def own_node_processes():
    """This process's forkers and workers that have not exited."""
    names = (FORKER_NAME.decode(), WORKER_NAME.decode())
    return [p for p in psutil.Process().children(recursive=True)
            if p.name() in names and p.status() != psutil.STATUS_ZOMBIE]


def test_what_a_job_prints_reaches_the_nodes_log_and_nothing_is_left_behind(tmp_path, served):
    node, here = served
    cluster = Cluster([node], backend=AgentBackend([node], here))
    try:
        cluster.start_job(load_job(write_job(tmp_path, function="faulty:noisy", items=range(20), chunk_size=5)))
        cluster.bootstrap()
        assert cluster.wait_job(60) == "ok"
        session = cluster.sessions["local"]
        assert session.info["pid"] == psutil.Process().pid
        assert wait_for(lambda: any("raw bytes on fd 1" in line for line in session.log_lines), 10)
        assert any("job 'job': 2 workers, function faulty:noisy" in line for line in session.log_lines)
    finally:
        cluster.close()
    assert wait_for(lambda: not own_node_processes(), 10), own_node_processes()


def test_a_pool_that_fails_loses_the_node_once_and_a_fresh_agent_finishes_the_job(tmp_path, served, monkeypatch):
    """The pool's manager thread fails (a bug of ours, faked): the next call is a NodeError, the node is lost
    once, its traceback in its log, and the session's new agent runs the job to its exact end."""
    collect = ChunkPool._collect
    failed = []

    def collect_failing_once(pool, ready):
        if not failed:
            failed.append(True)
            raise RuntimeError("the manager's own bug")
        collect(pool, ready)

    monkeypatch.setattr(ChunkPool, "_collect", collect_failing_once)
    job = write_job(tmp_path, function="faulty:slow_square", items=range(30), chunk_size=3)
    node, here = served
    cluster = Cluster([node], backend=AgentBackend([node], here))
    try:
        cluster.start_job(load_job(job))
        cluster.bootstrap()
        assert cluster.wait_job(120) == "ok"
        session = cluster.sessions["local"]
        assert session.losses == 1 and "the local node's chunk pool failed" in session.last_loss
        assert any("RuntimeError: the manager's own bug" in line for line in session.log_lines)
    finally:
        cluster.close()
    doc = results(job)
    assert doc["result"] == [x * x for x in range(30)] and doc["chunks"]["done"] == 10
    assert wait_for(lambda: not own_node_processes(), 10), own_node_processes()


def test_a_reply_over_the_jobs_limit_fails_the_node_as_an_agent_process_would(tmp_path, served):
    """max_reply_mb = 1 and a chunk's value of 2 MB: refused as an agent process's reply over the limit is."""
    (tmp_path / "big.py").write_text("def big(x):\n    return 'x' * (2 << 20)\n")
    job = write_job(tmp_path, function="big:big", items=[1], chunk_size=1, files=[str(tmp_path / "big.py")])
    job.write_text(job.read_text().replace("[input]", "max_reply_mb = 1\n\n[input]"))
    node, here = served
    cluster = Cluster([node], backend=AgentBackend([node], here))
    try:
        cluster.start_job(load_job(job))
        cluster.bootstrap()
        status = cluster.wait_job(60)
        session = cluster.sessions["local"]
        assert (status, session.state) == ("failed", "failed"), (status, session.state, session.error)
        assert session.error == ("local: the node broke the protocol: it sent a reply of 2.0 MB, over the limit of "
                                 "1.0 MB (max_reply_mb in the job file); it gets no more chunks (its chunks go to the "
                                 "other nodes)")
    finally:
        cluster.close()


def test_an_executor_connected_on_a_thread_that_ended_keeps_its_workers(tmp_path):
    """`connect()` on a thread that then ends: the local node's forker lives on (it goes by its socket, not by
    the thread that started it), the executor still runs calls, and its shutdown leaves no forker or worker."""
    import threading

    from console import connect

    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[node]]\nname = "local"\ntransport = "local"\nworkers = 2\n')
    opened = []

    def connect_then_end() -> None:  # ends once the forker runs (named): it would have armed PR_SET_PDEATHSIG
        opened.append(connect(inventory))
        wait_for(lambda: any(p.name() == FORKER_NAME.decode() for p in psutil.Process().children()), 30)

    thread = threading.Thread(target=connect_then_end)
    thread.start()
    thread.join(60)
    [executor] = opened
    try:
        [forker] = [p for p in psutil.Process().children() if p.name() == FORKER_NAME.decode()]
        assert executor.submit(pow, 2, 10).result(timeout=60) == 1024
        assert list(executor.map(abs, range(-3, 3))) == [3, 2, 1, 0, 1, 2]
        assert forker.is_running() and forker.status() != psutil.STATUS_ZOMBIE, "the forker died with its thread"
    finally:
        executor.shutdown()
    assert wait_for(lambda: not own_node_processes(), 10), own_node_processes()


def new_children(before):
    """This process's children started since `before` (a set of pids)."""
    return [p for p in psutil.Process().children() if p.pid not in before]


def test_a_forker_started_ahead_forks_the_local_nodes_workers(tmp_path):
    """`console run`'s forker, started before the inventory is read, becomes the local node's: its workers run
    the job, and closing the node leaves neither."""
    before = {p.pid for p in psutil.Process().children()}
    ahead = forkerahead.start(["run", "job.toml"])
    [forker] = new_children(before)
    node = Node("local", transport="local", workers=2)
    here = localnode.start(Inventory(Path("inventory.toml"), (node,)), ahead=ahead)
    (tmp_path / "parent.py").write_text("import os\n\ndef parent(x):\n    return os.getppid()\n")
    job = write_job(tmp_path, function="parent:parent", items=range(10), chunk_size=1,
                    files=[str(tmp_path / "parent.py")])
    cluster = Cluster([node], backend=AgentBackend([node], here))
    try:
        cluster.start_job(load_job(job))
        cluster.bootstrap()
        assert cluster.wait_job(60) == "ok"
        assert forker.name() == FORKER_NAME.decode()
    finally:
        cluster.close()
        here.close()
    assert results(job)["result"] == [forker.pid] * 10
    assert wait_for(lambda: not own_node_processes(), 10), own_node_processes()


@pytest.mark.parametrize("node", [Node("far", host="192.0.2.1"), Node("local", transport="local", python="python3.9")],
                         ids=["ssh only", "another python"])
def test_a_forker_started_ahead_that_no_node_serves_is_killed_at_once(node):
    """No local node this process serves (only SSH nodes, or one naming another Python): the forker started
    ahead is killed before it forked anything, and waited for."""
    before = {p.pid for p in psutil.Process().children()}
    ahead = forkerahead.start(["run", "job.toml", "--json"])
    [forker] = new_children(before)
    here = localnode.start(Inventory(Path("inventory.toml"), (node,)), ahead=ahead)
    try:
        assert not forker.is_running(), "the unwanted forker was not waited for"
        assert not here.serves(node)
    finally:
        here.close()


@pytest.mark.parametrize("argv", [["run", "--help"], ["run", "job.toml", "--engine", "dask://127.0.0.1:8786"],
                                  ["status"], []])
def test_no_forker_is_started_ahead_but_for_a_run_on_the_inventory(argv):
    assert forkerahead.start(argv) is None


def test_a_forker_that_cannot_be_started_ahead_leaves_it_to_the_local_node(monkeypatch):
    """Starting the forker ahead fails (no more processes, say): no forker ahead and no fd left open; the local
    node starts its own when the inventory is read."""
    def refuse(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    open_fds = set(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(forkerahead, "ForkerLink", refuse)
    assert forkerahead.start(["run", "job.toml"]) is None
    assert set(os.listdir("/proc/self/fd")) <= open_fds


def test_a_local_node_whose_forker_cannot_start_fails_with_the_reason_and_nothing_is_left(tmp_path, monkeypatch):
    """No process can be started (faked): the served node fails with the OS's reason, as an agent process that
    cannot start does, and the job ends with no node usable."""
    def refuse(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(localnode, "ForkerLink", refuse)
    node = Node("local", transport="local", workers=2)
    here = localnode.start(Inventory(Path("inventory.toml"), (node,)))
    assert here.serves(node)
    job = write_job(tmp_path, items=range(4), chunk_size=2)
    cluster = Cluster([node], backend=AgentBackend([node], here))
    try:
        cluster.start_job(load_job(job))
        cluster.bootstrap()
        assert cluster.wait_job(60) == "failed"
        session = cluster.sessions["local"]
        assert (session.state, session.error) == (
            "failed", "local: BlockingIOError: [Errno 11] Resource temporarily unavailable")
    finally:
        cluster.close()
        here.close()
    assert results(job)["reason"] == "no node is usable"
