"""The local node's agent process: started as early as the console can, adopted by its session.

`console run` and the Python API's `connect()` call `start_local_agents`
before they import the cluster's machinery (rpyc and the rest take a while on
a small machine), so the agent's interpreter and its warm pool come up
meanwhile; `launch` then adopts that process, or starts one. No socket
anywhere: the agent speaks on its stdin/stdout. Light on purpose: standard
library only (and console.bundle once it runs the bundle; rpyc before it forks one).

`console run` on Linux forks its agent instead (`fork=True`): it asks first
thing, before it has a thread or has opened anything, and a fork of it is an
interpreter already up, with its site-packages read and rpyc imported; the
child runs the nodeagent sources the bundle is made of. That spares the
agent's start 40 ms of a small machine's CPU (interpreter and site, in a 0.1 s
two-item job), and rpyc's import ~35 ms more. The Python API, the dashboard
and every other platform run the bundle as a new process.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
import types
from typing import IO, TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

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


class ForkedAgent:
    """A forked agent, seen as a `subprocess.Popen` of one: its pid, pipes, poll, wait and kill."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
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
        """Its exit code, polled as `Popen.wait` polls: at once, then less and less often (an agent whose log
        has just ended is seen gone within a millisecond, not the next 5 ms poll)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired("the local agent", timeout or 0.0)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


AgentProcess = Union[subprocess.Popen, ForkedAgent]

FORKED_NAME = "console-agent"
"""A forked agent's process name (what `ps -e` and `top` show): its command line is the console's."""

_early: Dict[Tuple[str, int], List[Tuple[AgentProcess, str]]] = {}
"""Agents started before their session, by (python, pool size)."""


def start_local_agents(inventory: Inventory, engine: Optional[str] = None, fork: bool = False) -> None:
    """Start the agents of the inventory's local nodes now, before the caller imports the rest of the console
    (none when the job goes to a Dask cluster). `fork`: the caller is `console run`, which has no thread and
    nothing open yet (see the module's docstring)."""
    if engine or inventory.engine:
        return
    for node in inventory.nodes:
        if node.transport == "local":
            start_early(node.python or sys.executable, node.workers or os.cpu_count() or 1, fork)


def start_early(python: str, pool: int, fork: bool = False) -> None:
    """Start a local agent now for a session that will ask for one like it; a failure waits for `launch`."""
    try:
        forkable = fork and python == sys.executable and sys.platform.startswith("linux")
        started = _fork(pool) if forkable and threading.active_count() == 1 else _start(python, pool)
        _early.setdefault((python, pool), []).append(started)
    except NodeError:
        pass


def launch(python: str, pool: int = 0) -> Tuple[AgentProcess, str]:
    """(the agent's process, "cached" or "written" for its bundle, or "forked"): one started early, or a new
    one."""
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


def _fork(pool: int) -> Tuple[ForkedAgent, str]:
    """This process, forked, as an agent with `pool` warm workers on pipes for its stdin, stdout and stderr.

    rpyc, the wire's messages and hashlib are imported first: the console needs them a moment later, and the
    agent then has them without importing them again (each process importing its own was ~40 ms more of the
    machine's CPU while the console, the agent and the forker all start)."""
    import nodeagent.rpyc_without_ssl  # noqa: F401  (before rpyc, see there)
    import rpyc  # noqa: F401
    import nodeagent.cache  # noqa: F401  (hashlib: the job's identity here, the job's files' names there)
    import nodeagent.wire  # noqa: F401

    pipes = [os.pipe() for _ in range(3)]  # the agent's stdin, stdout, stderr: (read end, write end)
    ends = (pipes[0][0], pipes[1][1], pipes[2][1])
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child's copies of these buffers would reach its pipes
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in (fd for pair in pipes for fd in pair):
            os.close(fd)
        raise NodeError(f"cannot fork the local agent: {exc.strerror or exc}.") from None
    if pid == 0:
        _serve_as_agent(ends, pool)
    for fd in ends:
        os.close(fd)
    return ForkedAgent(pid, os.fdopen(pipes[0][1], "wb"), os.fdopen(pipes[1][0], "rb"),
                       os.fdopen(pipes[2][0], "rb")), "forked"


_kept_from_the_console: List[Any] = []
"""In a forked agent: what the console held that the child replaces (its std streams, its __main__)."""


def _serve_as_agent(ends: Tuple[int, int, int], pool: int) -> None:
    """In the forked child: become what `python agent.zip --pool N` is on those pipes, and never return.

    Every object the console had is frozen out of the garbage collector first, and the ones the child lets go
    of are kept: a console file or socket collected here would close its fd's number, by then one of the
    agent's own pipes (a worker's sentinel, once, under a test process's garbage)."""
    gc.freeze()
    _kept_from_the_console.extend([sys.stdin, sys.stdout, sys.stderr, sys.modules.get("__main__")])
    try:
        os.setpgid(0, 0)  # out of the console's process group, as _OWN_GROUP puts a started agent
        with open("/proc/self/comm", "w") as comm:
            comm.write(FORKED_NAME)
        for target, fd in enumerate(ends):
            os.dup2(fd, target)
        for fd in sorted(int(name) for name in os.listdir("/proc/self/fd")):  # the console's files are not its
            if fd > 2:
                try:
                    os.close(fd)
                except OSError:  # the listing's own, closed already
                    pass
        sys.stdin, sys.stdout, sys.stderr = (open(0, "r", closefd=False), open(1, "w", closefd=False),
                                             open(2, "w", closefd=False))
        sys.modules["__main__"] = types.ModuleType("__main__")  # workers it spawns later import no console code
        sys.argv = ["nodeagent", "--pool", str(pool)]
        from nodeagent.__main__ import main

        main()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(1)
