"""The Python API (`console.connect`) on the local node: a real agent and real worker processes.

The functions come from tests/apicalls.py, a module the node does not have
(tests/ is not in the bundle), so each test also ships a user's module. The
SSH-cluster tests are in test_api_ssh.py.
"""

import concurrent.futures as cf
import itertools
import subprocess
import sys
import time
from fractions import Fraction

import psutil
import pytest

import console
from console import ChunkTimedOut, ClusterBroken, RemoteError, WorkerDied, connect
from console.remote import RemoteTraceback
from helpers import ROOT, wait_for
from jobs.randsum import expected
from apicalls import OddItem, add, die, half, reject_odd, slow, square

LOCAL = ROOT / "inventory.toml"


def local_agents():
    """The local nodes' processes this test process started: agents, forkers and workers."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() in ("agent-forker", "agent-worker") or any("agent-" in part for part in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(scope="module")
def cluster():
    with connect(LOCAL) as executor:
        yield executor


def test_connect_is_an_executor_with_help():
    assert issubclass(console.ClusterExecutor, cf.Executor)
    assert "inventory" in console.connect.__doc__ and "Example" in console.connect.__doc__


def test_map_keeps_input_order_over_many_iterables_and_chunk_sizes(cluster):
    assert list(cluster.map(square, range(1000))) == [x * x for x in range(1000)]
    assert list(cluster.map(add, range(10), range(100, 105))) == [x + y for x, y in zip(range(10), range(100, 105))]
    assert list(cluster.map(square, range(17), chunksize=4)) == [x * x for x in range(17)]
    assert list(cluster.map(square, [])) == []


def test_a_lambda_and_submit_with_as_completed(cluster):
    futures = [cluster.submit(lambda a, b=1: a * 10 + b, i, b=2) for i in range(8)]
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=60)) == [i * 10 + 2 for i in range(8)]
    done, not_done = cf.wait([cluster.submit(pow, 2, 20)], timeout=60)
    assert [f.result() for f in done] == [2 ** 20] and not not_done


def test_imap_unordered_yields_every_result(cluster):
    assert sorted(cluster.imap_unordered(square, range(50), chunksize=7)) == [x * x for x in range(50)]


def test_map_streams_an_endless_input(cluster):
    """An endless generator: map reads it as chunks go out, and stopping early withdraws what is still out."""
    results = cluster.map(square, itertools.count(), chunksize=100)
    assert list(itertools.islice(results, 2500)) == [x * x for x in range(2500)]
    results.close()
    assert cluster.submit(square, 3).result(timeout=60) == 9


def test_an_exception_comes_back_as_its_type_with_the_remote_traceback(cluster):
    future = cluster.submit(reject_odd, 7)
    with pytest.raises(OddItem) as raised:
        future.result(timeout=60)
    assert str(raised.value) == "item 7 is odd"
    cause = raised.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in reject_odd" in cause.text and "raise OddItem(x)" in cause.text and "on node local" in cause.text
    assert "nodeagent" not in cause.text.split('"""')[1], "the agent's own frames are left out"
    with pytest.raises(ZeroDivisionError):
        cluster.submit(divmod, 1, 0).result(timeout=60)
    with pytest.raises(OddItem):
        list(cluster.map(reject_odd, [2, 4, 5, 6], chunksize=1))


def test_a_value_of_a_type_not_allowed_is_refused_with_its_sentence(cluster):
    with pytest.raises(RemoteError, match=r'pass result_types=\["fractions:Fraction"\] to connect\(\)'):
        cluster.submit(half, 3).result(timeout=60)
    with connect(LOCAL, result_types=["fractions:Fraction"]) as allowing:
        assert allowing.submit(half, 3).result(timeout=60) == Fraction(3, 2)


def test_what_cannot_be_shipped_is_a_sentence_at_submit(cluster, tmp_path):
    with open(tmp_path / "f.txt", "w") as handle:
        with pytest.raises(TypeError, match="cannot be shipped to the nodes.*open files or connections inside"):
            cluster.submit(len, handle)
        with pytest.raises(TypeError, match="must not hold open files"):
            cluster.submit(lambda: handle.write("x"))


def test_map_timeout_and_chunksize_checks(cluster):
    with pytest.raises(TimeoutError):
        list(cluster.map(slow, [5.0], timeout=0.5))
    with pytest.raises(ValueError, match="chunksize"):
        cluster.map(square, range(3), chunksize=0)


def test_a_timeout_and_a_dead_worker_fail_the_call_not_the_cluster():
    with connect(LOCAL, retries=0, chunk_timeout=1) as executor:
        with pytest.raises(ChunkTimedOut, match="ran longer than the chunk timeout on node local"):
            executor.submit(slow, 30).result(timeout=60)
        with pytest.raises(WorkerDied, match="worker running the call died on node local"):
            executor.submit(die, 1).result(timeout=60)
        assert executor.submit(square, 5).result(timeout=60) == 25


def test_a_cancelled_future_never_runs(cluster):
    blockers = [cluster.submit(slow, 1.0) for _ in range(8)]
    waiting = cluster.submit(square, 4)
    assert waiting.cancel()
    assert [b.result(timeout=60) for b in blockers] == [1.0] * 8
    assert waiting.cancelled()


def test_shutdown_with_cancel_futures_stops_the_work_and_the_agent():
    others = {p.pid for p in local_agents()}
    executor = connect(LOCAL)
    running = [executor.submit(slow, 60) for _ in range(6)]
    assert wait_for(lambda: running[0].running() and len(local_agents()) > len(others), 30), "no call started"
    started = time.monotonic()
    executor.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - started < 20
    for future in running:
        assert future.cancelled() or isinstance(future.exception(timeout=0), cf.CancelledError)
    assert wait_for(lambda: {p.pid for p in local_agents()} <= others, 10), f"agents left: {local_agents()}"
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(square, 1)


def test_a_cluster_without_a_usable_node_breaks_with_the_reason(tmp_path):
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[node]]\nname = "nowhere"\nhost = "127.0.0.1"\nport = 1\nconnect_timeout = 2\n')
    with connect(inventory) as executor:
        future = executor.submit(square, 2)
        with pytest.raises(ClusterBroken,
                           match=r"no node of the cluster is usable: nowhere \(127\.0\.0\.1:1\): connection refused"):
            future.result(timeout=120)
        with pytest.raises(ClusterBroken):
            executor.submit(square, 2)


def test_the_pool_map_example_by_value_from_a_scripts_main():
    """examples/pool_randsum.py: its function lives in the script's __main__ and travels by value."""
    proc = subprocess.run([sys.executable, "examples/pool_randsum.py", str(LOCAL), "40"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"sum of 4,000,000 random integers: {expected(range(40))}" in proc.stdout
