"""The agent's first act: the protocol leaves the standard fds (stdlib only, so it runs before any import).

`take_stdio()` moves the protocol to private duplicates of fds 0 and 1, points
fd 1 at stderr (so whatever a job prints lands in the agent's log) and fd 0 at
the null device. It runs before the agent's warm pool starts its workers, so no
worker ever inherits the protocol's fds; nodeagent/stream.py builds the stream.
`log` writes one line of that log, `describe_threads` says where every
thread is, for it.
"""

import os
import sys
import time
from typing import List, Tuple

__all__ = ["take_stdio", "log", "log_line", "describe_threads"]


def log_line(message: str) -> str:
    """One line of a node's log: when, who, what."""
    return "%s agent[%d]: %s" % (time.strftime("%H:%M:%S"), os.getpid(), message)


def log(message: str) -> None:
    """One line on the agent's stderr, which the console shows as the node's log."""
    sys.stderr.write(log_line(message) + "\n")
    sys.stderr.flush()


def take_stdio() -> Tuple[int, int]:
    """Move the protocol to private duplicates of fds 0 and 1 (returned), fd 1 to stderr, fd 0 to the null
    device. Before any worker process starts, so none inherits the protocol's fds."""
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    os.dup2(2, 1)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.close(null_fd)
    os.environ["PYTHONIOENCODING"] = "utf-8:backslashreplace"  # the workers' stdout and stderr
    for text in (sys.stdout, sys.stderr):
        if hasattr(text, "reconfigure"):
            text.reconfigure(encoding="utf-8", errors="backslashreplace")
    return in_fd, out_fd


def describe_threads(depth: int = 5) -> List[str]:
    """One line a thread: its name and innermost frames, innermost first (fits the console's log tail)."""
    import threading
    import traceback

    names = {thread.ident: thread.name for thread in threading.enumerate()}
    lines = []
    for ident, frame in sys._current_frames().items():
        frames = traceback.extract_stack(frame)[-depth:]
        lines.append("%s: %s" % (names.get(ident, ident), " < ".join(
            "%s:%d %s" % (os.path.basename(f.filename), f.lineno, f.name) for f in reversed(frames))))
    return lines
