"""`python -m nodeagent`: serve the agent's RPyC service on stdin/stdout.

The protocol moves to private duplicates of fds 0/1 before anything else runs,
fd 1 then points at stderr (the agent's log). No socket is opened. The agent
serves requests on a few threads, so a metrics call is answered while another
waits for outcomes, and exits when its stdin closes (the session ended).
"""

import os
import sys

import rpyc

from nodeagent.service import AgentService, log
from nodeagent.stream import claim_stdio

SERVING_THREADS = 4


def main() -> int:
    """Serve until the console goes away."""
    stream = claim_stdio()
    service = AgentService(force_fallback_metrics=os.environ.get("NODEAGENT_NO_PSUTIL") == "1")
    conn = rpyc.connect_stream(
        stream,
        service=service,
        config={"allow_public_attrs": False, "allow_pickle": False, "sync_request_timeout": None},
    )
    log("serving on stdin/stdout (python %s, pid %d)" % (sys.version.split()[0], os.getpid()))
    try:
        conn.serve_threaded(SERVING_THREADS)
    except Exception as exc:  # the stream broke: the console is gone either way
        log("stream closed: %s" % exc)
    finally:
        service.on_disconnect(conn)
    log("console gone, exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
