"""One running agent and the RPyC connection to it, whatever carries it.

`AgentLink` wraps the connection with one method per exposed agent method,
pickling and unpickling explicitly so only bytes cross. `start_local_agent`
runs the agent as a child process speaking over its pipes; SSH nodes get the
same `AgentLink` over their session channel (console/bootstrap.py).
"""

from __future__ import annotations

import pickle
import subprocess
import threading
from typing import IO, Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import rpyc
from rpyc.core.stream import PipeStream, Stream

import nodeagent
from console.bundle import local_bundle
from console.errors import NodeError

__all__ = ["AgentLink", "Progress", "start_local_agent", "pump_lines"]

CALL_TIMEOUT_S = 10.0
"""A call not answered in this time means the node is gone (every call is quick)."""
AGENT_SILENCE_EXIT_S = 60.0
"""An agent that hears nothing from the console for this long exits (the console calls every second)."""


class Progress(Protocol):
    """What a launcher reports to while it brings an agent up (a NodeSession, or bootstrap's recorder)."""

    def set_state(self, state: str, error: Optional[str] = None) -> None:
        """The node moved on: "connecting", "bootstrapping", ..."""

    def log(self, line: str) -> None:
        """One line of the agent's log."""


def pump_lines(source: IO[bytes], sink: Callable[[str], None]) -> threading.Thread:
    """Feed each line of `source` to `sink` from a daemon thread until EOF."""

    def pump() -> None:
        for raw in iter(source.readline, b""):
            sink(raw.decode("utf-8", "replace").rstrip())

    thread = threading.Thread(target=pump, name="agent-log", daemon=True)
    thread.start()
    return thread


class AgentLink:
    """The console's handle on one agent: plain calls, plain data."""

    def __init__(self, stream: Stream, close_transport: Callable[[], None]) -> None:
        self._conn = rpyc.connect_stream(
            stream, service=rpyc.VoidService,
            config={"sync_request_timeout": CALL_TIMEOUT_S, "allow_pickle": False},
        )
        self._stream = stream
        self._close_transport = close_transport
        self._root = self._conn.root
        self.info: Dict[str, Any] = {}
        """The agent's answer to hello, once it came."""
        self.facts: Dict[str, Any] = {}
        """What the launcher learnt: shell, python, bundle "uploaded"/"written"/"cached"."""

    def hello(self, silence_exit_s: float = AGENT_SILENCE_EXIT_S) -> Dict[str, Any]:
        """The node's description; raises NodeError when its protocol differs."""
        info = pickle.loads(self._root.hello(nodeagent.PROTOCOL_VERSION, silence_exit_s))
        self.info = info
        if info.get("protocol") != nodeagent.PROTOCOL_VERSION:
            raise NodeError(
                f"the agent speaks protocol {info.get('protocol')} and this console {nodeagent.PROTOCOL_VERSION}; "
                "run 'console bootstrap' to deploy the console's own agent."
            )
        return info

    def start_job(self, settings: Dict[str, Any]) -> int:
        """Give the agent a job's settings; returns its pool size."""
        return int(self._root.start_job(pickle.dumps(settings)))

    def submit(self, batch: Sequence[Tuple[int, int, bytes]]) -> None:
        """Queue `(chunk, attempt, pickled items)` triples on the agent."""
        self._root.submit(pickle.dumps(list(batch)))

    def collect(self, wait: float) -> Tuple[List[tuple], int, int]:
        """(outcomes, workers busy, tasks queued) since the last call."""
        return pickle.loads(self._root.collect(wait))

    def metrics(self) -> Dict[str, Any]:
        """CPU, memory and load of the node."""
        return pickle.loads(self._root.metrics())

    def cancel(self, chunks: Sequence[int]) -> None:
        """Drop these chunks on the agent."""
        self._root.cancel(tuple(chunks))

    def close(self, graceful: bool = True) -> None:
        """Stop the agent's pool (unless the link is known dead), close the stream; the agent exits on EOF."""
        if graceful:
            try:
                self._root.shutdown()
            except Exception:  # the agent may already be gone; closing is all that is left
                pass
        else:
            self._stream.close()  # so rpyc's close does not wait a call timeout on a dead link
        try:
            self._conn.close()
        except Exception:
            pass
        self._close_transport()


def start_local_agent(python: str, log: Callable[[str], None]) -> AgentLink:
    """Run the agent bundle here as a child process and connect over its pipes."""
    bundle_path, bundle_state = local_bundle()
    try:
        proc = subprocess.Popen(
            [python, str(bundle_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        )
    except OSError as exc:
        raise NodeError(f"cannot start the local agent with {python!r}: {exc.strerror or exc}.") from None
    pump_lines(proc.stderr, log)

    def close() -> None:
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    link = AgentLink(PipeStream(proc.stdout, proc.stdin), close)
    link.facts["bundle"] = bundle_state
    return link

