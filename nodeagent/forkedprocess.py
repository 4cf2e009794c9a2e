"""A child this process forked (no exec), seen as the `subprocess.Popen` of one: pid, poll, wait and kill.

The forked local agent (console/localagent.py) and an agent's forker forked from the agent
(nodeagent/forkerlink.py) are such children: their parent waits for them as it would for a Popen's, and
each first closes what it inherited of its parent's files.
"""

import os
import signal
import subprocess
import time
from typing import Optional

__all__ = ["ForkedProcess", "close_inherited_fds"]


class ForkedProcess:
    """A forked child's pid and exit code (None while it runs, minus the signal that ended it)."""

    def __init__(self, pid: int, name: str) -> None:
        self.pid = pid
        self.name = name
        """What it is, for a timeout's message."""
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): gone, as subprocess takes it
                self.returncode = 0
                return 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.name, timeout or 0.0)
            time.sleep(0.005)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


def close_inherited_fds(*keep: int) -> None:
    """In a forked child on Linux: close every fd but 0, 1, 2 and `keep` (its parent's files are not its own)."""
    for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:  # the listing's own, closed already
                pass
