"""A hostile agent: the real agent's protocol on stdin/stdout, with crafted replies.

Started as a local node's `python` (through a small wrapper the tests write),
it runs chunks with the real pool like an honest agent, then lies the way
HOSTILE_MODE says. Every crafted pickle would create the file HOSTILE_MARKER
if the console unpickled it; the tests check that the file never appears.
"""

import os
import pickle
import random
import subprocess
import sys
import time

import rpyc

from nodeagent.__main__ import serve_until_closed
from nodeagent.service import AgentService
from nodeagent.stream import claim_stdio
from nodeagent.wire import Collected, encode

MODE = os.environ.get("HOSTILE_MODE", "")
MARKER = os.environ.get("HOSTILE_MARKER", "/nonexistent/marker")
STALL_S = 4.0
"""How long "stall-metrics-once" holds the call asking for metrics: past the call timeout the test sets (2 s)."""


class Exploit:
    """Unpickling this calls `call(*args)`."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def exploit(how: str, marker: str = MARKER) -> bytes:
    """A pickle that creates `marker` when loaded, by `how`."""
    return pickle.dumps(exploit_object(how, marker))


def exploit_object(how: str, marker: str = MARKER) -> Exploit:
    """What `exploit` pickles: to put inside an honest-looking message."""
    import builtins
    import importlib

    if how == "system":
        return Exploit(os.system, f"touch {marker}")
    if how == "subprocess":
        return Exploit(subprocess.call, ["touch", marker])
    if how == "exec":
        return Exploit(builtins.exec, f"open({marker!r}, 'w').close()")
    if how == "eval":
        return Exploit(builtins.eval, f"open({marker!r}, 'w').close()")
    if how == "import":  # a module whose import creates the marker (the tests put it on the console's path)
        return Exploit(importlib.import_module, "hostile_import_marker")
    raise ValueError(how)


class HostileService(AgentService):
    """An agent that runs chunks honestly and answers dishonestly."""

    stream = None

    def exposed_hello(self, console_protocol, silence_exit_s=60.0):
        honest = super().exposed_hello(console_protocol, silence_exit_s)
        return exploit("system") if MODE == "hello-exploit" else honest

    def exposed_start_job(self, job):
        honest = super().exposed_start_job(job)
        if MODE == "start-exploit":  # answered while the console already sends the job's chunks
            return exploit("exec")
        return honest + 1 if MODE == "start-more-workers" else honest

    answered = False
    """An exchange has returned outcomes (so the console has just queued this node's next chunks)."""

    def _stall_once(self):
        """In "stall-metrics-once", hold the first call asking for metrics after an exchange returned outcomes."""
        stalled = MARKER + ".stalled"
        if MODE == "stall-metrics-once" and self.answered and not os.path.exists(stalled):
            open(stalled, "w").close()
            time.sleep(STALL_S)

    def exposed_metrics(self):
        self._stall_once()
        honest = super().exposed_metrics()
        return exploit("exec") if MODE == "metrics-exploit" else honest

    def exposed_exchange(self, batch, wait, metrics=False):
        if metrics:  # a busy node's metrics ride on its exchange
            self._stall_once()
        honest = super().exposed_exchange(batch, wait, metrics)
        outcomes, busy, queued, sample = pickle.loads(honest)
        self.answered = self.answered or bool(outcomes)
        if MODE == "metrics-exploit" and sample is not None:
            return pickle.dumps((outcomes, busy, queued, exploit_object("exec")))
        if MODE == "wedged":  # answers every call, but its chunks never end
            return encode(Collected((), busy, queued))
        if not outcomes:
            return honest
        if MODE.startswith("value-"):
            crafted = exploit(MODE[len("value-"):])
            return encode(Collected(tuple(o[:3] + (crafted,) + o[4:] for o in outcomes), busy, queued))
        if MODE == "collect-exploit":
            return exploit("eval")
        if MODE == "phantom":
            return encode(Collected(((9999, 1, "ok", pickle.dumps(1), "", "", 0.1, "0"),) + outcomes, busy, queued))
        if MODE == "oversized":
            return os.urandom(3 * 2 ** 20)
        if MODE == "bomb":
            return bytes(64 * 2 ** 20)
        if MODE == "truncated":  # a frame announced at 4096 bytes cut at 2048, then more talk: out of step
            self.stream.write(b"\x00\x00\x10\x00\x00" + b"x" * 2048 + b"y" * 4096)
            return honest
        if MODE == "garbage":  # bytes that announce a 4 GB frame (see the note on stalled frames in test_hostile_node)
            self.stream.write(b"\xff\xff\xff\xf0\x01" + random.Random(7).randbytes(4096))
            return honest
        return honest


def main() -> int:
    stream = claim_stdio()
    HostileService.stream = stream
    service = HostileService()
    conn = rpyc.connect_stream(stream, service=service,
                               config={"allow_public_attrs": False, "allow_pickle": False,
                                       "sync_request_timeout": None})
    serve_until_closed(conn)
    service.on_disconnect(conn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
