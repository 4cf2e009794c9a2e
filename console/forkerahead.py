"""The local node's forker, started by `console run` before the console imports the rest of itself.

The forker (nodeagent/forker.py) is a fresh interpreter: ~50 ms of a core
here before it can fork a worker. Started once the inventory is read, it was
the last to be ready, after the console's own imports and the job's reading;
started first thing, its interpreter comes up on the other core while the
console imports, parses and reads. Whether the inventory has a local node the
console serves (console/localnode.py) is not known yet: a forker no node takes
is killed before it has forked anything.

Imports only what starting it needs (nodeagent.forkerlink: subprocess, `_socket`).
"""

import os
from typing import List, Optional, Tuple

from nodeagent.forkerlink import ForkerLink

__all__ = ["ForkerAhead", "start"]


class ForkerAhead:
    """A forker started ahead of its node, with the pipe its output goes to (the node's log)."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        try:
            self._forker: Optional[ForkerLink] = ForkerLink(self._write_fd, in_console=True)
        except BaseException:
            os.close(self._read_fd)
            os.close(self._write_fd)
            raise

    def take(self) -> Optional[Tuple[int, int, ForkerLink]]:
        """(read end, write end, forker) for the first local node; None once taken."""
        forker, self._forker = self._forker, None
        return None if forker is None else (self._read_fd, self._write_fd, forker)

    def close(self) -> None:
        """Kill the forker if no node took it."""
        forker, self._forker = self._forker, None
        if forker is not None:
            forker.close(at_once=True)
            os.close(self._read_fd)
            os.close(self._write_fd)


def start(argv: List[str]) -> Optional[ForkerAhead]:
    """A forker for `console run ...` on POSIX, unless the command line asks for help or a Dask cluster."""
    if os.name != "posix" or argv[:1] != ["run"]:
        return None
    if any(arg in ("-h", "--help") or arg.startswith("--engine") for arg in argv):
        return None
    try:
        return ForkerAhead()
    except OSError:  # out of processes or fds, say: the local node starts its own later, and says so if it fails
        return None
