"""The agent's side of its forker (nodeagent/forker.py): start it, ask it for workers, learn how they ended.

`ForkerLink.spawn` does not wait for the forker: it sends the worker's pipe ends and returns a
`ForkedWorker` at once (the pool may write the worker's first tasks into its pipe before the worker
exists), so starting the forker costs the agent one `Popen`, while the forker's interpreter comes up beside the
agent's own imports. The worker's sentinel is a pipe whose only write end the worker holds: it is ready once
the worker is gone, however it went, and even if the forker never got to fork it.
"""

import _socket
import itertools
import os
import select
import subprocess
import sys
import threading
import time
from array import array
from typing import Dict, Optional

from nodeagent.sitelater import described

__all__ = ["ForkerLink", "ForkedWorker", "readable"]

AGENT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""Where the `nodeagent` package is imported from (a directory, or the bundle's zip), for the forker."""
PID_WAIT_S = 10.0
"""How long a worker's pid is waited for: the forker's start, on a slow node with its cores busy."""


class ForkerLink:
    """One forker process, started at once, and what it said: its workers' pids and exit codes."""

    def __init__(self, output: Optional[int] = None, in_console: bool = False) -> None:
        """`output`: the fd the forker and its workers write their stdout and stderr to (None: this process's,
        an agent's log). `in_console`: the forker of a node the console serves in its own process: it leaves
        this process's group, so a terminal's Ctrl-C reaches neither it nor its workers (an agent process has
        left it already), and lives as long as its socket (nodeagent/forker.py)."""
        self._output = output
        self._in_console = in_console
        ours, theirs = _socket.socketpair()  # socket.py's wrapping: ~3 ms of the console's start
        parent = 0 if in_console else os.getpid()
        code = ("import os, sys; sys.path.insert(0, os.environ.pop('NODEAGENT_ROOT')); "
                "from nodeagent.forker import serve; serve(%d, %d)" % (theirs.fileno(), parent))
        env = dict(os.environ, NODEAGENT_ROOT=AGENT_ROOT, NODEAGENT_SITE=described(),
                   PYTHONIOENCODING="utf-8:backslashreplace")  # what the workers print reaches a log as it is
        group = {}
        if in_console:
            group = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
        try:  # the agent's path goes in the environment: a command line naming it would pass for the agent's
            self._popen = subprocess.Popen([sys.executable, "-S", "-c", code], pass_fds=(theirs.fileno(),), env=env,
                                           stdin=subprocess.DEVNULL, stdout=output, stderr=output, **group)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        self._lock = threading.Condition()
        """Held to send, and to look at what the forker said; not while a thread waits on the socket."""
        self._reading = False
        """A thread is waiting on the socket: others wait on the condition for what it reads."""
        self._ids = itertools.count(1)
        self._unread = b""
        self._gone = False
        self._pids: Dict[int, int] = {}
        self._exits: Dict[int, int] = {}

    def again(self) -> "ForkerLink":
        """A new forker like this one, for one that was killed."""
        return ForkerLink(self._output, self._in_console)

    def alive(self) -> bool:
        """Whether the forker can still fork: running, its socket open."""
        return not self._gone and self._popen.poll() is None

    def spawn(self, task_fd: int, reply_fd: int) -> "ForkedWorker":
        """A worker serving these pipe ends (the forker gets its own copies: the caller closes these)."""
        sentinel_r, sentinel_w = os.pipe()
        ident = next(self._ids)
        try:
            with self._lock:
                fds = array("i", (task_fd, reply_fd, sentinel_w))
                self._sock.sendmsg([b"spawn %d\n" % ident], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        except BaseException:
            os.close(sentinel_r)
            raise
        finally:
            os.close(sentinel_w)
        return ForkedWorker(self, ident, sentinel_r)

    def kill(self, ident: int) -> None:
        """SIGKILL that worker, unless it is gone already."""
        with self._lock:
            try:
                self._sock.sendall(b"kill %d\n" % ident)
            except OSError:  # the forker is gone, and its workers with it
                self._gone = True

    def exitcode(self, ident: int, wait: float = 0.0) -> Optional[int]:
        """That worker's exit code once the forker reaped it, waiting up to `wait` seconds for the word; None
        while it runs, or if the forker went before saying."""
        return self._told(self._exits, ident, wait)

    def pid(self, ident: int) -> Optional[int]:
        """That worker's pid, waiting for the forker to say it (a few ms once it runs); None if it went first."""
        return self._told(self._pids, ident, PID_WAIT_S)

    def _told(self, table: Dict[int, int], ident: int, wait: float) -> Optional[int]:
        """What the forker said of worker `ident` in `table`, waiting up to `wait` seconds for it."""
        deadline = time.monotonic() + wait
        with self._lock:
            while ident not in table and not self._gone:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if self._reading:
                    self._lock.wait(left)
                    continue
                self._reading = True
                self._lock.release()  # a kill or a spawn on another thread must not wait for this
                try:
                    data = self._receive(left)
                finally:
                    self._lock.acquire()
                    self._reading = False
                if data is not None:
                    self._take(data)
                self._lock.notify_all()  # what came, or that nobody waits on the socket now
                if data is None:
                    break
            return table.get(ident)

    def forget(self, ident: int) -> None:
        """Drop what is known of a worker the pool is done with."""
        with self._lock:
            self._pids.pop(ident, None)
            self._exits.pop(ident, None)

    def close(self, at_once: bool = False) -> None:
        """Close the socket: the forker kills the workers it has left and exits. `at_once`: kill the forker
        instead, for one that has forked nothing (it may still be starting: waiting for it would take that long)."""
        self._sock.close()
        self._gone = True
        try:
            if at_once:
                self._popen.kill()
            self._popen.wait(5)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()

    def _receive(self, timeout: float) -> Optional[bytes]:
        """What the forker sent within `timeout` seconds, b"" once it is gone; None if nothing came."""
        if not readable(self._sock.fileno(), timeout):
            return None
        try:
            return self._sock.recv(65536)
        except OSError:
            return b""

    def _take(self, data: bytes) -> None:
        """Keep what `data` says (under the lock); its end once the forker is gone."""
        if not data:
            self._gone = True
            return
        *lines, self._unread = (self._unread + data).split(b"\n")
        for line in lines:
            verb, ident, number = line.split()
            (self._pids if verb == b"pid" else self._exits)[int(ident)] = int(number)


def readable(fd: int, timeout: float) -> bool:
    """Whether `fd` has data or its end within `timeout` seconds (poll, not select: an agent of many workers
    may hold fds past select's 1024)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


class ForkedWorker:
    """A worker the forker forked, seen as a multiprocessing.Process: pid, sentinel, is_alive, exitcode,
    kill, join, close."""

    def __init__(self, link: ForkerLink, ident: int, sentinel: int) -> None:
        self._link = link
        self._ident = ident
        self.sentinel = sentinel

    @property
    def pid(self) -> Optional[int]:
        return self._link.pid(self._ident)

    @property
    def exitcode(self) -> Optional[int]:
        """None while it runs; else its exit code, or minus the signal that ended it."""
        return self._link.exitcode(self._ident)

    def is_alive(self) -> bool:
        return not readable(self.sentinel, 0.0)

    def kill(self) -> None:
        self._link.kill(self._ident)

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait up to `timeout` seconds (None: 60) for the forker's word that it exited."""
        self._link.exitcode(self._ident, 60.0 if timeout is None else timeout)

    def close(self) -> None:
        os.close(self.sentinel)
        self._link.forget(self._ident)
