"""The local node served in the console's own process (`console run`, `connect()`): no agent process, no RPyC.

An agent process cost a local run most of its start: its own imports (rpyc's
~40 ms of a small machine's CPU, while the console imports the same), and each
exchange a round trip through both processes. Here the node's `Agent`
(nodeagent/agent.py, the one every agent process serves over RPyC) is called
directly, through the same `AgentLink` and the same wire encoding as any other
node. `start` runs first thing in `console run` (whose forker, a fresh
interpreter, nodeagent/forker.py, started even before the inventory was read:
console/forkerahead.py) and in `connect()`, before the console imports the rest
of itself: the forker and its warm workers come up meanwhile; the cluster's
backend then has `ServedHere.launch` give the node's session that agent (after
a loss, a new one).

What stays as on every node: the workers are processes of their own, so a chunk
can fail only itself. What differs: the forker leaves the console's process
group (a terminal's Ctrl-C reaches the console alone, which stops the job); the
forker's and workers' output and the agent's lines reach the node's log through
a pipe and `log`; a pool whose manager thread failed makes the next call raise
NodeError, and the session connects a fresh agent, as it would reconnect an
agent process that exited; the forker lives as long as its socket, whichever
thread started it. Only POSIX, with the console's own Python: a node naming
another Python, the dashboard's, and every other platform's run an agent process.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Optional, Sequence, Tuple

from console.agentlink import AgentLink, Progress, pump_lines, reply_too_large
from console.errors import ConsoleError, NodeError
from nodeagent import wire
from nodeagent.forkerlink import ForkerLink
from nodeagent.stdio import log_line

if TYPE_CHECKING:
    from console.forkerahead import ForkerAhead
    from console.inventory import Inventory, Node

__all__ = ["start", "ServedHere", "LocalNode", "InProcessLink"]

HELD_LINES = 200
"""Lines of a node's log kept until its session takes them (as many as a session keeps)."""


def start(inventory: Inventory, engine: Optional[str] = None, ahead: Optional[ForkerAhead] = None) -> ServedHere:
    """Start the inventory's local nodes that this process can serve (none for a Dask cluster), the first on the
    forker started `ahead` (console/forkerahead.py), if any; that forker is killed if no node is served."""
    nodes: Sequence[Node] = ()
    if not (engine or inventory.engine or os.name != "posix"):
        nodes = [node for node in inventory.nodes
                 if node.transport == "local" and (node.python or sys.executable) == sys.executable]
    try:
        return ServedHere(nodes, ahead)
    finally:
        if ahead is not None:
            ahead.close()


class ServedHere:
    """The local nodes this process serves itself, and their agents started ahead of their sessions."""

    def __init__(self, nodes: Sequence[Node], ahead: Optional[ForkerAhead] = None) -> None:
        self._early: Dict[str, LocalNode] = {}
        for node in nodes:
            try:
                self._early[node.name] = LocalNode(_pool_size(node), ahead.take() if ahead is not None else None)
            except OSError:  # its session starts it again, and the node fails with the reason if that fails too
                pass
        self._names = frozenset(node.name for node in nodes)

    def serves(self, node: Node) -> bool:
        return node.name in self._names

    def launch(self, node: Node, session: Progress) -> InProcessLink:
        """The node's link: to the agent started ahead of it, or to a new one (after a loss)."""
        local = self._early.pop(node.name, None) or LocalNode(_pool_size(node))
        local.output.attach(session.log)
        return InProcessLink(local)

    def close(self) -> None:
        """Close the agents no session took (the job was refused before its nodes started, say)."""
        while self._early:
            self._early.popitem()[1].close()


def _pool_size(node: Node) -> int:
    return node.workers or os.cpu_count() or 1


