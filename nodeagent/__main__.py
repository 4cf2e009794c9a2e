"""`python -m nodeagent [--pool N]`: serve the agent's RPyC service on stdin/stdout.

The protocol moves to private duplicates of fds 0/1 before anything else runs,
fd 1 then points at stderr (the agent's log). No socket is opened. The agent
serves requests one at a time, in order, on its main thread (a node's session
calls in turn, and one serving thread spares every message a wake-up of idle
ones), and exits when its stdin closes (the session ended). A watchdog thread
exits after a long silence from the console, and logs where every thread is
when one request takes too long (the log shows why a call timed out).

`--wheel-tags` prints the node's wheel ABI and platform tags as JSON and exits
(`console status --job` asks it, nodeagent/wheels.py).

`--pool N` (the console's node sessions pass it; `console bootstrap` does not)
starts N workers at once, before rpyc is even imported, so they come up while
the agent and the console say hello; the first job with N workers takes them.
"""

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, List, Optional

from nodeagent.forkerlink import ForkerLink
from nodeagent.stdio import describe_threads, log, take_stdio

if TYPE_CHECKING:
    from nodeagent.pool import ChunkPool


def warm_pool(argv: List[str], forker: Optional[ForkerLink]) -> "Optional[ChunkPool]":
    """The pool `--pool N` asks for, started now; None without it. The pool's module is imported here, after
    the forker was started: its interpreter comes up meanwhile."""
    if "--pool" not in argv[:-1]:
        return None
    workers = int(argv[argv.index("--pool") + 1])
    if workers < 1:
        return None
    from nodeagent.pool import ChunkPool

    return ChunkPool(workers, on_failure=lambda trace: _pool_failed(trace), forker=forker)


def _pool_failed(trace: str) -> None:
    from nodeagent.agent import pool_failed

    pool_failed(trace)


WATCH_EVERY_S = 1.0
"""How often the watchdog looks at the agent."""
STALL_LOG_S = 6.0
"""A request answered for this long gets its threads' stacks logged: the console gives up on a call at 10 s
(console/agentlink.py CALL_TIMEOUT_S) and closes the link, so the log must have them before that."""


class RequestClock:
    """When the request being answered arrived (None between requests), for the watchdog."""

    def __init__(self) -> None:
        self.since: Optional[float] = None


def watch(service: Any, clock: RequestClock) -> None:
    """Exit when the console has said nothing for `service.silence_exit_s`; log the threads' stacks once when
    a request has been answered for STALL_LOG_S.

    The console calls at least once a second while connected; a long silence means it
    is gone, which a network partition can hide from sshd (and so from stdin) for hours.
    """
    logged = None
    while True:
        time.sleep(WATCH_EVERY_S)
        now = time.monotonic()
        since = clock.since
        if since is not None and since != logged and now - since > STALL_LOG_S:
            logged = since
            log("a request has been answered for %.0f s; the threads are at:" % (now - since))
            for line in describe_threads():
                log("  " + line)
        silent = now - service.last_call
        if silent > service.silence_exit_s:
            log("no word from the console in %d s, exiting" % silent)
            service.close()
            os._exit(0)


def keep_cache(service: Any) -> None:
    """Prune this node's cache once, then mark what this agent uses every MARK_USED_EVERY_S: an agent (a
    dashboard's) may run longer than the cache keeps what no agent marks."""
    from nodeagent.cache import KEEP_UNUSED_S, LOW_DISK_BYTES, MARK_USED_EVERY_S, mark_used, prune

    bundle = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    own = (bundle,) if os.path.isfile(bundle) else ()  # the zip this agent runs from (a forked agent has none)
    mark_used(own)
    removed = prune()
    if removed:
        log("removed %d cache entries no agent used for %d days, or that a disk with under %d MB free could not "
            "keep" % (len(removed), KEEP_UNUSED_S // 86400, LOW_DISK_BYTES >> 20))
    while True:
        time.sleep(MARK_USED_EVERY_S)
        mark_used(own + service.in_use())


def main() -> None:
    """Serve until the console goes away, then exit at once (`--wheel-tags`: print this node's wheel tags)."""
    if "--wheel-tags" in sys.argv:
        import json

        from nodeagent.wheels import wheel_tags

        print(json.dumps(wheel_tags()))
        return
    fds = take_stdio()
    forker = ForkerLink() if os.name == "posix" else None  # one for the agent's life: every pool forks from it
    pool = warm_pool(sys.argv, forker)
    import nodeagent.rpyc_without_ssl  # noqa: F401  (before rpyc, see there)
    from rpyc.core.channel import Channel
    from rpyc.utils.factory import connect_channel

    from nodeagent.service import AgentService
    from nodeagent.stream import stream_for

    stream = stream_for(*fds)
    service = AgentService(force_fallback_metrics=os.environ.get("NODEAGENT_NO_PSUTIL") == "1", warm_pool=pool,
                           forker=forker)
    conn = connect_channel(  # uncompressed: zlib on a chunk's values costs more of the node's CPU than it saves
        Channel(stream, compress=False),  # on a LAN (30 ms for 1.6 MB here, which a gigabit link sends in 13 ms)
        service=service,
        config={"allow_public_attrs": False, "allow_pickle": False, "sync_request_timeout": None},
    )
    log("serving on stdin/stdout (python %s, pid %d)" % (sys.version.split()[0], os.getpid()))
    clock = RequestClock()
    threading.Thread(target=watch, args=(service, clock), name="watchdog", daemon=True).start()
    threading.Thread(target=keep_cache, args=(service,), name="cache", daemon=True).start()
    serve_until_closed(conn, stream, clock)
    conn.close()
    service.close()
    log("console gone, exiting")
    sys.stderr.flush()
    os._exit(0)  # nothing is left to tear down: the pool is closed, the log flushed; the console waits for this


def serve_until_closed(conn: Any, stream: Any = None, clock: Optional[RequestClock] = None) -> None:
    """Answer requests until the stream ends (quietly: a console that goes is the normal end). With the
    connection's `stream` and a `clock`, each request's arrival is kept on the clock until it is answered."""
    while not conn.closed:
        try:
            if clock is None:
                conn.serve(None)
                continue
            stream.poll(None)
            clock.since = time.monotonic()
            conn.serve(0)
            clock.since = None
        except EOFError:
            return
        except Exception as exc:  # the stream broke: the console is gone
            if not conn.closed:
                log("stream failed: %s: %s" % (type(exc).__name__, exc))
                conn.close()
            return


if __name__ == "__main__":
    main()
