"""The agent's end of the RPyC stream: private duplicates of fds 0 and 1.

`claim_stdio()` moves the protocol off the standard fds so that anything a job
prints lands on stderr (the agent's log), never in the protocol stream. On
Windows the C runtime's dup2 of fds 0-2 also sets the process's standard
handles, which is what spawned workers inherit, so their prints go to the log
too. The log is UTF-8 on every OS (the console reads it so; Windows would use
its ANSI code page). POSIX uses rpyc's own PipeStream (select on the fd);
Windows cannot select on a pipe, so a reader thread feeds a buffer that `poll`
waits on.
"""

import os
import threading
from typing import Union

import nodeagent.rpyc_without_ssl  # noqa: F401  (before rpyc, see there)
from rpyc.core.stream import PipeStream, Stream

from nodeagent.stdio import take_stdio
from rpyc.lib import Timeout

__all__ = ["claim_stdio", "stream_for"]


def claim_stdio() -> Stream:
    """Take the protocol fds, point fd 1 at stderr and fd 0 at the null device; the protocol's stream."""
    return stream_for(*take_stdio())


def stream_for(in_fd: int, out_fd: int) -> Stream:
    """The protocol's stream over the fds `take_stdio` returned."""
    if os.name == "nt":
        import msvcrt

        msvcrt.setmode(in_fd, os.O_BINARY)
        msvcrt.setmode(out_fd, os.O_BINARY)
        return ThreadedPipeStream(in_fd, out_fd)
    return PipeStream(os.fdopen(in_fd, "rb", buffering=0), os.fdopen(out_fd, "wb", buffering=0))


class ThreadedPipeStream(Stream):
    """A pipe stream whose `poll` works where select() does not (Windows pipes)."""

    __slots__ = ("_in_fd", "_out_fd", "_buf", "_cond", "_eof", "_closed")
    MAX_IO_CHUNK = 65000
    """rpyc's channel sizes its writes by the stream's own limit (the base Stream has none)."""

    def __init__(self, in_fd: int, out_fd: int) -> None:
        self._in_fd = in_fd
        self._out_fd = out_fd
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._closed = False
        threading.Thread(target=self._pump, name="stdin-reader", daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self._in_fd, 65536)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    self._eof = True
                else:
                    self._buf += data
                self._cond.notify_all()
            if not data:
                return

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True

    def fileno(self) -> int:
        return self._in_fd

    def poll(self, timeout: Union[float, None, Timeout]) -> bool:
        """rpyc passes seconds or its own Timeout object."""
        with self._cond:
            self._cond.wait_for(lambda: self._buf or self._eof, Timeout(timeout).timeleft())
            return bool(self._buf) or self._eof

    def read(self, count: int) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: len(self._buf) >= count or self._eof)
            if len(self._buf) < count:
                self._closed = True
                raise EOFError("connection closed by peer")
            data = bytes(self._buf[:count])
            del self._buf[:count]
            return data

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._out_fd, view):]
        except OSError as exc:
            self._closed = True
            raise EOFError(exc) from exc

