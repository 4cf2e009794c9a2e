"""The Python API over real OpenSSH: three sshd hosts in network namespaces plus the local node.

Needs root and sshd (skips with the reason otherwise).
"""

import os
import signal
import subprocess
import sys

import pytest

from apicalls import slow, square
from console import connect
from helpers import ROOT, wait_for
from jobs.factorize import factors
from test_ssh_cluster import agent_pids

pytestmark = pytest.mark.sshd


def with_local(inventory):
    """The namespace nodes' inventory plus this machine as a local node."""
    inventory.write_text(inventory.read_text() + '\n[[node]]\nname = "local"\ntransport = "local"\n')
    return inventory


def done_on(executor, node):
    """Chunks the node has finished in the executor's job."""
    return next((n.chunks_done for n in executor.snapshot().nodes if n.name == node), 0)


def test_the_managers_example_over_three_ssh_nodes_and_the_local_one(net_cluster_3, tmp_path):
    """examples/managers_factorize.py: submit + as_completed, a __main__ function by value calling the jobs
    package's `factors` by name; every number factorised exactly."""
    inventory = with_local(net_cluster_3.write_inventory(tmp_path / "inventory.toml"))
    proc = subprocess.run([sys.executable, "examples/managers_factorize.py", str(inventory)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    numbers = range(999_999_999_999, 1_000_000_001_999, 2)
    primes = sorted(n for n in numbers if factors(n) == [n])
    assert f"factorised 1000 numbers; {len(primes)} primes, the largest {primes[-1]}" in proc.stdout


def test_an_agent_sigkilled_during_map_the_result_is_exact(net_cluster_3, tmp_path):
    """node2's agent is SIGKILLed once it has finished chunks: its chunks run again elsewhere, each counts once."""
    inventory = net_cluster_3.write_inventory(tmp_path / "inventory.toml")
    node2 = net_cluster_3.node("node2")
    with connect(inventory) as executor:
        results = executor.map(slow, [0.02] * 600, chunksize=4)
        taken = []
        for value in results:
            taken.append(value)
            if done_on(executor, "node2") >= 2:
                break
        assert done_on(executor, "node2") >= 2, "node2 finished no chunk"
        agent = next(pid for pid, cmd in net_cluster_3.processes_in(node2) if "cluster-console/agent-" in cmd)
        os.kill(agent, signal.SIGKILL)
        taken.extend(results)
        assert taken == [0.02] * 600
        assert list(executor.map(square, range(300), chunksize=7)) == [x * x for x in range(300)]


def test_shutdown_with_cancel_futures_leaves_no_agent_on_the_nodes(net_cluster_3, tmp_path):
    inventory = net_cluster_3.write_inventory(tmp_path / "inventory.toml")
    executor = connect(inventory)
    running = [executor.submit(slow, 60) for _ in range(12)]
    assert wait_for(lambda: sum(f.running() for f in running) >= 3, 60), "the calls did not start"
    executor.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() or f.exception(timeout=0) is not None for f in running)
    for node in ("node1", "node2", "node3"):
        ref = net_cluster_3.node(node)
        assert wait_for(lambda: not agent_pids(net_cluster_3, ref), 15), \
            f"{node} still runs {agent_pids(net_cluster_3, ref)}; its session's log: " \
            f"{list(executor._cluster.sessions[node].log_lines)[-20:]}"
