"""`console bootstrap` and `console status`: every node in parallel, one row each.

bootstrap: connect, probe, deploy, start the agent, handshake, stop it.
status: connect, probe and look for the bundle, starting nothing.
Given a job file with requirements, bootstrap also sends each node the wheels
for its platform that it lacks, and status says which it has (asking the
bundle for the node's wheel tags, if the bundle is there). Each node ends in a
`NodeReport`: its facts, or its error as one sentence; one dead node never
hides the others.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from console.agentlink import AgentLink
from console.rpyclink import start_local_agent
from console.bundle import local_bundle
from console.errors import ConsoleError
from console.inventory import Node, PackageSource
from console.jobspec import JobSpec
from console.packages import PackageResolver, PackagesUnavailable, node_platform
from nodeagent.cache import cache_dir

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
    packages: Optional[str] = None
    """With a job file: "ready", "sent N" (bootstrap sent N wheels now), "N to send" (status), "none fit",
    "unknown" (status, before the bundle is there)."""
    packages_note: Optional[str] = None
    """Why no wheels fit the node, as a sentence."""


class _Recorder:
    """Stands in for a NodeSession during a one-off bring-up."""

    def __init__(self) -> None:
        self.lines: List[str] = []
        self.state = "pending"

    def set_state(self, state: str, error: Optional[str] = None) -> None:
        self.state = state

    def log(self, line: str) -> None:
        self.lines.append(line)


def _bootstrap_one(node: Node, resolver: Optional[PackageResolver]) -> NodeReport:
    started = time.monotonic()
    address = node.address or "local"
    recorder = _Recorder()
    packages: Tuple[Optional[str], Optional[str]] = (None, None)
    try:
        if node.transport == "local":
            link = start_local_agent(node.python or sys.executable, recorder.log)
        else:
            from console.bootstrap import launch_ssh  # paramiko loads only when a node needs it

            link = launch_ssh(node, recorder, warm=False, probe_again=True)
        try:
            info = link.hello()
            if resolver is not None:
                packages = _stage(node, link, info, resolver)
        finally:
            link.close()
    except ConsoleError as exc:
        return NodeReport(node.name, address, seconds=time.monotonic() - started, error=str(exc))
    except Exception as exc:  # the agent's stream broke during the handshake
        return NodeReport(node.name, address, seconds=time.monotonic() - started,
                          error=f"{node.name}: the agent did not answer the handshake ({type(exc).__name__}: {exc}).")
    return NodeReport(node.name, address, info["os"], info["arch"], info["python"], info["cores"],
                      link.facts.get("bundle"), info.get("metrics"), time.monotonic() - started, None, *packages)


def _stage(node: Node, link: AgentLink, info: Dict[str, Any],
           resolver: PackageResolver) -> Tuple[Optional[str], Optional[str]]:
    """Send the node the job's wheels it lacks: (packages column, sentence)."""
    try:
        wheels = resolver.wheels_for(node_platform(info))
    except PackagesUnavailable as exc:
        return "none fit", f"{node.name}: {exc}."
    sent = link.stage_wheels([(w.digest, w.file) for w in wheels], lambda line: None)
    return (f"sent {sent}" if sent else "ready"), None


def _status_one(node: Node, resolver: Optional[PackageResolver]) -> NodeReport:
    started = time.monotonic()
    if node.transport == "local":
        python = node.python or sys.executable
        bundle_path, bundle_state = local_bundle(write=False)
        packages: Tuple[Optional[str], Optional[str]] = (None, None)
        if resolver is not None:
            tags = _run_for_tags([python, str(bundle_path), "--wheel-tags"]) if bundle_state == "cached" else None
            wheels_dir = Path(cache_dir()) / "wheels"
            packages = _readiness(node, resolver, tags, platform.python_version(),
                                  set(os.listdir(wheels_dir)) if wheels_dir.is_dir() else set())
        return NodeReport(node.name, "local", sys.platform, platform.machine(), platform.python_version(),
                          os.cpu_count(), bundle_state, None, time.monotonic() - started, None, *packages)
    from console.bootstrap import deploy, probe  # paramiko loads only when a node needs it
    from console.ssh import NodeConnection

    conn = NodeConnection(node)
    packages = (None, None)
    try:
        conn.connect()
        facts = probe(conn)
        native, uploaded = deploy(conn, facts, upload=False)
        if resolver is not None:
            tags = None
            if uploaded is not None:
                status, out, _ = conn.run(facts.shell.start_command(facts.python, native) + " --wheel-tags")
                tags = _tags(out) if status == 0 else None
            packages = _readiness(node, resolver, tags, facts.python_version, _listdir(conn, facts))
    except ConsoleError as exc:
        return NodeReport(node.name, node.address or "", seconds=time.monotonic() - started, error=str(exc))
    finally:
        conn.close()
    return NodeReport(node.name, node.address or "", facts.os, facts.arch, facts.python_version, facts.cores,
                      "missing" if uploaded is None else "cached", None, time.monotonic() - started, None, *packages)


def _run_for_tags(argv: List[str]) -> Optional[Tuple[str, str]]:
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    return _tags(done.stdout) if done.returncode == 0 else None


def _tags(out: str) -> Optional[Tuple[str, str]]:
    """The [abi, platform] line `--wheel-tags` prints, checked."""
    try:
        abi, tag = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError, TypeError):
        return None
    ok = all(isinstance(t, str) and re.fullmatch(r"[a-z0-9_]{0,64}", t) for t in (abi, tag))
    return (abi, tag) if ok else None


def _listdir(conn: Any, facts: Any) -> Set[str]:
    """The wheel digests unpacked in the node's cache (over SFTP)."""
    separator = "/" if facts.shell.name == "posix" else "\\"
    try:
        return set(conn.sftp().listdir(facts.shell.sftp_path(facts.bundle_dir + separator + "wheels")))
    except OSError:
        return set()


def _readiness(node: Node, resolver: PackageResolver, tags: Optional[Tuple[str, str]], python: str,
               present: Set[str]) -> Tuple[Optional[str], Optional[str]]:
    """(packages column, sentence) for status: how many of the job's wheels the node still needs."""
    if tags is None:
        return "unknown", None
    try:
        wheels = resolver.wheels_for(node_platform({"python": python, "abi": tags[0], "platform": tags[1]}))
    except PackagesUnavailable as exc:
        return "none fit", f"{node.name}: {exc}."
    lacking = sum(1 for w in wheels if w.digest not in present)
    return (f"{lacking} to send" if lacking else "ready"), None


def _all(nodes: Sequence[Node], one) -> List[NodeReport]:
    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(len(nodes), MAX_PARALLEL)) as pool:
        return list(pool.map(one, nodes))


def bootstrap_nodes(nodes: Sequence[Node], job: Optional[JobSpec] = None,
                    source: PackageSource = PackageSource()) -> List[NodeReport]:
    """Bring every node's agent up once and down again, in parallel; with a job that has requirements, send
    each node the wheels for its platform that it lacks."""
    resolver = PackageResolver(job.requires, source) if job is not None and job.requires else None
    return _all(nodes, lambda node: _bootstrap_one(node, resolver))


def status_nodes(nodes: Sequence[Node], job: Optional[JobSpec] = None,
                 source: PackageSource = PackageSource()) -> List[NodeReport]:
    """Probe every node without starting anything, in parallel; with a job that has requirements, say which of
    its wheels each node has."""
    resolver = PackageResolver(job.requires, source) if job is not None and job.requires else None
    return _all(nodes, lambda node: _status_one(node, resolver))


