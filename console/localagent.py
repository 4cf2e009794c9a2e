"""The local node's agent process: started as early as the console can, adopted by its session.

The Python API's `connect()` calls `start_local_agents` before it imports the
cluster's machinery (rpyc and the rest take a while on a small machine), so
the agent's interpreter and its warm pool come up meanwhile; `launch` then
adopts that process, or starts one. No socket anywhere: the agent speaks on
its stdin/stdout. Light on purpose: standard library only (and console.bundle
once it runs the bundle). `console run` serves its local node in its own
process instead (console/localnode.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from console.errors import NodeError

if TYPE_CHECKING:
    from console.inventory import Inventory

__all__ = ["start_local_agents", "start_early", "launch"]

_OWN_GROUP: Dict[str, Any] = (
    {"process_group": 0} if os.name == "posix" and sys.version_info >= (3, 11) else {"start_new_session": True})
"""The agent leaves the console's process group, so the terminal's Ctrl-C reaches only the console (which
then stops the job). It stays in the console's session where it can: the kernel's autogroup scheduling gives
each session an equal share of the CPU, so a hundred local agents each in a session of its own would leave
the console a hundredth of it (its snapshot then took 0.2 to 2 s of waiting instead of 2 ms)."""

_early: Dict[Tuple[str, int], List[Tuple[subprocess.Popen, str]]] = {}
"""Agents started before their session, by (python, pool size)."""


def start_local_agents(inventory: Inventory, engine: Optional[str] = None) -> None:
    """Start the agents of the inventory's local nodes now, before the caller imports the rest of the console
    (none when the job goes to a Dask cluster)."""
    if engine or inventory.engine:
        return
    for node in inventory.nodes:
        if node.transport == "local":
            start_early(node.python or sys.executable, node.workers or os.cpu_count() or 1)


def start_early(python: str, pool: int) -> None:
    """Start a local agent now for a session that will ask for one like it; a failure waits for `launch`."""
    try:
        _early.setdefault((python, pool), []).append(_start(python, pool))
    except NodeError:
        pass


def launch(python: str, pool: int = 0) -> Tuple[subprocess.Popen, str]:
    """(the agent's process, "cached" or "written" for its bundle): one started early, or a new one."""
    waiting = _early.get((python, pool))
    if waiting:
        proc, state = waiting.pop(0)
        if proc.poll() is None:
            return proc, state
    return _start(python, pool)


def _start(python: str, pool: int) -> Tuple[subprocess.Popen, str]:
    from console.bundle import local_bundle

    bundle_path, bundle_state = local_bundle()
    try:
        proc = subprocess.Popen(
            [python, str(bundle_path)] + (["--pool", str(pool)] if pool else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **_OWN_GROUP,
        )
    except OSError as exc:
        raise NodeError(f"cannot start the local agent with {python!r}: {exc.strerror or exc}.") from None
    return proc, bundle_state
