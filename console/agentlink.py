"""One running agent, as the console sees it: plain calls, plain data, whatever carries them.

`AgentLink` has one method per agent method; only bytes cross, encoded and
decoded by nodeagent/wire.py, so nothing an agent sends can run code here.
Two carriers: RPyC to an agent process, over its pipes or an SSH session's
channel (console/rpyclink.py), and direct calls to the local node's `Agent`
in the console's own process (console/localnode.py: `console run`, `connect()`).
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import IO, Any, Callable, Dict, Optional, Protocol, Sequence, Tuple

from console.errors import NodeError
from nodeagent import wire
from nodeagent.wire import ChunkItems, Collected, JobSettings, MetricsSample, WireError

__all__ = ["AgentLink", "Answer", "Progress", "pump_lines", "megabytes", "reply_too_large", "DEFAULT_REPLY_LIMIT",
           "AGENT_SILENCE_EXIT_S"]

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


class Answer(Protocol):
    """A call's answer that may still be on its way: `value` waits for it."""

    @property
    def value(self) -> Any:
        """The answer (raises what the call raised)."""


def megabytes(size: int) -> str:
    """A size as the limit's messages give it: "1.0 MB"."""
    return f"{size / 2 ** 20:.1f} MB"


def reply_too_large(size: int, limit: int) -> WireError:
    """The error of a reply over the job's limit (max_reply_mb), the same whatever carried it."""
    return WireError(f"it sent a reply of {megabytes(size)}, over the limit of {megabytes(limit)} "
                     "(max_reply_mb in the job file)")


def pump_lines(source: IO[bytes], sink: Callable[[str], None]) -> threading.Thread:
    """Feed each line of `source` to `sink` from a daemon thread until EOF, as `wire.shown` lets it be printed."""

    def pump() -> None:
        for raw in iter(lambda: source.readline(wire.MAX_LOG_LINE), b""):
            sink(wire.shown(raw.decode("utf-8", "replace").rstrip()))

    thread = threading.Thread(target=pump, name="agent-log", daemon=True)
    thread.start()
    return thread


class AgentLink:
    """The console's handle on one agent: plain calls, plain data. A carrier supplies `_call`,
    `_call_unanswered` and `close`."""

    reply_limit = DEFAULT_REPLY_LIMIT
    """Bytes one reply may hold; a larger one is refused unread (WireError)."""

    def __init__(self) -> None:
        self.info: Dict[str, Any] = {}
        """The agent's answer to hello, once it came."""
        self.facts: Dict[str, Any] = {}
        """What the launcher learnt: shell, python, bundle "uploaded"/"written"/"cached"/"in-process"."""

    def _call(self, method: str, *args: Any) -> Any:
        """The agent's `method` called with `args`: its answer."""
        raise NotImplementedError

    def _call_unanswered(self, method: str, *args: Any) -> Answer:
        """The agent's `method` called with `args`, its answer not waited for."""
        raise NotImplementedError

    def close(self, graceful: bool = True) -> None:
        """End the session: the agent closes its pool and exits (`graceful` False: the link is known dead)."""
        raise NotImplementedError

    def hello(self, silence_exit_s: float = AGENT_SILENCE_EXIT_S) -> Dict[str, Any]:
        """The node's description; raises NodeError when its protocol differs."""
        try:
            info = wire.decode_info(self._call("hello", wire.PROTOCOL_VERSION, silence_exit_s))
        except wire.ProtocolMismatch as exc:
            raise NodeError(f"{exc}; run 'console bootstrap' to deploy the console's own agent.") from None
        self.info = info._asdict()
        return self.info

    def start_job(self, settings: JobSettings) -> int:
        """Give the agent a job's settings and wait for its answer: its pool size."""
        return self.started(self.start_job_unanswered(settings))

    def start_job_unanswered(self, settings: JobSettings) -> Answer:
        """Give the agent a job's settings without waiting for its answer: it answers calls in the order they
        came, so the chunks sent next run under this job, and the answer is in once a later call's is. Saves a
        round trip a node at each job's start. `started` reads the answer."""
        return self._call_unanswered("start_job", pickle.dumps(tuple(settings)))

    @staticmethod
    def started(answer: Answer) -> int:
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
