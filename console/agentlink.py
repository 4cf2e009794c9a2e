"""One running agent and the RPyC connection to it, whatever carries it.

`AgentLink` wraps the connection with one method per exposed agent method;
only bytes cross, encoded and decoded by nodeagent/wire.py, so nothing an
agent sends can run code here. Every frame the agent sends is bounded
(`BoundedChannel`, compressed frames included), and whatever breaks the
protocol becomes a `WireError`. `start_local_agent` runs the agent as a child
process speaking over its pipes; SSH nodes get the same `AgentLink` over their
session channel (console/bootstrap.py).
"""

from __future__ import annotations

import pickle
import subprocess
import threading
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Dict, Optional, Protocol, Sequence, Tuple

import nodeagent.rpyc_without_ssl  # noqa: F401  (before rpyc, see there)
import rpyc
from rpyc.core import consts
from rpyc.core.channel import Channel
from rpyc.core.async_ import AsyncResult
from rpyc.core.netref import asyncreq, syncreq
from rpyc.core.stream import PipeStream, Stream
from rpyc.utils.factory import connect_channel

from console.errors import NodeError
from console.localagent import launch
from nodeagent import wire
from nodeagent.wire import ChunkItems, Collected, JobSettings, MetricsSample, WireError

__all__ = ["AgentLink", "BoundedChannel", "Progress", "start_local_agent", "pump_lines", "DEFAULT_REPLY_LIMIT"]

CALL_TIMEOUT_S = 10.0
"""A call not answered in this time means the node is gone (every call is quick)."""
HELLO_TIMEOUT_S = 30.0
"""The first calls wait longer: a fresh agent on a slow or busy node is still importing."""
AGENT_SILENCE_EXIT_S = 60.0
"""An agent that hears nothing from the console for this long exits (the console calls every second)."""
WHEEL_PART = 2 ** 20
"""Bytes of a wheel sent in one call."""
DEFAULT_REPLY_LIMIT = 256 * 2 ** 20
"""Bytes one reply of an agent may hold until a job sets its own (max_reply_mb)."""


class Progress(Protocol):
    """What a launcher reports to while it brings an agent up (a NodeSession, or bootstrap's recorder)."""

    def set_state(self, state: str, error: Optional[str] = None) -> None:
        """The node moved on: "connecting", "bootstrapping", ..."""

    def log(self, line: str) -> None:
        """One line of the agent's log."""


def pump_lines(source: IO[bytes], sink: Callable[[str], None]) -> threading.Thread:
    """Feed each line of `source` to `sink` from a daemon thread until EOF, as `wire.shown` lets it be printed."""

    def pump() -> None:
        for raw in iter(lambda: source.readline(wire.MAX_LOG_LINE), b""):
            sink(wire.shown(raw.decode("utf-8", "replace").rstrip()))

    thread = threading.Thread(target=pump, name="agent-log", daemon=True)
    thread.start()
    return thread


def _megabytes(size: int) -> str:
    return f"{size / 2 ** 20:.1f} MB"


class BoundedChannel(Channel):
    """rpyc's channel, refusing a frame over `limit` bytes before reading it, and inflating none past it."""

    __slots__ = ["limit"]

    def __init__(self, stream: Stream, limit: int) -> None:
        super().__init__(stream, compress=False)  # as the agent's: zlib costs more CPU than a LAN saves
        self.limit = limit

    def recv(self) -> bytes:
        length, compressed = self.FRAME_HEADER.unpack(self.stream.read(self.FRAME_HEADER.size))
        if length > self.limit:
            raise WireError(f"it sent a reply of {_megabytes(length)}, over the limit of {_megabytes(self.limit)} "
                            "(max_reply_mb in the job file)")
        data = self.stream.read(length + len(self.FLUSHER))
        if not data.endswith(self.FLUSHER):
            raise WireError("its stream is out of step (a frame without its end mark)")
        data = data[:-len(self.FLUSHER)]
        if not compressed:
            return data
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(data, self.limit + 1)
        except zlib.error as exc:
            raise WireError(f"it sent a compressed frame that does not inflate ({exc})") from None
        if len(data) > self.limit or inflater.unconsumed_tail:
            raise WireError(f"it sent a compressed reply inflating past the limit of {_megabytes(self.limit)} "
                            "(max_reply_mb in the job file)")
        if not inflater.eof:
            raise WireError("it sent a compressed frame cut short")
        return data