class LogRelay:
    """A node's log lines, held until a session takes them: the agent's own and, through a pipe, what the
    forker and the workers write (a job's prints among them)."""

    def __init__(self, fds: Optional[Tuple[int, int]] = None) -> None:
        """`fds`: the pipe's (read, write) ends, made with a forker started ahead; else a new pipe."""
        read_fd, self.fd = fds or os.pipe()
        """The write end: the forker's stdout and stderr, and so its workers'."""
        self._lock = threading.Lock()
        self._held: Deque[str] = deque(maxlen=HELD_LINES)
        self._sink: Optional[Callable[[str], None]] = None
        pump_lines(os.fdopen(read_fd, "rb"), self.line)

    def line(self, text: str) -> None:
        """One line of the log."""
        with self._lock:
            if self._sink is None:
                self._held.append(text)
                return
        self._sink(text)

    def attach(self, sink: Callable[[str], None]) -> None:
        """Give the held lines and every later one to `sink`."""
        with self._lock:
            for text in self._held:
                sink(text)
            self._held.clear()
            self._sink = sink

    def close(self) -> None:
        """Close the write end: the pump ends once the forker and its workers have gone too."""
        os.close(self.fd)


class LocalNode:
    """One local node's agent in this process: its forker, its warm workers, its log."""

    def __init__(self, workers: int, ahead: Optional[Tuple[int, int, ForkerLink]] = None) -> None:
        """The forker starts first, its interpreter coming up while the rest is imported (the agent process's
        order, nodeagent/__main__.py), unless one started `ahead` (its output's pipe ends and itself) is given."""
        self.output = LogRelay(ahead[:2] if ahead is not None else None)
        self.failure: Optional[str] = None
        """The traceback of a pool's manager thread that failed: the agent takes no more calls."""
        from nodeagent.agent import Agent
        from nodeagent.pool import ChunkPool

        forker = ahead[2] if ahead is not None else None
        try:
            forker = forker or ForkerLink(self.output.fd, in_console=True)
            warm = ChunkPool(workers, on_failure=self._pool_failed, forker=forker)
        except BaseException:  # no processes or fds left, say: nothing of it stays behind
            if forker is not None:
                forker.close()
            self.output.close()
            raise
        # On Linux the node's metrics come from /proc, psutil or not: the same figures, without psutil's import
        # (~20 ms of the console's CPU, a second into the job, while its workers want both cores).
        plain_metrics = sys.platform.startswith("linux") or os.environ.get("NODEAGENT_NO_PSUTIL") == "1"
        self.agent = Agent(force_fallback_metrics=plain_metrics, warm_pool=warm, forker=forker, log=self.log,
                           on_pool_failure=self._pool_failed)

    def log(self, message: str) -> None:
        """A message of the agent's own in the node's log, its lines shown as an agent process's are (a chunk's
        error is the job's text)."""
        for line in log_line(message).splitlines():
            self.output.line(wire.shown(line))

    def _pool_failed(self, trace: str) -> None:
        self.log("the chunk pool failed:\n" + trace.rstrip())
        self.failure = trace

    def close(self) -> None:
        self.agent.close()
        self.output.close()


class _Answered:
    """An answer that came at once."""

    def __init__(self, value: Any) -> None:
        self.value = value


class InProcessLink(AgentLink):
    """An `AgentLink` calling a `LocalNode`'s agent directly."""

    def __init__(self, local: LocalNode) -> None:
        super().__init__()
        self._local = local
        self.facts["bundle"] = "in-process"

    def _call(self, method: str, *args: Any) -> Any:
        """The agent's answer; its failure is the node's (NodeError, its traceback in the node's log)."""
        if self._local.failure is not None:
            raise NodeError("the local node's chunk pool failed (its log has the traceback); starting it again.")
        try:
            answer = getattr(self._local.agent, method)(*args)
        except ConsoleError:
            raise
        except Exception as exc:
            import traceback

            self._local.log(f"{method} failed:\n{traceback.format_exc().rstrip()}")
            raise NodeError(f"the local node failed to {method.replace('_', ' ')}: {type(exc).__name__}: {exc}.") \
                from None
        if type(answer) is bytes and len(answer) > self.reply_limit:  # as an agent process's would be refused
            raise reply_too_large(len(answer), self.reply_limit)
        return answer

    def _call_unanswered(self, method: str, *args: Any) -> _Answered:
        return _Answered(self._call(method, *args))

    def close(self, graceful: bool = True) -> None:
        self._local.close()
