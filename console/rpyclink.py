"""An agent process and the RPyC connection to it, whatever carries it: a local child's pipes, an SSH channel.

`RpycLink` is an `AgentLink` (console/agentlink.py) over RPyC. Every frame the
agent sends is bounded (`BoundedChannel`, compressed frames included), and
whatever breaks the protocol becomes a `WireError`. `start_local_agent` runs
the agent as a child process speaking over its pipes; SSH nodes get the same
link over their session channel (console/bootstrap.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from typing import Any, Callable, Dict

import nodeagent.rpyc_without_ssl  # noqa: F401  (before rpyc, see there)
import rpyc
from rpyc.core import consts
from rpyc.core.async_ import AsyncResult
from rpyc.core.channel import Channel
from rpyc.core.netref import asyncreq, syncreq
from rpyc.core.stream import PipeStream, Stream
from rpyc.utils.factory import connect_channel

from console.agentlink import (
    AGENT_SILENCE_EXIT_S, DEFAULT_REPLY_LIMIT, AgentLink, megabytes, pump_lines, reply_too_large,
)
from console.errors import NodeError
from nodeagent.wire import WireError

__all__ = ["RpycLink", "BoundedChannel", "start_local_agent"]

CALL_TIMEOUT_S = 10.0
"""A call not answered in this time means the node is gone (every call is quick)."""
HELLO_TIMEOUT_S = 30.0
"""The first calls wait longer: a fresh agent on a slow or busy node is still importing."""


class BoundedChannel(Channel):
    """rpyc's channel, refusing a frame over `limit` bytes before reading it, and inflating none past it."""

    __slots__ = ["limit"]

    def __init__(self, stream: Stream, limit: int) -> None:
        super().__init__(stream, compress=False)  # as the agent's: zlib costs more CPU than a LAN saves
        self.limit = limit

    def recv(self) -> bytes:
        length, compressed = self.FRAME_HEADER.unpack(self.stream.read(self.FRAME_HEADER.size))
        if length > self.limit:
            raise reply_too_large(length, self.limit)
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
            raise WireError(f"it sent a compressed reply inflating past the limit of {megabytes(self.limit)} "
                            "(max_reply_mb in the job file)")
        if not inflater.eof:
            raise WireError("it sent a compressed frame cut short")
        return data


class RpycLink(AgentLink):
    """An agent process's link: RPyC over `stream`, nothing but the agent's exposed methods."""

    def __init__(self, stream: Stream, close_transport: Callable[[], None]) -> None:
        super().__init__()
        self._channel = BoundedChannel(stream, DEFAULT_REPLY_LIMIT)
        self._conn = connect_channel(
            self._channel, service=rpyc.VoidService,
            config={"sync_request_timeout": HELLO_TIMEOUT_S, "allow_pickle": False},
        )
        self._stream = stream
        self._close_transport = close_transport
        self._root = self._conn.root

    @property  # type: ignore[override]
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

    def _call_unanswered(self, method: str, *args: Any) -> AsyncResult:
        answer = asyncreq(self._root, consts.HANDLE_CALLATTR, method, args, ())
        answer.set_expiry(CALL_TIMEOUT_S)
        return answer

    def hello(self, silence_exit_s: float = AGENT_SILENCE_EXIT_S) -> dict:
        """The node's description (raises NodeError when its protocol differs); later calls wait less."""
        info = super().hello(silence_exit_s)
        self._conn._config["sync_request_timeout"] = CALL_TIMEOUT_S
        return info

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


_OWN_GROUP: Dict[str, Any] = (
    {"process_group": 0} if os.name == "posix" and sys.version_info >= (3, 11) else {"start_new_session": True})
"""The agent leaves the console's process group, so the terminal's Ctrl-C reaches only the console (which
then stops the job). It stays in the console's session where it can: the kernel's autogroup scheduling gives
each session an equal share of the CPU, so a hundred local agents each in a session of its own would leave
the console a hundredth of it (its snapshot then took 0.2 to 2 s of waiting instead of 2 ms)."""


def start_local_agent(python: str, log: Callable[[str], None], pool: int = 0) -> RpycLink:
    """Run the agent bundle with `python` as a child process (the dashboard's local node, `console bootstrap`'s,
    one naming another Python) and connect over its pipes; `pool` workers start at once (a job follows)."""
    from console.bundle import local_bundle

    bundle_path, bundle_state = local_bundle()
    try:
        proc = subprocess.Popen(
            [python, str(bundle_path)] + (["--pool", str(pool)] if pool else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **_OWN_GROUP,
        )
    except OSError as exc:
        raise NodeError(f"cannot start the local agent with {python!r}: {exc.strerror or exc}.") from None
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

    link = RpycLink(PipeStream(proc.stdout, proc.stdin), close)
    link.facts["bundle"] = bundle_state
    return link

