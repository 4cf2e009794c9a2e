"""Tests of the network-namespace SSH test cluster itself (tests/netcluster.py)."""

from __future__ import annotations

import json
import os
import platform
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import paramiko
import pytest

import netcluster
from netcluster import NetCluster, Node

pytestmark = pytest.mark.sshd
MakeCluster = Callable[..., NetCluster]

CRASHING_CHILD = """
import json, sys, time
import netcluster
cluster = netcluster.NetCluster(sys.argv[1], n=1, verify=False).start()
node = cluster.nodes[0]
print(json.dumps({"ns": node.ns, "veth": node.host_veth, "sshd": node.process.pid}), flush=True)
time.sleep(60)
"""


def connect(cluster: NetCluster, node: Node, timeout: float = 5.0) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(cluster.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(node.host, node.port, username="root", key_filename=str(cluster.client_key),
                       look_for_keys=False, allow_agent=False, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout)
    except BaseException:
        client.close()
        raise
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, stdout, _ = client.exec_command(command, timeout=10)
    out = stdout.read().decode()
    return stdout.channel.recv_exit_status(), out


def test_every_node_runs_commands_with_its_own_cache(net_cluster_3: NetCluster) -> None:
    caches = set()
    for node in net_cluster_3.nodes:
        with connect(net_cluster_3, node) as client:
            assert run(client, "uname -m") == (0, platform.machine() + "\n")
            status, cache = run(client, 'echo "$XDG_CACHE_HOME"')
        assert (status, cache.strip()) == (0, str(node.cache_dir))
        caches.add(cache)
    assert len(caches) == len(net_cluster_3.nodes) == 3


def test_only_sshd_listens_in_a_node(net_cluster_3: NetCluster) -> None:
    for node in net_cluster_3.nodes:
        [listener] = net_cluster_3.listening_sockets(node)
        assert f"{node.host}:22 " in listener and '"sshd"' in listener
        assert node.process is not None and node.process.pid in net_cluster_3.pids_in(node)
        assert any("sshd" in cmdline for _, cmdline in net_cluster_3.processes_in(node))


def test_link_down_times_out_and_link_up_restores(net_cluster_3: NetCluster) -> None:
    node = net_cluster_3.node("node2")
    with connect(net_cluster_3, node) as open_session:
        net_cluster_3.link_down(node)
        try:
            started = time.monotonic()
            with pytest.raises(socket.timeout):
                connect(net_cluster_3, node, timeout=2.0).close()
            assert time.monotonic() - started >= 1.9
        finally:
            net_cluster_3.link_up(node)
        with connect(net_cluster_3, node, timeout=2.0) as client:
            assert run(client, "echo back") == (0, "back\n")
        assert run(open_session, "echo still here") == (0, "still here\n")


def test_node_without_python(make_net_cluster: MakeCluster) -> None:
    cluster = make_net_cluster(n=2, no_python=("node2",))
    with connect(cluster, cluster.node("node2")) as client:
        assert run(client, "command -v python3 python; echo rc=$?") == (0, "rc=1\n")
        assert run(client, "python3 -c pass")[0] == 127
        assert run(client, "uname -m") == (0, platform.machine() + "\n")
    with connect(cluster, cluster.node("node1")) as client:
        status, found = run(client, "command -v python3")
        assert status == 0 and found.strip()


def test_changed_host_key_is_refused(make_net_cluster: MakeCluster) -> None:
    cluster = make_net_cluster(n=1)
    node = cluster.nodes[0]
    old_key = node.host_key_pub.read_text()
    assert cluster.replace_host_key(node) == node.host_key_pub
    assert node.host_key_pub.read_text() != old_key
    with pytest.raises(paramiko.BadHostKeyException):
        connect(cluster, node).close()
    cluster.write_known_hosts()
    with connect(cluster, node) as client:
        assert run(client, "true") == (0, "")


def test_write_inventory(net_cluster_3: NetCluster, tmp_path: Path) -> None:
    tomllib = pytest.importorskip("tomllib")
    path = net_cluster_3.write_inventory(tmp_path / "inventory.toml", nodes=["node1", "node3"],
                                         overrides={"node3": {"workers": 4}}, connect_timeout=3)
    inventory = tomllib.loads(path.read_text())
    assert inventory["defaults"] == {"user": "root", "key": str(net_cluster_3.client_key),
                                     "known_hosts": str(net_cluster_3.known_hosts),
                                     "connect_timeout": 3}
    node1, node3 = net_cluster_3.node("node1"), net_cluster_3.node("node3")
    assert inventory["node"] == [
        {"name": "node1", "host": node1.host, "port": 22, "workers": 2},
        {"name": "node3", "host": node3.host, "port": 22, "workers": 4},
    ]


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def test_crashed_run_is_cleaned_up_by_the_next(tmp_path: Path) -> None:
    reason = netcluster.skip_reason()
    if reason:
        pytest.skip(reason)
    child = subprocess.Popen([sys.executable, "-c", CRASHING_CHILD, str(tmp_path)],
                             cwd=Path(__file__).parent, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = _read_line(child, timeout=20)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        _, err = child.communicate(timeout=10)
    assert line, f"the child cluster did not start: {err}"
    left = json.loads(line)
    assert left["ns"] in netcluster.list_namespaces() and not _gone(left["sshd"])

    removed = netcluster.cleanup_stale()

    assert left["ns"] in removed and left["ns"] not in netcluster.list_namespaces()
    assert not Path("/sys/class/net", left["veth"]).exists()
    assert _gone(left["sshd"])
