"""The forker: a fresh interpreter that forks a POSIX agent's workers, so the agent pays one start.

A pool's workers were each a fresh interpreter (its start, `site` and the worker's imports: 50 to 150 ms of CPU
on a small machine, a second or more on a Pi, once a worker). The agent now starts one such interpreter, this
loop, as it starts (a pool outside an agent starts its own), and every worker of every pool is a fork of it:
started in a few milliseconds, sharing the interpreter's pages. It starts without `site`, taking the agent's
paths instead (nodeagent/sitelater.py). The forker is single-threaded and holds nothing of the agent's (no
protocol fd, no thread, no lock), so a fork of it is as clean as a fresh interpreter; the agent itself never
forks once it has threads (nodeagent/forkerlink.py is its side).

It reads lines on its socket to the agent: `spawn ID` with the worker's three pipe ends attached (SCM_RIGHTS:
its task pipe, its reply pipe, the write end of its sentinel), and `kill ID`. It answers `pid ID PID`, and
`exit ID CODE` when it reaped that worker (CODE as `Popen.returncode` gives it). Being the workers' parent, it
alone reaps them, so it kills one only while it has not reaped it: a pid is never reused under it. It exits
when the agent closes the socket or dies (PR_SET_PDEATHSIG on Linux), killing its workers first (or their own
PR_SET_PDEATHSIG does). The forker of a node the console serves in its own process goes by the socket alone:
PR_SET_PDEATHSIG follows the thread that started the forker, and `connect()` may be called on any thread.
"""

from __future__ import annotations

import _socket  # not socket.py: its selectors were ~9 ms of the forker's start, before its first worker
import gc
import os
import select
import signal
import sys
from collections import deque

# typing: most jobs' imports include it (and re, collections, functools with it, ~10 ms). Imported here, before
# the first fork, every worker has it; left to the job, each worker imported it on its first chunk (a hundred
# agents' first chunks then took a second).
from typing import Callable, Deque, Dict, List, Sequence, Tuple

__all__ = ["serve"]

FDS_PER_SPAWN = 3
FD_SIZE = 4
"""Bytes of one fd in SCM_RIGHTS data (a C int)."""
FORKER_NAME = b"agent-forker"
WORKER_NAME = b"agent-worker"
"""The forker's and its workers' process names on Linux (`ps`, `top`, where their command line is the
forker's `python -c ...`)."""


def serve(control_fd: int, agent_pid: int) -> None:
    """The forker's loop on the socket `control_fd` from the agent `agent_pid` (0: a node the console serves in
    its own process); never returns."""
    from nodeagent.sitelater import adopt
    from nodeagent.worker import die_with_parent, serve_fds  # imported once, here: every worker has it then

    adopt(os.environ.pop("NODEAGENT_SITE"))
    if agent_pid:
        die_with_parent(agent_pid)
    _name(FORKER_NAME)
    control = _socket.socket(fileno=control_fd)
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # a handler, so SIGCHLD writes to the wake pipe
    gc.freeze()  # what the workers share with this process: a worker's full collection would walk it, copying it
    me = os.getpid()
    children: Dict[int, str] = {}  # pid -> the agent's id for it
    pending = b""
    received: Deque[List[int]] = deque()  # fd triples, in the order they came: each `spawn` line takes the next
    while True:
        ready = select.select([control, wake_r], [], [])[0]
        answers = []
        if wake_r in ready:
            while _drain(wake_r):
                pass
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                answers.append("exit %s %d\n" % (children.pop(pid), os.waitstatus_to_exitcode(status)))
        if control in ready:
            try:
                data, fds = _receive(control)
            except OSError:
                data, fds = b"", []
            if not data:
                _end(children)
            received.extend(fds[i:i + FDS_PER_SPAWN] for i in range(0, len(fds), FDS_PER_SPAWN))
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                verb, ident = line.decode().split()
                if verb == "spawn":
                    fds = received.popleft()
                    pid = os.fork()
                    if pid == 0:  # the worker keeps its own three fds, none of the forker's or other workers'
                        others = [fd for later in received for fd in later]
                        _become_worker(serve_fds, fds, me, [control.fileno(), wake_r, wake_w] + others)
                    for fd in fds:
                        os.close(fd)
                    children[pid] = ident
                    answers.append("pid %s %d\n" % (ident, pid))
                elif verb == "kill":
                    for pid, held in children.items():
                        if held == ident:
                            os.kill(pid, signal.SIGKILL)
        if answers:
            try:
                control.sendall("".join(answers).encode())
            except OSError:
                _end(children)


def _receive(control: _socket.socket) -> Tuple[bytes, List[int]]:
    """What the agent sent, and the fds that came with it (socket.recv_fds, without importing socket)."""
    fds: List[int] = []
    data, ancillary, _, _ = control.recvmsg(65536, _socket.CMSG_LEN(16 * FDS_PER_SPAWN * FD_SIZE))
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += memoryview(payload[:len(payload) - len(payload) % FD_SIZE]).cast("i")
    return data, fds


def _end(children: Dict[int, str]) -> None:
    """The agent is gone: so are its workers, and this process."""
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    os._exit(0)


def _name(name: bytes) -> None:
    if sys.platform.startswith("linux"):
        with open("/proc/self/comm", "wb") as comm:
            comm.write(name)


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 4096))
    except BlockingIOError:
        return False


def _become_worker(serve_fds: Callable[[int, int, int], None], fds: Sequence[int], forker_pid: int,
                   forkers_own: Sequence[int]) -> None:
    """In a forked child: serve the worker's pipes, then exit (never returns)."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in forkers_own:
            os.close(fd)
        _name(WORKER_NAME)
        serve_fds(fds[0], fds[1], forker_pid)
        code = 0
    finally:
        for stream in (sys.stdout, sys.stderr):  # what the job printed, for the agent's log
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)