class AgentLink:
    """The console's handle on one agent: plain calls, plain data."""

    def __init__(self, stream: Stream, close_transport: Callable[[], None]) -> None:
        self._channel = BoundedChannel(stream, DEFAULT_REPLY_LIMIT)
        self._conn = connect_channel(
            self._channel, service=rpyc.VoidService,
            config={"sync_request_timeout": HELLO_TIMEOUT_S, "allow_pickle": False},
        )
        self._stream = stream
        self._close_transport = close_transport
        self._root = self._conn.root
        self.info: Dict[str, Any] = {}
        """The agent's answer to hello, once it came."""
        self.facts: Dict[str, Any] = {}
        """What the launcher learnt: shell, python, bundle "uploaded"/"written"/"cached"."""

    @property
    def reply_limit(self) -> int:
        """Bytes one reply may hold; a larger one is refused unread (WireError)."""
        return self._channel.limit

    @reply_limit.setter
    def reply_limit(self, limit: int) -> None:
        self._channel.limit = limit

    def _call(self, method: str, *args: Any) -> Any:
        """Call an exposed method in one round trip (rpyc's getattr-then-call would take two, and a third
        message to drop the method's reference); a reply rpyc cannot read is the node's protocol violation."""
        try:
            return syncreq(self._root, consts.HANDLE_CALLATTR, method, args, ())
        except (EOFError, TimeoutError, WireError):
            raise
        except Exception as exc:  # garbage frames, netrefs where bytes belong, a remote error
            raise WireError(f"its reply to {method} broke the protocol ({type(exc).__name__}: {exc})") from None

    def hello(self, silence_exit_s: float = AGENT_SILENCE_EXIT_S) -> Dict[str, Any]:
        """The node's description; raises NodeError when its protocol differs."""
        try:
            info = wire.decode_info(self._call("hello", wire.PROTOCOL_VERSION, silence_exit_s))
        except wire.ProtocolMismatch as exc:
            raise NodeError(f"{exc}; run 'console bootstrap' to deploy the console's own agent.") from None
        self._conn._config["sync_request_timeout"] = CALL_TIMEOUT_S
        self.info = info._asdict()
        return self.info

    def start_job(self, settings: JobSettings) -> int:
        """Give the agent a job's settings and wait for its answer: its pool size."""
        return self.started(self.start_job_unanswered(settings))

    def start_job_unanswered(self, settings: JobSettings) -> AsyncResult:
        """Give the agent a job's settings without waiting for its answer: it answers calls in the order they
        came, so the chunks sent next run under this job, and the answer is in once a later call's is. Saves a
        round trip a node at each job's start. `started` reads the answer."""
        answer = asyncreq(self._root, consts.HANDLE_CALLATTR, "start_job", (pickle.dumps(tuple(settings)),), ())
        answer.set_expiry(CALL_TIMEOUT_S)
        return answer

    @staticmethod
    def started(answer: AsyncResult) -> int:
        """The pool size `start_job_unanswered` was answered with: in once a later call was answered (else this
        waits for it, up to the call timeout)."""
        try:
            workers = answer.value
        except (EOFError, TimeoutError):
            raise
        except Exception as exc:  # a remote error, or what rpyc could not read
            raise WireError(f"its reply to start_job broke the protocol ({type(exc).__name__}: {exc})") from None
        if type(workers) is not int or workers < 1:
            raise WireError(f"it answered start_job with {type(workers).__name__}, not a pool size")
        return workers

    def end_job(self) -> None:
        """Tell the agent its job is over: its workers go, fresh ones start for the next job."""
        self._call("end_job")

    def add_files(self, files: Dict[str, bytes]) -> None:
        """Give the running job more files ({relative path: content}) for the chunks sent after this."""
        self._call("add_files", pickle.dumps(files))

    def stage_wheels(self, wheels: Sequence[Tuple[str, Path]], log: Callable[[str], None]) -> int:
        """Send the node those of these (digest, file) wheels it lacks, each in parts well inside the call
        timeout on a slow link; how many were sent."""
        digests = [digest for digest, _ in wheels]
        absent = set(wire.decode_digests(self._call("missing_wheels", tuple(digests)), digests))
        for digest, path in wheels:
            if digest not in absent:
                continue
            data = path.read_bytes()
            log(f"sending {path.name} ({len(data) / 2 ** 20:.1f} MB)")
            for offset in range(0, max(len(data), 1), WHEEL_PART):
                self._call("put_wheel", digest, offset, data[offset:offset + WHEEL_PART],
                           offset + WHEEL_PART >= len(data))
        return len(absent)

    def exchange(self, batch: Sequence[ChunkItems], wait: float, metrics: bool = False) -> Collected:
        """Queue chunk orders on the agent (none is fine), then take the outcomes, workers busy and tasks
        queued since the last call, waiting up to `wait` s for an outcome; the node's metrics too if asked."""
        sent = pickle.dumps([tuple(order) for order in batch]) if batch else b""
        return wire.decode_collected(self._call("exchange", sent, wait, metrics))

    def metrics(self) -> MetricsSample:
        """CPU, memory and load of the node."""
        return wire.decode_metrics(self._call("metrics"))

    def report_state(self) -> None:
        """Have the agent write its threads' stacks and its pool's state to its log."""
        self._call("report_state")

    def cancel(self, chunks: Sequence[int]) -> None:
        """Drop these chunks on the agent."""
        self._call("cancel", tuple(chunks))

    def close(self, graceful: bool = True) -> None:
        """End the session: the agent closes its pool and exits when its stream ends, so nothing here waits
        on an answer. A link known dead (`graceful` False) is cut without rpyc's goodbye."""
        if not graceful:
            self._stream.close()  # so rpyc's close does not wait a call timeout on a dead link
        try:
            self._conn.close()
        except Exception:
            pass
        self._close_transport()


def start_local_agent(python: str, log: Callable[[str], None], pool: int = 0) -> AgentLink:
    """Run the agent bundle here as a child process (or adopt the one `console run` started early) and
    connect over its pipes; `pool` workers start at once (a job follows)."""
    proc, bundle_state = launch(python, pool)
    log_pump = pump_lines(proc.stderr, log)

    def close() -> None:
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        log_pump.join(5)  # its log ends when the agent and its workers exit: sooner than polling for the exit
        try:
            proc.wait(1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    link = AgentLink(PipeStream(proc.stdout, proc.stdin), close)
    link.facts["bundle"] = bundle_state
    return link

