"""`console bootstrap` and `console status`: every node in parallel, one row each.

bootstrap: connect, probe, deploy, start the agent, handshake, stop it.
status: connect, probe and look for the bundle, starting nothing.
Each node ends in a `NodeReport`: its facts, or its error as one sentence; one
dead node never hides the others.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence

from console.agentlink import start_local_agent
from console.bundle import local_bundle
from console.errors import ConsoleError
from console.inventory import Node

__all__ = ["NodeReport", "bootstrap_nodes", "status_nodes"]

MAX_PARALLEL = 64


@dataclass(frozen=True)
class NodeReport:
    """One node's row in the bootstrap/status table."""

    node: str
    address: str
    os: Optional[str] = None
    arch: Optional[str] = None
    python: Optional[str] = None
    cores: Optional[int] = None
    bundle: Optional[str] = None
    """"uploaded" (SSH) or "written" (local) now, "cached", or "missing"."""
    metrics: Optional[str] = None
    """"psutil" or "fallback", once an agent answered."""
    seconds: float = 0.0
    error: Optional[str] = None


class _Recorder:
    """Stands in for a NodeSession during a one-off bring-up."""

    def __init__(self) -> None:
        self.lines: List[str] = []
        self.state = "pending"

    def set_state(self, state: str, error: Optional[str] = None) -> None:
        self.state = state

    def log(self, line: str) -> None:
        self.lines.append(line)


def _bootstrap_one(node: Node) -> NodeReport:
    started = time.monotonic()
    address = node.address or "local"
    try:
        if node.transport == "local":
            link = start_local_agent(node.python or sys.executable, _Recorder().log)
        else:
            from console.bootstrap import launch_ssh  # paramiko loads only when a node needs it

            link = launch_ssh(node, _Recorder(), warm=False)
        try:
            info = link.hello()
        finally:
            link.close()
    except ConsoleError as exc:
        return NodeReport(node.name, address, seconds=time.monotonic() - started, error=str(exc))
    except Exception as exc:  # the agent's stream broke during the handshake
        return NodeReport(node.name, address, seconds=time.monotonic() - started,
                          error=f"{node.name}: the agent did not answer the handshake ({type(exc).__name__}: {exc}).")
    return NodeReport(node.name, address, info["os"], info["arch"], info["python"], info["cores"],
                      link.facts.get("bundle"), info.get("metrics"), time.monotonic() - started)


def _status_one(node: Node) -> NodeReport:
    started = time.monotonic()
    if node.transport == "local":
        return NodeReport(node.name, "local", sys.platform, platform.machine(), platform.python_version(),
                          os.cpu_count(), local_bundle(write=False)[1], None, time.monotonic() - started)
    from console.bootstrap import deploy, probe  # paramiko loads only when a node needs it
    from console.ssh import NodeConnection

    conn = NodeConnection(node)
    try:
        conn.connect()
        facts = probe(conn)
        _, uploaded = deploy(conn, facts, upload=False)
    except ConsoleError as exc:
        return NodeReport(node.name, node.address or "", seconds=time.monotonic() - started, error=str(exc))
    finally:
        conn.close()
    return NodeReport(node.name, node.address or "", facts.os, facts.arch, facts.python_version, facts.cores,
                      "missing" if uploaded is None else "cached", None, time.monotonic() - started)


def _all(nodes: Sequence[Node], one) -> List[NodeReport]:
    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(len(nodes), MAX_PARALLEL)) as pool:
        return list(pool.map(one, nodes))


def bootstrap_nodes(nodes: Sequence[Node]) -> List[NodeReport]:
    """Bring every node's agent up once and down again, in parallel."""
    return _all(nodes, _bootstrap_one)


def status_nodes(nodes: Sequence[Node]) -> List[NodeReport]:
    """Probe every node without starting anything, in parallel."""
    return _all(nodes, _status_one)


